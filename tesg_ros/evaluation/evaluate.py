# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Replay a rosbag2 through the fusion pipeline offline and score every fused frame.

The bag is read in receive-time order (:mod:`tesg_ros.bags`), thermal and RGB images are
paired by the node's own :class:`~tesg_ros.sensor.pairing.ApproximateTimePairingPolicy` (so the
offline pairs are the live ones) and each pair is fused by a
:class:`~tesg_ros.engine.FusionEngine` built from the node's parameters. Nothing depends on
thread timing, the semantics (``replay``, ``live`` or ``disabled``, :mod:`.semantics`)
included.

Every fused frame (the RGB camera's registered, cropped grid) is scored with
:func:`tesg_ros.metrics.evaluate` next to three baselines on the same grid: the registered IR
image, the registered visible image and their pixel average. All images are 8-bit: ``ir`` is
the normalised registered thermal image rounded to uint8, ``visible`` the registered RGB image.
The output bag gets the fused image and CameraInfo with the RGB header, as the node publishes
them; an optional detector (:mod:`tesg_ros.detection`) runs on the model output and on every
baseline.

Problems (a damaged bag, undecodable frames, a topic that is missing, streams that never pair)
are collected as sentences in :class:`EvaluationResult`; only a bad argument or an unusable
output directory raises (a :class:`~tesg_ros.errors.TesgError`).
"""

from dataclasses import dataclass, field, fields
import importlib.metadata
import logging
import platform
import time
import traceback
from pathlib import Path

import numpy as np

from tesg_ros import bags, metrics, node_params
from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.evaluation.common import (  # noqa: F401 - re-exported by the package
    BASELINES, LOWER_IS_BETTER, METHOD_TITLES, METHODS, SCENE_CHANGE_LEVELS, STAGES)
from tesg_ros.evaluation.detections import DetectionRun, FrameLabels, make_detector
from tesg_ros.evaluation.semantics import (
    choose_semantics, EvaluationSemantics, semantics_mode, SEMANTICS_MODES)
from tesg_ros.paths import file_sha256
from tesg_ros.sensor.pairing import (ApproximateTimePairingPolicy, message_stamp_ns, RGB,
                                     seconds_to_ns, stamp_to_ns, THERMAL)
from tesg_ros.stats import percentiles_or_nan

FUSED_TOPIC = '/fused/image'
FUSED_INFO_TOPIC = '/fused/camera_info'
REGISTERED_TOPIC = '/fused/thermal_registered'
_VERSIONED_PACKAGES = ('torch', 'numpy', 'opencv-python-headless', 'scipy', 'rosbags',
                       'transformers', 'matplotlib', 'safetensors')
# Longest side of a montage tile kept for the report (memory stays bounded on long bags).
_THUMBNAIL_SIDE = 320

_LOG = logging.getLogger(__name__)
_DROP_TEXT = {
    'thermal_bad_encoding': 'pair(s) dropped: the thermal image could not be decoded',
    'rgb_bad_encoding': 'pair(s) dropped: the RGB image could not be decoded',
    'bad_stamp': 'image message(s) skipped: no usable header stamp',
    'fusion_error': 'pair(s) dropped: the engine refused them',
    'out_of_order': 'pair(s) dropped: RGB stamp not after the previous fused frame',
    'unscorable': 'frame(s) fused but not scored: the metrics refused the images',
}


@dataclass
class EvaluationOptions:
    """Options of :func:`evaluate_bag` (the ``tesg-eval`` flags of the same names).

    thermal_topic, rgb_topic: image topics; None = :func:`tesg_ros.bags.detect_image_topics`.
    semantics: 'replay', 'live', 'disabled' (the node's ``semantics.mode`` values) or
    None (replay when the bag has a semantics topic, else live; ``semantics.mode`` from the
    parameters counts as a choice).
    semantics_topic: std_msgs/String topic to replay; None = the one topic named
    ``.../semantics``.
    semantics_every: live mode, describe every N pairs; None = every ``semantics.period``
    seconds of RGB stamps.
    params_file: ROS 2 parameters YAML of the node; overrides: ``{name: value}`` on top of it.
    weights: safetensors file; None = ``model.weights`` (empty: the shipped model).
    out_storage: 'mcap' / 'sqlite3' for the output bag; None = the input's storage.
    write_registered: also write the registered thermal image (mono8) to
    :data:`REGISTERED_TOPIC`. copy_inputs: copy the thermal, RGB (and semantics) topics
    unchanged into the output bag.
    max_frames: stop after this many fused frames (None = all).
    convention: metric convention of :func:`tesg_ros.metrics.evaluate` ('common' or 'vifb').
    score_every: compute the metrics on every N-th fused frame only (0, N, 2N, ...; the
    metrics cost more than the fusion on large images); every frame is still fused and
    written.
    montage_frames: frames shown as IR | visible | fused | average in the report.
    detector: None, 'hog' (OpenCV people detector) or a local transformers detection model
    directory, run on the model output and on every baseline (:mod:`tesg_ros.detection`).
    detector_threshold / detector_device / detector_trust_remote_code: settings of a
    transformers detector (score threshold, torch device, run code shipped in its directory).
    labels: ground truth for the detector: a COCO JSON file or a YOLO label directory; a
    frame is the image named by its RGB stamp in ns (``<stamp>.png`` / ``<stamp>.txt``) in
    the fused (registered, cropped) pixel grid. Unlabelled frames are not scored for AP.
    progress: show a tqdm progress bar on stderr. command_line: recorded in the report.
    """

    thermal_topic: str = None
    rgb_topic: str = None
    semantics: str = None
    semantics_topic: str = None
    semantics_every: int = None
    params_file: str = None
    overrides: dict = field(default_factory=dict)
    weights: str = None
    out_storage: str = None
    write_registered: bool = False
    copy_inputs: bool = True
    max_frames: int = None
    convention: str = 'common'
    score_every: int = 1
    montage_frames: int = 4
    detector: str = None
    detector_threshold: float = 0.5
    detector_device: str = 'cpu'
    detector_trust_remote_code: bool = False
    labels: str = None
    progress: bool = False
    command_line: str = ''

    def __post_init__(self):
        self.semantics = semantics_mode(self.semantics)
        if self.semantics is not None and self.semantics not in SEMANTICS_MODES:
            raise ConfigError(f'semantics must be one of {SEMANTICS_MODES}, '
                              f'got {self.semantics!r}')
        if self.out_storage is not None and self.out_storage not in bags.STORAGES:
            raise ConfigError(f'out_storage must be one of {bags.STORAGES}, '
                              f'got {self.out_storage!r}')
        if self.convention not in metrics.CONVENTIONS:
            raise ConfigError(f'convention must be one of {metrics.CONVENTIONS}, '
                              f'got {self.convention!r}')
        for name, minimum in (('semantics_every', 1), ('max_frames', 1),
                              ('montage_frames', 0), ('score_every', 1)):
            value = getattr(self, name)
            if value is None and name in ('semantics_every', 'max_frames'):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f'{name} must be an integer >= {minimum}, got {value!r}')
        if self.labels is not None and self.detector is None:
            raise ConfigError('labels need a detector (--detector hog or a model directory)')
        if not isinstance(self.overrides, dict):
            raise ConfigError(f'overrides must be a dict of parameter values, '
                              f'got {type(self.overrides).__name__}')


@dataclass
class FrameRecord:
    """One fused pair: stamps (int ns), ``metrics[method][name]`` (float, NaN if unscorable;
    ``metrics`` is None for a frame skipped by ``score_every``), stage ``timings_ms`` of the
    engine, the semantics description used (None when off); ``time_s``: receive time of the
    pair's later message from the bag start; ``scene_diff``: mean absolute grey-level
    difference to the previous frame's visible image (64 x 64 thumbnails; None for the
    first), ``scene_change`` when it exceeds :data:`SCENE_CHANGE_LEVELS`."""

    index: int
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    pair_dt_ns: int
    metrics: dict
    timings_ms: dict
    description: str = None
    time_s: float = None
    scene_diff: float = None
    scene_change: bool = False


@dataclass
class EvaluationResult:
    """What :func:`evaluate_bag` did; ``status`` is 'complete', 'partial' or 'failed'.

    topics: every topic of the bag ``{name: {'type', 'count'}}``; image_topics: the thermal
    and RGB topics used and their encodings. frames: :class:`FrameRecord` per fused pair, in
    order. summary: ``{method: {metric: {'mean', 'std', 'count'}}}`` over frames (NaN values
    left out). timings:
    ``{stage: {'p50', 'p90', 'max', 'mean'}}`` in ms. pairing: the policy's counters plus
    the evaluator's own drops. problems: sentences on what went wrong (status 'partial');
    error: why nothing was evaluated (status 'failed'); notes: information for the report.
    montage: ``[(frame index, {'ir', 'visible', 'fused', 'average'}: RGB uint8 thumbnails,
    'masks': (C, h, w) uint8 semantic masks on the thumbnail grid or None, 'phrases': the
    phrases of the description in force, 'boxes': with a detector ``{method:
    [Detection]}`` in thumbnail pixels, else None})]``. bag_start_ns: receive time of the
    bag's first message (frame times count from it).
    detection: with a detector, ``{'detector', 'labels', 'labelled_frames', 'table'}`` where
    table is :func:`tesg_ros.detection.score_variants` over :data:`METHODS` (per-frame rows
    left out).
    files: ``{name: Path}`` of everything written.
    """

    bag_path: Path
    out_dir: Path
    options: EvaluationOptions
    topics: dict = field(default_factory=dict)
    image_topics: dict = field(default_factory=dict)
    bag_storage: str = None
    bag_start_ns: int = None
    semantics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    pairing: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    error: str = None
    montage: list = field(default_factory=list)
    detection: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    files: dict = field(default_factory=dict)

    @property
    def status(self):
        if not self.frames:
            return 'failed'
        return 'partial' if self.problems else 'complete'

    @property
    def exit_code(self):
        """Process exit status: 0 when at least one frame was evaluated, else 1."""
        return 0 if self.frames else 1

    @property
    def report_path(self):
        """The HTML report (None before it is written)."""
        return self.files.get('report_html')

    def fail(self, message):
        self.error = str(message)


def package_versions():
    """``{name: version}`` of Python, tesg_ros and the libraries the results depend on."""
    from tesg_ros import __version__

    versions = {'python': platform.python_version(), 'tesg_ros': __version__,
                'platform': platform.platform()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = 'not installed'
    return versions


def resolve_params(params_file=None, overrides=None):
    """Node parameters: defaults, then ``params_file``, then ``overrides``.

    Returns ``(params, explicit)``: the full dict and the names given explicitly (validated
    against :mod:`tesg_ros.node_params`; a bad name or value raises ConfigError).
    """
    params = node_params.defaults()
    explicit = {}
    if params_file:
        if not Path(params_file).is_file():
            raise ConfigError(f'params file {params_file} does not exist')
        explicit.update(node_params.load_params_file(params_file))
    if overrides:
        explicit.update(node_params.validate_overrides(dict(overrides)))
    params.update(explicit)
    return params, explicit


def _prepare_out_dir(out_dir):
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f'output directory {out_dir} exists and is not empty; results are '
                          'never overwritten: choose a new --out')
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f'cannot create output directory {out_dir}: {error}') from None
    return out_dir


def to_uint8(values):
    """Round float values in [0, 255] to uint8 (clipping guards rounding at the ends)."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def baseline_images(ir8, visible_rgb):
    """The baselines on the registered grid: ``{'ir', 'visible', 'average'}``.

    ir8: (H, W) uint8 registered thermal; visible_rgb: (H, W, 3) uint8 RGB. 'average' is the
    per-pixel mean of the IR image (in all three channels) and the visible image, rounded to
    uint8 (H, W, 3).
    """
    average = (ir8[..., None].astype(np.float32) + visible_rgb.astype(np.float32)) / 2.0
    return {'ir': ir8, 'visible': visible_rgb, 'average': to_uint8(average)}


def score_frame(ir8, visible_rgb, fused_rgb, convention='common'):
    """``{method: {metric: float}}`` for the model output and the baselines of one frame.

    ir8 (H, W) uint8, visible_rgb and fused_rgb (H, W, 3) uint8 RGB, all on one grid.
    """
    candidates = {'model': fused_rgb, **baseline_images(ir8, visible_rgb)}
    return {method: metrics.evaluate(ir8, visible_rgb, image, convention=convention)
            for method, image in candidates.items()}


def summarise_metrics(frames):
    """``{method: {metric: {'mean', 'std', 'count'}}}``; population std; NaN values and
    unscored frames skipped."""
    summary = {}
    for method in METHODS:
        per_metric = {}
        for name in metrics.METRIC_NAMES:
            values = np.array([frame.metrics[method][name] for frame in frames
                               if frame.metrics], dtype=np.float64)
            values = values[np.isfinite(values)]
            per_metric[name] = {
                'mean': float(values.mean()) if values.size else float('nan'),
                'std': float(values.std()) if values.size else float('nan'),
                'count': int(values.size)}
        summary[method] = per_metric
    return summary


class _FrameSampler:
    """Keep about ``count`` evenly spaced frames of a stream of unknown length.

    Frames whose index is a multiple of ``stride`` are kept; when more than ``2 * count``
    are held, every other one is dropped and the stride doubles (memory stays bounded).
    """

    def __init__(self, count):
        self.count = count
        self.stride = 1
        self.kept = []

    def wants(self, index):
        return self.count > 0 and index % self.stride == 0

    def add(self, index, images):
        self.kept.append((index, images))
        if len(self.kept) > 2 * self.count:
            self.kept = self.kept[::2]
            self.stride *= 2

    def selection(self):
        if len(self.kept) <= self.count:
            return list(self.kept)
        positions = np.linspace(0, len(self.kept) - 1, self.count).round().astype(int)
        return [self.kept[p] for p in positions]


def _thumbnail(image):
    import cv2

    height, width = image.shape[:2]
    scale = _THUMBNAIL_SIDE / max(height, width)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _mask_thumbnails(masks, size):
    """(C, H, W) float masks in [0, 1] -> (C, h, w) uint8 on the thumbnail grid; None when
    there are none or all are zero (semantics off)."""
    import cv2

    if masks is None or len(masks) == 0 or not np.any(masks):
        return None
    height, width = size
    return np.stack([to_uint8(cv2.resize(np.asarray(mask, np.float32), (width, height),
                                         interpolation=cv2.INTER_AREA) * 255.0)
                     for mask in masks])


def _scaled(found, scale):
    """A Detection with its box scaled (thumbnail pixels)."""
    from dataclasses import replace

    return replace(found, box_xyxy=tuple(float(v) * scale for v in found.box_xyxy))


def _nearest_gap_s(thermal_stamps, rgb_stamps, offset_ns):
    """Smallest |thermal + offset - rgb| over all stamps, seconds (None if a list is empty)."""
    if not thermal_stamps or not rgb_stamps:
        return None
    rgb = np.sort(np.asarray(rgb_stamps, dtype=np.int64))
    thermal = np.asarray(thermal_stamps, dtype=np.int64) + offset_ns
    after = np.clip(np.searchsorted(rgb, thermal), 0, len(rgb) - 1)
    before = np.clip(after - 1, 0, len(rgb) - 1)
    gap = np.minimum(np.abs(rgb[after] - thermal), np.abs(rgb[before] - thermal))
    return float(gap.min()) / bags.NS_PER_S


def rgb_camera_info_topic(bag, rgb_topic):
    """The CameraInfo topic beside ``rgb_topic`` (image_transport layout: ``<ns>/image[/
    compressed]`` -> ``<ns>/camera_info``), or None when the bag has none."""
    base = rgb_topic[:-len('/compressed')] if rgb_topic.endswith('/compressed') else rgb_topic
    candidate = base.rsplit('/', 1)[0] + '/camera_info'
    info = bag.topics.get(candidate)
    if info is not None and info.msgtype == bags.CAMERA_INFO and info.count:
        return candidate
    return None


class _Evaluation:
    """One evaluation run; :meth:`run` fills an :class:`EvaluationResult`."""

    def __init__(self, bag_path, out_dir, options):
        self.options = options
        self.result = EvaluationResult(Path(bag_path), Path(out_dir), options)
        self.engine = None
        self.writer = None
        self.semantics = None  # EvaluationSemantics, once the bag is open
        self.sampler = _FrameSampler(options.montage_frames)
        self.drops = {'thermal_bad_encoding': 0, 'rgb_bad_encoding': 0, 'bad_stamp': 0,
                      'fusion_error': 0, 'out_of_order': 0, 'unscorable': 0}
        self.first_errors = {}
        self.stamps = ([], [])
        self.last_rgb_stamp = None
        self.detection = DetectionRun(None)
        self.rgb_info_topic = None
        self.rgb_info = None

    # ------------------------------------------------------------------ set-up
    def run(self):
        result = self.result
        start = time.perf_counter()
        result.versions = package_versions()
        try:
            bag = bags.open_bag(result.bag_path)
        except bags.BagError as error:
            result.fail(f'cannot read the bag: {error}')
        else:
            with bag:
                self._run_bag(bag)
        result.elapsed_s = time.perf_counter() - start
        return result

    def _run_bag(self, bag):
        result, options = self.result, self.options
        result.bag_storage = bag.storage
        result.bag_start_ns = bag.start_ns
        result.topics = {name: {'type': info.msgtype, 'count': info.count}
                         for name, info in bag.topics.items()}
        if bag.damage:
            result.problems.append(f'the bag is damaged ({bag.damage}); only the messages '
                                   'before the damage were evaluated')
        try:
            topics = bags.detect_image_topics(bag, options.thermal_topic, options.rgb_topic)
            params, explicit = resolve_params(options.params_file, options.overrides)
            mode, semantics_topic = choose_semantics(bag, options, explicit)
            weights = self._weights_path(params)
            self.detection = DetectionRun(
                make_detector(options.detector, options.detector_threshold,
                              options.detector_device, options.detector_trust_remote_code),
                FrameLabels(options.labels) if options.labels else None, options.detector)
        except TesgError as error:
            result.fail(str(error))
            return
        self.topics = topics
        result.image_topics = topics._asdict()
        self.params = params
        result.params = params
        result.weights = {'path': str(weights), 'sha256': file_sha256(weights)}
        self.semantics = EvaluationSemantics(mode, semantics_topic, params,
                                             options.semantics_every)
        result.semantics = self.semantics.settings()
        self.policy = ApproximateTimePairingPolicy(
            params['sync.queue_size'], params['sync.slop'], params['thermal.time_offset'])
        self._replay(bag, topics)
        self._finish(bag)

    def _weights_path(self, params):
        from tesg_ros.paths import DEFAULT_WEIGHTS, share_path

        weights = self.options.weights or params['model.weights']
        if not weights:
            try:
                weights = str(share_path(*DEFAULT_WEIGHTS))
            except FileNotFoundError as error:
                raise ConfigError(f'cannot locate the default weights: {error}') from None
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f'model weights {path} do not exist; pass --weights FILE (a '
                              '.safetensors fusion-net checkpoint)')
        params['model.weights'] = str(path)
        return path

    def _build_engine(self):
        from tesg_ros.engine import EngineSettings, FusionEngine

        engine_params = dict(self.params)
        # Synchronous live semantics drive the engine's replay path: no background thread.
        mode = self.semantics.mode
        engine_params['semantics.mode'] = 'disabled' if mode == 'disabled' else 'replay'
        engine = FusionEngine(EngineSettings.from_params(engine_params), logger=_LOG)
        self.result.engine = {'device': str(engine.device), 'dtype': engine.dtype_name,
                              'weights': engine.weights_path or self.params['model.weights'],
                              'semantics_generator': engine.sig is not None}
        self.semantics.start(engine)
        return engine

    # ------------------------------------------------------------------ replay loop
    def _replay(self, bag, topics):
        result, options = self.result, self.options
        wanted = [topics.thermal, topics.rgb]
        if self.semantics.topic:
            wanted.append(self.semantics.topic)
        self.rgb_info_topic = rgb_camera_info_topic(bag, topics.rgb)
        if self.rgb_info_topic:
            wanted.append(self.rgb_info_topic)
        storage = options.out_storage or bag.storage
        bag_dir = result.out_dir / 'fused_bag'
        expected = min(bag.topics[topics.thermal].count, bag.topics[topics.rgb].count)
        if options.max_frames:
            expected = min(expected, options.max_frames)
        from tqdm import tqdm

        try:
            with bags.BagWriter(bag_dir, storage) as writer, tqdm(
                    total=expected, unit='pair', desc='tesg-eval',
                    disable=not options.progress) as progress:
                self.writer = writer
                self.progress = progress
                self._register_topics(writer, bag, wanted)
                self._loop(bag, topics, wanted)
        except bags.BagError as error:
            result.problems.append(f'writing the output bag failed: {error}')
        result.files['bag'] = bag_dir
        result.notes.append(f'output bag: {bag_dir} ({storage})')

    def _register_topics(self, writer, bag, wanted):
        if self.options.copy_inputs:
            for topic in wanted:
                qos = 'latched' if topic == self.semantics.topic else 'sensor_data'
                writer.add_topic(topic, bag.topics[topic].msgtype, qos)
        writer.add_topic(FUSED_TOPIC, bags.IMAGE, 'reliable')
        writer.add_topic(FUSED_INFO_TOPIC, bags.CAMERA_INFO, 'reliable')
        if self.options.write_registered:
            writer.add_topic(REGISTERED_TOPIC, bags.IMAGE, 'reliable')

    def _loop(self, bag, topics, wanted):
        result, options = self.result, self.options
        messages = bag.messages(wanted)
        try:
            for topic, receive_ns, msg in messages:
                if options.copy_inputs:
                    self.writer.write(topic, msg, receive_ns)
                if topic == self.semantics.topic:
                    self.semantics.on_recorded(msg, self.engine, len(result.frames))
                    continue
                if topic == self.rgb_info_topic:
                    self.rgb_info = msg
                    continue
                index = THERMAL if topic == topics.thermal else RGB
                try:
                    stamp_ns = message_stamp_ns(msg)
                except ConfigError as error:
                    self._drop('bad_stamp', f'{topic}: {error}')
                    continue
                self.stamps[index].append(stamp_ns)
                if not msg.header.frame_id:
                    # As the node does: an empty frame_id takes the configured fallback.
                    kind = 'thermal' if index == THERMAL else 'rgb'
                    msg.header.frame_id = self.params[f'{kind}.frame_id']
                for pair in self.policy.add(index, stamp_ns, msg):
                    self._fuse(pair, receive_ns)
                    if options.max_frames and len(result.frames) >= options.max_frames:
                        result.notes.append(f'stopped after --max-frames {options.max_frames} '
                                            'frames')
                        return
        except bags.BagError as error:
            result.problems.append(f'stopped early: {error}')
        except KeyboardInterrupt:
            result.problems.append(f'interrupted by the user after {len(result.frames)} '
                                   'frames')
        except _EngineError as error:
            result.problems.append(str(error))
        except Exception as error:  # noqa: BLE001 - a partial report beats a traceback
            trace = result.out_dir / 'traceback.txt'
            trace.write_text(traceback.format_exc())
            result.files['traceback'] = trace
            result.problems.append(f'unexpected {type(error).__name__} after '
                                   f'{len(result.frames)} frames: {error} (traceback in '
                                   f'{trace})')
        finally:
            messages.close()

    def _drop(self, kind, message):
        self.drops[kind] += 1
        self.first_errors.setdefault(kind, message)

    def _engine_or_build(self):
        if self.engine is None:
            try:
                self.engine = self._build_engine()
            except TesgError as error:
                raise _EngineError(f'the fusion engine could not be built: {error}') from None
        return self.engine

    # ------------------------------------------------------------------ one pair
    def _fuse(self, pair, receive_ns):
        from tesg_ros.sensor.image_codec import thermal_to_array, visible_to_bgr8

        result = self.result
        if self.last_rgb_stamp is not None and pair.rgb_stamp_ns <= self.last_rgb_stamp:
            self._drop('out_of_order', f'RGB stamp {pair.rgb_stamp_ns} not after the previous')
            return
        try:
            thermal, thermal_valid = thermal_to_array(pair.thermal)
        except TesgError as error:
            self._drop('thermal_bad_encoding', f'{self.topics.thermal}: {error}')
            return
        try:
            rgb_bgr = visible_to_bgr8(pair.rgb)
        except TesgError as error:
            self._drop('rgb_bad_encoding', f'{self.topics.rgb}: {error}')
            return
        engine = self._engine_or_build()
        self.semantics.take_pending(engine, len(result.frames))
        try:
            fused = engine.process(thermal, rgb_bgr, thermal_valid=thermal_valid)
        except TesgError as error:
            self._drop('fusion_error', f'pair at RGB stamp {pair.rgb_stamp_ns}: {error}')
            return
        self.last_rgb_stamp = pair.rgb_stamp_ns
        frame_index = len(result.frames)
        visible_bgr = np.ascontiguousarray(engine.registration.register(thermal, rgb_bgr)[1])
        ir8 = to_uint8(fused.thermal_registered * 255.0)
        timings = dict(fused.timings_ms)
        description = self.semantics.description
        if self.semantics.mode == 'live':
            timings['describe'] = self.semantics.refresh_live(
                engine, frame_index, pair.rgb_stamp_ns, visible_bgr, fused.thermal_registered)

        visible_rgb = np.ascontiguousarray(visible_bgr[:, :, ::-1])
        fused_rgb = np.ascontiguousarray(fused.bgr[:, :, ::-1])
        scene_diff = self.semantics.scene_difference(visible_bgr)
        start_ns = result.bag_start_ns if result.bag_start_ns is not None else receive_ns
        scores = None
        if frame_index % self.options.score_every == 0:
            try:
                scores = score_frame(ir8, visible_rgb, fused_rgb, self.options.convention)
            except TesgError as error:
                self._drop('unscorable', f'frame {frame_index}: {error}')
                nan = {name: float('nan') for name in metrics.METRIC_NAMES}
                scores = {method: dict(nan) for method in METHODS}
        # Written only once scored: the bag and the tables always hold the same frames.
        self._write_frame(pair.rgb.header, fused.bgr, ir8, receive_ns)
        result.frames.append(FrameRecord(
            index=frame_index, rgb_stamp_ns=pair.rgb_stamp_ns,
            thermal_stamp_ns=pair.thermal_stamp_ns, pair_dt_ns=pair.dt_ns, metrics=scores,
            timings_ms=timings, description=description,
            time_s=(receive_ns - start_ns) / bags.NS_PER_S, scene_diff=scene_diff,
            scene_change=scene_diff is not None and scene_diff > SCENE_CHANGE_LEVELS))
        boxes = None
        if self.detection.active:
            boxes = self._detect(frame_index, ir8, visible_bgr, fused.bgr)
        if self.sampler.wants(frame_index):
            baselines = baseline_images(ir8, visible_rgb)
            tiles = {'ir': _thumbnail(ir8), 'visible': _thumbnail(visible_rgb),
                     'fused': _thumbnail(fused_rgb),
                     'average': _thumbnail(baselines['average'])}
            scale = tiles['fused'].shape[1] / fused_rgb.shape[1]
            tiles['masks'] = _mask_thumbnails(fused.masks, tiles['fused'].shape[:2])
            tiles['phrases'] = (list(self.semantics.phrases)
                                if self.semantics.mode != 'disabled' else [])
            tiles['boxes'] = None if boxes is None else {
                method: [_scaled(d, scale) for d in found] for method, found in boxes.items()}
            self.sampler.add(frame_index, tiles)
        self.progress.update(1)

    def _write_frame(self, header, fused_bgr, ir8, receive_ns):
        from tesg_ros.sensor.image_codec import numpy_to_image

        image_class = bags.message_class(bags.IMAGE)
        if self.params['output.encoding'] == 'rgb8':
            fused_msg = numpy_to_image(fused_bgr[:, :, ::-1], 'rgb8', header=header,
                                       message_class=image_class)
        else:
            fused_msg = numpy_to_image(fused_bgr, 'bgr8', header=header,
                                       message_class=image_class)
        self.writer.write(FUSED_TOPIC, fused_msg, receive_ns)
        self.writer.write(FUSED_INFO_TOPIC, self._fused_camera_info(
            header, fused_bgr.shape[1], fused_bgr.shape[0]), receive_ns)
        if self.options.write_registered:
            self.writer.write(REGISTERED_TOPIC, numpy_to_image(
                ir8, 'mono8', header=header, message_class=image_class), receive_ns)

    def _fused_camera_info(self, header, width, height):
        """The RGB CameraInfo adjusted for the crop, as the node publishes it; without a
        calibrated RGB CameraInfo only the size, with zero K / R / P."""
        from tesg_ros.errors import CalibrationError
        from tesg_ros.sensor.registration import CameraModel

        registration = self.engine.registration
        model = None
        if self.rgb_info is not None and registration is not None:
            try:
                rgb_model = CameraModel.from_camera_info(self.rgb_info)
                if rgb_model.is_calibrated and rgb_model.size == registration.rgb_size:
                    model = registration.crop_camera_info(rgb_model)
            except (CalibrationError, ConfigError) as error:
                self.first_errors.setdefault('camera_info', str(error))
        stamp_ns = stamp_to_ns(header.stamp)
        if model is None:
            return bags.camera_info_message(width, height, np.zeros(9), stamp_ns,
                                            header.frame_id, distortion_model='',
                                            r=np.zeros(9), p=np.zeros(12))
        return bags.camera_info_message(
            model.width, model.height, model.K, stamp_ns, header.frame_id, d=model.D,
            distortion_model=model.distortion_model, r=model.rectification,
            p=model.projection)

    def _detect(self, frame_index, ir8, visible_bgr, fused_bgr):
        import cv2

        average = baseline_images(ir8, visible_bgr)['average']  # BGR in, BGR out
        images = {'model': fused_bgr, 'ir': cv2.cvtColor(ir8, cv2.COLOR_GRAY2BGR),
                  'visible': visible_bgr, 'average': average}
        return self.detection.detect(frame_index, images, self.result.problems)

    # ------------------------------------------------------------------ summary
    def _finish(self, bag):
        result = self.result
        if self.engine is not None:
            self.engine.close()
        counters = self.policy.counters().as_dict()
        counters.update({(f'dropped_{kind}' if kind != 'unscorable' else 'unscored_frames'):
                         count for kind, count in self.drops.items()})
        for name in ('thermal', 'rgb'):
            counters[f'rejected_{name}'] = sum(counters[f'{kind}_{name}'] for kind in (
                'zero_stamp', 'negative_stamp', 'duplicate', 'late'))
        counters['fused'] = len(result.frames)
        result.pairing = counters
        result.montage = self.sampler.selection()
        if self.detection.active and self.detection.frame_shapes:
            result.detection = self.detection.score(result.frames, result.problems)
        result.summary = summarise_metrics(result.frames)
        stages = list(STAGES) + (['describe'] if self.semantics.mode == 'live' else [])
        result.timings = {stage: percentiles_or_nan([f.timings_ms.get(stage, 0.0)
                                                     for f in result.frames]) for stage in stages}
        for kind, count in self.drops.items():
            if count:
                result.problems.append(f'{count} {_DROP_TEXT[kind]}; first: '
                                       f'{self.first_errors[kind]}')
        if 'camera_info' in self.first_errors:
            result.problems.append(f'the RGB CameraInfo could not be used for '
                                   f'{FUSED_INFO_TOPIC}: {self.first_errors["camera_info"]}')
        self.semantics.finish(result)
        if result.frames and counters['evicted_thermal']:
            result.notes.append(
                f'{counters["evicted_thermal"]} thermal frame(s) found no RGB partner within '
                f'sync.slop = {self.params["sync.slop"]:g} s (or left the queue) and were not '
                'fused, as live')
        pending = counters['pending_thermal'] + counters['pending_rgb']
        if pending:
            result.notes.append(f'{pending} message(s) still waited for a partner at the end '
                                'of the bag (not fused, as live)')
        if result.error is None and not result.frames:
            result.fail(self._nothing_fused_reason(counters))

    def _nothing_fused_reason(self, counters):
        thermal, rgb = self.topics.thermal, self.topics.rgb
        received = (counters['received_thermal'], counters['received_rgb'])
        if not received[0] or not received[1]:
            return (f'no frame could be evaluated: {received[0]} readable message(s) on '
                    f'{thermal} and {received[1]} on {rgb}')
        if counters['paired'] == 0:
            gap = _nearest_gap_s(self.stamps[THERMAL], self.stamps[RGB],
                                 seconds_to_ns(self.params['thermal.time_offset']))
            gap_text = '' if gap is None else f'; the closest stamps are {gap:.3f} s apart'
            return (f'the streams never paired: {received[0]} thermal ({thermal}) and '
                    f'{received[1]} RGB ({rgb}) messages, none within sync.slop = '
                    f'{self.params["sync.slop"]:g} s (thermal.time_offset = '
                    f'{self.params["thermal.time_offset"]:g} s){gap_text}. Check the header '
                    'stamps, or raise sync.slop / set thermal.time_offset with --set')
        return (f'{counters["paired"]} pair(s) found but none could be fused: see the '
                'problems')


class _EngineError(TesgError):
    """The engine could not be built: the run stops (partial report)."""


def evaluate_bag(path, out_dir, **options):
    """Evaluate the fusion on the bag at ``path``; write everything into ``out_dir``.

    ``out_dir`` is created (it must not exist or be empty). ``options`` are the fields of
    :class:`EvaluationOptions`. Writes ``fused_bag/`` (inputs copied, :data:`FUSED_TOPIC`
    with the RGB headers, :data:`REGISTERED_TOPIC` when asked), ``metrics.csv`` (one row per
    frame and method), ``timings.csv``, ``summary.json``, ``summary.csv``, ``report.md``
    (+ ``report_files/``) and a self-contained ``report.html``. Returns an
    :class:`EvaluationResult`; a problem with the bag is reported there (``status``,
    ``error``, ``problems``), not raised. Raises ConfigError for bad options or an output
    directory that is not empty.
    """
    from tesg_ros.evaluation.report import write_outputs

    known = {f.name for f in fields(EvaluationOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f'unknown evaluation option(s) {unknown}; known: {sorted(known)}')
    evaluation_options = EvaluationOptions(**options)
    out_dir = _prepare_out_dir(out_dir)
    result = _Evaluation(path, out_dir, evaluation_options).run()
    write_outputs(result)
    return result
