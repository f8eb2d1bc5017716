# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""rosbag2 I/O (tesg_ros.bags) and tesg-make-bag: round trips, QoS, detection, damage."""

from fractions import Fraction
import os

import cv2
import numpy as np
import pytest
from ruamel.yaml import YAML

from tesg_ros import bags
from tesg_ros.cli import make_bag
from tesg_ros.errors import TesgError
from tesg_ros.sensor.image_codec import (compressed_to_numpy, image_to_numpy,
                                         thermal_to_array, visible_to_bgr8)
from tesg_ros.sensor.pairing import stamp_to_ns

STORAGES = ('mcap', 'sqlite3')
STAMP0 = 1_700_000_000_123_456_789


def _random_image(rng, encoding, height=12, width=16):
    info = {
        'mono8': (np.uint8, 1), '8UC1': (np.uint8, 1), 'mono16': (np.uint16, 1),
        '16UC1': (np.uint16, 1), '16SC1': (np.int16, 1), '32FC1': (np.float32, 1),
        '64FC1': (np.float64, 1), 'bgr8': (np.uint8, 3), 'rgb8': (np.uint8, 3),
        'bgra8': (np.uint8, 4), 'rgba8': (np.uint8, 4), 'bgr16': (np.uint16, 3),
        'rgb16': (np.uint16, 3), 'uyvy': (np.uint8, 2), 'yuyv': (np.uint8, 2),
        'bayer_rggb8': (np.uint8, 1), '8UC3': (np.uint8, 3),
    }[encoding]
    dtype, channels = info
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.dtype(dtype).kind == 'f':
        return (rng.standard_normal(shape) * 100).astype(dtype)
    limits = np.iinfo(dtype)
    return rng.integers(limits.min, limits.max, shape, dtype=dtype, endpoint=True)


IMAGE_ENCODINGS = ('mono8', '8UC1', 'mono16', '16UC1', '16SC1', '32FC1', '64FC1', 'bgr8',
                   'rgb8', 'bgra8', 'rgba8', 'bgr16', 'rgb16', 'uyvy', 'yuyv', 'bayer_rggb8',
                   '8UC3')


@pytest.mark.parametrize('storage', STORAGES)
def test_image_round_trip_for_every_encoding(tmp_path, storage):
    rng = np.random.default_rng(1)
    written = {}
    path = tmp_path / 'bag'
    with bags.BagWriter(path, storage) as writer:
        for index, encoding in enumerate(IMAGE_ENCODINGS):
            topic = f'/cam/{encoding.lower()}'
            frames = [_random_image(rng, encoding) for _ in range(2)]
            for frame_index, frame in enumerate(frames):
                stamp = STAMP0 + frame_index * 33_000_000 + index
                writer.write(topic, bags.image_message(frame, encoding, stamp, 'cam'),
                             stamp + 1000)
            written[topic] = (encoding, frames)
        # A big-endian array is stored with is_bigendian = 1 and reads back in native order.
        big = _random_image(rng, 'mono16').astype('>u2')
        writer.write('/cam/big_endian', bags.image_message(big, 'mono16', STAMP0, 'cam'),
                     STAMP0)
    with bags.open_bag(path) as bag:
        assert bag.storage == storage
        assert bag.damage is None
        for topic, (encoding, frames) in written.items():
            assert bag.topics[topic].count == 2
            got = list(bag.messages(topic))
            assert [m.encoding for _, _, m in got] == [encoding, encoding]
            for (_, receive_ns, msg), frame, frame_index in zip(got, frames, range(2)):
                stamp = stamp_to_ns(msg.header.stamp)
                assert receive_ns == stamp + 1000
                assert msg.header.frame_id == 'cam'
                np.testing.assert_array_equal(image_to_numpy(msg), frame)
        (_, _, msg), = bag.messages('/cam/big_endian')
        assert msg.is_bigendian == 1
        decoded = image_to_numpy(msg)
        assert decoded.dtype.isnative
        np.testing.assert_array_equal(decoded, big.astype(np.uint16))


@pytest.mark.parametrize('storage', STORAGES)
def test_compressed_image_round_trip(tmp_path, storage, tno_pair_paths):
    ir_path, vi_path = tno_pair_paths[0]
    thermal = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 60 + 1000
    visible = cv2.cvtColor(cv2.imread(str(vi_path), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    visible[:, :, 2] = 255 - visible[:, :, 2]  # make it really colour
    with bags.BagWriter(tmp_path / 'bag', storage) as writer:
        writer.write('/thermal/image/compressed', bags.compressed_image_message(
            thermal, 'mono16; png compressed', STAMP0, 'th'), STAMP0)
        writer.write('/rgb/image/compressed', bags.compressed_image_message(
            visible, 'bgr8; png compressed', STAMP0, 'rgb'), STAMP0)
        writer.write('/rgb/jpeg/compressed', bags.compressed_image_message(
            visible, 'bgr8; jpeg compressed', STAMP0, 'rgb', jpeg_quality=95), STAMP0)
    with bags.open_bag(tmp_path / 'bag') as bag:
        msg = bag.first_message('/thermal/image/compressed')
        image, valid = thermal_to_array(msg)
        assert valid is None
        np.testing.assert_array_equal(image, thermal)
        image, encoding = compressed_to_numpy(bag.first_message('/rgb/image/compressed'))
        assert encoding == 'bgr8'
        np.testing.assert_array_equal(image, visible)
        jpeg = visible_to_bgr8(bag.first_message('/rgb/jpeg/compressed')).astype(float)
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((jpeg - visible) ** 2))
        assert psnr > 30
        topics = bags.detect_image_topics(bag, rgb_topic='/rgb/image/compressed')
        assert topics == ('/thermal/image/compressed', '/rgb/image/compressed', 'mono16',
                          'bgr8')


@pytest.mark.parametrize('storage', STORAGES)
def test_camera_info_and_string_round_trip(tmp_path, storage):
    k = [[400.5, 0, 319.5], [0, 401.25, 239.5], [0, 0, 1]]
    d = [-0.1, 0.01, 0.001, -0.002, 0.0]
    with bags.BagWriter(tmp_path / 'bag', storage) as writer:
        writer.write('/rgb/camera_info', bags.camera_info_message(
            640, 480, k, STAMP0, 'rgb_optical_frame', d=d), STAMP0 + 5)
        writer.add_topic('/tesg/semantics', bags.STRING, 'latched')
        writer.write('/tesg/semantics', bags.string_message('a person near a car, ünïcode'),
                     STAMP0 + 7)
        assert writer.counts == {'/rgb/camera_info': 1, '/tesg/semantics': 1}
    with bags.open_bag(tmp_path / 'bag') as bag:
        messages = list(bag.messages())
        assert [(t, r) for t, r, _ in messages] == [
            ('/rgb/camera_info', STAMP0 + 5), ('/tesg/semantics', STAMP0 + 7)]
        info, text = messages[0][2], messages[1][2]
        assert (info.width, info.height, info.distortion_model) == (640, 480, 'plumb_bob')
        assert info.header.frame_id == 'rgb_optical_frame'
        assert stamp_to_ns(info.header.stamp) == STAMP0
        np.testing.assert_array_equal(info.k, np.ravel(k))
        np.testing.assert_array_equal(info.d, d)
        np.testing.assert_array_equal(info.r, np.eye(3).ravel())
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], k)
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, 3], 0)
        assert text.data == 'a person near a car, ünïcode'


@pytest.mark.parametrize('storage', STORAGES)
def test_offered_qos_is_recorded_in_metadata_and_storage(tmp_path, storage):
    path = tmp_path / 'bag'
    with bags.BagWriter(path, storage) as writer:
        writer.write('/thermal/image', bags.image_message(
            np.zeros((2, 2), np.uint16), 'mono16', STAMP0), STAMP0)
        writer.add_topic('/tesg/semantics', bags.STRING, 'latched')
        writer.write('/tesg/semantics', bags.string_message('x'), STAMP0)
        writer.write('/other', bags.string_message('y'), STAMP0)
    sensor = bags.OfferedQos('best_effort', 'volatile', 'unknown', 0)
    latched = bags.OfferedQos('reliable', 'transient_local', 'unknown', 0)
    reliable = bags.OfferedQos('reliable', 'volatile', 'unknown', 0)
    expected = {'/thermal/image': sensor, '/tesg/semantics': latched, '/other': reliable}
    with bags.open_bag(path) as bag:
        assert {t: info.qos for t, info in bag.topics.items()} == {
            t: (q,) for t, q in expected.items()}
    metadata = YAML(typ='safe').load((path / 'metadata.yaml').read_text())
    recorded = {entry['topic_metadata']['name']: entry['topic_metadata']['offered_qos_profiles']
                for entry in metadata['rosbag2_bagfile_information']['topics_with_message_count']}
    assert recorded['/tesg/semantics'][0]['durability'] == 'transient_local'
    assert recorded['/tesg/semantics'][0]['reliability'] == 'reliable'
    assert recorded['/thermal/image'][0]['reliability'] == 'best_effort'
    assert recorded['/thermal/image'][0]['deadline'] == {'sec': 9223372036, 'nsec': 854775807}
    # The bare storage file carries the QoS too (mcap channel metadata / sqlite topics table).
    storage_file, = [p for p in path.iterdir() if p.suffix in ('.mcap', '.db3')]
    with bags.open_bag(storage_file) as bag:
        assert bag.topics['/tesg/semantics'].qos == (latched,)
        assert bag.topics['/thermal/image'].qos == (sensor,)


@pytest.mark.parametrize('storage', STORAGES)
def test_messages_come_in_receive_time_order_and_filter(tmp_path, storage):
    times = [50, 10, 40, 20, 30]
    with bags.BagWriter(tmp_path / 'bag', storage) as writer:
        for index, receive in enumerate(times):
            topic = '/a' if index % 2 else '/b'
            writer.write(topic, bags.string_message(str(receive)), receive)
    with bags.open_bag(tmp_path / 'bag') as bag:
        assert (bag.start_ns, bag.end_ns, bag.message_count) == (10, 50, 5)
        got = [(t, r, m.data) for t, r, m in bag.messages()]
        assert got == [('/a', 10, '10'), ('/a', 20, '20'), ('/b', 30, '30'),
                       ('/b', 40, '40'), ('/b', 50, '50')]
        assert [r for _, r, _ in bag.messages('/b', start_ns=35, stop_ns=50)] == [40]


def _write_images(path, topics_and_images, storage='mcap'):
    with bags.BagWriter(path, storage) as writer:
        for topic, (image, encoding) in topics_and_images.items():
            writer.write(topic, bags.image_message(image, encoding, STAMP0), STAMP0)
    return bags.open_bag(path)


def test_detect_image_topics_by_encoding_and_name(tmp_path):
    grey = np.zeros((4, 6), np.uint8)
    colour = np.zeros((4, 6, 3), np.uint8)
    raw16 = np.zeros((4, 6), np.uint16)
    yuv = np.zeros((4, 6, 2), np.uint8)
    kelvin = np.zeros((4, 6), np.float32)
    cases = {
        # encodings alone decide
        'plain': ({'/a': (raw16, 'mono16'), '/b': (colour, 'bgr8')}, ('/a', '/b')),
        'yuv': ({'/x': (kelvin, '32FC1'), '/y': (yuv, 'yuyv')}, ('/x', '/y')),
        # two mono8 cameras: names decide (grey visible camera)
        'names': ({'/camera/ir/image_raw': (grey, 'mono8'),
                   '/camera/color/image_raw': (grey, 'mono8')},
                  ('/camera/ir/image_raw', '/camera/color/image_raw')),
        # two colour topics (camera + fused output): the visible name wins
        'fused': ({'/flir/image': (raw16, '16UC1'), '/fused/image': (colour, 'bgr8'),
                   '/rgb/image_raw': (colour, 'rgb8')}, ('/flir/image', '/rgb/image_raw')),
        # mono8 grey visible + mono16 thermal, no names: 16 bit is thermal
        'depth': ({'/p': (grey, 'mono8'), '/q': (raw16, 'mono16')}, ('/q', '/p')),
    }
    for name, (topics, (thermal, rgb)) in cases.items():
        with _write_images(tmp_path / name, topics) as bag:
            found = bags.detect_image_topics(bag)
            assert (found.thermal, found.rgb) == (thermal, rgb), name
            assert found.thermal_encoding == topics[thermal][1]


def test_detect_image_topics_ambiguity_and_overrides(tmp_path):
    grey = np.zeros((4, 6), np.uint8)
    topics = {'/left/image': (grey, 'mono8'), '/right/image': (grey, 'mono8'),
              '/info': (np.zeros((4, 6), np.uint8), 'mono8')}
    with _write_images(tmp_path / 'bag', topics) as bag:
        with pytest.raises(bags.BagError) as error:
            bags.detect_image_topics(bag)
        message = str(error.value)
        assert 'thermal' in message and 'explicitly' in message
        assert '/left/image (mono8)' in message and '/right/image (mono8)' in message
        found = bags.detect_image_topics(bag, thermal_topic='/right/image',
                                         rgb_topic='/left/image')
        assert (found.thermal, found.rgb) == ('/right/image', '/left/image')
        with pytest.raises(bags.BagError, match='/nope'):
            bags.detect_image_topics(bag, thermal_topic='/nope')
    with _write_images(tmp_path / 'no_rgb', {'/thermal': (grey, 'mono8')}) as bag:
        with pytest.raises(bags.BagError, match='no RGB image topic'):
            bags.detect_image_topics(bag)


def _big_bag(path, storage, frames=60):
    """A bag of several mcap chunks (rosbags closes a chunk every 1 MiB)."""
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(frames)]
    with bags.BagWriter(path, storage) as writer:
        for index, image in enumerate(images):
            writer.write('/rgb/image', bags.image_message(image, 'bgr8', STAMP0 + index),
                         STAMP0 + index)
    return images


@pytest.mark.parametrize('opened', ['directory', 'bare_file', 'no_metadata'])
def test_truncated_mcap_yields_the_messages_before_the_damage(tmp_path, opened):
    path = tmp_path / 'bag'
    images = _big_bag(path, 'mcap')
    storage_file = path / 'bag.mcap'
    os.truncate(storage_file, int(storage_file.stat().st_size * 0.7))
    if opened == 'no_metadata':  # a killed `ros2 bag record` leaves no metadata.yaml
        (path / 'metadata.yaml').unlink()
    with bags.open_bag(storage_file if opened == 'bare_file' else path) as bag:
        assert 'Truncated record' in bag.damage
        assert bag.storage == 'mcap'
        count = bag.topics['/rgb/image'].count
        assert 0 < count < len(images)
        got = list(bag.messages())
        assert len(got) == count == bag.message_count
        for index, (_, receive_ns, msg) in enumerate(got):
            assert receive_ns == STAMP0 + index
            np.testing.assert_array_equal(image_to_numpy(msg), images[index])


def test_intact_mcap_without_metadata_is_read_completely(tmp_path):
    images = _big_bag(tmp_path / 'bag', 'mcap', frames=40)
    (tmp_path / 'bag' / 'metadata.yaml').unlink()
    with bags.open_bag(tmp_path / 'bag') as bag:
        assert bag.damage == 'metadata.yaml is missing (recording not closed?)'
        assert (bag.start_ns, bag.end_ns) == (STAMP0, STAMP0 + 39)
        got = [image_to_numpy(m) for _, _, m in bag.messages('/rgb/image')]
        assert len(got) == 40
        np.testing.assert_array_equal(got[-1], images[-1])


def test_damaged_files_give_a_clear_error(tmp_path):
    _big_bag(tmp_path / 'mcap', 'mcap', frames=30)
    first_chunk_cut = tmp_path / 'mcap' / 'mcap.mcap'
    os.truncate(first_chunk_cut, 100_000)
    with pytest.raises(bags.BagError, match='no readable topic'):
        bags.open_bag(tmp_path / 'mcap')
    _big_bag(tmp_path / 'sqlite', 'sqlite3', frames=10)
    db = tmp_path / 'sqlite' / 'sqlite.db3'
    os.truncate(db, db.stat().st_size // 2)
    with pytest.raises(bags.BagError, match='sqlite.db3'):
        bags.open_bag(tmp_path / 'sqlite')
    garbage = tmp_path / 'garbage.mcap'
    garbage.write_bytes(b'not an mcap file at all' * 10)
    with pytest.raises(bags.BagError, match='garbage.mcap'):
        bags.open_bag(garbage)
    (tmp_path / 'empty_dir').mkdir()
    with pytest.raises(bags.BagError, match='without metadata.yaml and without .mcap'):
        bags.open_bag(tmp_path / 'empty_dir')
    with pytest.raises(bags.BagError, match='does not exist'):
        bags.open_bag(tmp_path / 'missing')
    assert issubclass(bags.BagError, TesgError)


def test_missing_topic_and_writer_misuse(tmp_path):
    with _write_images(tmp_path / 'bag', {'/a': (np.zeros((2, 2), np.uint8), 'mono8')}) as bag:
        with pytest.raises(bags.BagError, match=r"\['/b'\] not in bag .*/a \(sensor_msgs"):
            list(bag.messages(['/a', '/b']))
        with pytest.raises(bags.BagError, match='/b'):
            bag.first_message('/b')
    with pytest.raises(bags.BagError, match='exists already'):
        bags.BagWriter(tmp_path / 'bag')
    with pytest.raises(bags.BagError, match='storage'):
        bags.BagWriter(tmp_path / 'new', 'rosbag1')
    with bags.BagWriter(tmp_path / 'new2') as writer:
        with pytest.raises(bags.BagError, match='not a rosbags typestore message'):
            writer.write('/x', object(), 0)
        writer.write('/x', bags.string_message('a'), 0)
        with pytest.raises(bags.BagError, match='carries std_msgs/msg/String'):
            writer.write('/x', bags.camera_info_message(2, 2, np.eye(3), 0), 1)
        with pytest.raises(bags.BagError, match='QoS profile'):
            writer.add_topic('/y', bags.STRING, 'fast')
    with pytest.raises(bags.BagError, match='outside'):
        bags.make_header(-1)


def test_frame_schedule_and_pixel_mappings():
    schedule = make_bag.frame_schedule(3, Fraction(30), Fraction(9))
    assert len(schedule) == 10
    assert [scene for _, scene in schedule] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [t for t, _ in schedule[:3]] == [0, 33_333_333, 66_666_667]
    assert make_bag.frame_schedule(2, 10, 10) == [(0, 0), (100_000_000, 1)]
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    raw = make_bag.thermal_pixels(values, 'mono16')
    assert raw.dtype == np.uint16 and raw.min() == 1000 and raw.max() == 255 * 60 + 1000
    np.testing.assert_array_equal((raw - 1000) // 60, values)
    kelvin = make_bag.thermal_pixels(values, '32FC1')
    assert kelvin.dtype == np.float32
    np.testing.assert_allclose([kelvin.min(), kelvin.max()], [283.15, 323.15], rtol=1e-6)
    k = make_bag.plausible_intrinsics(640, 480, 90.0)
    np.testing.assert_allclose(k, [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]])


def _run_make_bag(argv):
    assert make_bag.main(argv) == 0


def test_make_bag_end_to_end(tmp_path, test_data, tno_pair_paths):
    out = tmp_path / 'tno_bag'
    _run_make_bag([str(test_data / 'tno'), '-o', str(out), '--rate', '30',
                   '--thermal-rate', '9', '--repeat', '2', '--camera-info',
                   '--jitter-ms', '2', '--thermal-offset-ms', '-5', '--latency-ms', '3',
                   '--semantics', 'person, car', '--no-progress', '--ros-args', '-r', 'a:=b'])
    ir = [cv2.imread(str(i), cv2.IMREAD_GRAYSCALE) for i, _ in tno_pair_paths]
    vi = [cv2.imread(str(v), cv2.IMREAD_GRAYSCALE) for _, v in tno_pair_paths]
    start = make_bag.DEFAULT_START_S * 1_000_000_000
    with bags.open_bag(out) as bag:
        counts = {t: info.count for t, info in bag.topics.items()}
        assert counts == {'/thermal/image': 6, '/thermal/camera_info': 6, '/rgb/image': 20,
                          '/rgb/camera_info': 20, '/tesg/semantics': 1}
        assert bags.detect_image_topics(bag) == ('/thermal/image', '/rgb/image', 'mono16',
                                                 'bgr8')
        assert bag.first_message('/tesg/semantics').data == 'person, car'
        thermal = list(bag.messages('/thermal/image'))
        for index, (_, receive_ns, msg) in enumerate(thermal):
            stamp = stamp_to_ns(msg.header.stamp)
            assert receive_ns == stamp + 3_000_000
            nominal = start + round(index * 1e9 / 9) - 5_000_000
            assert abs(stamp - nominal) <= 2_000_000
            assert msg.header.frame_id == 'thermal_optical_frame'
            image, _ = thermal_to_array(msg)
            np.testing.assert_array_equal(image, ir[index % 3].astype(np.uint16) * 60 + 1000)
        rgb = list(bag.messages('/rgb/image'))
        scenes = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2] * 2
        for index, (_, receive_ns, msg) in enumerate(rgb):
            stamp = stamp_to_ns(msg.header.stamp)
            assert abs(stamp - (start + round(index * 1e9 / 30))) <= 2_000_000
            expected = cv2.cvtColor(vi[scenes[index] % 3], cv2.COLOR_GRAY2BGR)
            np.testing.assert_array_equal(visible_to_bgr8(msg), expected)
        infos = list(bag.messages('/rgb/camera_info'))
        for (_, receive_ns, info), (_, image_receive, image) in zip(infos, rgb):
            assert receive_ns == image_receive
            assert info.header.stamp == image.header.stamp
            assert (info.width, info.height) == (image.width, image.height)
            assert info.k[2] == (image.width - 1) / 2
        receive_times = [r for _, r, _ in bag.messages()]
        assert receive_times == sorted(receive_times)


@pytest.mark.parametrize('storage,thermal_encoding,rgb_encoding', [
    ('sqlite3', '32FC1', 'yuyv'), ('mcap', 'mono8', 'uyvy'), ('mcap', '16UC1', 'rgb8'),
    ('sqlite3', 'mono16', 'mono8')])
def test_make_bag_encodings(tmp_path, test_data, tno_pair_paths, storage, thermal_encoding,
                            rgb_encoding):
    out = tmp_path / 'bag'
    _run_make_bag([str(test_data / 'tno'), '-o', str(out), '--storage', storage,
                   '--thermal-encoding', thermal_encoding, '--rgb-encoding', rgb_encoding,
                   '--no-progress'])
    ir_path, vi_path = tno_pair_paths[0]
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    vi = cv2.cvtColor(cv2.imread(str(vi_path), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    with bags.open_bag(out) as bag:
        assert bag.storage == storage
        assert {t.count for t in bag.topics.values()} == {3}
        thermal = bag.first_message('/thermal/image')
        rgb = bag.first_message('/rgb/image')
        assert (thermal.encoding, rgb.encoding) == (thermal_encoding, rgb_encoding)
        image, _ = thermal_to_array(thermal)
        np.testing.assert_array_equal(image, make_bag.thermal_pixels(ir, thermal_encoding))
        expected = {'yuyv': cv2.cvtColor(vi, cv2.COLOR_BGR2YUV_YUYV),
                    'uyvy': cv2.cvtColor(vi, cv2.COLOR_BGR2YUV_UYVY),
                    'rgb8': vi[:, :, ::-1], 'mono8': vi[:, :, 0]}[rgb_encoding]
        np.testing.assert_array_equal(image_to_numpy(rgb), expected)
        # grey input: YUV chroma is neutral, so decoding gives the grey back within rounding
        assert np.abs(visible_to_bgr8(rgb).astype(int) - vi).max() <= 2
        found = bags.detect_image_topics(bag)
        assert (found.thermal, found.rgb) == ('/thermal/image', '/rgb/image')


def test_make_bag_compressed(tmp_path, test_data, tno_pair_paths):
    out = tmp_path / 'bag'
    _run_make_bag([str(test_data / 'tno'), '-o', str(out), '--compressed', '--rgb-codec',
                   'png', '--rate', '10', '--thermal-rate', '20', '--no-progress'])
    ir = [cv2.imread(str(i), cv2.IMREAD_GRAYSCALE) for i, _ in tno_pair_paths]
    with bags.open_bag(out) as bag:
        assert bag.topics['/thermal/image/compressed'].count == 6
        assert bag.topics['/rgb/image/compressed'].count == 3
        thermal = [m for _, _, m in bag.messages('/thermal/image/compressed')]
        assert thermal[0].format.startswith('mono16; png compressed')
        # thermal is the faster camera here: each pair is shown twice
        for index, msg in enumerate(thermal):
            image, _ = thermal_to_array(msg)
            np.testing.assert_array_equal(image, ir[index // 2].astype(np.uint16) * 60 + 1000)
        found = bags.detect_image_topics(bag)
        assert found == ('/thermal/image/compressed', '/rgb/image/compressed', 'mono16',
                         'bgr8')


def test_make_bag_bad_input(tmp_path, test_data, capsys):
    with pytest.raises(SystemExit):
        make_bag.main([str(test_data / 'tno'), '-o', str(tmp_path / 'a'), '--compressed',
                       '--thermal-encoding', '32FC1'])
    with pytest.raises(SystemExit):
        make_bag.main([str(test_data / 'tno'), '-o', str(tmp_path / 'a'), '--jitter-ms', '20'])
    assert make_bag.main([str(tmp_path), '-o', str(tmp_path / 'b')]) == 1
    assert 'ir/ and vi/' in capsys.readouterr().err
    dataset = tmp_path / 'colour_ir'
    for side in ('ir', 'vi'):
        (dataset / side).mkdir(parents=True)
    cv2.imwrite(str(dataset / 'ir' / 'x.png'), np.dstack([np.zeros((4, 4), np.uint8),
                                                         np.ones((4, 4), np.uint8) * 9,
                                                         np.zeros((4, 4), np.uint8)]))
    cv2.imwrite(str(dataset / 'vi' / 'x.jpg'), np.zeros((4, 4, 3), np.uint8))
    assert make_bag.main([str(dataset), '-o', str(tmp_path / 'c'), '--no-progress']) == 1
    assert 'false-colour' in capsys.readouterr().err
    # the half-written bag is removed, so the same command can be rerun
    assert not (tmp_path / 'b').exists() and not (tmp_path / 'c').exists()
    assert make_bag.main([str(test_data / 'tno'), '-o', str(dataset), '--no-progress']) == 1
    assert 'exists already' in capsys.readouterr().err
    assert (dataset / 'ir' / 'x.png').is_file()


def test_make_bag_yuv_drops_the_last_column_of_odd_widths(tmp_path, capsys):
    dataset = tmp_path / 'odd'
    rng = np.random.default_rng(3)
    visible = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    thermal = rng.integers(0, 255, (6, 7), dtype=np.uint8)
    for side, image in (('ir', thermal), ('vi', visible)):
        (dataset / side).mkdir(parents=True)
        cv2.imwrite(str(dataset / side / 'frame.png'), image)
    (dataset / 'vi' / 'unpaired.png').write_bytes(b'')
    _run_make_bag([str(dataset), '-o', str(tmp_path / 'bag'), '--rgb-encoding', 'uyvy',
                   '--no-progress'])
    err = capsys.readouterr().err
    assert 'last column is dropped' in err and '1 file(s) without a partner' in err
    with bags.open_bag(tmp_path / 'bag') as bag:
        rgb = bag.first_message('/rgb/image')
        assert (rgb.width, rgb.height) == (6, 6)
        np.testing.assert_array_equal(
            image_to_numpy(rgb), cv2.cvtColor(visible[:, :6].copy(), cv2.COLOR_BGR2YUV_UYVY))
        np.testing.assert_array_equal(
            thermal_to_array(bag.first_message('/thermal/image'))[0],
            thermal.astype(np.uint16) * 60 + 1000)


def test_summary_and_module_main(tmp_path, test_data, capsys):
    _run_make_bag([str(test_data / 'tno'), '-o', str(tmp_path / 'bag'), '--thermal-encoding',
                   '32FC1', '--rgb-encoding', 'rgb8', '--no-progress'])
    capsys.readouterr()
    assert bags.main([str(tmp_path / 'bag'), str(tmp_path / 'missing')]) == 1
    captured = capsys.readouterr()
    assert '/thermal/image  sensor_msgs/msg/Image  3 msgs  [best_effort/volatile]' in (
        captured.out)
    assert 'thermal:  /thermal/image (32FC1 ' in captured.out
    assert 'rgb:      /rgb/image (rgb8 ' in captured.out
    assert 'DAMAGED' not in captured.out
    assert 'missing does not exist' in captured.err


@pytest.mark.parametrize('storage', STORAGES)
def test_types_missing_from_the_store_are_read_from_the_bag(tmp_path, storage):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg, get_typestore, Stores
    typestore = get_typestore(Stores.ROS2_KILTED)
    msgtype = 'tesg_test_msgs/msg/Detection'
    typestore.register(get_types_from_msg('std_msgs/Header header\nstring label\nfloat32 score',
                                          msgtype))
    detection = typestore.types[msgtype](header=bags.make_header(STAMP0, 'cam'),
                                         label='person', score=0.75)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(tmp_path / 'bag', version=9, storage_plugin=plugin) as writer:
        connection = writer.add_connection('/detections', msgtype, typestore=typestore)
        writer.write(connection, STAMP0 + 1, typestore.serialize_cdr(detection, msgtype))
    with bags.open_bag(tmp_path / 'bag') as bag:
        assert bag.topics['/detections'].msgtype == msgtype
        (_, receive_ns, msg), = bag.messages()
        assert (receive_ns, msg.label, msg.score, msg.header.frame_id) == (
            STAMP0 + 1, 'person', 0.75, 'cam')


def test_truncated_zstd_chunked_mcap_is_recovered(tmp_path):
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    typestore = bags._typestore()
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(40)]
    writer = Writer(tmp_path / 'bag', version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection('/rgb/image', bags.IMAGE, typestore=typestore)
        for index, image in enumerate(images):
            msg = bags.image_message(image, 'bgr8', STAMP0 + index)
            writer.write(connection, STAMP0 + index, typestore.serialize_cdr(msg, bags.IMAGE))
    storage_file = tmp_path / 'bag' / 'bag.mcap'
    os.truncate(storage_file, int(storage_file.stat().st_size * 0.8))
    with bags.open_bag(tmp_path / 'bag') as bag:
        got = [image_to_numpy(m) for _, _, m in bag.messages()]
        assert 0 < len(got) < len(images) and bag.damage
        for index, image in enumerate(got):
            np.testing.assert_array_equal(image, images[index])


def _edit_metadata(path, edit):
    yaml = YAML(typ='safe')
    metadata = yaml.load((path / 'metadata.yaml').read_text())
    edit(metadata['rosbag2_bagfile_information'])
    with open(path / 'metadata.yaml', 'w', encoding='utf-8') as stream:
        yaml.dump(metadata, stream)


@pytest.mark.parametrize('storage', STORAGES)
def test_metadata_qos_differing_from_the_storage_loses_no_message(tmp_path, storage):
    # Real rosbag2 bags (e.g. ros2/rosbag2's test resources) store QoS in metadata.yaml that
    # differs from the storage file's; rosbags' directory reader then yields nothing.
    with bags.BagWriter(tmp_path / 'bag', storage) as writer:
        for receive in (10, 20, 30):
            writer.write('/chatter', bags.string_message(str(receive)), receive)

    def change_deadline(info):
        profile = info['topics_with_message_count'][0]['topic_metadata'][
            'offered_qos_profiles'][0]
        profile['deadline'] = {'sec': 0, 'nsec': 0}
    _edit_metadata(tmp_path / 'bag', change_deadline)
    with bags.open_bag(tmp_path / 'bag') as bag:
        assert [m.data for _, _, m in bag.messages()] == ['10', '20', '30']
        assert bag.topics['/chatter'].qos[0].reliability == 'reliable'


@pytest.mark.parametrize('storage', STORAGES)
def test_split_bag_files_are_merged_in_time_order(tmp_path, storage):
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    for name, times in (('first', (0, 20, 40)), ('second', (10, 30))):
        with bags.BagWriter(tmp_path / name, storage) as writer:
            for receive in times:
                writer.write('/chatter', bags.string_message(str(receive)), receive)
    (tmp_path / 'second' / f'second{suffix}').rename(tmp_path / 'first' / f'second{suffix}')

    def add_second_file(info):
        info['relative_file_paths'].append(f'second{suffix}')
        info['message_count'] = 5
        info['topics_with_message_count'][0]['message_count'] = 5
    _edit_metadata(tmp_path / 'first', add_second_file)
    with bags.open_bag(tmp_path / 'first') as bag:
        assert bag.topics['/chatter'].count == 5
        assert [r for _, r, _ in bag.messages()] == [0, 10, 20, 30, 40]
        assert [r for _, r, _ in bag.messages(start_ns=15, stop_ns=35)] == [20, 30]


def test_undecodable_message_gives_a_clear_error(tmp_path):
    from rosbags.rosbag2 import Writer
    with Writer(tmp_path / 'bag', version=9) as writer:
        connection = writer.add_connection('/rgb/image', bags.IMAGE,
                                           typestore=bags._typestore())
        writer.write(connection, 42, b'\x00\x01\x00\x00\x07')  # CDR header, then 1 byte
    with bags.open_bag(tmp_path / 'bag') as bag:
        (topic, receive_ns, data, msgtype), = bag.raw_messages()
        assert (topic, receive_ns, msgtype) == ('/rgb/image', 42, bags.IMAGE)
        with pytest.raises(bags.BagError, match=r'/rgb/image: message at 42 ns cannot be '
                                                r'deserialised as sensor_msgs/msg/Image'):
            list(bag.messages())
