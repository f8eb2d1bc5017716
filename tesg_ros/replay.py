# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-replay BAG``: live replay of a rosbag through the real fusion node over DDS.

The bag's thermal and RGB images (plus their CameraInfo and, with ``--semantics replay``, the
recorded semantics) are published on the node's relative input topics at the recorded pace
(receive timestamps divided by ``--rate``), with ``/clock`` carrying the bag time so the node
runs with ``use_sim_time``. The fusion node runs in this process (default) or is an already
running one (``--external``). The fused output (``fused/image``, ``fused/camera_info``,
``semantics``) is recorded into a new bag, and a report gives the number of input pairs,
fused frames, the drop rate and end-to-end latency percentiles, as JSON and Markdown.

Definitions (docs/replay.md has the details):

* input pairs: the pairs the node's approximate-time policy forms from the published stamps,
  computed here with the builtin policy (:mod:`tesg_ros.sensor.pairing`) and the node's
  ``sync.queue_size``, ``sync.slop`` and ``thermal.time_offset``;
* drop rate: the fraction of input pairs whose RGB stamp never came back on ``fused/image``;
* latency: wall time from publishing the later input of a pair to receiving the fused frame
  that carries its RGB stamp (monotonic clock, this process).

This module holds the ROS-free part: topic planning, the replay clock, pair tracking and the
output bag. The report is :mod:`tesg_ros.replay_report`, the rclpy side (graph, run loop)
:mod:`tesg_ros.ros.live_replay`, the console script :mod:`tesg_ros.cli.replay`.
"""

from collections import defaultdict
import datetime
import json
import math
from pathlib import Path
import queue
import shutil
import threading
from typing import NamedTuple, Optional


from tesg_ros import bags
from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.node_params import load_params_file, PARAMETERS_BY_NAME, validate_overrides
from tesg_ros.sensor.pairing import ApproximateTimePairingPolicy, RGB, THERMAL
from tesg_ros.stats import counted_percentiles

NS_PER_S = 1_000_000_000
# /clock is published with every message and at this period (wall seconds) in between.
CLOCK_PERIOD_S = 0.01
# The node's relative input and output topics (tesg_ros/ros/fusion_node.py).
INPUT_TOPICS = {'thermal': 'thermal/image', 'rgb': 'rgb/image',
                'thermal_info': 'thermal/camera_info', 'rgb_info': 'rgb/camera_info',
                'semantics': 'semantics'}
OUTPUT_TOPICS = ('fused/image', 'fused/camera_info', 'semantics')
REPORT_JSON = 'replay_report.json'
REPORT_MARKDOWN = 'replay_report.md'
OUTPUT_BAG = 'fused'
# Counters of diagnostics_snapshot() reported as the change over the measured replay.
NODE_COUNTERS = ('thermal_received', 'rgb_received', 'thermal_zero_stamp', 'rgb_zero_stamp',
                 'thermal_bad_encoding', 'rgb_bad_encoding', 'pairs', 'published',
                 'dropped_stale', 'dropped_out_of_order', 'dropped_bad_input', 'dropped_error',
                 'dropped_busy', 'dropped_late', 'dropped_future', 'time_jumps_forward',
                 'time_jumps_backward')
NODE_SUMMARIES = ('network_ms', 'processing_ms', 'arrival_to_publish_ms', 'latency_ms',
                  'pair_dt_s')
SEMANTICS_MODES = PARAMETERS_BY_NAME['semantics.mode'].choices
# Exit statuses of main().
EXIT_OK, EXIT_NO_OUTPUT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class ReplayError(TesgError, RuntimeError):
    """The replay cannot run: no node answers, the output exists, a topic is unusable."""


# ---------------------------------------------------------------------------- arguments
def parse_set_values(items):
    """``['sync.slop=0.03', 'thermal.clahe=true']`` -> validated ``{name: value}``.

    Values of string parameters are taken verbatim, others are read as YAML (``true``,
    ``0.03``, ``[1, 0, 0, ...]``); all are checked and coerced against the node's parameter
    table. An unknown name, a missing ``=`` or a bad value raises ConfigError.
    """
    import yaml

    values = {}
    for item in items:
        name, separator, text = item.partition('=')
        name = name.strip()
        if not separator or not name:
            raise ConfigError(f'--set expects NAME=VALUE, got {item!r}')
        if name in values:
            raise ConfigError(f'--set {name} is given twice')
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is not None and spec.kind == 'string':
            values[name] = text  # verbatim: YAML would read e.g. 'off' or 'no' as a bool
            continue
        try:
            values[name] = yaml.safe_load(text) if text.strip() else ''
        except yaml.YAMLError as error:
            raise ConfigError(f'--set {name}: cannot read value {text!r}: {error}') from None
    return validate_overrides(values)


def node_overrides(weights=None, semantics=None, set_values=None, params_file=None):
    """The parameter overrides of the in-process node as ``{name: value}`` (validated).

    ``weights`` -> ``model.weights``, ``semantics`` -> ``semantics.mode``, then ``set_values``
    (``NAME=VALUE`` strings). A name set by two of them raises ConfigError. ``params_file`` is
    only checked here (rclpy reads it through ``--params-file``); ``use_sim_time`` is always
    true.
    """
    overrides = {}
    if weights:
        overrides['model.weights'] = weights
    if semantics:
        overrides['semantics.mode'] = semantics
    for name, value in parse_set_values(set_values or ()).items():
        if name in overrides:
            raise ConfigError(f'{name} is given by --set and by its own option')
        overrides[name] = value
    if params_file:
        if not Path(params_file).is_file():
            raise ConfigError(f'--params-file {params_file} is not a file')
        load_params_file(params_file)
    overrides = validate_overrides(overrides)
    overrides['use_sim_time'] = True
    return overrides


# ---------------------------------------------------------------------------- topics
class ReplayTopics(NamedTuple):
    """Bag topics to replay (None where there is none) and their message types."""

    thermal: str
    rgb: str
    thermal_info: Optional[str]
    rgb_info: Optional[str]
    semantics: Optional[str]
    thermal_type: str
    rgb_type: str

    def by_role(self):
        """``{role: bag topic}`` for the roles present; roles are keys of INPUT_TOPICS."""
        return {role: getattr(self, role) for role in INPUT_TOPICS
                if getattr(self, role) is not None}


def sibling_camera_info(bag, image_topic):
    """The CameraInfo topic beside ``image_topic`` (image_transport layout), or None.

    ``/ns/image_raw`` and ``/ns/image_raw/compressed`` both look for ``/ns/camera_info``.
    """
    base = image_topic[:-len('/compressed')] if image_topic.endswith('/compressed') \
        else image_topic
    namespace = base.rsplit('/', 1)[0]
    candidate = f'{namespace}/camera_info'
    info = bag.topics.get(candidate)
    if info is not None and info.msgtype == bags.CAMERA_INFO and info.count > 0:
        return candidate
    return None


def _require_topic(bag, topic, msgtype, option):
    info = bag.topics.get(topic)
    if info is None:
        raise ReplayError(f'{option} {topic} is not in bag {bag.path}; it has '
                          f'{bag.describe_topics()}')
    if info.msgtype != msgtype:
        raise ReplayError(f'{option} {topic} carries {info.msgtype}, expected {msgtype}')
    if info.count == 0:
        raise ReplayError(f'{option} {topic} has no messages in {bag.path}')


def _find_semantics_topic(bag):
    candidates = [t.name for t in bag.topics.values()
                  if t.msgtype == bags.STRING and t.count > 0
                  and t.name.rstrip('/').rsplit('/', 1)[-1] == 'semantics']
    if len(candidates) != 1:
        found = ', '.join(candidates) or 'none'
        raise ReplayError(f'--semantics replay needs one recorded std_msgs/String topic named '
                          f'.../semantics in {bag.path} (found: {found}); pass '
                          '--semantics-topic')
    return candidates[0]


def plan_topics(bag, thermal=None, rgb=None, thermal_info=None, rgb_info=None,
                camera_info=True, semantics=None, replay_semantics=False):
    """Choose the bag topics to replay; raises ReplayError/BagError with what the bag has.

    Images are detected with :func:`tesg_ros.bags.detect_image_topics` unless given.
    CameraInfo topics are the given ones, else the ``camera_info`` beside each image topic
    (none when ``camera_info`` is False). The semantics topic is used only with
    ``replay_semantics``: the given one, else the one String topic named ``.../semantics``.
    """
    if bag.message_count == 0:
        raise ReplayError(f'bag {bag.path} is empty: no messages to replay')
    cameras = bags.detect_image_topics(bag, thermal, rgb)
    infos = {}
    for role, given, image in (('thermal_info', thermal_info, cameras.thermal),
                               ('rgb_info', rgb_info, cameras.rgb)):
        if given is not None:
            if not camera_info:
                raise ConfigError(f'--{role.replace("_", "-")}-topic contradicts '
                                  '--no-camera-info')
            _require_topic(bag, given, bags.CAMERA_INFO, f'--{role.replace("_", "-")}-topic')
            infos[role] = given
        else:
            infos[role] = sibling_camera_info(bag, image) if camera_info else None
    semantics_topic = None
    if replay_semantics:
        if semantics is not None:
            _require_topic(bag, semantics, bags.STRING, '--semantics-topic')
            semantics_topic = semantics
        else:
            semantics_topic = _find_semantics_topic(bag)
    elif semantics is not None:
        raise ConfigError('--semantics-topic is only used with --semantics replay')
    return ReplayTopics(cameras.thermal, cameras.rgb, infos['thermal_info'], infos['rgb_info'],
                        semantics_topic, bag.topics[cameras.thermal].msgtype,
                        bag.topics[cameras.rgb].msgtype)


def semantics_for_node(text, topic):
    """The recorded semantics ``text`` as the node's replay mode reads it, and whether it
    had to be converted.

    The node (``semantics.mode: replay``) parses ``{"description": str, "phrases": [str]}``
    JSON; such text is returned unchanged. Anything else is read exactly as ``tesg-eval``
    reads recorded semantics (:func:`tesg_ros.evaluation.semantics.recorded_semantics_record`:
    plain text, e.g. from ``tesg-make-bag --semantics``, is a description split into phrases)
    and returned as that JSON. A JSON object without a description raises ReplayError.
    """
    from tesg_ros.evaluation.semantics import recorded_semantics_record

    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if (isinstance(record, dict) and isinstance(record.get('description'), str)
            and isinstance(record.get('phrases'), list)):
        return text, False
    try:
        record = recorded_semantics_record(text)
    except ConfigError as error:
        raise ReplayError(f'{topic}: {error}') from None
    return json.dumps(record), True


# ---------------------------------------------------------------------------- timing
class ReplayClock:
    """Maps bag time (ns) to this process's monotonic time (s) at a replay ``rate``.

    Bag time ``bag_start_ns`` plays at monotonic ``wall_start``; ``rate`` 2 plays twice as
    fast.
    """

    def __init__(self, bag_start_ns, wall_start, rate):
        if not rate > 0 or not math.isfinite(rate):
            raise ConfigError(f'--rate must be a positive number, got {rate}')
        self.bag_start_ns = int(bag_start_ns)
        self.wall_start = float(wall_start)
        self.rate = float(rate)

    def wall_time(self, bag_ns):
        """Monotonic seconds at which bag time ``bag_ns`` is due."""
        return self.wall_start + (bag_ns - self.bag_start_ns) / NS_PER_S / self.rate

    def bag_time(self, wall):
        """Bag time (int ns) at monotonic seconds ``wall``."""
        return self.bag_start_ns + int(round((wall - self.wall_start) * self.rate * NS_PER_S))


def loop_shift_ns(rgb_stamp_span_ns, rgb_count, stamp_span_ns, receive_span_ns):
    """Nanoseconds added to receive times and stamps of each further ``--loop`` pass.

    The RGB camera's cadence continues: ``span + one mean RGB frame period`` (``rgb_count``
    frames over ``rgb_stamp_span_ns``; 1/30 s for a single frame), or one period past the
    longest stamp or receive-time span where that is longer, so a pass never overlaps the
    previous one (the node drops stamps that go backwards).
    """
    rgb_span = max(int(rgb_stamp_span_ns), 0)
    period = rgb_span // (rgb_count - 1) if rgb_count > 1 and rgb_span else NS_PER_S // 30
    period = max(period, 1)
    longest = max(int(stamp_span_ns), int(receive_span_ns), 0)
    shift = rgb_span + period
    return shift if shift > longest else longest + period


def warmup_stamps(first_stamp_ns, count):
    """``count`` increasing warm-up stamps (ns) before ``first_stamp_ns``.

    They lie in the 10 s (at most half the stamp) before the bag's first stamp, so the warm-up
    frames can never be mistaken for the bag's and never make the bag's stamps look old.
    """
    span = min(10 * NS_PER_S, int(first_stamp_ns) // 2)
    step = span // (count + 1)
    if step <= 0:
        raise ReplayError(f'the bag starts at stamp {first_stamp_ns} ns: no room for warm-up '
                          'stamps before it; use --no-warmup')
    base = int(first_stamp_ns) - span
    return [base + (index + 1) * step for index in range(count)]


# ---------------------------------------------------------------------------- measuring
class PairTracker:
    """Which input pairs were published and which came back fused, with latencies.

    Thread-safe: :meth:`published` is called by the publishing thread, :meth:`fused` by the
    subscription callback. Published images run through the same approximate-time policy as
    the node (builtin, the node's sync parameters), so the expected pairs are those the node
    can form from what was sent; a pair is ready when its later input was published.
    """

    def __init__(self, queue_size, slop, thermal_time_offset):
        self._policy = ApproximateTimePairingPolicy(queue_size, slop, thermal_time_offset)
        self._lock = threading.Lock()
        self._ready = {}  # RGB stamp ns -> monotonic s the later input was published
        self._fused = []  # (RGB stamp ns, monotonic s received)

    def published(self, role, stamp_ns, wall):
        """Record an image of ``role`` ('thermal' or 'rgb') stamped ``stamp_ns`` published at
        monotonic ``wall`` seconds."""
        index = THERMAL if role == 'thermal' else RGB
        with self._lock:
            for pair in self._policy.add(index, int(stamp_ns), float(wall)):
                self._ready[pair.rgb_stamp_ns] = max(pair.thermal, pair.rgb)

    def fused(self, stamp_ns, wall):
        """Record a fused frame carrying RGB stamp ``stamp_ns`` received at ``wall``."""
        with self._lock:
            self._fused.append((int(stamp_ns), float(wall)))

    @property
    def expected_pairs(self):
        with self._lock:
            return len(self._ready)

    @property
    def fused_count(self):
        with self._lock:
            return len(self._fused)

    def all_matched(self):
        """True when every expected pair so far has come back fused."""
        with self._lock:
            received = {stamp for stamp, _ in self._fused}
            return bool(self._ready) and received >= set(self._ready)

    def summary(self):
        """Counts, drop rate and latency percentiles (ms) as a JSON-ready dict.

        ``unexpected_fused``: fused frames whose stamp is no expected pair's RGB stamp (e.g.
        an external node pairing differently); ``duplicate_fused``: repeated stamps.
        """
        with self._lock:
            ready = dict(self._ready)
            fused = list(self._fused)
            counters = self._policy.counters().as_dict()
        latencies, seen, unexpected, duplicates = [], set(), 0, 0
        for stamp, wall in fused:
            if stamp in seen:
                duplicates += 1
                continue
            seen.add(stamp)
            if stamp in ready:
                latencies.append((wall - ready[stamp]) * 1e3)
            else:
                unexpected += 1
        matched = len(latencies)
        expected = len(ready)
        return {
            'input_pairs': expected,
            'fused_received': len(fused),
            'fused_matched': matched,
            'unexpected_fused': unexpected,
            'duplicate_fused': duplicates,
            'pairs_without_output': expected - matched,
            'drop_rate': (expected - matched) / expected if expected else None,
            'latency_ms': counted_percentiles(latencies),
            'expected_pairing': counters,
        }

    def fused_share_over_time(self, max_windows=100, min_window_s=1.0):
        """Share of the input pairs that came back fused, per window of RGB stamp time.

        Windows are ``min_window_s`` long, or longer so that there are at most
        ``max_windows``; time counts from the first input pair's RGB stamp. Returns
        ``{'window_s', 't_s', 'input_pairs', 'fused', 'share'}`` (lists per window; share
        None for a window without pairs), or None before any pair.
        """
        with self._lock:
            stamps = sorted(self._ready)
            received = {stamp for stamp, _ in self._fused}
        if not stamps:
            return None
        span_s = (stamps[-1] - stamps[0]) / NS_PER_S
        window_s = max(min_window_s, span_s / max_windows)
        count = int(span_s // window_s) + 1
        pairs, fused = [0] * count, [0] * count
        for stamp in stamps:
            slot = min(count - 1, int((stamp - stamps[0]) / NS_PER_S // window_s))
            pairs[slot] += 1
            fused[slot] += int(stamp in received)
        return {'window_s': window_s, 't_s': [slot * window_s for slot in range(count)],
                'input_pairs': pairs, 'fused': fused,
                'share': [f / p if p else None for f, p in zip(fused, pairs)]}

    def latencies_ms(self):
        """Latency (ms) of every matched fused frame, in arrival order."""
        with self._lock:
            ready = dict(self._ready)
            fused = list(self._fused)
        seen, latencies = set(), []
        for stamp, wall in fused:
            if stamp not in seen and stamp in ready:
                latencies.append((wall - ready[stamp]) * 1e3)
            seen.add(stamp)
        return latencies


def default_out_dir(bag_path):
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    return Path(f'{Path(bag_path).name.removesuffix(".mcap").removesuffix(".db3")}'
                f'_replay_{stamp}')


def prepare_out_dir(out):
    """Create the output folder; it must not exist or be empty (nothing is overwritten).

    Returns ``(path, created)``: ``created`` is False for an existing empty folder.
    """
    out = Path(out)
    existed = out.exists()
    if existed:
        if not out.is_dir():
            raise ReplayError(f'--out {out} exists and is not a folder')
        if any(out.iterdir()):
            raise ReplayError(f'--out {out} is not empty; a replay never overwrites results')
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReplayError(f'cannot create --out {out}: {error.strerror}') from None
    return out, not existed


def remove_unfinished(out, created):
    """After a failed set-up: remove the output bag this run started (and ``out`` if this
    run created it), so no unreadable remains are left."""
    shutil.rmtree(out / OUTPUT_BAG, ignore_errors=True)
    if created:
        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------- output bag
class OutputBag:
    """Raw-CDR rosbag2 writer for the fused output, fed from any thread.

    rclpy's ``serialize_message`` produces the same CDR as rosbags, so messages go in as they
    came off the wire. One writer thread owns rosbags' Writer (sqlite3 objects must stay in
    the thread that made them) and keeps disk I/O out of the subscription callbacks. Topics
    are registered on first write with ``bags.QOS_PROFILES``.
    """

    def __init__(self, path, storage='mcap'):
        if storage not in bags.STORAGES:
            raise ConfigError(f'--storage must be one of {bags.STORAGES}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        self.counts = defaultdict(int)
        self.error = None
        self._queue = queue.Queue()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._work, name='tesg_replay_bag_writer',
                                        daemon=True)
        self._thread.start()
        self._opened.wait()
        if self.error is not None:
            raise ReplayError(f'cannot create output bag {self.path}: {self.error}')

    def write(self, topic, msgtype, cdr, receive_ns, qos='reliable'):
        """Queue one serialised message for ``topic`` at ``receive_ns`` (bag time)."""
        self._queue.put((topic, msgtype, bytes(cdr), max(int(receive_ns), 0), qos))

    def close(self):
        """Write what is queued, finish the bag (metadata.yaml) and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise ReplayError(f'output bag {self.path}: {self.error}')

    def _work(self):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import get_typestore

        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        typestore = get_typestore(bags.TYPESTORE)
        connections = {}
        try:
            writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
            writer.open()
        except Exception as error:  # rosbags raises WriterError or OSError
            self.error = str(error)
            return
        finally:
            self._opened.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                topic, msgtype, cdr, receive_ns, qos = item
                if topic not in connections:
                    connections[topic] = writer.add_connection(
                        topic, msgtype, typestore=typestore,
                        offered_qos_profiles=[bags.QOS_PROFILES[qos]])
                writer.write(connections[topic], receive_ns, cdr)
                self.counts[topic] += 1
        except Exception as error:  # noqa: BLE001 - reported by close(), never lost
            self.error = f'{type(error).__name__}: {error}'
        finally:
            writer.close()
