# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of tesg_ros.sensor.image_codec: Image/CompressedImage <-> numpy, cv_bridge semantics."""

import array
from types import SimpleNamespace

import cv2
from hypothesis import given, HealthCheck, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from tesg_ros.sensor import image_codec as codec
from tesg_ros.errors import ImageEncodingError, TesgError

ROUND_TRIP_ENCODINGS = [
    'mono8', 'mono16', 'rgb8', 'bgr8', 'rgba8', 'bgra8', 'rgb16', 'bgr16', 'rgba16', 'bgra16',
    'yuv422', 'uyvy', 'yuyv', 'yuv422_yuy2', 'bayer_rggb8', 'bayer_grbg16',
    '8UC1', '8UC3', '8SC2', '16UC1', '16SC4', '32SC1', '32FC1', '32FC3', '64FC1', '64FC2',
]
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


def random_pixels(encoding, height, width, seed):
    """H x W (x C) array filled over the encoding's whole value range (floats incl. +-big)."""
    info = codec.encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == 'f':
        return (rng.standard_normal(shape) * 1e4).astype(info.dtype)
    limits = np.iinfo(info.dtype)
    return rng.integers(limits.min, limits.max, size=shape, endpoint=True, dtype=info.dtype)


def hand_made_message(pixels, encoding, padding_bytes=0, big_endian=False, data_type=bytes):
    """A duck-typed Image built byte by byte, independently of numpy_to_image."""
    order = '>' if big_endian else '<'
    rows = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(pixels.shape[0], -1)
    padding = bytes(range(7, 7 + padding_bytes))
    data = b''.join(row.tobytes() + padding for row in rows)
    return SimpleNamespace(
        height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
        is_bigendian=int(big_endian), step=rows.shape[1] * pixels.dtype.itemsize + padding_bytes,
        data=data_type(data))


def byte_view(msg):
    return np.frombuffer(msg.data, dtype=np.uint8)


# --- encoding table -------------------------------------------------------------------------

@pytest.mark.parametrize('encoding, dtype, channels, bits', [
    ('mono8', np.uint8, 1, 8), ('mono16', np.uint16, 1, 16), ('rgb8', np.uint8, 3, 8),
    ('bgra16', np.uint16, 4, 16), ('yuv422', np.uint8, 2, 8), ('uyvy', np.uint8, 2, 8),
    ('yuyv', np.uint8, 2, 8), ('bayer_gbrg16', np.uint16, 1, 16), ('8SC3', np.int8, 3, 8),
    ('16SC2', np.int16, 2, 16), ('32SC1', np.int32, 1, 32), ('32FC1', np.float32, 1, 32),
    ('64FC4', np.float64, 4, 64), ('32F', np.float32, 1, 32), ('8UC7', np.uint8, 7, 8),
])
def test_encoding_info_matches_cv_bridge_types(encoding, dtype, channels, bits):
    info = codec.encoding_info(encoding)
    assert (info.dtype, info.channels, info.bits) == (np.dtype(dtype), channels, bits)


@pytest.mark.parametrize('encoding', ['', 'RGB8', 'nv21', 'jpeg', '8UC0', '8UC513', '32UC1',
                                      '16FC1', 'mono12', ' mono8', None, 8])
def test_unknown_encodings_raise(encoding):
    with pytest.raises(ImageEncodingError, match='encoding'):
        codec.encoding_info(encoding)


def test_image_encoding_error_is_a_tesg_error():
    assert issubclass(ImageEncodingError, TesgError)


# --- round trips ----------------------------------------------------------------------------

@PROPERTY_SETTINGS
@given(encoding=st.sampled_from(ROUND_TRIP_ENCODINGS), height=st.integers(1, 6),
       half_width=st.integers(1, 4), padding_elements=st.integers(0, 3),
       big_endian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_hand_made_messages_decode_to_their_pixels(encoding, height, half_width,
                                                   padding_elements, big_endian, seed):
    pixels = random_pixels(encoding, height, 2 * half_width, seed)
    padding_bytes = padding_elements * pixels.dtype.itemsize
    msg = hand_made_message(pixels, encoding, padding_bytes, big_endian)
    decoded = codec.image_to_numpy(msg)
    assert decoded.dtype == pixels.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)


@PROPERTY_SETTINGS
@given(encoding=st.sampled_from(ROUND_TRIP_ENCODINGS), height=st.integers(1, 6),
       half_width=st.integers(1, 4), big_endian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_numpy_to_image_round_trips(encoding, height, half_width, big_endian, seed):
    pixels = random_pixels(encoding, height, 2 * half_width, seed)
    if big_endian:
        pixels = pixels.astype(pixels.dtype.newbyteorder('>'))
    msg = codec.numpy_to_image(pixels, encoding)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (height, 2 * half_width, encoding)
    info = codec.encoding_info(encoding)
    assert msg.step == 2 * half_width * info.channels * info.dtype.itemsize
    assert len(msg.data) == msg.height * msg.step
    assert msg.is_bigendian == (big_endian and info.dtype.itemsize > 1)
    np.testing.assert_array_equal(codec.image_to_numpy(msg), pixels)


def test_numpy_to_image_writes_bytes_like_cv2_to_imgmsg():
    pixels = np.array([[258, 1]], dtype='>u2')
    msg = codec.numpy_to_image(pixels, 'mono16')
    assert msg.is_bigendian == 1 and bytes(msg.data) == b'\x01\x02\x00\x01'
    little = codec.numpy_to_image(pixels.astype('<u2'), '16UC1')
    assert little.is_bigendian == 0 and bytes(little.data) == b'\x02\x01\x01\x00'


def test_numpy_to_image_passthrough_names_the_opencv_type_and_copies_header():
    header = Header(frame_id='thermal_optical')
    header.stamp.sec = 12
    msg = codec.numpy_to_image(np.zeros((2, 3, 3), np.int16), 'passthrough', header=header)
    assert msg.encoding == '16SC3' and msg.step == 18
    assert msg.header.frame_id == 'thermal_optical' and msg.header.stamp.sec == 12
    assert codec.numpy_to_image(np.zeros((2, 3), np.float64), 'passthrough').encoding == '64FC1'


def test_numpy_to_image_fills_any_attribute_message_class():
    pixels = random_pixels('bgra8', 3, 2, seed=11)
    msg = codec.numpy_to_image(pixels, 'bgra8', message_class=SimpleNamespace)
    assert isinstance(msg, SimpleNamespace) and isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.step, msg.is_bigendian) == (3, 2, 8, 0)
    np.testing.assert_array_equal(codec.image_to_numpy(msg), pixels)


def test_numpy_to_image_accepts_non_contiguous_and_hxwx1_arrays():
    base = np.arange(60, dtype=np.uint8).reshape(5, 12)
    strided = base[::2, 1::3]
    msg = codec.numpy_to_image(strided, 'mono8')
    np.testing.assert_array_equal(codec.image_to_numpy(msg), strided)
    column = np.arange(6, dtype=np.uint16).reshape(2, 3, 1)
    decoded = codec.image_to_numpy(codec.numpy_to_image(column, 'mono16'))
    assert decoded.shape == (2, 3)
    np.testing.assert_array_equal(decoded, column[:, :, 0])


def test_big_endian_mono16_values():
    msg = SimpleNamespace(height=1, width=2, encoding='mono16', is_bigendian=1, step=4,
                          data=b'\x01\x02\xff\x00')
    decoded = codec.image_to_numpy(msg)
    assert decoded.dtype == np.dtype('uint16') and decoded.dtype.isnative
    assert decoded.tolist() == [[0x0102, 0xff00]]
    msg.is_bigendian = 0
    assert codec.image_to_numpy(msg).tolist() == [[0x0201, 0x00ff]]


def test_padded_step_skips_row_padding():
    msg = SimpleNamespace(height=2, width=2, encoding='rgb8', is_bigendian=0, step=8,
                          data=bytes([1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99]))
    decoded = codec.image_to_numpy(msg)
    assert decoded.tolist() == [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]
    expected_bgr = [[[3, 2, 1], [6, 5, 4]], [[9, 8, 7], [12, 11, 10]]]
    assert codec.image_to_numpy(msg, 'bgr8').tolist() == expected_bgr


def test_empty_image():
    msg = codec.numpy_to_image(np.zeros((0, 4, 3), np.uint8), 'bgr8')
    assert codec.image_to_numpy(msg).shape == (0, 4, 3)


# --- zero copy ------------------------------------------------------------------------------

@pytest.mark.parametrize('padding_bytes', [0, 6])
def test_passthrough_is_a_view_of_rclpy_message_data(padding_bytes):
    pixels = random_pixels('mono16', 4, 5, seed=1)
    msg = Image(**vars(hand_made_message(pixels, 'mono16', padding_bytes)))
    assert isinstance(msg.data, array.array)
    decoded = codec.image_to_numpy(msg)
    assert np.shares_memory(decoded, byte_view(msg))
    msg.data[0] ^= 0xff  # a write to the message shows through the view
    assert decoded[0, 0] == pixels[0, 0] ^ 0xff


@pytest.mark.parametrize('data_type', [bytes, bytearray, memoryview,
                                       lambda b: np.frombuffer(b, np.uint8).copy()])
def test_passthrough_is_a_view_of_any_byte_buffer(data_type):
    pixels = random_pixels('bgr8', 3, 4, seed=2)
    msg = hand_made_message(pixels, 'bgr8', padding_bytes=5, data_type=data_type)
    decoded = codec.image_to_numpy(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))
    assert codec.visible_to_bgr8(msg).base is not None
    assert np.shares_memory(codec.visible_to_bgr8(msg), np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(decoded, pixels)


def test_byte_swapped_and_list_data_are_copied():
    pixels = random_pixels('32FC1', 3, 4, seed=3)
    swapped = hand_made_message(pixels, '32FC1', big_endian=True, data_type=bytearray)
    decoded = codec.image_to_numpy(swapped)
    assert not np.shares_memory(decoded, byte_view(swapped))
    np.testing.assert_array_equal(decoded, pixels)
    listed = hand_made_message(pixels, '32FC1', data_type=list)
    np.testing.assert_array_equal(codec.image_to_numpy(listed), pixels)


def test_big_endian_single_byte_encoding_is_still_a_view():
    pixels = random_pixels('rgba8', 2, 3, seed=4)
    msg = hand_made_message(pixels, 'rgba8', big_endian=True, data_type=bytearray)
    assert np.shares_memory(codec.image_to_numpy(msg), byte_view(msg))


def test_rosbags_messages_round_trip_through_cdr():
    typestore_module = pytest.importorskip('rosbags.typesys')
    store = typestore_module.get_typestore(typestore_module.Stores.ROS2_KILTED)
    image_class = store.types['sensor_msgs/msg/Image']
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=3, nanosec=4), frame_id='rgb')
    pixels = random_pixels('bgr16', 3, 5, seed=5)
    with pytest.raises(TypeError, match='header'):
        codec.numpy_to_image(pixels, 'bgr16', message_class=image_class)
    msg = codec.numpy_to_image(pixels, 'bgr16', header=header, message_class=image_class)
    restored = store.deserialize_cdr(store.serialize_cdr(msg, image_class.__msgtype__),
                                     image_class.__msgtype__)
    decoded = codec.image_to_numpy(restored)
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, restored.data)
    assert restored.header.frame_id == 'rgb'


# --- conversions ----------------------------------------------------------------------------

def uyvy_and_yuyv(luma, u, v):
    """The same pixels in both YUV 4:2:2 byte orders: luma H x W, u/v H x W/2."""
    height, width = luma.shape
    uyvy = np.empty((height, width, 2), np.uint8)
    uyvy[:, :, 1] = luma
    uyvy[:, 0::2, 0], uyvy[:, 1::2, 0] = u, v
    yuyv = np.empty_like(uyvy)
    yuyv[:, :, 0] = luma
    yuyv[:, 0::2, 1], yuyv[:, 1::2, 1] = u, v
    return uyvy, yuyv


def test_yuv422_decodes_like_opencv_and_byte_orders_agree():
    rng = np.random.default_rng(6)
    luma = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    u = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    v = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    uyvy, yuyv = uyvy_and_yuyv(luma, u, v)
    from_uyvy = codec.visible_to_bgr8(codec.numpy_to_image(uyvy, 'uyvy'))
    np.testing.assert_array_equal(from_uyvy, cv2.cvtColor(uyvy, cv2.COLOR_YUV2BGR_UYVY))
    np.testing.assert_array_equal(
        codec.visible_to_bgr8(codec.numpy_to_image(uyvy, 'yuv422')), from_uyvy)
    for alias in ('yuyv', 'yuv422_yuy2'):
        np.testing.assert_array_equal(
            codec.visible_to_bgr8(codec.numpy_to_image(yuyv, alias)), from_uyvy)
    grey = codec.image_to_numpy(codec.numpy_to_image(uyvy, 'uyvy'), 'mono8')
    np.testing.assert_array_equal(grey, luma)


def test_yuv422_known_colours_and_padded_step():
    # BT.601 video range: Y 16 -> black, Y 235 -> white, neutral chroma 128.
    luma = np.array([[16, 16, 235, 235]], np.uint8)
    uyvy, _ = uyvy_and_yuyv(luma, np.full((1, 2), 128, np.uint8), np.full((1, 2), 128, np.uint8))
    msg = hand_made_message(uyvy, 'uyvy', padding_bytes=4)
    bgr = codec.visible_to_bgr8(msg)
    assert bgr.shape == (1, 4, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr, [[[0, 0, 0]] * 2 + [[255, 255, 255]] * 2])


@pytest.mark.parametrize('encoding, pixel, expected_bgr', [
    ('rgb8', [10, 20, 30], [30, 20, 10]), ('bgr8', [10, 20, 30], [10, 20, 30]),
    ('rgba8', [10, 20, 30, 40], [30, 20, 10]), ('bgra8', [10, 20, 30, 40], [10, 20, 30]),
    ('mono8', 77, [77, 77, 77]), ('mono16', 257 * 77, [77, 77, 77]),
    ('mono16', 65535, [255, 255, 255]), ('mono16', 128, [0, 0, 0]), ('mono16', 129, [1, 1, 1]),
    ('rgb16', [65535, 257, 0], [0, 1, 255]), ('bgr16', [65535, 257, 0], [255, 1, 0]),
])
def test_visible_to_bgr8_known_values(encoding, pixel, expected_bgr):
    info = codec.encoding_info(encoding)
    pixels = np.tile(np.array(pixel, info.dtype), (2, 2, 1)).reshape(
        (2, 2) if info.channels == 1 else (2, 2, info.channels))
    bgr = codec.visible_to_bgr8(codec.numpy_to_image(pixels, encoding))
    assert bgr.shape == (2, 2, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[1, 1], expected_bgr)


def test_bayer_rggb_red_scene_demosaics_to_red():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # R sites of an RGGB pattern
    msg = codec.numpy_to_image(mosaic, 'bayer_rggb8')
    bgr = codec.visible_to_bgr8(msg)
    np.testing.assert_array_equal(bgr, cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2BGR))
    assert bgr[3:5, 3:5, 2].min() == 200 and bgr[3:5, 3:5, :2].max() == 0


def test_tno_visible_and_thermal_frames(tno_pair_paths):
    for ir_path, vi_path in tno_pair_paths:
        visible = cv2.imread(str(vi_path), cv2.IMREAD_UNCHANGED)
        thermal = cv2.imread(str(ir_path), cv2.IMREAD_UNCHANGED)
        assert visible.ndim == 2 and visible.dtype == np.uint8
        bgr = codec.visible_to_bgr8(codec.numpy_to_image(visible, 'mono8'))
        np.testing.assert_array_equal(bgr, cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR))
        image, valid = codec.thermal_to_array(codec.numpy_to_image(thermal, '8UC1'))
        assert valid is None
        np.testing.assert_array_equal(image, thermal)


def test_depth_conversions_scale_round_and_saturate():
    mono8 = codec.numpy_to_image(np.array([[0, 1, 255]], np.uint8), 'mono8')
    assert codec.image_to_numpy(mono8, 'mono16').tolist() == [[0, 257, 65535]]
    assert codec.image_to_numpy(mono8, '32FC1').tolist() == [[0.0, 1.0, 255.0]]
    floats = np.array([[-5.0, 0.5, 1.5, 2.5, 300.0]], np.float32)
    as_uint8 = codec.image_to_numpy(codec.numpy_to_image(floats, '32FC1'), '8UC1')
    assert as_uint8.dtype == np.uint8 and as_uint8.tolist() == [[0, 0, 2, 2, 255]]
    signed = codec.numpy_to_image(np.array([[-300, 5, 70000]], np.int32), '32SC1')
    assert codec.image_to_numpy(signed, '16SC1').tolist() == [[-300, 5, 32767]]
    assert codec.image_to_numpy(signed, '8SC1').tolist() == [[-128, 5, 127]]


def test_every_16_bit_value_scales_to_8_bit_like_convert_to():
    every_value = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    msg = codec.numpy_to_image(every_value, 'mono16')
    expected = np.rint(every_value * (255.0 / 65535.0)).astype(np.uint8)
    np.testing.assert_array_equal(codec.image_to_numpy(msg, 'mono8'), expected)
    every_byte = np.arange(256, dtype=np.uint8).reshape(16, 16)
    widened = codec.image_to_numpy(codec.numpy_to_image(every_byte, '8UC1'), '16UC1')
    np.testing.assert_array_equal(widened, every_byte.astype(np.uint16) * 257)


def test_conversion_that_changes_nothing_keeps_the_view():
    msg = codec.numpy_to_image(np.arange(6, dtype=np.uint16).reshape(2, 3), 'mono16')
    assert np.shares_memory(codec.image_to_numpy(msg, '16UC1'), byte_view(msg))
    assert not np.shares_memory(codec.image_to_numpy(msg, 'mono8'), byte_view(msg))


@pytest.mark.parametrize('src, dst, match', [
    ('bgr8', 'uyvy', 'unsupported conversion'), ('32FC1', 'bgr8', 'not a colour format'),
    ('8UC3', 'rgb8', 'not a colour format'), ('bgr8', '8UC1', 'same number of channels'),
    ('bayer_rggb8', 'rgba8', 'unsupported conversion'), ('mono8', 'nv21', 'encoding'),
])
def test_impossible_conversions_raise(src, dst, match):
    info = codec.encoding_info(src)
    pixels = np.zeros((2, 2) if info.channels == 1 else (2, 2, info.channels), info.dtype)
    with pytest.raises(ImageEncodingError, match=match):
        codec.image_to_numpy(codec.numpy_to_image(pixels, src), dst)


def test_nan_to_integer_conversion_raises():
    msg = codec.numpy_to_image(np.array([[np.nan, 1.0]], np.float32), '32FC1')
    with pytest.raises(ImageEncodingError, match='NaN'):
        codec.image_to_numpy(msg, '16UC1')


# --- thermal --------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding, dtype', [('mono8', np.uint8), ('8UC1', np.uint8),
                                             ('mono16', np.uint16), ('16UC1', np.uint16),
                                             ('32FC1', np.float32)])
def test_thermal_encodings_pass_through_as_views(encoding, dtype):
    pixels = random_pixels(encoding, 3, 4, seed=7)
    msg = codec.numpy_to_image(pixels, encoding)
    image, valid = codec.thermal_to_array(msg)
    assert image.dtype == np.dtype(dtype) and image.shape == (3, 4) and valid is None
    assert np.shares_memory(image, byte_view(msg))
    np.testing.assert_array_equal(image, pixels)


def test_thermal_32fc1_invalid_pixels_are_masked_and_filled_with_frame_minimum():
    pixels = np.array([[np.nan, 21.5, 30.0], [np.inf, -np.inf, 25.0]], np.float32)
    msg = codec.numpy_to_image(pixels, '32FC1')
    image, valid = codec.thermal_to_array(msg)
    assert valid.tolist() == [[False, True, True], [False, False, True]]
    assert image.tolist() == [[21.5, 21.5, 30.0], [21.5, 21.5, 25.0]]
    assert np.isnan(codec.image_to_numpy(msg)[0, 0])  # the message itself is untouched


def test_thermal_all_invalid_and_wrong_encodings_raise():
    with pytest.raises(ImageEncodingError, match='every pixel'):
        codec.thermal_to_array(codec.numpy_to_image(np.full((2, 2), np.nan, np.float32),
                                                    '32FC1'))
    for pixels, encoding in ((np.zeros((2, 2, 3), np.uint8), 'bgr8'),
                             (np.zeros((2, 2), np.float64), '64FC1')):
        with pytest.raises(ImageEncodingError, match='thermal'):
            codec.thermal_to_array(codec.numpy_to_image(pixels, encoding))
    colour_jpeg = codec.numpy_to_compressed(np.zeros((8, 8, 3), np.uint8), 'jpeg')
    with pytest.raises(ImageEncodingError, match='thermal'):
        codec.thermal_to_array(colour_jpeg)


def test_visible_rejects_encodings_without_colour_layout():
    with pytest.raises(ImageEncodingError, match='colour layout'):
        codec.visible_to_bgr8(codec.numpy_to_image(np.zeros((2, 2, 3), np.uint8), '8UC3'))


# --- compressed -----------------------------------------------------------------------------

def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_jpeg_decode_of_real_frame(tno_pair_paths):
    visible = cv2.imread(str(tno_pair_paths[0][1]), cv2.IMREAD_GRAYSCALE)
    colour = np.dstack([visible, visible // 2, 255 - visible])
    ok, encoded = cv2.imencode('.jpg', colour, [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = CompressedImage(format='jpeg', data=encoded.tobytes())
    image, encoding = codec.compressed_to_numpy(msg)
    assert ok and encoding == 'bgr8' and image.shape == colour.shape
    np.testing.assert_array_equal(image, cv2.imdecode(encoded, cv2.IMREAD_COLOR))
    assert psnr(image, colour) > 28  # 4:2:0 chroma subsampling of a textured colour image
    np.testing.assert_array_equal(codec.visible_to_bgr8(msg), image)
    rgb, rgb_encoding = codec.compressed_to_numpy(msg, 'rgb8')
    assert rgb_encoding == 'rgb8'
    np.testing.assert_array_equal(rgb, image[:, :, ::-1])


def test_image_transport_jpeg_keeps_rgb_channel_order():
    red_rgb = np.zeros((16, 16, 3), np.uint8)
    red_rgb[:, :, 0] = 250
    msg = codec.numpy_to_compressed(red_rgb, 'rgb8; jpeg compressed bgr8', jpeg_quality=90)
    assert isinstance(msg, CompressedImage) and msg.format == 'rgb8; jpeg compressed bgr8'
    assert bytes(msg.data[:3]) == b'\xff\xd8\xff'
    image, encoding = codec.compressed_to_numpy(msg)
    assert encoding == 'rgb8'
    assert np.abs(image.astype(int) - red_rgb).max() <= 3
    assert codec.visible_to_bgr8(msg)[8, 8, 2] >= 247


def test_sixteen_bit_png_round_trips_exactly():
    ramp = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 541)
    for fmt, expected_format, expected_encoding in (
            ('mono16; png compressed', 'mono16; png compressed ', 'mono16'),
            ('16UC1; png compressed', '16UC1; png compressed ', '16UC1'),
            ('png', 'png', 'mono16')):
        msg = codec.numpy_to_compressed(ramp, fmt)
        assert msg.format == expected_format
        image, encoding = codec.compressed_to_numpy(msg)
        assert encoding == expected_encoding and image.dtype == np.uint16
        np.testing.assert_array_equal(image, ramp)
    png_msg = codec.numpy_to_compressed(ramp, 'mono16; png compressed')
    thermal, valid = codec.thermal_to_array(png_msg)
    assert valid is None
    np.testing.assert_array_equal(thermal, ramp)


def test_rgba_and_colour16_png_follow_compressed_image_transport():
    rgba = random_pixels('rgba8', 4, 6, seed=8)
    msg = codec.numpy_to_compressed(rgba, 'rgba8; png compressed')
    assert msg.format == 'rgba8; png compressed bgr8'
    image, encoding = codec.compressed_to_numpy(msg)
    assert encoding == 'rgba8'
    np.testing.assert_array_equal(image[:, :, :3], rgba[:, :, :3])
    assert (image[:, :, 3] == 255).all()  # the publisher drops alpha
    rgb16 = random_pixels('rgb16', 4, 6, seed=9)
    msg16 = codec.numpy_to_compressed(rgb16, 'rgb16; png compressed bgr16')
    np.testing.assert_array_equal(codec.compressed_to_numpy(msg16)[0], rgb16)


@PROPERTY_SETTINGS
@given(encoding=st.sampled_from(['mono8', 'mono16', '8UC1', '16UC1', 'bgr8', 'rgb8', 'bgr16',
                                 'rgb16', 'bgra8', 'rgba16']),
       transport=st.booleans(), height=st.integers(1, 9), width=st.integers(1, 9),
       big_endian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_png_round_trips_are_lossless(encoding, transport, height, width, big_endian, seed):
    pixels = random_pixels(encoding, height, width, seed)
    if big_endian:
        pixels = pixels.astype(pixels.dtype.newbyteorder('>'))
    has_alpha = codec.encoding_info(encoding).channels == 4
    if transport and not has_alpha:  # image_transport's PNG drops alpha
        msg = codec.numpy_to_compressed(pixels, f'{encoding}; png compressed')
        expected_encoding = encoding
    else:
        # A bare PNG stores the array as is and reads back under OpenCV's BGR(A) names.
        msg = codec.numpy_to_compressed(pixels, 'png')
        info = codec.encoding_info(encoding)
        layout = {1: 'mono', 3: 'bgr', 4: 'bgra'}[info.channels]
        expected_encoding = f'{layout}{info.bits}'
    image, decoded_encoding = codec.compressed_to_numpy(msg)
    assert decoded_encoding == expected_encoding and image.dtype.isnative
    np.testing.assert_array_equal(image, pixels)


def test_mono16_jpeg_is_scaled_back_to_16_bit():
    grey = np.array([[0, 257 * 100, 65535]] * 8, np.uint16).repeat(8, axis=1)
    msg = codec.numpy_to_compressed(grey, 'mono16; jpeg compressed')
    assert msg.format == 'mono16; jpeg compressed mono8'
    image, encoding = codec.compressed_to_numpy(msg)
    assert encoding == 'mono16' and image.dtype == np.uint16
    assert np.abs(image.astype(int) - grey).max() <= 2 * 257


def test_yuv_jpeg_decodes_to_the_bgr8_it_holds():
    uyvy, _ = uyvy_and_yuyv(np.full((8, 8), 235, np.uint8), np.full((8, 4), 128, np.uint8),
                            np.full((8, 4), 128, np.uint8))
    msg = codec.numpy_to_compressed(uyvy, 'uyvy; jpeg compressed bgr8')
    image, encoding = codec.compressed_to_numpy(msg)
    assert encoding == 'bgr8' and image.min() >= 250


def test_compressed_depth_png_16uc1():
    depth = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    ok, png = cv2.imencode('.png', depth)
    msg = SimpleNamespace(format='16UC1; compressedDepth png',
                          data=bytes(codec.COMPRESSED_DEPTH_HEADER_BYTES) + png.tobytes())
    image, encoding = codec.compressed_to_numpy(msg)
    assert encoding == '16UC1'
    np.testing.assert_array_equal(image, depth)
    np.testing.assert_array_equal(codec.thermal_to_array(msg)[0], depth)
    msg.format = '32FC1; compressedDepth png'
    with pytest.raises(ImageEncodingError, match='compressedDepth'):
        codec.compressed_to_numpy(msg)


@pytest.mark.parametrize('fmt, expected', [
    ('jpeg', ('jpeg', None, None, False)), ('JPG', ('jpeg', None, None, False)),
    ('png', ('png', None, None, False)),
    ('bgr8; jpeg compressed bgr8', ('jpeg', 'bgr8', 'bgr8', False)),
    ('mono16; png compressed ', ('png', 'mono16', None, False)),
    ('16UC1; compressedDepth', ('png', '16UC1', None, True)),
])
def test_parse_compressed_format(fmt, expected):
    assert tuple(codec.parse_compressed_format(fmt)) == expected


@pytest.mark.parametrize('fmt', ['', '  ', 'gif', 'h264', 'bgr9; jpeg compressed bgr8',
                                 'bgr8; jpeg compressed bgr9', 'bgr8; theora',
                                 '16UC1; compressedDepth rvl', None])
def test_bad_compressed_formats_raise(fmt):
    with pytest.raises(ImageEncodingError, match='format|encoding'):
        codec.parse_compressed_format(fmt)


def test_compressed_data_errors():
    ok, png = cv2.imencode('.png', np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageEncodingError, match='JPEG signature'):
        codec.compressed_to_numpy(SimpleNamespace(format='jpeg', data=png.tobytes()))
    with pytest.raises(ImageEncodingError, match='could not be decoded'):
        codec.compressed_to_numpy(SimpleNamespace(format='png', data=png.tobytes()[:20]))
    with pytest.raises(ImageEncodingError, match='could not be decoded'):
        codec.compressed_to_numpy(SimpleNamespace(format='bmp', data=b''))
    with pytest.raises(ImageEncodingError, match='does not match encoding mono16'):
        codec.compressed_to_numpy(SimpleNamespace(format='mono16; png compressed',
                                                  data=png.tobytes()))


def test_numpy_to_compressed_errors():
    with pytest.raises(ImageEncodingError, match='jpeg stores uint8 images, got uint16'):
        codec.numpy_to_compressed(np.zeros((4, 4), np.uint16), 'jpeg')
    with pytest.raises(ImageEncodingError, match='png stores uint8, uint16 images'):
        codec.numpy_to_compressed(np.zeros((4, 4), np.float32), 'png')
    with pytest.raises(ImageEncodingError, match='jpeg_quality'):
        codec.numpy_to_compressed(np.zeros((4, 4), np.uint8), 'jpeg', jpeg_quality=101)
    with pytest.raises(ImageEncodingError, match='not rgb8'):
        codec.numpy_to_compressed(np.zeros((4, 4, 3), np.uint8), 'rgb8; jpeg compressed rgb8')
    with pytest.raises(ImageEncodingError, match='does not match encoding rgb8'):
        codec.numpy_to_compressed(np.zeros((4, 4), np.uint8), 'rgb8; png compressed')
    with pytest.raises(ImageEncodingError, match='cannot encode'):
        codec.numpy_to_compressed(np.zeros((4, 4, 2), np.uint8), 'jpeg')
    with pytest.raises(ImageEncodingError, match='compressedDepth'):
        codec.numpy_to_compressed(np.zeros((4, 4), np.uint16), '16UC1; compressedDepth')


# --- malformed Image messages ---------------------------------------------------------------

def valid_message(**changes):
    msg = hand_made_message(np.zeros((2, 4, 3), np.uint8), 'rgb8', padding_bytes=2)
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize('changes, match', [
    ({'encoding': 'rgb7'}, 'unsupported image encoding'),
    ({'step': 11}, r'step \(11\) is smaller than width \(4\)'),
    ({'data': bytes(27)}, r'len\(data\) \(27\) != height \(2\) \* step \(14\)'),
    ({'height': 3}, r'len\(data\) \(28\) != height \(3\)'),
    ({'is_bigendian': 2}, 'is_bigendian'),
    ({'data': 'not bytes'}, 'data must hold bytes'),
    ({'data': None}, 'data must be a byte buffer'),
    ({'data': [1, 2, 300]}, 'data must be a sequence of bytes'),
    ({'data': np.zeros(7, np.uint16)}, 'data must hold bytes'),
    ({'width': -1}, 'width must not be negative'),
])
def test_malformed_messages_raise_naming_the_field(changes, match):
    with pytest.raises(ImageEncodingError, match=match):
        codec.image_to_numpy(valid_message(**changes))


def test_step_not_multiple_of_element_size_raises():
    msg = hand_made_message(np.zeros((2, 3), np.uint16), 'mono16', padding_bytes=1)
    with pytest.raises(ImageEncodingError, match=r'step \(7\) is not a multiple'):
        codec.image_to_numpy(msg)


def test_odd_width_yuv_raises_on_decode_and_encode():
    msg = SimpleNamespace(height=1, width=3, encoding='yuyv', is_bigendian=0, step=6,
                          data=bytes(6))
    with pytest.raises(ImageEncodingError, match=r'width \(3\) must be even'):
        codec.image_to_numpy(msg)
    with pytest.raises(ImageEncodingError, match=r'width \(3\) must be even'):
        codec.numpy_to_image(np.zeros((1, 3, 2), np.uint8), 'uyvy')


@pytest.mark.parametrize('pixels, encoding, match', [
    (np.zeros((2, 2, 3), np.uint16), 'rgb8', 'does not match encoding rgb8'),
    (np.zeros((2, 2), np.uint8), 'bgr8', 'does not match encoding bgr8'),
    (np.zeros((2, 2, 3), np.uint8), 'mono8', 'does not match encoding mono8'),
    (np.zeros((2, 2), np.uint32), 'passthrough', 'no Image encoding'),
    (np.zeros((2, 2), bool), '8UC1', 'no Image encoding'),
    (np.zeros((2, 2, 1, 1), np.uint8), 'mono8', 'H x W'),
    (np.zeros(4, np.uint8), 'mono8', 'H x W'),
    ([[1, 2]], 'mono8', 'numpy array'),
    (np.zeros((2, 2), np.uint8), 'gray8', 'unsupported image encoding'),
])
def test_numpy_to_image_rejects_mismatched_arrays(pixels, encoding, match):
    with pytest.raises(ImageEncodingError, match=match):
        codec.numpy_to_image(pixels, encoding)


# --- cv_bridge comparison (only where cv_bridge is importable) ------------------------------

@pytest.mark.parametrize('encoding, desired', [
    ('rgb8', 'passthrough'), ('rgb8', 'bgr8'), ('mono16', 'bgr8'), ('mono8', 'mono16'),
    ('bgra8', 'rgb8'), ('yuv422', 'bgr8'), ('yuv422_yuy2', 'mono8'), ('bayer_rggb8', 'bgr8'),
    ('32FC1', 'passthrough'), ('16SC3', 'passthrough'), ('mono16', 'passthrough'),
])
def test_matches_cv_bridge(encoding, desired):
    cv_bridge = pytest.importorskip('cv_bridge')
    bridge = cv_bridge.CvBridge()
    pixels = random_pixels(encoding, 6, 8, seed=10)
    # Padding of whole pixels, native byte order: cv_bridge's Python reader truncates
    # step / pixel size and calls ndarray.newbyteorder (gone in numpy 2) to byte-swap.
    pixel_bytes = pixels.dtype.itemsize * codec.encoding_info(encoding).channels
    msg = Image(**vars(hand_made_message(pixels, encoding, 2 * pixel_bytes)))
    np.testing.assert_array_equal(codec.image_to_numpy(msg, desired),
                                  bridge.imgmsg_to_cv2(msg, desired))
    ours, theirs = codec.numpy_to_image(pixels, encoding), bridge.cv2_to_imgmsg(pixels, encoding)
    for field in ('height', 'width', 'encoding', 'is_bigendian', 'step', 'data'):
        assert getattr(ours, field) == getattr(theirs, field), field


# --- cv_bridge compatibility ------------------------------------------------------------------

def upstream_cv_bridge_error():
    """``CvBridgeError`` from cv_bridge's Python sources (TESG_CV_BRIDGE_SRC: the
    vision_opencv ``cv_bridge/python`` folder), or from an installed cv_bridge."""
    import importlib.util
    import os
    source = os.environ.get('TESG_CV_BRIDGE_SRC')
    if source:
        core = os.path.join(source, 'cv_bridge', 'core.py')
        if not os.path.isfile(core):
            pytest.skip(f'no cv_bridge/core.py under {source}')
        spec = importlib.util.spec_from_file_location('upstream_cv_bridge_core', core)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.CvBridgeError
    cv_bridge = pytest.importorskip('cv_bridge', reason='TESG_CV_BRIDGE_SRC is not set and '
                                    'cv_bridge is not installed')
    return cv_bridge.CvBridgeError


def test_codec_errors_are_caught_by_except_type_error_like_cv_bridge_errors():
    bad = SimpleNamespace(height=2, width=2, encoding='rgb8', is_bigendian=0, step=6,
                          data=bytes(11))
    for convert in (lambda: codec.image_to_numpy(bad), lambda: codec.visible_to_bgr8(bad),
                    lambda: codec.encoding_info('no-such-encoding'),
                    lambda: codec.convert_for_display(np.zeros((2, 2), np.float32), '32FC1')):
        try:
            convert()
        except TypeError as error:  # how code written for cv_bridge catches CvBridgeError
            assert isinstance(error, ImageEncodingError)
            assert isinstance(error, ValueError) and isinstance(error, TesgError)
        else:
            pytest.fail('no error raised')


def test_codec_error_shares_cv_bridge_error_base():
    cv_bridge_error = upstream_cv_bridge_error()
    (base,) = cv_bridge_error.__bases__
    assert base is TypeError and issubclass(ImageEncodingError, base)


def test_bridge_backend_resolution():
    from tesg_ros.errors import ConfigError
    assert codec.resolve_bridge_backend('builtin') == 'builtin'
    with pytest.raises(ConfigError):
        codec.resolve_bridge_backend('opencv')
    if codec.real_cv_bridge() is None:
        assert codec.resolve_bridge_backend('auto') == 'builtin'
        assert isinstance(codec.make_bridge(), codec.CodecBridge)
        with pytest.raises(ConfigError, match='cv_bridge'):
            codec.resolve_bridge_backend('cv_bridge')
    else:
        assert type(codec.make_bridge()).__name__ == 'CvBridge'


def test_codec_bridge_has_cv_bridge_method_names_and_round_trips():
    bridge = codec.CodecBridge()
    pixels = random_pixels('rgb8', 3, 4, seed=1)
    msg = bridge.cv2_to_imgmsg(pixels, 'rgb8')
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), pixels)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, 'bgr8'), pixels[:, :, ::-1])
    compressed = bridge.cv2_to_compressed_imgmsg(pixels[:, :, ::-1].copy(), 'png')
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(compressed), pixels[:, :, ::-1])


@pytest.mark.parametrize('encoding', ['bgr8', 'rgb8', 'mono8', 'mono16', 'bgra16', 'yuv422'])
def test_visible_to_bgr8_through_an_installed_cv_bridge_equals_the_codec(encoding):
    cv_bridge = codec.real_cv_bridge()
    if cv_bridge is None:
        pytest.skip('cv_bridge (with its compiled conversions) is not installed')
    pixels = random_pixels(encoding, 4, 6, seed=3)
    msg = hand_made_message(pixels, encoding)
    np.testing.assert_array_equal(codec.visible_to_bgr8(msg, bridge=cv_bridge.CvBridge()),
                                  codec.visible_to_bgr8(msg, bridge=codec.CodecBridge()))


# --- cvtColorForDisplay equivalent ------------------------------------------------------------

def test_display_guesses_bgr8_and_keeps_what_is_already_displayable():
    grey = random_pixels('mono8', 3, 5, seed=4)
    out, encoding = codec.convert_for_display(grey, 'mono8')
    assert encoding == 'bgr8'
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    bgr = random_pixels('bgr8', 3, 5, seed=5)
    assert codec.convert_for_display(bgr, 'bgr8')[0] is bgr
    rgb = random_pixels('rgb8', 3, 5, seed=6)
    np.testing.assert_array_equal(codec.convert_for_display(rgb, 'rgb8')[0], rgb[:, :, ::-1])
    # Bare OpenCV types are read as mono / BGR / BGRA.
    assert codec.convert_for_display(bgr, '8UC3', 'bgr8')[0] is bgr
    np.testing.assert_array_equal(codec.convert_for_display(grey, '8UC1', 'mono8')[0], grey)
    # 16 bit to 8 bit scales by 255/65535 (cv_bridge's depth rule), mono replicated.
    deep = np.array([[0, 257, 65535]], np.uint16)
    out, _ = codec.convert_for_display(deep, 'mono16')
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 255]])


def test_display_scaling_maps_min_and_max_to_0_and_255():
    weights = np.array([[0.0, 0.5], [1.0, np.nan]], np.float32) + np.float32(3.0)
    out, encoding = codec.convert_for_display(weights, '32FC1', 'mono8', do_dynamic_scaling=True)
    assert encoding == 'mono8'
    np.testing.assert_array_equal(out, [[0, 128], [255, 0]])
    # Fixed range: values outside saturate; infinities go to the ends.
    values = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.inf]], np.float32)
    out, _ = codec.convert_for_display(values, '32FC1', 'mono8', min_image_value=0.0,
                                       max_image_value=1.0)
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255, 255]])
    # Default output: bgr8, grey replicated.
    out, encoding = codec.convert_for_display(values, '32FC1', min_image_value=0.0,
                                              max_image_value=1.0)
    assert encoding == 'bgr8' and out.shape == (1, 6, 3)


def test_display_colormap_is_opencvs_and_nan_is_black():
    weights = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    weights[1, 1] = np.nan
    out, encoding = codec.convert_for_display(weights, '32FC1', do_dynamic_scaling=True,
                                              colormap=cv2.COLORMAP_JET)
    assert encoding == 'bgr8'
    scaled = np.rint(np.nan_to_num(weights, nan=0.0) * 255).astype(np.uint8)
    expected = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
    expected[1, 1] = 0
    np.testing.assert_array_equal(out, expected)


def test_display_constant_image_is_mid_grey():
    out, _ = codec.convert_for_display(np.full((2, 3), 7.0, np.float32), '32FC1',
                                       do_dynamic_scaling=True)
    assert out.shape == (2, 3, 3) and (out == 128).all()
    out, _ = codec.convert_for_display(np.full((2, 3), 7, np.uint16), 'mono16', 'mono8',
                                       do_dynamic_scaling=True)
    assert out.shape == (2, 3) and (out == 128).all()


def test_display_label_image_colours_each_label_and_blacks_the_background():
    labels = np.array([[0, 1, 2], [1, 2, 40]], np.int32)
    out, encoding = codec.convert_for_display(labels, '32SC1', bg_label=0)
    assert encoding == 'bgr8' and out.dtype == np.uint8
    assert (out[0, 0] == 0).all()
    np.testing.assert_array_equal(out[0, 1], out[1, 0])
    np.testing.assert_array_equal(out[0, 2], out[1, 1])
    colours = {tuple(out[0, 1]), tuple(out[0, 2]), tuple(out[1, 2])}
    assert len(colours) == 3 and (0, 0, 0) not in colours
    distinct = codec.label_colours(np.arange(1, 33))
    assert len({tuple(colour) for colour in distinct}) == 32


@pytest.mark.parametrize('image, encoding, kwargs, match', [
    (np.zeros((2, 2), np.float32), '32FC1', {}, 'not a colour format'),
    (np.zeros((2, 2), np.float64), '64FC1', {}, 'guessed'),
    (np.zeros((2, 2), np.uint8), 'mono8', {'encoding_out': 'bgr16'}, 'display encoding'),
    (np.zeros((2, 2, 3), np.uint8), 'bgr8', {'max_image_value': 10.0}, 'single-channel'),
    (np.zeros((2, 2), np.uint8), 'bgr8', {}, 'does not match'),
])
def test_display_refuses_what_cv_bridge_refuses(image, encoding, kwargs, match):
    with pytest.raises(ImageEncodingError, match=match):
        codec.convert_for_display(image, encoding, **kwargs)
