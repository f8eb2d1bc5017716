# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""tesg-replay: live bag replay through the real fusion node over DDS (CPU, in-process).

Tiny bags are written in tmp_path from the repository's TNO pairs with the bags module; the
node loads a seeded, untrained network saved to a temp file (plumbing, not fusion quality)
and runs with ``semantics.mode: disabled`` for speed.
"""

import _thread
import json
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from tesg_ros import bags, replay, replay_report
from tesg_ros.cli import replay as replay_cli
from tesg_ros.errors import ConfigError
from tesg_ros.ros import live_replay

rclpy = pytest.importorskip('rclpy')
torch = pytest.importorskip('torch')

START_NS = 1_700_000_000 * 10**9
THERMAL_DELAY_NS = 2_000_000  # thermal stamped 2 ms after RGB, as a slow driver would
NAMES = ('07', '10', '19')


@pytest.fixture(scope='module')
def weights(random_weights):
    return random_weights


@pytest.fixture(scope='module')
def frames(test_data):
    """[(thermal mono16, rgb bgr8)] per TNO pair; the pairs have different sizes."""
    out = []
    for name in NAMES:
        ir = cv2.imread(str(test_data / 'tno' / 'ir' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(test_data / 'tno' / 'vi' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
        out.append((ir.astype(np.uint16) * 60 + 1000, cv2.cvtColor(vi, cv2.COLOR_GRAY2BGR)))
    return out


def write_bag(path, frames, count, rate_hz, thermal=True, rgb_topic='/rgb/image',
              thermal_topic='/thermal/image', camera_info=True, semantics=None):
    """``count`` frame pairs at ``rate_hz``; returns the RGB stamps (ns) in order."""
    period = int(1e9 / rate_hz)
    rgb_stamps = []
    with bags.BagWriter(path) as writer:
        if semantics is not None:
            writer.add_topic('/tesg/semantics', bags.STRING, 'latched')
            writer.write('/tesg/semantics', bags.string_message(semantics), START_NS)
        for index in range(count):
            ir, vi = frames[index % len(frames)]
            stamp = START_NS + index * period
            if thermal:
                writer.write(thermal_topic, bags.image_message(
                    ir, 'mono16', stamp + THERMAL_DELAY_NS, 'thermal_optical_frame'),
                    stamp + 3_000_000)
            writer.write(rgb_topic, bags.image_message(vi, 'bgr8', stamp, 'rgb_optical_frame'),
                         stamp + 4_000_000)
            if camera_info:
                height, width = vi.shape[:2]
                k = [300.0, 0.0, width / 2, 0.0, 300.0, height / 2, 0.0, 0.0, 1.0]
                writer.write(rgb_topic.rsplit('/', 1)[0] + '/camera_info',
                             bags.camera_info_message(width, height, k, stamp,
                                                      'rgb_optical_frame', d=np.zeros(5)),
                             stamp + 4_000_000)
            rgb_stamps.append(stamp)
    return rgb_stamps


def read_output(out_dir):
    """``{topic: [msg, ...]}`` of the recorded output bag."""
    recorded = {}
    with bags.open_bag(out_dir / replay.OUTPUT_BAG) as bag:
        for topic, _, msg in bag.messages():
            recorded.setdefault(topic, []).append(msg)
    return recorded


def stamp_ns(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def check_report_consistency(report):
    result = report['result']
    assert result['fused_matched'] + result['pairs_without_output'] == result['input_pairs']
    assert result['drop_rate'] == pytest.approx(
        result['pairs_without_output'] / result['input_pairs'])
    assert result['latency_ms']['count'] == result['fused_matched']
    assert result['fused_received'] == (result['fused_matched'] + result['unexpected_fused']
                                        + result['duplicate_fused'])
    if result['fused_matched']:
        latency = result['latency_ms']
        assert 0.0 < latency['p50'] <= latency['p90'] <= latency['p99'] <= latency['max']


# ---------------------------------------------------------------------------- ROS-free
def test_ros_args_are_split_off_and_set_values_are_validated():
    own, ros = replay_cli.split_ros_args(['bag', '--rate', '2', '--ros-args', '-p', 'a:=1'])
    assert own == ['bag', '--rate', '2'] and ros == ['--ros-args', '-p', 'a:=1']
    assert replay_cli.split_ros_args(['bag']) == (['bag'], [])
    assert replay_cli.split_ros_args(['--ros-args', '-r', 'a:=b', '--', 'bag']) == (
        ['bag'], ['--ros-args', '-r', 'a:=b'])
    values = replay.parse_set_values(['sync.slop=0.03', 'thermal.clahe=true',
                                      'sync.queue_size=7', 'semantics.prompt=no'])
    assert values == {'sync.slop': 0.03, 'thermal.clahe': True, 'sync.queue_size': 7,
                      'semantics.prompt': 'no'}, 'string values must stay verbatim (no -> no)'
    assert isinstance(replay.parse_set_values(['sync.slop=0'])['sync.slop'], float)
    with pytest.raises(ConfigError, match='unknown parameter'):
        replay.parse_set_values(['sync.sloppy=1'])
    with pytest.raises(ConfigError, match='NAME=VALUE'):
        replay.parse_set_values(['sync.slop'])
    with pytest.raises(ConfigError, match='one of'):
        replay.parse_set_values(['semantics.mode=off'])
    overrides = replay.node_overrides(weights='/w.safetensors', semantics='disabled',
                                      set_values=['sync.slop=0.01'])
    assert overrides == {'model.weights': '/w.safetensors', 'semantics.mode': 'disabled',
                         'sync.slop': 0.01, 'use_sim_time': True}
    with pytest.raises(ConfigError, match='given by --set and by its own option'):
        replay.node_overrides(weights='/a', set_values=['model.weights=/b'])
    with pytest.raises(ConfigError, match='is not a file'):
        replay.node_overrides(params_file='/no/such/params.yaml')


def test_topics_are_planned_from_the_bag(tmp_path, frames):
    path = tmp_path / 'bag'
    write_bag(path, frames, 3, 10.0, rgb_topic='/cam/color/image_raw',
              thermal_topic='/cam/thermal/image_raw',
              semantics=json.dumps({'description': 'a street', 'phrases': ['person']}))
    with bags.open_bag(path) as bag:
        topics = replay.plan_topics(bag)
        assert (topics.thermal, topics.rgb) == ('/cam/thermal/image_raw',
                                                '/cam/color/image_raw')
        assert topics.rgb_info == '/cam/color/camera_info' and topics.thermal_info is None
        assert topics.semantics is None, 'semantics are replayed only when asked'
        assert replay.plan_topics(bag, replay_semantics=True).semantics == '/tesg/semantics'
        assert replay.plan_topics(bag, camera_info=False).rgb_info is None
        assert set(topics.by_role()) == {'thermal', 'rgb', 'rgb_info'}
        with pytest.raises(replay.ReplayError, match='not in bag'):
            replay.plan_topics(bag, rgb_info='/cam/rgb/camera_info')
        with pytest.raises(replay.ReplayError, match='carries sensor_msgs/msg/Image'):
            replay.plan_topics(bag, thermal_info='/cam/thermal/image_raw')
    node_json = '{"description": "x", "phrases": []}'
    assert replay.semantics_for_node(node_json, '/s') == (node_json, False)
    text, converted = replay.semantics_for_node('a person near a car', '/s')
    record = json.loads(text)
    assert converted and record['description'] == 'a person near a car'
    assert record['phrases'] and all(p in 'a person near a car' for p in record['phrases'])
    with pytest.raises(replay.ReplayError, match='/s: .*description'):
        replay.semantics_for_node('{"phrases": ["x"]}', '/s')


def test_pair_tracker_counts_drops_and_latency_from_the_later_input():
    tracker = replay.PairTracker(queue_size=10, slop=0.01, thermal_time_offset=0.0)
    ms = 1_000_000
    # Four frames 100 ms apart; thermal stamped 2 ms after RGB and published after it.
    for index in range(4):
        stamp = START_NS + index * 100 * ms
        tracker.published('rgb', stamp, 10.0 + index)
        tracker.published('thermal', stamp + 2 * ms, 10.2 + index)
    # The last thermal still waits for a newer RGB: three pairs are certain.
    assert tracker.expected_pairs == 3
    tracker.fused(START_NS, 10.5)            # pair 0, ready at 10.2 -> 300 ms
    tracker.fused(START_NS + 200 * ms, 12.6)  # pair 2, ready at 12.2 -> 400 ms
    tracker.fused(START_NS + 200 * ms, 12.7)  # the same stamp again
    tracker.fused(START_NS + 50 * ms, 12.8)   # a stamp no pair has
    summary = tracker.summary()
    assert summary['input_pairs'] == 3 and summary['fused_received'] == 4
    assert summary['fused_matched'] == 2 and summary['pairs_without_output'] == 1
    assert summary['duplicate_fused'] == 1 and summary['unexpected_fused'] == 1
    assert summary['drop_rate'] == pytest.approx(1 / 3)
    assert summary['latency_ms']['count'] == 2
    assert summary['latency_ms']['p50'] == pytest.approx(350.0)
    assert summary['latency_ms']['max'] == pytest.approx(400.0)
    assert not tracker.all_matched()
    tracker.fused(START_NS + 100 * ms, 13.0)
    assert tracker.all_matched()


def test_fused_share_over_time_counts_pairs_per_window():
    tracker = replay.PairTracker(queue_size=10, slop=0.01, thermal_time_offset=0.0)
    ms = 1_000_000
    assert tracker.fused_share_over_time() is None
    # Six pairs 500 ms apart, 0 .. 2.5 s (thermal published after its RGB: all certain).
    for index in range(6):
        stamp = START_NS + index * 500 * ms
        tracker.published('rgb', stamp, float(index))
        tracker.published('thermal', stamp, index + 0.1)
    for index in (0, 1, 2):
        tracker.fused(START_NS + index * 500 * ms, index + 0.2)
    series = tracker.fused_share_over_time()
    assert series['window_s'] == 1.0 and series['t_s'] == [0.0, 1.0, 2.0]
    assert series['input_pairs'] == [2, 2, 2] and series['fused'] == [2, 1, 0]
    assert series['share'] == [1.0, 0.5, 0.0]
    # At most max_windows windows: a longer window when the run is long.
    assert tracker.fused_share_over_time(max_windows=1)['window_s'] == pytest.approx(2.5)


def test_replay_verdict_against_the_frame_period(tmp_path):
    latency = {'count': 10, 'p50': 40.0, 'p90': 60.0}
    result = {'input_pairs': 10, 'fused_matched': 10, 'latency_ms': latency}
    # 1 s of bag at rate 1 over 10 pairs: a 100 ms frame period.
    text = replay_report.replay_verdict(result, {'processing_ms': {'p50': 30.0}}, 1.0, 1.0)
    assert text == ('Verdict: keeps up: fused 10 of 10 input pairs (100%; at least 80% '
                    'wanted); node fusion time p50 30 ms, latency p90 60 ms against a frame '
                    'period of 100 ms at rate x1.')
    # Without the node's numbers the latency judges; rate 4 shortens the period to 25 ms.
    slow = replay_report.replay_verdict(result, None, 0.25, 4.0)
    assert slow.startswith('Verdict: falls behind:') and 'latency p50 40 ms' in slow
    assert '25 ms at rate x4' in slow
    dropped = replay_report.replay_verdict({**result, 'fused_matched': 5}, None, 1.0, 1.0)
    assert dropped.startswith('Verdict: falls behind: fused 5 of 10 input pairs (50%')
    assert replay_report.replay_verdict({'input_pairs': 0}, None, 1.0, 1.0).startswith(
        'Verdict: none')
    series = {'window_s': 1.0, 't_s': [0.0, 1.0], 'input_pairs': [2, 0], 'fused': [2, 0],
              'share': [1.0, None]}
    path = replay_report.write_fused_share_plot(series, tmp_path / 'share.png', 0.8)
    image = cv2.imread(path)
    assert image is not None and image.shape[0] > 100
    assert replay_report.write_fused_share_plot(None, tmp_path / 'none.png') is None
    plot = replay_report.write_latency_plot([30.0, 40.0, 50.0], tmp_path / 'latency.png',
                                            period_ms=100.0)
    assert cv2.imread(plot) is not None


def test_bag_cdr_is_published_as_rclpy_images(frames):
    from rclpy.serialization import serialize_message
    from rosbags.typesys import get_typestore

    from tesg_ros.sensor.image_codec import image_to_numpy

    typestore = get_typestore(bags.TYPESTORE)
    ir, vi = frames[2]
    raw = typestore.serialize_cdr(bags.image_message(vi, 'bgr8', START_NS + 5, 'rgb'),
                                  bags.IMAGE)
    image = live_replay.image_from_cdr(raw, bags.IMAGE)
    assert type(image).__module__.startswith('sensor_msgs.msg')
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (1_700_000_000, 5)
    assert image.header.frame_id == 'rgb' and image.encoding == 'bgr8'
    np.testing.assert_array_equal(image_to_numpy(image), vi)
    # rclpy and rosbags agree on the CDR layout (compared field by field: the alignment
    # padding bytes rclpy writes are uninitialised memory, so raw bytes may differ there).
    again = typestore.deserialize_cdr(bytes(serialize_message(image)), bags.IMAGE)
    assert len(serialize_message(image)) == len(raw)
    assert (again.header.stamp.sec, again.header.stamp.nanosec, again.header.frame_id,
            again.height, again.width, again.encoding, again.is_bigendian, again.step) == (
        1_700_000_000, 5, 'rgb', vi.shape[0], vi.shape[1], 'bgr8', 0, vi.shape[1] * 3)
    np.testing.assert_array_equal(np.asarray(again.data), vi.ravel())
    # Compressed (PNG, lossless 16 bit) thermal comes out as a raw mono16 Image.
    png = typestore.serialize_cdr(bags.compressed_image_message(
        ir, 'mono16; png compressed', START_NS, 'thermal'), bags.COMPRESSED_IMAGE)
    thermal = live_replay.image_from_cdr(png, bags.COMPRESSED_IMAGE)
    assert thermal.encoding == 'mono16' and thermal.header.frame_id == 'thermal'
    np.testing.assert_array_equal(image_to_numpy(thermal), ir)
    with pytest.raises(replay.ReplayError, match='CameraInfo'):
        live_replay.image_from_cdr(raw, bags.CAMERA_INFO)


class _RecordingGraph:
    """The graph as :class:`live_replay._Replay` sees it, keeping what was sent, in order."""

    def __init__(self):
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo

        self.events = []
        self.callbacks = {}
        self.message_classes = {'rgb_info': CameraInfo, 'thermal_info': CameraInfo}
        self.fusion_node = None
        self.clock_class = Clock
        graph = self

        class Publisher:
            def __init__(self, role):
                self.role = role

            def publish(self, msg):
                graph.events.append((self.role, stamp_ns(msg), time.monotonic()))

        roles = ('thermal', 'rgb', 'rgb_info', 'thermal_info')
        self.publishers = {role: Publisher(role) for role in roles}

    def publish_clock(self, bag_ns):
        self.events.append(('clock', bag_ns, time.monotonic()))


def test_the_node_clock_reaches_the_bag_before_its_first_image(tmp_path, frames):
    """After the warm-up (stamps up to 10 s before the bag) /clock jumps to the bag's start
    ahead of the first image: /clock and images are separate topics, and a pair that arrives
    before its clock looks 10 s in the future to the node, which drops it."""
    from types import SimpleNamespace

    bag_path = tmp_path / 'bag'
    write_bag(bag_path, frames, 2, 10.0)
    bag = bags.open_bag(bag_path)
    topics = replay.plan_topics(bag)
    graph = _RecordingGraph()
    options = SimpleNamespace(loop=1, rate=1.0, progress=False, drain_timeout=0.05)
    runner = live_replay._Replay(options, bag, topics, graph, out_bag=None, warnings=[])
    runner.run(queue_size=10, slop=0.05, offset=0.0)
    first_image = next(event for event in graph.events if event[0] != 'clock')
    at_start = next(event for event in graph.events if event[0] == 'clock'
                    and event[1] >= bag.start_ns)
    # Sent ahead of the image, not in the same instant: the node gets time to take it.
    assert at_start[2] <= first_image[2] - 0.02, graph.events[:4]
    assert runner.published['thermal'] == runner.published['rgb'] == 2


def test_replay_clock_loop_shift_and_warmup_stamps():
    clock = replay.ReplayClock(bag_start_ns=5 * 10**9, wall_start=100.0, rate=2.0)
    assert clock.wall_time(7 * 10**9) == pytest.approx(101.0), '2 s of bag in 1 s at rate 2'
    assert clock.bag_time(100.5) == 6 * 10**9
    assert replay.ReplayClock(0, 0.0, 0.5).wall_time(10**9) == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        replay.ReplayClock(0, 0.0, 0.0)
    # 10 RGB frames over 0.9 s: the next pass starts one frame period after the last one.
    assert replay.loop_shift_ns(900_000_000, 10, 902_000_000, 905_000_000) == 1_000_000_000
    # A thermal stream stamped far later than RGB makes the pass longer.
    assert replay.loop_shift_ns(900_000_000, 10, 1_800_000_000, 0) == 1_900_000_000
    assert replay.loop_shift_ns(0, 1, 0, 0) == 10**9 // 30
    stamps = replay.warmup_stamps(START_NS, 4)
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert START_NS - 10 * 10**9 < stamps[0] and stamps[-1] < START_NS
    with pytest.raises(replay.ReplayError, match='no-warmup'):
        replay.warmup_stamps(3, 4)


def test_report_markdown_and_node_counters(tmp_path):
    snapshot = {'pairs': 12, 'published': 9, 'dropped_busy': 3, 'network_ms': {'count': 10,
                'p50': 30.0, 'p99': 50.0, 'max': 60.0},
                'pairing': {'paired': 12, 'pending_rgb': 1}}
    node = replay_report.node_report(snapshot, {'pairs': 2, 'published': 2,
                                                'pairing': {'paired': 2, 'pending_rgb': 0}})
    assert node['counters'] == {'pairs': 10, 'published': 7, 'dropped_busy': 3}
    assert node['pairing'] == {'paired': 10, 'pending_rgb': 1}
    values = replay_report.parse_diagnostic_values(
        [('pairs', '12'), ('network_ms', '{"p50": 3.5}'), ('device', 'cpu')])
    assert values == {'pairs': 12, 'network_ms': {'p50': 3.5}, 'device': 'cpu'}


# ---------------------------------------------------------------------------- errors
def test_missing_topics_and_empty_bags_fail_clearly(tmp_path, frames, capsys):
    only_rgb = tmp_path / 'only_rgb'
    write_bag(only_rgb, frames, 2, 10.0, thermal=False)
    assert replay_cli.main([str(only_rgb), '--out', str(tmp_path / 'o1')]) == replay.EXIT_ERROR
    error = capsys.readouterr().err
    assert 'no thermal image topic' in error and '/rgb/image' in error
    assert 'Traceback' not in error
    assert not (tmp_path / 'o1').exists(), 'nothing is created for a bag that cannot play'

    both = tmp_path / 'both'
    write_bag(both, frames, 2, 10.0)
    assert replay_cli.main([str(both), '--rgb-topic', '/nope', '--out',
                            str(tmp_path / 'o2')]) == replay.EXIT_ERROR
    error = capsys.readouterr().err
    assert "['/nope'] not in bag" in error and '/thermal/image' in error

    empty = tmp_path / 'empty'
    with bags.BagWriter(empty) as writer:
        writer.add_topic('/rgb/image', bags.IMAGE)
    assert replay_cli.main([str(empty), '--out', str(tmp_path / 'o3')]) == replay.EXIT_ERROR
    assert 'is empty' in capsys.readouterr().err

    assert replay_cli.main([str(tmp_path / 'absent'), '--out',
                            str(tmp_path / 'o4')]) == replay.EXIT_ERROR
    assert 'does not exist' in capsys.readouterr().err

    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'old.json').write_text('{}')
    assert replay_cli.main([str(both), '--out', str(busy)]) == replay.EXIT_ERROR
    assert 'not empty' in capsys.readouterr().err

    # The node cannot start: one line, and the output folder this run made is gone again.
    assert replay_cli.main([str(both), '--out', str(tmp_path / 'o6'), '--semantics', 'disabled',
                            '--weights', str(tmp_path / 'none.safetensors')]) == replay.EXIT_ERROR
    error = capsys.readouterr().err
    assert 'none.safetensors' in error and 'Traceback' not in error
    assert not (tmp_path / 'o6').exists()
    assert replay_cli.main([str(both), '--out', str(tmp_path / 'o7'), '--semantics', 'disabled',
                            '--ros-args', '-p', 'sync.slop:=wide']) == replay.EXIT_ERROR
    assert "'sync.slop'" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        replay_cli.main([str(both), '--external', '--weights', '/w.safetensors'])
    assert 'configure the in-process node' in capsys.readouterr().err
    assert replay_cli.main([str(both), '--out', str(tmp_path / 'o5'),
                            '--semantics', 'replay']) == replay.EXIT_ERROR
    assert 'needs one recorded std_msgs/String topic' in capsys.readouterr().err


# ---------------------------------------------------------------------------- live replay
@pytest.fixture(scope='module')
def in_process_run(tmp_path_factory, frames, weights):
    """One in-process replay: 8 pairs at 10 Hz, played twice at rate 2."""
    root = tmp_path_factory.mktemp('replay')
    bag = root / 'bag'
    rgb_stamps = write_bag(bag, frames, 8, 10.0)
    out = root / 'out'
    status = replay_cli.main([str(bag), '--out', str(out), '--weights', weights,
                              '--semantics', 'disabled', '--rate', '2', '--loop', '2',
                              '--set', 'sync.slop=0.02', '--drain-timeout', '2'])
    report = json.loads((out / replay.REPORT_JSON).read_text())
    return status, report, out, rgb_stamps


def test_in_process_replay_fuses_the_bag_frames_with_their_rgb_stamps(in_process_run, frames):
    status, report, out, rgb_stamps = in_process_run
    assert status == replay.EXIT_OK, report
    assert report['mode'] == 'in-process' and not report['interrupted']
    assert report['published'] == {'thermal': 16, 'rgb': 16, 'rgb_info': 16}
    assert report['sync']['slop'] == pytest.approx(0.02), '--set reaches the node'
    # Pass two is shifted by one pass plus one frame interval: 0.7 s + 0.1 s.
    shift = 800_000_000
    # Every thermal but the very last has a newer RGB behind it: 15 certain pairs.
    assert report['result']['input_pairs'] == 15
    recorded = read_output(out)
    images = recorded['/fused/image']
    assert len(images) == report['result']['fused_received'] >= 1
    size_of = {stamp + shift * bag_pass: frames[i % len(frames)][1].shape[:2]
               for i, stamp in enumerate(rgb_stamps) for bag_pass in (0, 1)}
    for image in images:
        assert stamp_ns(image) in size_of, 'a fused frame must carry an RGB stamp of the bag'
        assert (image.height, image.width) == size_of[stamp_ns(image)]
        assert image.header.frame_id == 'rgb_optical_frame' and image.encoding == 'bgr8'
    assert [stamp_ns(m) for m in recorded['/fused/camera_info']] == [stamp_ns(m)
                                                                     for m in images]
    assert report['recorded'] == {'/fused/camera_info': len(images), '/fused/image': len(images)}


def test_in_process_report_numbers_are_consistent(in_process_run):
    status, report, out, _ = in_process_run
    check_report_consistency(report)
    result, node = report['result'], report['node']
    assert result['unexpected_fused'] == 0 and result['duplicate_fused'] == 0
    # The node's own counters over the replay (warm-up excluded) tell the same story.
    assert node['counters']['published'] == result['fused_received']
    assert node['counters']['pairs'] == result['input_pairs']
    assert node['counters']['thermal_received'] == 16
    # Every pair the node formed is accounted for, and the jump from the warm-up stamps (up to
    # 10 s before the bag) to the bag is no time jump: the bag's first pair is not dropped.
    counters = node['counters']
    assert counters['dropped_future'] == counters['time_jumps_forward'] == 0
    assert counters['published'] + sum(value for key, value in counters.items()
                                       if key.startswith('dropped_')) == counters['pairs']
    assert node['network_ms']['count'] >= result['fused_received']
    # Receive times run from 3 ms to 704 ms; pass two is shifted by 0.8 s; rate 2 halves it.
    assert report['bag_seconds'] == pytest.approx(0.8 + 0.701)
    assert report['planned_wall_seconds'] == pytest.approx((0.8 + 0.701) / 2)
    # Pacing never runs ahead of the bag (a lower bound only: the CPU is shared).
    assert report['publish_wall_seconds'] >= report['planned_wall_seconds']
    markdown = (out / replay.REPORT_MARKDOWN).read_text()
    # The verdict comes first, against the frame period of this run (1.501 s / 2 / 15).
    assert markdown.splitlines()[2] == f'**{report["verdict"]}**'
    assert report['frame_period_ms'] == pytest.approx(1501 / 2 / 15)
    assert f'frame period of {report["frame_period_ms"]:.0f} ms at rate x2' in markdown
    share = report['fused_share_over_time']
    assert sum(share['input_pairs']) == result['input_pairs']
    assert sum(share['fused']) == result['fused_matched']
    assert (out / 'fused_share.png').is_file() and '(fused_share.png)' in markdown
    assert f'input pairs {result["input_pairs"]}' in markdown
    assert f'fused frames received {result["fused_received"]}' in markdown


def test_recorded_semantics_are_replayed_latched_to_the_node(tmp_path, frames, weights):
    bag = tmp_path / 'bag'
    write_bag(bag, frames, 4, 10.0, camera_info=False, semantics='a person near a fence')
    out = tmp_path / 'out'
    status = replay_cli.main([str(bag), '--out', str(out), '--weights', weights,
                              '--semantics', 'replay', '--rate', '4', '--drain-timeout', '2'])
    report = json.loads((out / replay.REPORT_JSON).read_text())
    assert status == replay.EXIT_OK, report
    assert report['published'] == {'semantics': 1, 'thermal': 4, 'rgb': 4}
    assert any('published as JSON' in w for w in report['warnings'])
    # The node took it: no rejected semantics, and the latched topic was recorded.
    assert 'bad_semantics' not in report['node']['error_kinds']
    recorded = read_output(out)
    assert [json.loads(m.data)['description'] for m in recorded['/semantics']] == [
        'a person near a fence']
    assert len(recorded['/fused/image']) == report['result']['fused_received'] >= 1


@pytest.fixture
def external_node(weights):
    """A fusion node started by the test, as a user would run it, spun in a thread."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from tesg_ros.ros.fusion_node import FusionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    params = {'model.weights': weights, 'semantics.mode': 'disabled', 'sync.slop': 0.03,
              'use_sim_time': True}
    node = FusionNode(context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    node.shutdown()
    executor.shutdown()
    thread.join(timeout=10.0)
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_external_mode_replays_into_a_running_node(tmp_path, frames, external_node):
    bag = tmp_path / 'bag'
    rgb_stamps = write_bag(bag, frames, 6, 10.0)
    out = tmp_path / 'out'
    status = replay_cli.main([str(bag), '--out', str(out), '--external', '--rate', '4',
                              '--drain-timeout', '2', '--storage', 'sqlite3'])
    report = json.loads((out / replay.REPORT_JSON).read_text())
    assert status == replay.EXIT_OK, report
    assert report['mode'] == 'external'
    assert report['sync']['slop'] == pytest.approx(0.03), 'read from the running node'
    assert not any('use_sim_time' in w for w in report['warnings'])
    check_report_consistency(report)
    assert report['result']['input_pairs'] == 5
    assert report['planned_wall_seconds'] == pytest.approx(0.501 / 4)
    assert report['publish_wall_seconds'] >= report['planned_wall_seconds']
    assert (out / replay.OUTPUT_BAG / 'fused.db3').is_file()
    images = read_output(out)['/fused/image']
    assert {stamp_ns(m) for m in images} <= set(rgb_stamps)
    assert len(images) == report['result']['fused_received'] >= 1
    # The node's /diagnostics before and after the replay give its counters over the replay
    # (its diagnostics timer runs on sim time: the replay moves /clock on to make it fire).
    counters = report['node']['counters']
    assert counters['thermal_received'] == counters['rgb_received'] == 6
    assert counters['published'] == len(images)
    assert counters['pairs'] == report['result']['input_pairs']
    snapshot = external_node.diagnostics_snapshot()
    assert snapshot['rgb_received'] >= 7, 'the replay plus at least one warm-up pair'


def test_external_mode_without_a_node_says_so(tmp_path, frames, capsys):
    bag = tmp_path / 'bag'
    write_bag(bag, frames, 2, 10.0)
    status = replay_cli.main([str(bag), '--out', str(tmp_path / 'out'), '--external',
                              '--discovery-timeout', '1'])
    assert status == replay.EXIT_ERROR
    assert 'no node subscribes to thermal/image' in capsys.readouterr().err


def test_ctrl_c_stops_cleanly_and_keeps_what_was_recorded(tmp_path, frames, weights,
                                                          monkeypatch):
    bag = tmp_path / 'bag'
    write_bag(bag, frames, 20, 10.0)
    original = replay.PairTracker.fused
    interrupted = threading.Event()

    def fused_then_interrupt(self, stamp, wall):
        original(self, stamp, wall)
        if not interrupted.is_set():  # once: a second one could hit pytest itself
            interrupted.set()
            _thread.interrupt_main()  # as Ctrl-C would, in the main thread

    monkeypatch.setattr(replay.PairTracker, 'fused', fused_then_interrupt)
    # A shell without job control starts background jobs with SIGINT ignored, and then
    # interrupt_main() does nothing; Ctrl-C in a terminal always has Python's handler.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / 'out'
    try:
        status = replay_cli.main([str(bag), '--out', str(out), '--weights', weights,
                                  '--semantics', 'disabled'])
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    assert status == replay.EXIT_INTERRUPTED
    report = json.loads((out / replay.REPORT_JSON).read_text())
    assert report['interrupted']
    assert report['published']['rgb'] < 20, 'the replay stopped early'
    assert len(read_output(out)['/fused/image']) >= 1, 'the output bag was closed properly'
    alive = [t.name for t in threading.enumerate()
             if t.name.startswith(('tesg_replay', 'tesg_fusion_worker'))]
    assert not alive, f'threads left running: {alive}'
