# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> numpy, ROS-free.

Semantics follow ROS 2 cv_bridge (``imgmsg_to_cv2`` / ``cv2_to_imgmsg``, rolling) for every
encoding both support:

* element type and channel count per encoding as in cv_bridge's ``getCvType`` (``rgb8`` is
  uint8 x 3, ``mono16`` uint16 x 1, ``yuv422``/``uyvy`` uint8 x 2, ``32FC1`` float32 x 1, ...);
  ``uyvy``/``yuyv`` are accepted as the current names of ``yuv422``/``yuv422_yuy2``;
* ``step`` is honoured (row padding) and must satisfy ``step >= width * pixel size`` and
  ``len(data) == height * step``, as cv_bridge's ``matFromImage`` requires;
* ``is_bigendian`` is honoured; multi-byte data in the non-native byte order is byte-swapped
  into a new native-order array;
* ``desired_encoding`` conversions use cv_bridge's table (colour conversions by OpenCV's
  ``cvtColor``, 8 <-> 16 bit depth changes scaled by 65535/255, other depth changes by a
  rounding, saturating cast like ``cv::Mat::convertTo``).

Messages are read duck-typed (rclpy messages, rosbags messages, any object with the fields);
``data`` may be ``array.array('B')``, ``bytes``, ``bytearray``, ``memoryview``, a 1-D uint8
numpy array or a list of ints. Bad input raises :class:`tesg_ros.errors.ImageEncodingError`
(a ``TypeError`` and ``ValueError``; cv_bridge's ``CvBridgeError`` is a ``TypeError``).

Where ``cv_bridge`` is importable (a ROS install) :func:`visible_to_bgr8` and
:func:`thermal_to_array` decode through it (:func:`make_bridge`), after this module's checks;
:func:`convert_for_display` is ``cvtColorForDisplay`` for debug images.
"""

import array
import re
import sys
from typing import NamedTuple

import cv2
import numpy as np

from tesg_ros.errors import ImageEncodingError

PASSTHROUGH = 'passthrough'
# OpenCV's CV_CN_MAX: the most channels a cv::Mat element may have.
MAX_CHANNELS = 512
# compressed_depth_image_transport prefixes its PNG with a ConfigHeader (int32 + 2 floats).
COMPRESSED_DEPTH_HEADER_BYTES = 12

_NATIVE_BIG_ENDIAN = sys.byteorder == 'big'
_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class EncodingInfo(NamedTuple):
    """What one ``sensor_msgs/Image`` encoding stores per pixel.

    ``dtype`` is the native-order element type, ``channels`` the elements per pixel, ``bits``
    the bit depth cv_bridge's ``bitDepth`` reports, ``family`` the colour layout used for
    conversions ('gray', 'rgb', 'bgr', 'rgba', 'bgra', 'uyvy', 'yuyv', 'bayer_rggb', ...) or
    None for the generic OpenCV types (``8UC3``, ``32FC1``, ...) that carry no colour meaning.
    """

    dtype: np.dtype
    channels: int
    bits: int
    family: str | None


def _named_encodings():
    table = {}
    for bits, dtype in ((8, np.dtype(np.uint8)), (16, np.dtype(np.uint16))):
        table[f'mono{bits}'] = EncodingInfo(dtype, 1, bits, 'gray')
        for family in ('rgb', 'bgr'):
            table[f'{family}{bits}'] = EncodingInfo(dtype, 3, bits, family)
            table[f'{family}a{bits}'] = EncodingInfo(dtype, 4, bits, family + 'a')
        for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
            table[f'bayer_{pattern}{bits}'] = EncodingInfo(dtype, 1, bits, 'bayer_' + pattern)
    uint8 = np.dtype(np.uint8)
    for name in ('uyvy', 'yuv422'):
        table[name] = EncodingInfo(uint8, 2, 8, 'uyvy')
    for name in ('yuyv', 'yuv422_yuy2'):
        table[name] = EncodingInfo(uint8, 2, 8, 'yuyv')
    return table


_NAMED_ENCODINGS = _named_encodings()
_DEPTH_DTYPES = {
    '8U': np.dtype(np.uint8), '8S': np.dtype(np.int8), '16U': np.dtype(np.uint16),
    '16S': np.dtype(np.int16), '32S': np.dtype(np.int32), '32F': np.dtype(np.float32),
    '64F': np.dtype(np.float64),
}
_DTYPE_DEPTHS = {dtype: depth for depth, dtype in _DEPTH_DTYPES.items()}
_GENERIC_ENCODING = re.compile(r'(8U|8S|16U|16S|32S|32F|64F)(?:C([0-9]+))?')

# OpenCV spells the colour layouts of cv_bridge's conversion table like this.
_CV_COLOUR_NAMES = {'gray': 'GRAY', 'rgb': 'RGB', 'bgr': 'BGR', 'rgba': 'RGBA', 'bgra': 'BGRA'}
# cv_bridge's bayer_rggb is OpenCV's BayerBG (OpenCV names the 2nd row's first two pixels).
_CV_BAYER_NAMES = {'bayer_rggb': 'BayerBG', 'bayer_bggr': 'BayerRG',
                   'bayer_gbrg': 'BayerGR', 'bayer_grbg': 'BayerGB'}


def _conversion_codes():
    codes = {}
    for source, source_name in _CV_COLOUR_NAMES.items():
        for target, target_name in _CV_COLOUR_NAMES.items():
            if source != target and not (source == 'gray' and target == 'gray'):
                codes[source, target] = getattr(cv2, f'COLOR_{source_name}2{target_name}')
    for source, suffix in (('uyvy', 'UYVY'), ('yuyv', 'YUY2')):
        for target, target_name in _CV_COLOUR_NAMES.items():
            codes[source, target] = getattr(cv2, f'COLOR_YUV2{target_name}_{suffix}')
    for source, source_name in _CV_BAYER_NAMES.items():
        for target in ('gray', 'rgb', 'bgr'):
            codes[source, target] = getattr(cv2, f'COLOR_{source_name}2{_CV_COLOUR_NAMES[target]}')
    return codes


_CONVERSION_CODES = _conversion_codes()

VISIBLE_ENCODINGS = frozenset(
    name for name, info in _NAMED_ENCODINGS.items() if info.family is not None)
THERMAL_ENCODINGS = frozenset({'mono8', '8UC1', 'mono16', '16UC1', '32FC1'})


def encoding_info(encoding):
    """Return the :class:`EncodingInfo` of a ``sensor_msgs/Image`` encoding string.

    Accepts cv_bridge's named encodings (``mono8``, ``bgr8``, ``rgba16``, ``bayer_rggb8``,
    ``yuv422``, ...), ``uyvy``/``yuyv`` and the generic OpenCV types ``{8U,8S,16U,16S,32S,32F,
    64F}C{1..512}`` (a bare ``32F`` means one channel). Raises ImageEncodingError otherwise.
    """
    if not isinstance(encoding, str):
        raise ImageEncodingError(f'encoding must be a string, got {type(encoding).__name__}')
    info = _NAMED_ENCODINGS.get(encoding)
    if info is not None:
        return info
    match = _GENERIC_ENCODING.fullmatch(encoding)
    if match is None:
        raise ImageEncodingError(
            f'unsupported image encoding {encoding!r}: expected one of '
            f'{sorted(_NAMED_ENCODINGS)} or an OpenCV type such as 8UC3 or 32FC1')
    channels = int(match.group(2)) if match.group(2) is not None else 1
    if not 1 <= channels <= MAX_CHANNELS:
        raise ImageEncodingError(
            f'encoding {encoding!r} has {channels} channels; 1..{MAX_CHANNELS} are allowed')
    dtype = _DEPTH_DTYPES[match.group(1)]
    return EncodingInfo(dtype, channels, dtype.itemsize * 8, None)


def _as_byte_array(data, field='data'):
    """View ``data`` (any byte buffer, uint8 array or int list) as a 1-D uint8 array.

    Buffers are viewed without copying; a list/tuple of ints is copied.
    """
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in 'uib':
            raise ImageEncodingError(f'{field} must hold bytes, got a {data.dtype} array')
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.array(data, dtype=np.uint8).reshape(-1)
        except (OverflowError, ValueError, TypeError) as error:
            raise ImageEncodingError(f'{field} must be a sequence of bytes: {error}') from None
    if isinstance(data, str):
        raise ImageEncodingError(f'{field} must hold bytes, got a str')
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageEncodingError(
            f'{field} must be a byte buffer or sequence, got {type(data).__name__}') from None
    if view.itemsize != 1:
        raise ImageEncodingError(f'{field} must hold bytes, got items of {view.itemsize} bytes')
    return np.frombuffer(view, dtype=np.uint8)


def _pixel_array(msg, info):
    """Strided view of ``msg.data`` as H x W (x C) in the message's byte order."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = msg.encoding
    for name, value in (('height', height), ('width', width), ('step', step)):
        if value < 0:
            raise ImageEncodingError(f'{name} must not be negative, got {value}')
    pixel_bytes = info.dtype.itemsize * info.channels
    if step < width * pixel_bytes:
        raise ImageEncodingError(
            f'step ({step}) is smaller than width ({width}) * pixel size ({pixel_bytes} bytes '
            f'for {encoding})')
    if step % info.dtype.itemsize:
        raise ImageEncodingError(
            f'step ({step}) is not a multiple of the {info.dtype.itemsize}-byte element size '
            f'of {encoding}')
    if info.family in ('uyvy', 'yuyv') and width % 2:
        raise ImageEncodingError(
            f'width ({width}) must be even for YUV 4:2:2 encoding {encoding}')
    is_bigendian = msg.is_bigendian
    if is_bigendian not in (0, 1):
        raise ImageEncodingError(f'is_bigendian must be 0 or 1, got {is_bigendian!r}')
    raw = _as_byte_array(msg.data)
    if raw.size != height * step:
        raise ImageEncodingError(
            f'len(data) ({raw.size}) != height ({height}) * step ({step}) for {encoding}')
    dtype = info.dtype.newbyteorder('>' if is_bigendian else '<')
    if info.channels == 1:
        shape, strides = (height, width), (step, info.dtype.itemsize)
    else:
        shape = (height, width, info.channels)
        strides = (step, pixel_bytes, info.dtype.itemsize)
    if raw.size == 0:
        return np.zeros(shape, dtype)
    return np.ndarray(shape, dtype=dtype, buffer=raw, strides=strides)


def _to_native(image):
    if image.dtype.isnative:
        return image
    return image.astype(image.dtype.newbyteorder('='))


def image_to_numpy(msg, desired_encoding=PASSTHROUGH):
    """Convert a ``sensor_msgs/Image`` to a numpy array (cv_bridge's ``imgmsg_to_cv2``).

    Args:
        msg: an Image-like object with ``height``, ``width``, ``encoding``, ``is_bigendian``,
            ``step`` and ``data``.
        desired_encoding: 'passthrough' (or the message's own encoding) returns the
            encoding's natural array; any other encoding converts as cv_bridge does.

    Returns:
        H x W (one channel) or H x W x C array of the encoding's dtype in native byte order.
        For passthrough the result is a view of ``msg.data`` (zero copy; writes change the
        message; not C-contiguous when ``step`` has row padding) whenever the data is in the
        native byte order or one byte deep, and a new array otherwise (byte-swapped data, a
        list ``data``). Conversions return a new array, except those that change nothing
        (e.g. mono16 -> 16UC1), which return the passthrough array.
    """
    info = encoding_info(msg.encoding)
    image = _to_native(_pixel_array(msg, info))
    if desired_encoding in (PASSTHROUGH, msg.encoding):
        return image
    return convert_encoding(image, msg.encoding, desired_encoding)


def _is_colour(info):
    return info.family is not None


def _convert_depth(image, dst_dtype, scale):
    """``cv::Mat::convertTo``: ``saturate_cast<dst>(value * scale)``, rounding half to even."""
    if image.dtype == dst_dtype and scale == 1.0:
        return image
    if image.dtype == np.uint16 and dst_dtype == np.uint8:
        # OpenCV's own rounding and saturation, ~40x faster than the float64 path below.
        return cv2.convertScaleAbs(image, alpha=scale)
    if image.dtype == np.uint8 and dst_dtype == np.uint16 and scale == 65535.0 / 255.0:
        return image.astype(np.uint16) * np.uint16(257)
    if dst_dtype.kind == 'f':
        scaled = image.astype(np.float64) * scale if scale != 1.0 else image
        return scaled.astype(dst_dtype)
    if image.dtype.kind == 'f' and not np.isfinite(image).all():
        raise ImageEncodingError(
            f'cannot convert NaN/Inf pixels to the integer type {dst_dtype}')
    limits = np.iinfo(dst_dtype)
    if image.dtype.kind in 'ui' and scale == 1.0:
        return np.clip(image.astype(np.int64), limits.min, limits.max).astype(dst_dtype)
    scaled = np.rint(image.astype(np.float64) * scale)
    return np.clip(scaled, limits.min, limits.max).astype(dst_dtype)


def _check_array_matches(image, info, encoding, what='image'):
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype.newbyteorder('=') != info.dtype or channels != info.channels:
        raise ImageEncodingError(
            f'{what} of dtype {image.dtype} with {channels} channel(s) does not match encoding '
            f'{encoding} ({info.dtype} x {info.channels})')


def convert_encoding(image, src_encoding, dst_encoding):
    """Convert an array from one Image encoding to another with cv_bridge's rules.

    Colour layouts (mono, rgb, bgr, rgba, bgra, yuv422/uyvy, yuyv, bayer) convert among each
    other by OpenCV's ``cvtColor`` (YUV and Bayer only as sources; Bayer only to mono/rgb/bgr);
    depth then changes by ``convertTo``, scaled 65535/255 between 8 and 16 bit. A generic
    OpenCV type converts only to an encoding with the same channel count that is not a colour
    layout (and a colour layout only to such a generic type), by a depth change alone.

    Args:
        image: H x W or H x W x C array matching ``src_encoding``.
        src_encoding, dst_encoding: Image encoding strings.

    Returns:
        The array in ``dst_encoding`` (H x W for one channel); ``image`` itself when nothing
        changes.
    """
    src = encoding_info(src_encoding)
    dst = encoding_info(dst_encoding)
    _check_array_matches(image, src, src_encoding)
    image = _to_native(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if src_encoding == dst_encoding:
        return image
    if _is_colour(src) and _is_colour(dst) and src.family != dst.family:
        code = _CONVERSION_CODES.get((src.family, dst.family))
        if code is None:
            raise ImageEncodingError(
                f'unsupported conversion from {src_encoding} to {dst_encoding}')
        if src.family in ('uyvy', 'yuyv') and image.shape[1] % 2:
            raise ImageEncodingError(
                f'width ({image.shape[1]}) must be even for YUV 4:2:2 encoding {src_encoding}')
        image = cv2.cvtColor(image, code)
    elif _is_colour(src) != _is_colour(dst) or not _is_colour(src):
        if not _is_colour(src) and _is_colour(dst):
            raise ImageEncodingError(
                f'{src_encoding} is not a colour format but {dst_encoding} is; the conversion '
                'does not make sense')
        if src.channels != dst.channels:
            raise ImageEncodingError(
                f'{src_encoding} and {dst_encoding} do not have the same number of channels')
    if src.bits == 8 and dst.bits == 16:
        scale = 65535.0 / 255.0
    elif src.bits == 16 and dst.bits == 8:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return _convert_depth(image, dst.dtype, scale)


def _cv_type_name(image):
    depth = _DTYPE_DEPTHS.get(image.dtype.newbyteorder('='))
    if depth is None:
        raise ImageEncodingError(
            f'array dtype {image.dtype} has no Image encoding; use one of '
            f'{sorted(str(d) for d in _DTYPE_DEPTHS.values())}')
    channels = 1 if image.ndim == 2 else image.shape[2]
    return f'{depth}C{channels}'


def _check_image_array(image):
    if not isinstance(image, np.ndarray):
        raise ImageEncodingError(f'expected a numpy array, got {type(image).__name__}')
    if image.ndim not in (2, 3):
        raise ImageEncodingError(
            f'expected an H x W or H x W x C array, got shape {image.shape}')


def _fill_message(message_class, header, fields, payload):
    """Build a message of ``message_class`` holding ``fields`` and the uint8 ``payload``.

    rclpy-style classes are built empty and filled (``data`` as ``array.array('B')``, one
    copy); dataclass-style classes whose constructor needs every field (rosbags) get them as
    keyword arguments (``data`` as a uint8 numpy array) and then need ``header``.
    """
    try:
        msg = message_class()
    except TypeError:
        if header is None:
            raise TypeError(
                f'{message_class.__name__} needs every field in its constructor; pass header'
            ) from None
        return message_class(header=header, **fields, data=payload.copy())
    if header is not None:
        msg.header = header
    for name, value in fields.items():
        setattr(msg, name, value)
    if isinstance(getattr(msg, 'data', None), np.ndarray):
        msg.data = payload.copy()
    else:
        data = array.array('B')
        data.frombytes(memoryview(payload))
        msg.data = data
    return msg


def _contiguous_bytes(image):
    """The array's bytes in its own byte order as a 1-D uint8 view (copies only if needed)."""
    return np.ascontiguousarray(image).reshape(-1).view(np.uint8)


def numpy_to_image(image, encoding, header=None, message_class=None):
    """Convert a numpy array to a ``sensor_msgs/Image`` (cv_bridge's ``cv2_to_imgmsg``).

    Args:
        image: H x W or H x W x C array of uint8, int8, uint16, int16, int32, float32 or
            float64, any byte order and memory layout.
        encoding: the Image encoding of ``image``, checked against its dtype and channel count
            (``rgb8`` needs H x W x 3 uint8, ``uyvy`` H x W x 2 uint8 with even W, ...);
            'passthrough' names the OpenCV type (``8UC3``, ``32FC1``, ...).
        header: optional ``std_msgs/Header`` to copy into the message.
        message_class: the message type to build; default ``sensor_msgs.msg.Image``.

    Returns:
        A message with ``step = width * channels * itemsize`` (no padding), ``data`` the
        array's bytes in its own byte order and ``is_bigendian`` set to that byte order.
    """
    _check_image_array(image)
    cv_type = _cv_type_name(image)
    if encoding == PASSTHROUGH:
        encoding = cv_type
    info = encoding_info(encoding)
    _check_array_matches(image, info, encoding, what='array')
    if info.family in ('uyvy', 'yuyv') and image.shape[1] % 2:
        raise ImageEncodingError(
            f'width ({image.shape[1]}) must be even for YUV 4:2:2 encoding {encoding}')
    if message_class is None:
        from sensor_msgs.msg import Image as message_class
    if image.dtype.itemsize == 1:
        is_bigendian = _NATIVE_BIG_ENDIAN
    else:
        is_bigendian = image.dtype.byteorder == '>' or (
            image.dtype.byteorder == '=' and _NATIVE_BIG_ENDIAN)
    height, width = image.shape[:2]
    fields = {
        'height': int(height), 'width': int(width), 'encoding': encoding,
        'is_bigendian': int(is_bigendian),
        'step': int(width * info.channels * image.dtype.itemsize),
    }
    return _fill_message(message_class, header, fields, _contiguous_bytes(image))


class CompressedFormat(NamedTuple):
    """A parsed ``sensor_msgs/CompressedImage.format`` string.

    ``codec`` is the image file type ('jpeg', 'png', 'bmp', ...); ``encoding`` the original
    Image encoding named before ';' by image_transport (None for a bare codec name);
    ``compressed_encoding`` the layout of the compressed pixels named after 'compressed'
    ('bgr8', 'mono8', ...; None if absent); ``depth`` is True for compressed_depth_image_transport.
    """

    codec: str
    encoding: str | None
    compressed_encoding: str | None
    depth: bool


_CODEC_ALIASES = {'jpg': 'jpeg', 'jpe': 'jpeg', 'tif': 'tiff'}
_BARE_CODECS = frozenset({'jpeg', 'png', 'bmp', 'dib', 'tiff', 'webp', 'jp2', 'pbm', 'pgm',
                          'ppm', 'pxm', 'pnm', 'sr', 'ras'})
_UINT8_ONLY = (np.dtype(np.uint8),)
_UINT8_OR_16 = (np.dtype(np.uint8), np.dtype(np.uint16))
_CODEC_DTYPES = {
    'png': _UINT8_OR_16, 'jp2': _UINT8_OR_16, 'pbm': _UINT8_OR_16, 'pgm': _UINT8_OR_16,
    'ppm': _UINT8_OR_16, 'pxm': _UINT8_OR_16, 'pnm': _UINT8_OR_16,
    'tiff': _UINT8_OR_16 + (np.dtype(np.float32), np.dtype(np.float64)),
}
_TRANSPORT_FORMAT = re.compile(r'(jpeg|png)\s+compressed(?:\s+(\S+))?')


def parse_compressed_format(fmt):
    """Parse a CompressedImage ``format``: 'jpeg', 'png', 'rgb8; jpeg compressed bgr8', ...

    Raises ImageEncodingError for an empty or unrecognised format or encoding name.
    """
    if not isinstance(fmt, str) or not fmt.strip():
        raise ImageEncodingError(f'format must be a non-empty string, got {fmt!r}')
    if ';' not in fmt:
        codec = fmt.strip().lower()
        codec = _CODEC_ALIASES.get(codec, codec)
        if codec not in _BARE_CODECS:
            raise ImageEncodingError(
                f'unsupported format {fmt!r}: expected one of {sorted(_BARE_CODECS)} or '
                '"<encoding>; <jpeg|png> compressed [<encoding>]"')
        return CompressedFormat(codec, None, None, False)
    encoding, transport = (part.strip() for part in fmt.split(';', 1))
    encoding_info(encoding)
    if transport.startswith('compressedDepth'):
        if transport not in ('compressedDepth', 'compressedDepth png'):
            raise ImageEncodingError(
                f'unsupported format {fmt!r}: only PNG compressedDepth can be decoded')
        return CompressedFormat('png', encoding, None, True)
    match = _TRANSPORT_FORMAT.fullmatch(transport)
    if match is None:
        raise ImageEncodingError(
            f'unsupported format {fmt!r}: expected "<encoding>; <jpeg|png> compressed '
            '[<encoding>]"')
    compressed_encoding = match.group(2)
    if compressed_encoding is not None:
        encoding_info(compressed_encoding)
    return CompressedFormat(match.group(1), encoding, compressed_encoding, False)


def _decoded_encoding(image):
    """Encoding of what ``cv2.imdecode(..., IMREAD_UNCHANGED)`` returned (BGR order)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    bits = image.dtype.itemsize * 8
    if image.dtype.kind == 'u' and bits in (8, 16):
        name = {1: 'mono', 3: 'bgr', 4: 'bgra'}.get(channels)
        if name is not None:
            return f'{name}{bits}'
    return _cv_type_name(image)


def _transport_target(info, codec):
    """What compressed_image_transport's publisher encodes an image of ``info`` as."""
    if _is_colour(info) and info.family != 'gray' and not info.family.startswith('bayer'):
        return 'bgr8' if codec == 'jpeg' else f'bgr{info.bits}'
    if codec == 'jpeg':
        return 'mono8'
    return None


def compressed_to_numpy(msg, desired_encoding=PASSTHROUGH):
    """Decode a ``sensor_msgs/CompressedImage`` (cv_bridge's ``compressed_imgmsg_to_cv2``).

    The ``format`` is parsed by :func:`parse_compressed_format`. A bare codec name ('jpeg',
    'png', ...) gives the decoded pixels as OpenCV returns them: mono8/mono16, bgr8/bgr16 or
    bgra8/bgra16. An image_transport format ('rgb8; jpeg compressed bgr8', 'mono16; png
    compressed') is undone as compressed_image_transport's subscriber does: the pixels are
    converted back to the encoding before ';' when that is mono/rgb/bgr/rgba/bgra (alpha
    returns as 255; an 8-bit JPEG of a 16-bit image is scaled by 65535/255, where
    compressed_image_transport multiplies by 256), otherwise (YUV, Bayer, which the publisher
    turned into bgr8/mono8) returned in the compressed layout. ``16UC1``/``mono16``
    compressedDepth PNG is decoded too. The JPEG/PNG signature of ``data`` must match the
    format.

    Returns:
        ``(image, encoding)``: a new H x W or H x W x C array and its Image encoding
        (``desired_encoding`` unless that is 'passthrough').
    """
    parsed = parse_compressed_format(msg.format)
    raw = _as_byte_array(msg.data)
    if parsed.depth:
        if parsed.encoding not in ('16UC1', 'mono16'):
            raise ImageEncodingError(
                f'compressedDepth {parsed.encoding} is not supported; only 16UC1/mono16 PNG')
        raw = raw[COMPRESSED_DEPTH_HEADER_BYTES:]
    magic = {'jpeg': _JPEG_MAGIC, 'png': _PNG_MAGIC}.get(parsed.codec)
    if magic is not None and raw[:len(magic)].tobytes() != magic:
        raise ImageEncodingError(
            f'data does not start with the {parsed.codec.upper()} signature that format '
            f'{msg.format!r} promises')
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise ImageEncodingError(f'data could not be decoded as {parsed.codec} ({msg.format!r})')
    decoded = _decoded_encoding(image)
    if parsed.encoding is None:
        encoding = decoded
    else:
        declared = encoding_info(parsed.encoding)
        if parsed.depth:
            actual = parsed.encoding
        else:
            actual = parsed.compressed_encoding or _transport_target(declared, parsed.codec)
            actual = actual or parsed.encoding
        _check_array_matches(image, encoding_info(actual), actual, what='decoded image')
        encoding = actual
        back_convertible = declared.family in _CV_COLOUR_NAMES
        if actual != parsed.encoding and back_convertible:
            image = convert_encoding(image, actual, parsed.encoding)
            encoding = parsed.encoding
    if desired_encoding in (PASSTHROUGH, encoding):
        return image, encoding
    return convert_encoding(image, encoding, desired_encoding), desired_encoding


def numpy_to_compressed(image, fmt, header=None, message_class=None, jpeg_quality=95):
    """Encode an array as a ``sensor_msgs/CompressedImage`` (cv_bridge / image_transport).

    Args:
        image: H x W or H x W x C array.
        fmt: a bare codec ('jpeg', 'jpg', 'png', ...): the array is written as is (3 channels
            are taken as BGR, like ``cv2_to_compressed_imgmsg``) and ``format`` is ``fmt``;
            or '<encoding>; <jpeg|png> compressed [<target>]': ``image`` is in <encoding> and
            is converted as compressed_image_transport's publisher does (colour to bgr8 for
            JPEG and to bgr8/bgr16 for PNG, grey to mono8 for JPEG, grey unchanged for PNG);
            ``format`` is then written in the publisher's canonical form.
        header, message_class: as for :func:`numpy_to_image` (default
            ``sensor_msgs.msg.CompressedImage``).
        jpeg_quality: 0..100, used for JPEG (which has no alpha: OpenCV drops a 4th channel).

    Raises:
        ImageEncodingError: the codec cannot store the array (e.g. uint16 JPEG), the array
        does not match <encoding>, or <target> differs from the publisher's.
    """
    _check_image_array(image)
    parsed = parse_compressed_format(fmt)
    if parsed.depth:
        raise ImageEncodingError('encoding compressedDepth is not supported')
    if not 0 <= jpeg_quality <= 100:
        raise ImageEncodingError(f'jpeg_quality must be in 0..100, got {jpeg_quality}')
    out_format = fmt
    if parsed.encoding is not None:
        declared = encoding_info(parsed.encoding)
        _check_array_matches(image, declared, parsed.encoding, what='array')
        target = _transport_target(declared, parsed.codec)
        if parsed.compressed_encoding not in (None, target):
            raise ImageEncodingError(
                f'format {fmt!r}: {parsed.encoding} is compressed as {target or "itself"}, '
                f'not {parsed.compressed_encoding}')
        if target is not None:
            image = convert_encoding(image, parsed.encoding, target)
        out_format = f'{parsed.encoding}; {parsed.codec} compressed {target or ""}'
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if parsed.codec == 'jpeg' else []
    extension = {'jpeg': '.jpg', 'tiff': '.tif'}.get(parsed.codec, '.' + parsed.codec)
    storable = _CODEC_DTYPES.get(parsed.codec, _UINT8_ONLY)
    if image.dtype.newbyteorder('=') not in storable:
        # OpenCV would silently fall back to 8 bit.
        raise ImageEncodingError(
            f'{parsed.codec} stores {", ".join(str(d) for d in storable)} images, '
            f'got {image.dtype}')
    try:
        ok, encoded = cv2.imencode(extension, _to_native(image), params)
    except cv2.error as error:
        raise ImageEncodingError(
            f'OpenCV cannot encode a {image.dtype} array of shape {image.shape} as '
            f'{parsed.codec}: {error}') from None
    if not ok:
        raise ImageEncodingError(
            f'OpenCV cannot encode a {image.dtype} array of shape {image.shape} as '
            f'{parsed.codec}')
    if message_class is None:
        from sensor_msgs.msg import CompressedImage as message_class
    return _fill_message(message_class, header, {'format': out_format}, encoded.reshape(-1))


def _is_compressed(msg):
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def visible_to_bgr8(msg, bridge=None):
    """The visible camera's image as H x W x 3 uint8 BGR, as the fusion engine consumes it.

    ``msg`` is an Image with a colour encoding (bgr8/rgb8/bgra8/rgba8, their 16-bit forms
    scaled by 255/65535, mono8/mono16 replicated to three channels, yuv422/uyvy, yuyv,
    bayer_*) or a CompressedImage. Images are decoded by ``bridge`` (default:
    :func:`default_bridge`, the real cv_bridge where importable). With this module's bridge
    bgr8 input is returned as a view of ``msg.data`` (non-contiguous when ``step`` has
    padding); everything else is a new array.
    """
    if _is_compressed(msg):
        return compressed_to_numpy(msg, 'bgr8')[0]
    if msg.encoding not in VISIBLE_ENCODINGS:
        raise ImageEncodingError(
            f'visible image encoding {msg.encoding!r} carries no colour layout; expected one '
            f'of {sorted(VISIBLE_ENCODINGS)}')
    return _decode(msg, 'bgr8', default_bridge() if bridge is None else bridge)


def thermal_to_array(msg, bridge=None):
    """The thermal camera's image as a 2-D array plus the mask of valid pixels.

    ``msg`` is an Image (or CompressedImage decoding to one) in mono8/8UC1 (uint8),
    mono16/16UC1 (uint16) or 32FC1 (float32), values as the camera sent them. Images are
    decoded by ``bridge`` as in :func:`visible_to_bgr8`.

    Returns:
        ``(image, valid_mask)``: ``image`` H x W in the encoding's dtype (a view of
        ``msg.data`` where :func:`image_to_numpy` gives one). ``valid_mask`` is None when every
        pixel is valid (always for integer encodings); for 32FC1 with NaN/Inf pixels it is an
        H x W bool array (True = finite) and ``image`` is a new array in which every
        non-finite pixel is replaced by the smallest finite value of the frame (so downstream
        min/max statistics are unchanged). A 32FC1 frame without any finite pixel raises
        ImageEncodingError.
    """
    if _is_compressed(msg):
        image, encoding = compressed_to_numpy(msg)
    else:
        encoding = msg.encoding
        if encoding not in THERMAL_ENCODINGS:
            raise ImageEncodingError(
                f'thermal image encoding {encoding!r} is not supported; expected one of '
                f'{sorted(THERMAL_ENCODINGS)}')
        image = _decode(msg, PASSTHROUGH, default_bridge() if bridge is None else bridge)
    if encoding not in THERMAL_ENCODINGS:
        raise ImageEncodingError(
            f'thermal image decodes to {encoding!r}; expected one of {sorted(THERMAL_ENCODINGS)}')
    if image.dtype.kind != 'f':
        return image, None
    valid = np.isfinite(image)
    if valid.all():
        return image, None
    if not valid.any():
        raise ImageEncodingError('every pixel of the 32FC1 thermal image is NaN or Inf')
    filled = image.copy()
    filled[~valid] = image[valid].min()
    return filled, valid


# -- cv_bridge ------------------------------------------------------------------------------

BRIDGE_BACKENDS = ('auto', 'cv_bridge', 'builtin')


def real_cv_bridge():
    """The ``cv_bridge`` module where it is importable with its compiled part, else None."""
    try:
        import cv_bridge
        from cv_bridge.boost.cv_bridge_boost import getCvType  # noqa: F401 (compiled conversions)
    except ImportError:
        return None
    return cv_bridge


class CodecBridge:
    """``cv_bridge.CvBridge``'s conversion methods, implemented by this module.

    Same names and arguments; arrays from ``imgmsg_to_cv2`` may be views of the message
    (see :func:`image_to_numpy`); errors are :class:`ImageEncodingError` (a ``TypeError``, as
    ``CvBridgeError`` is).
    """

    def imgmsg_to_cv2(self, img_msg, desired_encoding=PASSTHROUGH):
        """See :func:`image_to_numpy`."""
        return image_to_numpy(img_msg, desired_encoding)

    def cv2_to_imgmsg(self, cvim, encoding=PASSTHROUGH, header=None):
        """See :func:`numpy_to_image`."""
        return numpy_to_image(cvim, encoding, header=header)

    def compressed_imgmsg_to_cv2(self, cmprs_img_msg, desired_encoding=PASSTHROUGH):
        """See :func:`compressed_to_numpy` (this returns the array only)."""
        return compressed_to_numpy(cmprs_img_msg, desired_encoding)[0]

    def cv2_to_compressed_imgmsg(self, cvim, dst_format='jpg'):
        """See :func:`numpy_to_compressed`."""
        return numpy_to_compressed(cvim, dst_format)


def resolve_bridge_backend(requested='auto'):
    """'cv_bridge' where requested or ('auto') importable, else 'builtin'.

    Raises ConfigError for an unknown name or for 'cv_bridge' where it is not importable.
    """
    from tesg_ros.errors import ConfigError
    if requested not in BRIDGE_BACKENDS:
        raise ConfigError(f'image bridge must be one of {BRIDGE_BACKENDS}, got {requested!r}')
    if requested == 'builtin':
        return 'builtin'
    if real_cv_bridge() is None:
        if requested == 'cv_bridge':
            raise ConfigError('image bridge cv_bridge is not importable here; install '
                              'ros-<distro>-cv-bridge or use builtin')
        return 'builtin'
    return 'cv_bridge'


def make_bridge(backend='auto'):
    """A ``cv_bridge.CvBridge()`` (backend 'cv_bridge', or 'auto' where importable) or a
    :class:`CodecBridge`."""
    if resolve_bridge_backend(backend) == 'cv_bridge':
        return real_cv_bridge().CvBridge()
    return CodecBridge()


_default_bridge = None


def default_bridge():
    """The bridge :func:`visible_to_bgr8` and :func:`thermal_to_array` use: ``make_bridge()``."""
    global _default_bridge
    if _default_bridge is None:
        _default_bridge = make_bridge()
    return _default_bridge


def _decode(msg, desired_encoding, bridge):
    """``image_to_numpy`` through ``bridge``; a real cv_bridge gets the message after this
    module's checks of encoding, step and size, and its errors come back as ImageEncodingError.

    Multi-byte data in the non-native byte order stays with this module: cv_bridge swaps it with
    ``ndarray.newbyteorder``, which NumPy 2 removed.
    """
    info = encoding_info(msg.encoding)
    pixels = _pixel_array(msg, info)
    if isinstance(bridge, CodecBridge) or not pixels.dtype.isnative:
        image = _to_native(pixels)
        if desired_encoding in (PASSTHROUGH, msg.encoding):
            return image
        return convert_encoding(image, msg.encoding, desired_encoding)
    try:
        return bridge.imgmsg_to_cv2(msg, desired_encoding)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ImageEncodingError(
            f'cv_bridge cannot convert {msg.encoding} to {desired_encoding}: {error}') from error


# -- display conversion (cv_bridge's cvtColorForDisplay) --------------------------------------

# What cvtColorForDisplay takes a bare OpenCV type for when it has to pick a colour layout.
_DISPLAY_LAYOUTS = {'8UC1': 'mono8', '16UC1': 'mono16', '8UC3': 'bgr8', '8UC4': 'bgra8',
                    '16UC3': 'bgr16', '16UC4': 'bgra16'}
_DISPLAY_OUTPUTS = frozenset({'mono8', 'rgb8', 'bgr8', 'rgba8', 'bgra8'})
_GOLDEN_RATIO = 0.618033988749895


def label_colours(labels):
    """A BGR uint8 colour per integer label: hues spaced by the golden ratio (distinct for
    nearby labels, the same label always the same colour)."""
    labels = np.asarray(labels, dtype=np.int64)
    hue = (labels.astype(np.float64) * _GOLDEN_RATIO) % 1.0
    hsv = np.stack([hue * 180.0, np.full_like(hue, 200.0), np.full_like(hue, 240.0)], axis=-1)
    hsv = np.rint(hsv).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).reshape(labels.shape + (3,))


def convert_for_display(image, encoding, encoding_out='', do_dynamic_scaling=False,
                        min_image_value=0.0, max_image_value=0.0, colormap=-1, bg_label=-1):
    """An 8-bit image for viewing (debug topics, rviz), following cv_bridge's
    ``cvtColorForDisplay`` rules.

    * ``encoding_out`` '' picks ``bgr8`` for any 8-, 16- or 32-bit source (one or more
      channels); otherwise it must be mono8, rgb8, bgr8, rgba8 or bgra8.
    * ``32SC1`` to ``bgr8`` is a label image: a colour per label (:func:`label_colours`),
      ``bg_label`` pixels black.
    * ``do_dynamic_scaling``: ``min_image_value``/``max_image_value`` become the minimum and
      maximum of the finite pixels; a constant image gives mid grey (128) everywhere.
    * Where min and max differ (given or found), the single-channel image is scaled linearly,
      min to 0 and max to 255, saturating and rounding like ``convertTo``; NaN becomes 0, +Inf
      255. ``colormap`` (an OpenCV ``COLORMAP_*``, -1 none) then colours it, NaN pixels black.
    * Otherwise bare OpenCV types are read as mono/BGR/BGRA (``8UC1``, ``16UC3``, ...) and
      converted with :func:`convert_encoding`; an image already in ``encoding_out`` is returned
      as is. A source without a colour layout (``32FC1`` unscaled) cannot be shown: error.

    (cv_bridge's C++ matches ``CV_8UC1`` rather than ``8UC1`` there and fills a constant image
    with three channels whatever ``encoding_out`` says; this follows the documented intent.)

    Returns:
        ``(image, encoding_out)``. Raises ImageEncodingError (a ``TypeError``) when the
        conversion is not possible.
    """
    _check_image_array(image)
    info = encoding_info(encoding)
    _check_array_matches(image, info, encoding)
    image = _to_native(image)
    if not encoding_out:
        if info.bits not in (8, 16, 32):
            raise ImageEncodingError(
                f'no display encoding can be guessed for {encoding} ({info.bits}-bit)')
        encoding_out = 'bgr8'
    elif encoding_out not in _DISPLAY_OUTPUTS:
        raise ImageEncodingError(
            f'display encoding must be one of {sorted(_DISPLAY_OUTPUTS)}, got {encoding_out!r}')
    if encoding == '32SC1' and encoding_out == 'bgr8':
        labels = image.reshape(image.shape[:2])
        colours = label_colours(labels)
        colours[labels == bg_label] = 0
        return colours, encoding_out
    low, high = float(min_image_value), float(max_image_value)
    if do_dynamic_scaling:
        finite = image[np.isfinite(image)] if image.dtype.kind == 'f' else image
        if finite.size == 0 or finite.min() == finite.max():
            channels = 1 if encoding_out == 'mono8' else len(encoding_out) - 1
            shape = image.shape[:2] if channels == 1 else image.shape[:2] + (channels,)
            return np.full(shape, 128, np.uint8), encoding_out
        low, high = float(finite.min()), float(finite.max())
    if low != high:
        if info.channels != 1:
            raise ImageEncodingError(
                f'display scaling needs a single-channel image, {encoding} has {info.channels}')
        pixels = image.reshape(image.shape[:2]).astype(np.float64)
        scaled = (pixels - low) * (255.0 / (high - low))
        invalid = np.isnan(scaled)
        scaled = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)),
                         0, 255).astype(np.uint8)
        if colormap == -1:
            return convert_encoding(scaled, 'mono8', encoding_out), encoding_out
        coloured = cv2.applyColorMap(scaled, colormap)
        coloured[invalid] = 0
        return convert_encoding(coloured, 'bgr8', encoding_out), encoding_out
    typed = _DISPLAY_LAYOUTS.get(encoding, encoding)
    if typed == encoding_out:
        return image, encoding_out
    return convert_encoding(image, typed, encoding_out), encoding_out
