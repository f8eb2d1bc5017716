# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-make-bag``: a rosbag2 of thermal + RGB camera topics from a folder of image pairs.

The data set folder holds ``ir/`` and ``vi/`` with registered pairs of the same file name
(extensions may differ), e.g. ``test/data/tno``. The bag plays them back like two cameras:

* the scene advances at the slower camera's rate; each camera publishes at its own rate
  (``--rate`` RGB, ``--thermal-rate`` thermal) and shows the pair current at its frame time,
  so a 30 Hz RGB camera repeats each pair's image about 3.3 times against a 9 Hz thermal one;
* header stamps = start + nominal frame time (+ ``--thermal-offset-ms`` for thermal) + seeded
  uniform ``--jitter-ms``; receive time = stamp + ``--latency-ms``;
* thermal 8-bit pixels ``v`` are stored as mono8 ``v``, mono16/16UC1 ``v * 60 + 1000``
  (a 14-bit-like raw range 1000..16300) or 32FC1 ``283.15 + v * 40 / 255`` (Kelvin,
  10..50 degC); 16-bit sources go to mono16/16UC1 unchanged;
* RGB as bgr8, rgb8, mono8, yuyv or uyvy (YUV 4:2:2 packed by OpenCV's cvtColor; the last
  column of an odd-width image is dropped, with a warning);
* ``--compressed`` writes CompressedImage as compressed_image_transport does (RGB JPEG or
  PNG, thermal PNG) on ``<topic>/compressed``;
* ``--camera-info`` adds CameraInfo for both cameras (pinhole, no distortion, focal length
  from ``--thermal-hfov``/``--rgb-hfov`` and the image size).

Arguments after ``--ros-args`` are ignored so ``ros2 run`` works.

Example::

    tesg-make-bag test/data/tno -o /tmp/tno_bag --rate 30 --thermal-rate 9 \\
        --thermal-encoding mono16 --camera-info --repeat 10
"""

import argparse
from fractions import Fraction
import math
from pathlib import Path
import shutil
import sys

import cv2
import numpy as np
from tqdm import tqdm

from tesg_ros import bags
from tesg_ros.cli import strip_ros_args
from tesg_ros.errors import ConfigError, TesgError

IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.pgm',
                              '.ppm', '.webp'})
THERMAL_ENCODINGS = ('mono8', 'mono16', '16UC1', '32FC1')
RGB_ENCODINGS = ('bgr8', 'rgb8', 'mono8', 'yuyv', 'uyvy')
# 8-bit thermal v -> raw counts v * 60 + 1000: 1000..16300, inside 14 bits, offset from 0.
MONO16_GAIN = 60
MONO16_OFFSET = 1000
# 8-bit thermal v -> Kelvin 283.15 + v * 40 / 255 (10..50 degC).
KELVIN_AT_ZERO = 283.15
KELVIN_SPAN = 40.0
DEFAULT_START_S = 1_700_000_000
_YUV_CODES = {'yuyv': cv2.COLOR_BGR2YUV_YUYV, 'uyvy': cv2.COLOR_BGR2YUV_UYVY}


def find_pairs(dataset):
    """``[(name, ir_path, vi_path), ...]`` sorted by name for ``dataset/{ir,vi}/<name>.<ext>``.

    Files are matched by name without extension. Raises ConfigError when a folder is missing,
    a name has two files in one folder, or no pair matches.
    """
    dataset = Path(dataset)
    folders = {}
    for side in ('ir', 'vi'):
        folder = dataset / side
        if not folder.is_dir():
            raise ConfigError(f'dataset: {folder} is not a folder (expected ir/ and vi/)')
        files = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                if path.stem in files:
                    raise ConfigError(f'dataset: {files[path.stem].name} and {path.name} in '
                                      f'{folder} have the same name')
                files[path.stem] = path
        folders[side] = files
    names = sorted(set(folders['ir']) & set(folders['vi']))
    if not names:
        raise ConfigError(f'dataset: no file name is in both {dataset}/ir and {dataset}/vi')
    return [(name, folders['ir'][name], folders['vi'][name]) for name in names]


def unpaired_names(dataset):
    """Names present in only one of ``ir/`` and ``vi/`` (for a warning)."""
    stems = [{p.stem for p in (Path(dataset) / side).iterdir()
              if p.suffix.lower() in IMAGE_EXTENSIONS} for side in ('ir', 'vi')]
    return sorted(stems[0] ^ stems[1])


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ConfigError(f'dataset: cannot read image {path}')
    return image


def load_thermal(path):
    """The thermal image of ``path`` as an H x W uint8 or uint16 array.

    A 3/4-channel file must be grey (all colour channels equal); one channel is taken.
    """
    image = _read(path)
    if image.ndim == 3:
        colour = image[:, :, :3]
        if not (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
            raise ConfigError(f'dataset: thermal image {path} has different colour channels '
                              '(a false-colour palette cannot be turned back into intensities)')
        image = np.ascontiguousarray(colour[:, :, 0])
    if image.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f'dataset: thermal image {path} is {image.dtype}; expected 8 or 16 '
                          'bit')
    return image


def load_visible(path):
    """The visible image of ``path`` as H x W x 3 uint8 BGR (grey files are replicated)."""
    image = _read(path)
    if image.dtype != np.uint8:
        raise ConfigError(f'dataset: visible image {path} is {image.dtype}; expected 8 bit')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def thermal_pixels(image, encoding):
    """Map a thermal frame (uint8 or uint16 H x W) to the array of ``encoding``.

    uint8 ``v``: mono8 -> ``v``; mono16/16UC1 -> uint16 ``v * MONO16_GAIN + MONO16_OFFSET``;
    32FC1 -> float32 ``KELVIN_AT_ZERO + v * KELVIN_SPAN / 255``. uint16 input goes to
    mono16/16UC1 unchanged and is refused for mono8/32FC1 (no documented mapping).
    """
    if encoding not in THERMAL_ENCODINGS:
        raise ConfigError(f'thermal encoding must be one of {THERMAL_ENCODINGS}, got '
                          f'{encoding!r}')
    if image.dtype == np.uint16:
        if encoding in ('mono16', '16UC1'):
            return image
        raise ConfigError(f'16-bit thermal images can only be written as mono16/16UC1, not '
                          f'{encoding}')
    if encoding == 'mono8':
        return image
    if encoding == '32FC1':
        return (KELVIN_AT_ZERO + image.astype(np.float64) * (KELVIN_SPAN / 255.0)).astype(
            np.float32)
    return image.astype(np.uint16) * np.uint16(MONO16_GAIN) + np.uint16(MONO16_OFFSET)


def visible_pixels(bgr, encoding):
    """Map an H x W x 3 uint8 BGR frame to the array of ``encoding``.

    bgr8 as is, rgb8 swapped, mono8 by ``cv2.COLOR_BGR2GRAY``, yuyv/uyvy packed H x W x 2 by
    ``cv2.COLOR_BGR2YUV_YUYV``/``_UYVY`` (needs an even width).
    """
    if encoding == 'bgr8':
        return bgr
    if encoding == 'rgb8':
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if encoding == 'mono8':
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if encoding in _YUV_CODES:
        if bgr.shape[1] % 2:
            raise ConfigError(f'{encoding} needs an even image width, got {bgr.shape[1]}')
        return cv2.cvtColor(bgr, _YUV_CODES[encoding])
    raise ConfigError(f'RGB encoding must be one of {RGB_ENCODINGS}, got {encoding!r}')


def plausible_intrinsics(width, height, hfov_deg):
    """3 x 3 pinhole K (float64) of a ``width`` x ``height`` camera with horizontal FOV
    ``hfov_deg``: square pixels, principal point at the image centre ``((w-1)/2, (h-1)/2)``."""
    if not 0 < hfov_deg < 180:
        raise ConfigError(f'horizontal field of view must be in (0, 180) degrees, got '
                          f'{hfov_deg}')
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[focal, 0.0, (width - 1) / 2.0],
                     [0.0, focal, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def frame_schedule(num_scenes, rate_hz, scene_rate_hz):
    """``[(nominal_time_ns, scene_index), ...]`` of one camera.

    The camera runs at ``rate_hz`` (frames at ``k / rate``) while the scene changes at
    ``scene_rate_hz`` (scene ``floor(t * scene_rate)``); frames are made until the last
    scene ends at ``num_scenes / scene_rate``. Rates are Fractions (exact arithmetic).
    """
    rate_hz, scene_rate_hz = Fraction(rate_hz), Fraction(scene_rate_hz)
    count = math.ceil(Fraction(num_scenes) * rate_hz / scene_rate_hz)
    return [(round(Fraction(k * bags.NS_PER_S) / rate_hz),
             math.floor(Fraction(k) * scene_rate_hz / rate_hz)) for k in range(count)]


def _positive_fraction(text):
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be finite, got {text}')
    return value


def _non_negative_float(text):
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return value


def _build_parser():
    parser = argparse.ArgumentParser(
        prog='tesg-make-bag',
        description='Write a rosbag2 of thermal + RGB camera topics from a folder of '
                    'registered image pairs (ir/ and vi/ with matching file names).')
    parser.add_argument('dataset', help='folder with ir/ and vi/ sub-folders')
    parser.add_argument('-o', '--output', required=True,
                        help='bag directory to create (must not exist)')
    parser.add_argument('--storage', choices=bags.STORAGES, default='mcap')
    parser.add_argument('--rate', type=_positive_fraction, default=Fraction(30),
                        help='RGB frame rate in Hz (default 30)')
    parser.add_argument('--thermal-rate', type=_positive_fraction, default=None,
                        help='thermal frame rate in Hz (default: --rate)')
    parser.add_argument('--thermal-encoding', choices=THERMAL_ENCODINGS, default='mono16',
                        help=f'8-bit v is stored as mono8 v, mono16/16UC1 v*{MONO16_GAIN}+'
                             f'{MONO16_OFFSET}, 32FC1 {KELVIN_AT_ZERO}+v*{KELVIN_SPAN:g}/255 '
                             'Kelvin (default mono16)')
    parser.add_argument('--rgb-encoding', choices=RGB_ENCODINGS, default='bgr8',
                        help='yuyv/uyvy are packed by OpenCV (default bgr8)')
    parser.add_argument('--compressed', action='store_true',
                        help='write sensor_msgs/CompressedImage (thermal PNG, RGB --rgb-codec)')
    parser.add_argument('--rgb-codec', choices=('jpeg', 'png'), default='jpeg',
                        help='codec of the compressed RGB images (default jpeg)')
    parser.add_argument('--jpeg-quality', type=int, default=95)
    parser.add_argument('--camera-info', action='store_true',
                        help='also write sensor_msgs/CameraInfo for both cameras')
    parser.add_argument('--thermal-hfov', type=_finite_float, default=50.0,
                        help='thermal horizontal field of view for CameraInfo, degrees')
    parser.add_argument('--rgb-hfov', type=_finite_float, default=60.0,
                        help='RGB horizontal field of view for CameraInfo, degrees')
    parser.add_argument('--jitter-ms', type=_non_negative_float, default=0.0,
                        help='uniform stamp jitter +-J ms per frame (seeded by --seed)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--thermal-offset-ms', type=_finite_float, default=0.0,
                        help='added to every thermal stamp (camera clock offset / latency)')
    parser.add_argument('--latency-ms', type=_non_negative_float, default=0.0,
                        help='receive time = header stamp + this')
    parser.add_argument('--start-time', type=_finite_float, default=DEFAULT_START_S,
                        help=f'stamp of the first frame, seconds since epoch '
                             f'(default {DEFAULT_START_S})')
    parser.add_argument('--repeat', type=int, default=1, help='loop the pairs N times')
    parser.add_argument('--thermal-topic', default=None,
                        help='default /thermal/image (+ /compressed)')
    parser.add_argument('--rgb-topic', default=None, help='default /rgb/image (+ /compressed)')
    parser.add_argument('--thermal-info-topic', default='/thermal/camera_info')
    parser.add_argument('--rgb-info-topic', default='/rgb/camera_info')
    parser.add_argument('--thermal-frame-id', default='thermal_optical_frame')
    parser.add_argument('--rgb-frame-id', default='rgb_optical_frame')
    parser.add_argument('--semantics', default=None,
                        help='also write this text once on --semantics-topic (latched QoS)')
    parser.add_argument('--semantics-topic', default='/tesg/semantics')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


class _Camera:
    """One simulated camera: converts each pair once and builds its messages."""

    def __init__(self, name, topic, info_topic, frame_id, encoding, fmt, hfov, args):
        self.name, self.topic, self.info_topic = name, topic, info_topic
        self.frame_id, self.encoding, self.fmt, self.hfov = frame_id, encoding, fmt, hfov
        self.jpeg_quality = args.jpeg_quality
        self.camera_info = args.camera_info
        self._cached_scene = None
        self._cached_pixels = None

    def pixels(self, scene, load):
        if scene != self._cached_scene:
            self._cached_pixels = load()
            self._cached_scene = scene
        return self._cached_pixels

    def messages(self, pixels, stamp_ns):
        if self.fmt is None:
            image = bags.image_message(pixels, self.encoding, stamp_ns, self.frame_id)
        else:
            image = bags.compressed_image_message(pixels, self.fmt, stamp_ns, self.frame_id,
                                                  self.jpeg_quality)
        out = [(self.topic, image)]
        if self.camera_info:
            height, width = pixels.shape[:2]
            k = plausible_intrinsics(width, height, self.hfov)
            out.append((self.info_topic, bags.camera_info_message(
                width, height, k, stamp_ns, self.frame_id, d=np.zeros(5))))
        return out


def _check_args(args, parser):
    if args.repeat < 1:
        parser.error(f'--repeat must be >= 1, got {args.repeat}')
    if args.compressed and args.thermal_encoding == '32FC1':
        parser.error('--compressed cannot store 32FC1 thermal images (compressed image '
                     'transport only handles 8/16-bit); use mono16')
    for name in ('thermal_hfov', 'rgb_hfov'):
        if not 0 < getattr(args, name) < 180:
            parser.error(f'--{name.replace("_", "-")} must be in (0, 180) degrees')
    if not 0 <= args.jpeg_quality <= 100:
        parser.error(f'--jpeg-quality must be in 0..100, got {args.jpeg_quality}')
    thermal_rate = args.thermal_rate or args.rate
    shortest_period_ms = 1000 / float(max(args.rate, thermal_rate))
    if 2 * args.jitter_ms >= shortest_period_ms:
        parser.error(f'--jitter-ms {args.jitter_ms} could reorder frames: it must be less '
                     f'than half the shortest frame period ({shortest_period_ms:.3f} ms)')
    earliest_ms = args.start_time * 1000 + min(0.0, args.thermal_offset_ms) - args.jitter_ms
    if earliest_ms < 0:
        parser.error('--start-time plus --thermal-offset-ms and --jitter-ms gives stamps '
                     'before 1970')


def _cameras(args):
    suffix = '/compressed' if args.compressed else ''
    thermal_fmt = rgb_fmt = None
    if args.compressed:
        thermal_fmt = f'{args.thermal_encoding}; png compressed'
        rgb_fmt = f'{args.rgb_encoding}; {args.rgb_codec} compressed'
    thermal = _Camera('thermal', args.thermal_topic or '/thermal/image' + suffix,
                      args.thermal_info_topic, args.thermal_frame_id, args.thermal_encoding,
                      thermal_fmt, args.thermal_hfov, args)
    rgb = _Camera('rgb', args.rgb_topic or '/rgb/image' + suffix, args.rgb_info_topic,
                  args.rgb_frame_id, args.rgb_encoding, rgb_fmt, args.rgb_hfov, args)
    topics = [thermal.topic, rgb.topic]
    if args.camera_info:
        topics += [thermal.info_topic, rgb.info_topic]
    if args.semantics is not None:
        topics.append(args.semantics_topic)
    if len(set(topics)) != len(topics):
        raise ConfigError(f'topic names must differ, got {topics}')
    return thermal, rgb


def _events(args, num_scenes, thermal, rgb):
    """Every frame as (receive_ns, stamp_ns, camera, scene), sorted by receive time."""
    thermal_rate = args.thermal_rate or args.rate
    scene_rate = min(args.rate, thermal_rate)
    rng = np.random.default_rng(args.seed)
    start_ns = round(Fraction(args.start_time) * bags.NS_PER_S)
    latency_ns = round(args.latency_ms * 1e6)
    events = []
    for camera, rate, offset_ms in ((thermal, thermal_rate, args.thermal_offset_ms),
                                    (rgb, args.rate, 0.0)):
        schedule = frame_schedule(num_scenes, rate, scene_rate)
        jitter_ns = np.rint(rng.uniform(-args.jitter_ms, args.jitter_ms, len(schedule)) * 1e6)
        for (time_ns, scene), jitter in zip(schedule, jitter_ns):
            stamp = start_ns + time_ns + round(offset_ms * 1e6) + int(jitter)
            events.append((stamp + latency_ns, stamp, camera.name, scene))
    events.sort(key=lambda event: (event[0], event[2]))
    return events


def make_bag(args):
    """Write the bag for parsed ``args``; returns ``{topic: message count}``."""
    pairs = find_pairs(args.dataset)
    missing = unpaired_names(args.dataset)
    if missing:
        print(f'tesg-make-bag: warning: {len(missing)} file(s) without a partner skipped: '
              f'{", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}', file=sys.stderr)
    thermal, rgb = _cameras(args)
    cameras = {'thermal': thermal, 'rgb': rgb}
    cropped = set()

    def load_rgb(pair):
        bgr = load_visible(pair[2])
        if args.rgb_encoding in _YUV_CODES and bgr.shape[1] % 2:
            # YUV 4:2:2 cameras have even widths; dropping the last column keeps pixel
            # coordinates (and so the thermal -> RGB registration) unchanged.
            if not cropped:
                print(f'tesg-make-bag: warning: {pair[2].name} is {bgr.shape[1]} pixels wide; '
                      f'{args.rgb_encoding} needs an even width, the last column is dropped '
                      'from odd-width RGB images', file=sys.stderr)
            cropped.add(pair[0])
            bgr = bgr[:, :-1]
        return visible_pixels(bgr, args.rgb_encoding)

    loaders = {
        'thermal': lambda pair: thermal_pixels(load_thermal(pair[1]), args.thermal_encoding),
        'rgb': load_rgb,
    }
    events = _events(args, len(pairs) * args.repeat, thermal, rgb)
    with bags.BagWriter(args.output, args.storage) as writer:
        for camera in (thermal, rgb):
            writer.add_topic(camera.topic, bags.COMPRESSED_IMAGE if camera.fmt else bags.IMAGE,
                             'sensor_data')
            if args.camera_info:
                writer.add_topic(camera.info_topic, bags.CAMERA_INFO, 'sensor_data')
        if args.semantics is not None:
            writer.add_topic(args.semantics_topic, bags.STRING, 'latched')
            writer.write(args.semantics_topic, bags.string_message(args.semantics),
                         events[0][0])
        for receive_ns, stamp_ns, name, scene in tqdm(
                events, desc='tesg-make-bag', unit='frame', disable=args.no_progress):
            camera = cameras[name]
            pair = pairs[scene % len(pairs)]
            pixels = camera.pixels(scene, lambda: loaders[name](pair))
            for topic, msg in camera.messages(pixels, stamp_ns):
                writer.write(topic, msg, receive_ns)
        return writer.counts


def main(argv=None):
    """Entry point; returns the process exit status (0 ok, 1 bad input, 2 usage)."""
    argv = strip_ros_args(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    existed = Path(args.output).exists()
    try:
        counts = make_bag(args)
    except TesgError as exc:
        if not existed and Path(args.output).is_dir():
            # The half-written bag was created by this run; leave no unreadable remains.
            shutil.rmtree(args.output)
        print(f'tesg-make-bag: error: {exc}', file=sys.stderr)
        return 1
    for topic, count in sorted(counts.items()):
        print(f'{topic}: {count} messages')
    print(f'wrote {args.output} ({args.storage})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
