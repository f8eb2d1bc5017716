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

The ROS-free helpers (argument splitting, topic planning, pair tracking, the report) are
usable without a ROS graph; rclpy is imported only when the replay starts.
"""

import argparse
from collections import defaultdict
import datetime
import json
import math
from pathlib import Path
import queue
import shutil
import sys
import threading
import time
from typing import NamedTuple, Optional

import numpy as np

from tesg_ros import bags
from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.node_params import (load_params_file, NODE_NAME, PARAMETERS_BY_NAME,
                                  validate_overrides)
from tesg_ros.sensor.pairing import ApproximateTimePairingPolicy, RGB, stamp_to_ns, THERMAL
from tesg_ros.stats import counted_percentiles
from tesg_ros.tools import split_ros_args

NS_PER_S = 1_000_000_000
# /clock is published with every message and at this period (wall seconds) in between.
CLOCK_PERIOD_S = 0.01
# The node's relative input and output topics (tesg_ros/fusion_node.py).
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
                 'dropped_busy', 'dropped_late')
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
    reads recorded semantics (:func:`tesg_ros.evaluation.evaluate.recorded_semantics_record`:
    plain text, e.g. from ``tesg-make-bag --semantics``, is a description split into phrases)
    and returned as that JSON. A JSON object without a description raises ReplayError.
    """
    from tesg_ros.evaluation.evaluate import recorded_semantics_record

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


# ---------------------------------------------------------------------------- report
def _fmt(value, digits=1):
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _summary_row(name, summary):
    if not summary or not summary.get('count'):
        return f'| {name} | 0 | n/a | n/a | n/a | n/a |'
    p90 = summary.get('p90')
    return (f'| {name} | {summary["count"]} | {_fmt(summary.get("p50"))} | {_fmt(p90)} | '
            f'{_fmt(summary.get("p99"))} | {_fmt(summary.get("max"))} |')


def replay_verdict(result, node, planned_wall_seconds, rate, min_share=0.8):
    """The report's first line: did the node keep up with the frame period?

    It keeps up when it fused at least ``min_share`` of the input pairs and its fusion time
    (the node's processing p50, else the end-to-end latency p50) is within the frame period
    (planned wall time per input pair at this ``rate``).
    """
    pairs = result.get('input_pairs') or 0
    fused = result.get('fused_matched') or 0
    if not pairs:
        return 'Verdict: none, no input pair was published.'
    period_ms = planned_wall_seconds / pairs * 1e3
    processing = ((node or {}).get('processing_ms') or {}).get('p50')
    latency = result.get('latency_ms') or {}
    if processing is not None:
        cost, what = processing, 'node fusion time p50'
    elif latency.get('count'):
        cost, what = latency['p50'], 'latency p50'
    else:
        cost, what = None, 'fusion time unknown'
    share = fused / pairs
    keeps_up = share >= min_share and (cost is None or cost <= period_ms)
    timing = f'{what} {cost:.0f} ms' if cost is not None else what
    if latency.get('count'):
        timing += f', latency p90 {latency["p90"]:.0f} ms'
    return (f'Verdict: {"keeps up" if keeps_up else "falls behind"}: fused {fused} of {pairs} '
            f'input pairs ({share:.0%}; at least {min_share:.0%} wanted); {timing} against '
            f'a frame period of {period_ms:.0f} ms at rate x{rate:g}.')


def format_markdown(report):
    """The report as Markdown (what ``replay_report.md`` holds): the verdict first."""
    result = report['result']
    drop = result['drop_rate']
    lines = [
        f'# tesg-replay: {report["bag"]}',
        '',
    ]
    if report.get('verdict'):
        lines += [f'**{report["verdict"]}**', '']
    lines += [
        f'- command: `{report["command"]}`',
        f'- mode: {report["mode"]}; rate x{report["rate"]:g}; loops {report["loops"]}; '
        f'storage of the output: {report["storage"]}',
        f'- output bag: `{report["output_bag"]}`',
        f'- bag time replayed: {report["bag_seconds"]:.3f} s, published in '
        f'{report["publish_wall_seconds"]:.3f} s wall (planned '
        f'{report["planned_wall_seconds"]:.3f} s; {report["wall_seconds"]:.3f} s with the '
        'wait for the last outputs)'
        + ('; **interrupted**' if report['interrupted'] else ''),
        '- published: ' + ', '.join(f'{k} {v}' for k, v in report['published'].items()),
        f'- input pairs {result["input_pairs"]}, fused frames received '
        f'{result["fused_received"]} (matched {result["fused_matched"]}, unexpected '
        f'{result["unexpected_fused"]}, duplicates {result["duplicate_fused"]}), '
        f'pairs without output {result["pairs_without_output"]}'
        f', drop rate {"n/a" if drop is None else f"{drop:.1%}"}',
        '',
        '| measure (ms) | count | p50 | p90 | p99 | max |',
        '|---|---|---|---|---|---|',
        _summary_row('input published → fused received', result['latency_ms']),
        _summary_row('publish lag behind schedule', report['publish_lag_ms']),
    ]
    node = report.get('node') or {}
    for key in ('network_ms', 'processing_ms', 'arrival_to_publish_ms'):
        if isinstance(node.get(key), dict):
            lines.append(_summary_row(f'node {key[:-3]}', node[key]))
    counters = node.get('counters') or {}
    if counters:
        lines += ['', 'Node counters over the replay: '
                  + ', '.join(f'{k} {v}' for k, v in counters.items())]
    if node.get('pairing'):
        lines += ['', 'Node pairing counters: '
                  + ', '.join(f'{k} {v}' for k, v in node['pairing'].items())]
    platform_info = report.get('platform') or {}
    if platform_info:
        lines += ['', 'Platform: ' + ', '.join(f'{k} {v}' for k, v in platform_info.items())]
    cpu = report.get('process_cpu') or {}
    if cpu:
        lines += ['', f'CPU of the process ({cpu.get("covers")}): {cpu.get("seconds")} s over '
                  f'{cpu.get("wall_seconds")} s wall = {cpu.get("cores")} cores']
    if report.get('fused_share_plot'):
        lines += ['', f'![fused share over time]({Path(report["fused_share_plot"]).name})']
    if report.get('latency_plot'):
        lines += ['', f'![latency histogram and CDF]({Path(report["latency_plot"]).name})']
    if report.get('warnings'):
        lines += ['', 'Warnings:', ''] + [f'- {w}' for w in report['warnings']]
    return '\n'.join(lines) + '\n'


def write_report(report, out_dir):
    """Write ``replay_report.json`` and ``replay_report.md`` into ``out_dir``; return paths."""
    out_dir = Path(out_dir)
    json_path = out_dir / REPORT_JSON
    markdown_path = out_dir / REPORT_MARKDOWN
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + '\n',
                         encoding='utf-8')
    markdown_path.write_text(format_markdown(report), encoding='utf-8')
    return json_path, markdown_path


def node_report(snapshot, baseline=None):
    """The node's numbers for the report from a diagnostics snapshot (dict).

    Counters are the change since ``baseline`` (the snapshot after the warm-up); the timing
    summaries (RunningStats: count, mean, p50, p99, ...) cover the node's whole life.
    """
    baseline = baseline or {}
    counters = {}
    for key in NODE_COUNTERS:
        value = snapshot.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            counters[key] = value - baseline.get(key, 0)
    result = {'counters': counters}
    for key in NODE_SUMMARIES:
        if isinstance(snapshot.get(key), dict):
            result[key] = snapshot[key]
    pairing = snapshot.get('pairing')
    if isinstance(pairing, dict):
        base_pairing = baseline.get('pairing') or {}
        result['pairing'] = {
            key: value - base_pairing.get(key, 0)
            if isinstance(value, int) and key.split('_')[0] != 'pending' else value
            for key, value in pairing.items()}
    for key in ('device', 'dtype', 'weights', 'sync_backend', 'last_error', 'error_kinds',
                'backend', 'torch_threads', 'max_pixels', 'ort_providers', 'backend_fallback'):
        if key in snapshot:
            result[key] = snapshot[key]
    return result


def overload_warning(result, node, planned_wall_seconds, min_share=0.8):
    """A warning when the node fused fewer than ``min_share`` of the input pairs, with its
    fusion time against the frame period (wall time per input pair); else ''."""
    pairs = result.get('input_pairs') or 0
    fused = result.get('fused_matched') or 0
    if min_share <= 0.0 or pairs < 3 or fused >= min_share * pairs:
        return ''
    processing = ((node or {}).get('processing_ms') or {}).get('p50')
    period_ms = planned_wall_seconds / pairs * 1e3
    fusion = f'{processing:.0f} ms' if processing else 'an unknown time'
    return (f'node overloaded: fused {fused} of {pairs} pairs ({fused / pairs:.0%}, below '
            f'{min_share:.0%}); its fusion takes {fusion} per pair (p50) against a frame '
            f'period of {period_ms:.0f} ms: lower --rate, or set model.max_pixels / '
            'model.backend / a GPU')


def platform_info(node=None):
    """CPU, threads, device and backend of this run (as rosbag benchmark tools report)."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {'cpu': cpu, 'cpus': os.cpu_count(), 'usable_cpus': usable,
            'machine': platform.machine(), 'python': platform.python_version()}
    try:
        info['load_average'] = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        pass
    node = node or {}
    for key in ('device', 'backend', 'torch_threads', 'max_pixels', 'ort_providers'):
        if key in node:
            info[key] = node[key]
    return info


def process_cpu_seconds():
    """User + system CPU seconds of this process so far (all threads)."""
    import os

    times = os.times()
    return times.user + times.system


def write_latency_plot(latencies_ms, path, title='', period_ms=None):
    """Histogram and CDF of the latencies (ms) as a PNG, with p50 / p90 / p99 and the frame
    period ``period_ms`` (when given) marked and a legend on each; returns the path or
    None."""
    if not latencies_ms:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    values = np.sort(np.asarray(latencies_ms, np.float64))
    figure, (histogram, cdf) = plt.subplots(1, 2, figsize=(10, 3.6))
    low, high = float(values[0]), float(values[-1])
    if high - low < 1e-3:  # all equal: numpy cannot split a zero range into bins
        low, high = low - 0.5, high + 0.5
    histogram.hist(values, bins=min(50, max(5, values.size // 4)), range=(low, high),
                   color='tab:blue', label='fused frames per bin')
    histogram.set_xlabel('latency (ms)')
    histogram.set_ylabel('fused frames')
    cdf.plot(values, np.arange(1, values.size + 1) / values.size, color='tab:orange',
             label='CDF')
    for q, style in ((50, '--'), (90, '-.'), (99, ':')):
        cdf.axvline(np.percentile(values, q), color='grey', lw=0.9, ls=style, label=f'p{q}')
    if period_ms:
        for axis in (histogram, cdf):
            axis.axvline(period_ms, color='tab:red', lw=1.2, label='frame period')
    cdf.set_xlabel('latency (ms)')
    cdf.set_ylabel('share of fused frames')
    cdf.set_ylim(0, 1.01)
    histogram.legend(fontsize=8)
    cdf.legend(fontsize=8, loc='lower right')
    figure.suptitle(title or 'input published -> fused received')
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return str(path)


def write_fused_share_plot(series, path, min_share=None, title=''):
    """The share of input pairs fused per window (:meth:`PairTracker.fused_share_over_time`)
    as a PNG with a legend, the ``min_share`` threshold marked; returns the path or None."""
    if not series:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    times = [t for t, s in zip(series['t_s'], series['share']) if s is not None]
    shares = [s for s in series['share'] if s is not None]
    figure, axis = plt.subplots(figsize=(10, 3.2))
    axis.bar(times, shares, width=series['window_s'] * 0.9, align='edge', color='tab:blue',
             label=f'fused share per {series["window_s"]:g} s window')
    if min_share:
        axis.axhline(min_share, color='tab:red', lw=1.0, ls='--',
                     label=f'diagnostics.min_fused_share {min_share:g}')
    axis.set_ylim(-0.02, 1.05)
    axis.set_xlabel('RGB stamp time from the first input pair (s)')
    axis.set_ylabel('share of input pairs fused')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='lower left')
    figure.suptitle(title or 'fused share over time')
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return str(path)


class _Progress:
    """A tqdm bar on stderr over the published RGB images (only when enabled)."""

    def __init__(self, enabled, total):
        self._bar = None
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit='rgb', file=sys.stderr, desc='tesg-replay',
                             dynamic_ncols=True, leave=False)

    def update(self, fused):
        if self._bar is not None:
            self._bar.set_postfix_str(f'fused {fused}', refresh=False)
            self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def parse_diagnostic_values(key_values):
    """``[(key, value string), ...]`` of a DiagnosticStatus -> dict with numbers and dicts
    decoded (the node writes dicts as JSON and numbers as text)."""
    values = {}
    for key, text in key_values:
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


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


def _remove_unfinished(out, created):
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


# ---------------------------------------------------------------------------- ROS side
def image_from_cdr(data, msgtype):
    """An rclpy ``sensor_msgs/Image`` from a bag's CDR bytes of ``msgtype``.

    ``sensor_msgs/msg/Image`` is read as it is (``rclpy.serialization.deserialize_message``;
    rosbags and rclpy write the same CDR). ``sensor_msgs/msg/CompressedImage`` is decoded
    (:func:`tesg_ros.sensor.image_codec.compressed_to_numpy`) into an Image of the encoding it
    carries, header kept, as image_transport's republisher would: the node subscribes to raw
    images only.
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from tesg_ros.sensor.image_codec import compressed_to_numpy, numpy_to_image

    if msgtype == bags.IMAGE:
        return deserialize_message(bytes(data), Image)
    if msgtype != bags.COMPRESSED_IMAGE:
        raise ReplayError(f'cannot publish a {msgtype} as sensor_msgs/Image')
    compressed = deserialize_message(bytes(data), CompressedImage)
    pixels, encoding = compressed_to_numpy(compressed)
    return numpy_to_image(pixels, encoding, header=compressed.header, message_class=Image)


def _set_stamp(time_msg, stamp_ns):
    """Set a builtin_interfaces/Time (``sec``, ``nanosec``) to ``stamp_ns``."""
    time_msg.sec, time_msg.nanosec = divmod(int(stamp_ns), NS_PER_S)


class _Graph:
    """The rclpy side: context, replay node (publishers + recorder), optional fusion node."""

    def __init__(self, options, ros_args, overrides, topics):
        import rclpy
        from rclpy.exceptions import ParameterException
        from rclpy.signals import SignalHandlerOptions

        self._rclpy = rclpy
        self.options = options
        self.context = rclpy.Context()
        # Ctrl-C must reach the replay loop as KeyboardInterrupt, not shut the context down
        # under the running threads.
        try:
            rclpy.init(args=['tesg-replay', *ros_args], context=self.context,
                       signal_handler_options=SignalHandlerOptions.NO)
        except Exception as error:  # rclpy raises RCLError on bad --ros-args
            raise ConfigError(f'bad --ros-args {" ".join(ros_args[1:])!r}: {error}') from None
        self.fusion_node = None
        self.executors, self.threads = [], []
        self.node = None
        self.publishers, self.subscriptions, self.callbacks = {}, {}, {}
        self.diagnostics = None
        self.diagnostics_count = 0
        self.diagnostics_period = PARAMETERS_BY_NAME['diagnostics.period'].default
        self.clock_ns = None  # the last /clock published
        try:
            self.node = rclpy.create_node('tesg_replay', context=self.context)
            if overrides is not None:
                from rclpy.parameter import Parameter

                from tesg_ros.fusion_node import FusionNode

                try:
                    self.fusion_node = FusionNode(
                        context=self.context, parameter_overrides=[
                            Parameter(name, value=value) for name, value in overrides.items()])
                except ParameterException as error:  # e.g. -p with the wrong type
                    raise ConfigError(f'fusion node parameters: {error}') from None
            self._build(topics)
        except BaseException:
            self.close()
            raise

    def _build(self, topics):
        """Publishers, recorder subscriptions and one executor thread per node."""
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data,
                               QoSProfile, ReliabilityPolicy)
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=qos_profile_sensor_data.reliability,
                            durability=qos_profile_sensor_data.durability)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.message_classes = {'thermal': Image, 'rgb': Image, 'thermal_info': CameraInfo,
                                'rgb_info': CameraInfo, 'semantics': String}
        for role in topics.by_role():
            qos = latched if role == 'semantics' else sensor
            self.publishers[role] = self.node.create_publisher(
                self.message_classes[role], INPUT_TOPICS[role], qos)
        self.clock_class = Clock
        self.clock_publisher = self.node.create_publisher(Clock, '/clock', QoSProfile(depth=10))
        for topic, msg_class in zip(OUTPUT_TOPICS, (Image, CameraInfo, String)):
            qos = latched if topic == 'semantics' else reliable
            self.subscriptions[topic] = self.node.create_subscription(
                msg_class, topic, lambda msg, topic=topic: self._dispatch(topic, msg), qos)
        if self.fusion_node is None:
            from diagnostic_msgs.msg import DiagnosticArray

            self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                          self._on_diagnostics, 10)
        for node in (self.node, self.fusion_node):
            if node is None:
                continue
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(node)
            thread = threading.Thread(target=executor.spin, name=f'tesg_replay_{node.get_name()}',
                                      daemon=True)
            thread.start()
            self.executors.append(executor)
            self.threads.append(thread)

    def _dispatch(self, topic, msg):
        callback = self.callbacks.get(topic)
        if callback is not None:
            callback(msg)

    def _on_diagnostics(self, array):
        wanted = f'{self.options.node_name.strip("/").rsplit("/", 1)[-1]}: fusion'
        for status in array.status:
            if status.name == wanted:
                self.diagnostics = parse_diagnostic_values((kv.key, kv.value)
                                                           for kv in status.values)
                self.diagnostics_count += 1

    def resolved(self, topic):
        """The absolute name a relative output topic resolves to."""
        return self.subscriptions[topic].topic_name

    def publish_clock(self, bag_ns):
        """Publish ``bag_ns`` (int ns) on /clock."""
        self.clock_ns = bag_ns
        msg = self.clock_class()
        _set_stamp(msg.clock, bag_ns)
        self.clock_publisher.publish(msg)

    def wait_for_subscribers(self, roles, timeout):
        """Wait until a node subscribes to each input topic of ``roles`` and publishes
        ``fused/image`` to the recorder; ReplayError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [INPUT_TOPICS[r] for r in roles
                       if self.publishers[r].get_subscription_count() == 0]
            if not missing and self.subscriptions['fused/image'].get_publisher_count() > 0:
                return
            if time.monotonic() > deadline:
                what = (f'no node subscribes to {", ".join(missing)}' if missing
                        else 'no node publishes fused/image')
                raise ReplayError(
                    f'{what} after {timeout:g} s; start the fusion node (ros2 run tesg_ros '
                    'fusion_node --ros-args -p use_sim_time:=true) in this ROS domain and '
                    'namespace, or drop --external')
            time.sleep(0.05)

    def sync_parameters(self, warnings):
        """``(queue_size, slop, thermal_time_offset)`` of the node (its defaults if unknown)."""
        names = ('sync.queue_size', 'sync.slop', 'thermal.time_offset')
        if self.fusion_node is not None:
            return tuple(self.fusion_node.get_parameter(n).value for n in names)
        defaults = tuple(PARAMETERS_BY_NAME[n].default for n in names)
        values = self._remote_parameters(
            names + ('use_sim_time', 'diagnostics.period', 'semantics.mode'))
        if values is None:
            warnings.append(f'could not read the parameters of {self.options.node_name}; '
                            'expected pairs use the default sync.queue_size, sync.slop, '
                            'thermal.time_offset')
            return defaults
        if isinstance(values.get('diagnostics.period'), float):
            self.diagnostics_period = values['diagnostics.period']
        if self.options.semantics == 'replay' and values.get('semantics.mode') != 'replay':
            warnings.append(f'{self.options.node_name} runs with semantics.mode '
                            f'{values.get("semantics.mode")!r}: it ignores the replayed '
                            'semantics')
        if values.get('use_sim_time') is not True:
            warnings.append(f'{self.options.node_name} does not run with use_sim_time: its '
                            'ages and latency_ms compare wall time with bag stamps')
        return tuple(values.get(n, d) for n, d in zip(names, defaults))

    def _remote_parameters(self, names):
        """``{name: value}`` from the external node's get_parameters service, or None."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        service = f'{self.options.node_name.rstrip("/")}/get_parameters'
        client = self.node.create_client(GetParameters, service)
        try:
            if not client.wait_for_service(timeout_sec=self.options.discovery_timeout):
                return None
            future = client.call_async(GetParameters.Request(names=list(names)))
            deadline = time.monotonic() + self.options.discovery_timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done() or future.result() is None:
                return None
            return {name: parameter_value_to_python(value)
                    for name, value in zip(names, future.result().values)}
        finally:
            self.node.destroy_client(client)

    def fresh_diagnostics(self, clock_ns, timeout=2.0):
        """External node: move ``/clock`` to ``clock_ns`` and wait for its next /diagnostics.

        Its diagnostics timer runs on sim time, so it only fires while ``/clock`` advances.
        Returns False when none came within ``timeout`` wall seconds.
        """
        seen = self.diagnostics_count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish_clock(clock_ns)
            if self.diagnostics_count > seen:
                return True
            time.sleep(0.05)
        return False

    def snapshot(self):
        """The node's diagnostics snapshot (in-process) or the last /diagnostics values."""
        if self.fusion_node is not None:
            return self.fusion_node.diagnostics_snapshot()
        return dict(self.diagnostics) if self.diagnostics else {}

    def close(self):
        """Stop the node's worker, the executors and their threads; shut the context down."""
        if self.fusion_node is not None:
            self.fusion_node.shutdown()
        for executor in self.executors:
            executor.shutdown()
        for thread in self.threads:
            thread.join(timeout=10.0)
        for node in (self.fusion_node, self.node):
            if node is not None:
                node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


class _Extent:
    """Smallest and largest of some stamps (ns) and how many there were."""

    def __init__(self):
        self.low = self.high = None
        self.count = 0

    def add(self, value):
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.count += 1

    @property
    def span(self):
        return 0 if self.low is None else self.high - self.low


class _Replay:
    """One replay run: warm-up, paced publishing, drain, report."""

    def __init__(self, options, bag, topics, graph, out_bag, warnings):
        self.options = options
        self.bag = bag
        self.topics = topics
        self.graph = graph
        self.out_bag = out_bag
        self.warnings = warnings
        self.tracker = None
        self.clock = None
        self.recording = False
        self._lock = threading.Lock()
        self._warmup_stamps = set()
        self._warm_frames = 0
        self._pending_semantics = None
        self._last_fused_wall = None
        self._fused_infos = 0  # fused/camera_info messages recorded
        self._last_clock_wall = -math.inf
        self.published = defaultdict(int)
        self.publish_lag_ms = []
        self.last_bag_ns = None  # scheduled bag time of the last published message
        self.wall_start = self.wall_end = self.last_publish_wall = None
        self.interrupted = False
        self.baseline = {}  # the in-process node's snapshot after the warm-up
        graph.callbacks['fused/image'] = self._on_fused
        graph.callbacks['fused/camera_info'] = self._on_fused_info
        graph.callbacks['semantics'] = self._on_semantics
        self._classes = graph.message_classes

    # ------------------------------------------------------------------ recorder
    def _record(self, topic, msgtype, msg, wall, qos='reliable'):
        from rclpy.serialization import serialize_message

        self.out_bag.write(self.graph.resolved(topic), msgtype, serialize_message(msg),
                           self.clock.bag_time(wall), qos)

    def _on_fused(self, msg):
        wall = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            if stamp in self._warmup_stamps:
                self._warm_frames += 1
                return
            recording = self.recording
        if not recording:
            return
        self.tracker.fused(stamp, wall)
        self._last_fused_wall = wall
        self._record('fused/image', bags.IMAGE, msg, wall)

    def _on_fused_info(self, msg):
        wall = time.monotonic()
        with self._lock:
            if not self.recording or stamp_to_ns(msg.header.stamp) in self._warmup_stamps:
                return
        self._record('fused/camera_info', bags.CAMERA_INFO, msg, wall)
        self._fused_infos += 1

    def _outputs_complete(self):
        """Each recorded fused image has its camera_info (published right after it) here too,
        when the bag feeds the node an RGB CameraInfo."""
        if not self.published.get('rgb_info'):
            return True
        return self._fused_infos >= self.tracker.fused_count

    def _on_semantics(self, msg):
        wall = time.monotonic()
        with self._lock:
            if not self.recording:
                self._pending_semantics = msg  # latched: keep the newest for the start
                return
        self._record('semantics', bags.STRING, msg, wall, 'latched')

    # ------------------------------------------------------------------ messages
    def _first_image(self, role):
        topic = getattr(self.topics, role)
        for _, _, data, msgtype in self.bag.raw_messages(topic):
            return image_from_cdr(data, msgtype)
        raise ReplayError(f'{topic} has no message')

    # ------------------------------------------------------------------ phases
    def warm_up(self):
        """Send pairs stamped before the bag until the node returns a fused frame.

        The first frame pays for model loading and allocation; it must not count as latency.
        """
        options = self.options
        thermal, rgb = self._first_image('thermal'), self._first_image('rgb')
        first = min(stamp_to_ns(thermal.header.stamp), stamp_to_ns(rgb.header.stamp))
        interval = 0.5
        count = max(int(math.ceil(options.warmup_timeout / interval)), 1)
        stamps = warmup_stamps(first, count)
        with self._lock:
            self._warmup_stamps.update(stamps)
        start = time.monotonic()
        for sent, stamp in enumerate(stamps, start=1):
            self.graph.publish_clock(stamp)
            _set_stamp(rgb.header.stamp, stamp)
            _set_stamp(thermal.header.stamp, stamp)
            # RGB first: the pairing emits the pair as soon as the thermal arrives.
            self.graph.publishers['rgb'].publish(rgb)
            time.sleep(0.005)
            self.graph.publishers['thermal'].publish(thermal)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                with self._lock:
                    warmed = self._warm_frames > 0
                if warmed:
                    self._settle_warm_up(sent)
                    return time.monotonic() - start
                time.sleep(0.01)
        mode = ('is the external node running with use_sim_time, and restarted since it last '
                'fused later stamps (it drops stamps that go backwards)?'
                if options.external else 'see the node log above')
        raise ReplayError(f'no fused frame came back within {options.warmup_timeout:g} s of '
                          f'warm-up pairs; {mode}')

    def _settle_warm_up(self, sent):
        """Wait until the ``sent`` warm-up pairs still in flight are fused or dropped, so
        the node's counters after the warm-up (the report's baseline) hold none of them."""
        deadline = time.monotonic() + self.options.warmup_timeout
        if self.graph.fusion_node is not None:
            while time.monotonic() < deadline:
                with self._lock:
                    received = self._warm_frames
                if self._node_settled(received, {}):
                    return
                time.sleep(0.02)
            return
        # External node: its counters are unknown here; all frames back, or 2 s quiet (a
        # busy node may have dropped one).
        quiet_since, seen = time.monotonic(), -1
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0:
            with self._lock:
                received = self._warm_frames
            if received >= sent:
                return
            if received != seen:
                quiet_since, seen = time.monotonic(), received
            time.sleep(0.02)

    def run(self, queue_size, slop, offset):
        """Publish the bag ``--loop`` times at ``--rate``; then wait for the last outputs."""
        options = self.options
        self.tracker = PairTracker(queue_size, slop, offset)
        by_role = self.topics.by_role()
        role_of = {topic: role for role, topic in by_role.items()}
        bag_start = self.bag.start_ns
        self.clock = ReplayClock(bag_start, time.monotonic() + 0.05, options.rate)
        with self._lock:
            self.recording = True
            pending, self._pending_semantics = self._pending_semantics, None
        if pending is not None:
            self._record('semantics', bags.STRING, pending, self.clock.wall_start, 'latched')
        self.wall_start = self.clock.wall_start
        shift_step = 0
        all_stamps, rgb_stamps = _Extent(), _Extent()  # of the first pass
        last_receive = bag_start
        rgb_info = (getattr(self.bag, 'topics', None) or {}).get(by_role.get('rgb'))
        rgb_total = getattr(rgb_info, 'count', None)
        progress = _Progress(
            options.progress if options.progress is not None else sys.stderr.isatty(),
            rgb_total * options.loop if rgb_total else None)
        self._progress = progress
        try:
            for loop in range(options.loop):
                if loop == 1:
                    shift_step = loop_shift_ns(rgb_stamps.span, rgb_stamps.count,
                                               all_stamps.span, last_receive - bag_start)
                shift = loop * shift_step
                for topic, receive_ns, data, msgtype in self.bag.raw_messages(list(role_of)):
                    role = role_of[topic]
                    if role == 'semantics' and loop > 0:
                        continue  # latched: once is enough
                    msg = self._prepare(role, data, msgtype)
                    # A zero stamp stays zero (invalid) in every pass; the node drops it.
                    stamp = 0 if role == 'semantics' else stamp_to_ns(msg.header.stamp)
                    if stamp:
                        if loop == 0:
                            all_stamps.add(stamp)
                            if role == 'rgb':
                                rgb_stamps.add(stamp)
                            last_receive = receive_ns
                        else:
                            _set_stamp(msg.header.stamp, stamp + shift)
                    self._publish_at(role, msg, receive_ns + shift)
            self._drain()
        except bags.BagError as error:
            # A damaged bag ends the replay; what came back so far is still reported.
            self.warnings.append(f'replay stopped early: {error}')
            try:
                self._drain()
            except KeyboardInterrupt:
                self.interrupted = True
        except KeyboardInterrupt:
            self.interrupted = True
        self.wall_end = time.monotonic()
        progress.close()
        with self._lock:
            self.recording = False

    def _prepare(self, role, data, msgtype):
        from rclpy.serialization import deserialize_message

        if role in ('thermal', 'rgb'):
            return image_from_cdr(data, msgtype)
        msg = deserialize_message(bytes(data), self._classes[role])
        if role == 'semantics':
            msg.data = semantics_for_node(msg.data, self.topics.semantics)[0]
        return msg

    def _publish_at(self, role, msg, bag_ns):
        target = self.clock.wall_time(bag_ns)
        while True:
            now = time.monotonic()
            if now >= target:
                break
            if now - self._last_clock_wall >= CLOCK_PERIOD_S:
                self.graph.publish_clock(self.clock.bag_time(now))
                self._last_clock_wall = now
            time.sleep(max(min(target - now, self._last_clock_wall + CLOCK_PERIOD_S - now),
                           0.0))
        self.graph.publish_clock(bag_ns)
        now = time.monotonic()
        self._last_clock_wall = now
        self.publish_lag_ms.append((now - target) * 1e3)
        if role in ('thermal', 'rgb'):
            self.tracker.published(role, stamp_to_ns(msg.header.stamp), now)
        self.graph.publishers[role].publish(msg)
        self.published[role] += 1
        self.last_bag_ns, self.last_publish_wall = bag_ns, now
        if role == 'rgb' and getattr(self, '_progress', None) is not None:
            self._progress.update(self.tracker.fused_count)

    def _drain(self):
        """Keep /clock running until the last pairs came back or the node went quiet."""
        quiet = self.options.drain_timeout
        end = time.monotonic()
        while True:
            now = time.monotonic()
            complete = self._outputs_complete()
            if complete and self.tracker.all_matched():
                break
            last = max(end, self._last_fused_wall or end)
            if now - last > quiet:
                break
            if (complete and self.graph.fusion_node is not None and now - end > 0.2
                    and self._node_settled(self.tracker.fused_count, self.baseline)):
                break
            self.graph.publish_clock(self.clock.bag_time(now))
            time.sleep(CLOCK_PERIOD_S)

    def _node_settled(self, received, baseline):
        """In-process node: it received every image published since ``baseline`` (its
        snapshot then), published or dropped every pair it formed, and the frames it
        published since then all arrived here (``received``)."""
        snapshot = self.graph.fusion_node.diagnostics_snapshot()

        def since(key):
            return snapshot[key] - baseline.get(key, 0)

        if baseline and any(since(f'{role}_received') < self.published[role]
                            for role in ('thermal', 'rgb')):
            return False  # still in DDS (or lost: then the quiet timeout ends the wait)
        settled = snapshot['published'] + sum(
            snapshot[k] for k in ('dropped_busy', 'dropped_late', 'dropped_stale',
                                  'dropped_out_of_order', 'dropped_bad_input', 'dropped_error'))
        return settled >= snapshot['pairs'] and received >= since('published')


# ---------------------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        prog='tesg-replay',
        description='Replay a rosbag live (with /clock) through the fusion node, record the '
                    'fused output and report latency and drops. Arguments after --ros-args '
                    'go to rclpy (e.g. -p model.device:=cpu, --params-file FILE).')
    parser.add_argument('bag', help='rosbag2 directory, .mcap or .db3 file')
    parser.add_argument('--out', default=None,
                        help='new or empty folder for the fused bag and the report '
                             '(default: <bag>_replay_<date-time>)')
    parser.add_argument('--storage', choices=bags.STORAGES, default='mcap',
                        help='storage of the output bag (default mcap)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='replay speed factor: 2 plays twice as fast (default 1)')
    parser.add_argument('--loop', type=int, default=1,
                        help='play the bag N times; later passes are shifted in time')
    parser.add_argument('--thermal-topic', default=None, help='default: detected')
    parser.add_argument('--rgb-topic', default=None, help='default: detected')
    parser.add_argument('--thermal-info-topic', default=None,
                        help='default: camera_info beside the thermal image topic')
    parser.add_argument('--rgb-info-topic', default=None,
                        help='default: camera_info beside the RGB image topic')
    parser.add_argument('--no-camera-info', action='store_true',
                        help='do not replay CameraInfo topics')
    parser.add_argument('--semantics', choices=SEMANTICS_MODES, default=None,
                        help='semantics.mode of the in-process node; replay also publishes '
                             "the bag's recorded semantics (latched) on 'semantics'")
    parser.add_argument('--semantics-topic', default=None,
                        help='recorded semantics topic (default: the String topic named '
                             '.../semantics)')
    parser.add_argument('--weights', default=None, help='model.weights of the in-process node')
    parser.add_argument('--params-file', default=None,
                        help='ROS 2 parameters YAML for the in-process node')
    parser.add_argument('--set', dest='set_values', action='append', default=[],
                        metavar='NAME=VALUE', help='a node parameter (repeatable)')
    parser.add_argument('--external', action='store_true',
                        help='replay into an already running fusion node (only publish and '
                             'record)')
    parser.add_argument('--node-name', default='/' + NODE_NAME,
                        help=f'the external node, for its parameters and diagnostics '
                             f'(default /{NODE_NAME})')
    parser.add_argument('--progress', dest='progress', action='store_true', default=None,
                        help='progress bar on stderr (default: when stderr is a terminal)')
    parser.add_argument('--no-progress', dest='progress', action='store_false')
    parser.add_argument('--no-warmup', action='store_true',
                        help='start at once instead of waiting for a first fused frame')
    parser.add_argument('--warmup-timeout', type=float, default=60.0,
                        help='seconds to wait for the first fused frame (default 60)')
    parser.add_argument('--drain-timeout', type=float, default=3.0,
                        help='after the bag, stop when no fused frame came for this long '
                             '(default 3 s)')
    parser.add_argument('--discovery-timeout', type=float, default=10.0,
                        help='seconds to wait for the subscriptions of the node (default 10)')
    return parser


def _check_options(options, parser):
    if not options.rate > 0 or not math.isfinite(options.rate):
        parser.error(f'--rate must be a positive number, got {options.rate}')
    if options.loop < 1:
        parser.error(f'--loop must be >= 1, got {options.loop}')
    for name in ('warmup_timeout', 'drain_timeout', 'discovery_timeout'):
        if not getattr(options, name) > 0:
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if options.external:
        own = [flag for flag, value in (('--weights', options.weights),
                                        ('--params-file', options.params_file),
                                        ('--set', options.set_values)) if value]
        if options.semantics not in (None, 'replay'):
            own.append(f'--semantics {options.semantics}')
        if own:
            parser.error(f'{", ".join(own)} configure the in-process node; with --external '
                         'set them on the running node')


def replay(options, ros_args=(), command=''):
    """Run a replay for parsed ``options``; returns ``(report dict, exit status)``.

    Raises TesgError (bags.BagError, ConfigError, ReplayError) on bad input before or during
    the set-up; a Ctrl-C during the replay stops it and still writes the report.
    """
    overrides = None
    if not options.external:
        overrides = node_overrides(options.weights, options.semantics, options.set_values,
                                   options.params_file)
    ros_args = list(ros_args)
    if options.params_file:
        # First, so that -p after --ros-args overrides the file (rcl: later rules win).
        ros_args = ['--ros-args', '--params-file', str(options.params_file)] + ros_args
    with bags.open_bag(options.bag) as bag:
        if bag.damage:
            print(f'tesg-replay: warning: {bag.damage}; replaying what is readable',
                  file=sys.stderr)
        topics = plan_topics(
            bag, options.thermal_topic, options.rgb_topic, options.thermal_info_topic,
            options.rgb_info_topic, not options.no_camera_info, options.semantics_topic,
            options.semantics == 'replay')
        warnings = [f'bag damaged: {bag.damage}'] if bag.damage else []
        if topics.semantics is not None:
            converted = sum(semantics_for_node(msg.data, topics.semantics)[1]
                            for _, _, msg in bag.messages(topics.semantics))
            if converted:
                warnings.append(f'{converted} recorded semantics message(s) on '
                                f'{topics.semantics} are not JSON as the node writes it; '
                                'published as JSON with the text as description (as tesg-eval '
                                'reads them)')
        out, created = prepare_out_dir(options.out or default_out_dir(options.bag))
        try:
            graph = _Graph(options, ros_args, overrides, topics)
        except BaseException:
            _remove_unfinished(out, created)
            raise
        out_bag = None
        finished = False
        try:
            out_bag = OutputBag(out / OUTPUT_BAG, options.storage)
            runner = _Replay(options, bag, topics, graph, out_bag, warnings)
            report = _run(options, bag, topics, graph, runner, warnings)
            finished = True
        finally:
            try:
                graph.close()  # first: no callback may queue into a finished bag
            finally:
                if out_bag is not None:
                    out_bag.close()
                if not finished:
                    _remove_unfinished(out, created)
    report.update(command=command, bag=str(options.bag), output_bag=str(out / OUTPUT_BAG),
                  storage=options.storage,
                  recorded={topic: count for topic, count in sorted(out_bag.counts.items())})
    name = Path(str(options.bag)).name
    try:
        report['latency_plot'] = write_latency_plot(
            runner.tracker.latencies_ms(), out / 'latency.png',
            f'{name}: input published -> fused received', report.get('frame_period_ms'))
    except Exception as error:  # noqa: BLE001 - a missing plot must not lose the report
        report['warnings'].append(f'latency plot not written: {error}')
    try:
        report['fused_share_plot'] = write_fused_share_plot(
            report.get('fused_share_over_time'), out / 'fused_share.png',
            report.get('min_fused_share'), f'{name}: share of input pairs fused')
    except Exception as error:  # noqa: BLE001 - a missing plot must not lose the report
        report['warnings'].append(f'fused share plot not written: {error}')
    json_path, markdown_path = write_report(report, out)
    report['report_files'] = [str(json_path), str(markdown_path)]
    status = EXIT_OK
    if runner.interrupted:
        status = EXIT_INTERRUPTED
    elif report['result']['fused_received'] == 0:
        status = EXIT_NO_OUTPUT
    return report, status


def _run(options, bag, topics, graph, runner, warnings):
    roles = [r for r in ('thermal', 'rgb') if r in graph.publishers]
    interrupted_early = False
    warmup_s = None
    queue_size, slop, offset = PARAMETERS_BY_NAME['sync.queue_size'].default, \
        PARAMETERS_BY_NAME['sync.slop'].default, PARAMETERS_BY_NAME['thermal.time_offset'].default
    baseline = {}
    try:
        graph.wait_for_subscribers(roles, options.discovery_timeout)
        queue_size, slop, offset = graph.sync_parameters(warnings)
        if not options.no_warmup:
            warmup_s = runner.warm_up()
        if options.external:
            period_ns = int(graph.diagnostics_period * NS_PER_S)
            now_ns = bag.start_ns if graph.clock_ns is None else graph.clock_ns
            if not graph.fresh_diagnostics(min(now_ns + period_ns, bag.start_ns)):
                warnings.append('no /diagnostics from the node before the replay: its '
                                'counters are reported since it started')
        baseline = graph.snapshot()
        runner.baseline = baseline
    except KeyboardInterrupt:
        interrupted_early = True
    cpu_start = process_cpu_seconds()
    if interrupted_early:
        runner.interrupted = True
        runner.tracker = PairTracker(queue_size, slop, offset)
        runner.wall_start = runner.wall_end = time.monotonic()
        runner.clock = ReplayClock(bag.start_ns, runner.wall_start, options.rate)
    else:
        runner.run(queue_size, slop, offset)
        if options.external and not runner.interrupted:
            period_ns = int(graph.diagnostics_period * NS_PER_S)
            try:
                if not graph.fresh_diagnostics(graph.clock_ns + period_ns):
                    warnings.append('no /diagnostics from the node after the replay: its '
                                    'numbers may miss the end')
            except KeyboardInterrupt:
                runner.interrupted = True
    cpu_seconds = process_cpu_seconds() - cpu_start
    snapshot = graph.snapshot()
    # Bag time covered by what was published (later passes include their shift).
    bag_seconds = 0.0
    publish_wall = 0.0
    if runner.last_bag_ns is not None:
        bag_seconds = (runner.last_bag_ns - bag.start_ns) / NS_PER_S
        publish_wall = runner.last_publish_wall - runner.wall_start
    node = node_report(snapshot, baseline) if snapshot else None
    result = runner.tracker.summary()
    wall = runner.wall_end - runner.wall_start
    min_share = _min_fused_share(options)
    overload = overload_warning(result, node, bag_seconds / options.rate, min_share)
    if overload:
        warnings.append(overload)
    pairs = result['input_pairs']
    return {
        'verdict': replay_verdict(result, node, bag_seconds / options.rate, options.rate,
                                  min_share),
        'frame_period_ms': bag_seconds / options.rate / pairs * 1e3 if pairs else None,
        'min_fused_share': min_share,
        'fused_share_over_time': runner.tracker.fused_share_over_time(),
        'platform': platform_info(node),
        'process_cpu': None if options.external else {
            'covers': 'the in-process node and the replay publisher', 'seconds':
            round(cpu_seconds, 2), 'wall_seconds': round(wall, 2),
            'cores': round(cpu_seconds / wall, 2) if wall > 0 else None},
        'mode': 'external' if options.external else 'in-process',
        'node_name': options.node_name if options.external else '/' + NODE_NAME,
        'rate': options.rate,
        'loops': options.loop,
        'interrupted': runner.interrupted,
        'topics': {role: {'bag': topic, 'published_on': INPUT_TOPICS[role]}
                   for role, topic in topics.by_role().items()},
        'sync': {'queue_size': queue_size, 'slop': slop, 'thermal_time_offset': offset},
        'warmup_seconds': warmup_s,
        'bag_seconds': bag_seconds,
        'planned_wall_seconds': bag_seconds / options.rate,
        'publish_wall_seconds': publish_wall,
        'wall_seconds': runner.wall_end - runner.wall_start,
        'published': dict(runner.published),
        'publish_lag_ms': counted_percentiles(runner.publish_lag_ms),
        'result': result,
        'node': node,
        'warnings': warnings,
    }


def _min_fused_share(options):
    """diagnostics.min_fused_share as the in-process node gets it (else the default)."""
    values = parse_set_values(getattr(options, 'set_values', None) or [])
    return values.get('diagnostics.min_fused_share',
                      PARAMETERS_BY_NAME['diagnostics.min_fused_share'].default)


def main(argv=None):
    """Console script ``tesg-replay``; returns 0 (ok), 1 (no fused frame), 2 (error) or 130
    (interrupted; the report is still written)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    own, ros_args = split_ros_args(argv)
    parser = build_parser()
    options = parser.parse_args(own)
    _check_options(options, parser)
    command = 'tesg-replay ' + ' '.join(argv)
    try:
        report, status = replay(options, ros_args, command)
    except TesgError as error:
        print(f'tesg-replay: error: {error}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print('tesg-replay: interrupted (before the report was written)', file=sys.stderr)
        return EXIT_INTERRUPTED
    result = report['result']
    drop = result['drop_rate']
    latency = result['latency_ms']
    print(f'tesg-replay: {report["published"].get("rgb", 0)} RGB + '
          f'{report["published"].get("thermal", 0)} thermal images published, '
          f'{result["input_pairs"]} input pairs, {result["fused_received"]} fused frames, '
          f'drop rate {"n/a" if drop is None else f"{drop:.1%}"}'
          + (f', latency p50 {latency["p50"]:.1f} / p90 {latency["p90"]:.1f} / p99 '
             f'{latency["p99"]:.1f} ms' if latency['count'] else '')
          + (' (interrupted)' if report['interrupted'] else ''))
    print(f'tesg-replay: fused output bag: {report["output_bag"]}')
    print(f'tesg-replay: report: {report["report_files"][0]} and {report["report_files"][1]}')
    return status


if __name__ == '__main__':
    sys.exit(main())
