# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion node over real DDS (rclpy from the Kilted wheels, CPU).

Real TNO pairs are published with best-effort QoS; the node runs in this process with a
seeded, untrained network saved to a temp file and loaded through the real loading code (the
tests check plumbing, headers and robustness, not fusion quality).
"""

import threading
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import (DurabilityPolicy, qos_profile_sensor_data, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from dds_graph import NodeGraph  # noqa: E402

from tesg_ros.sensor.image_codec import image_to_numpy, numpy_to_image  # noqa: E402

torch = pytest.importorskip('torch')


@pytest.fixture(scope='module')
def weights(random_weights):
    return random_weights


class Graph(NodeGraph):
    """The node under test and a driver node; diagnostics and semantics collected, a /clock
    publisher for sim time."""

    def __init__(self, weights, overrides=None):
        params = {'model.weights': weights, 'semantics.mode': 'disabled', 'sync.slop': 0.02}
        params.update(overrides or {})
        super().__init__(params, wait_for_discovery='compressed' not in (
            params.get('thermal.transport'), params.get('rgb.transport')))

    def _add_entities(self, driver):
        self.diagnostics, self.semantics = [], []
        driver.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        driver.create_subscription(
            String, 'semantics', self.semantics.append,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.clock_pub = driver.create_publisher(Clock, '/clock', 10)

    def publish_pair(self, thermal, rgb, sec, nanosec=0, rgb_offset_ns=0):
        thermal.header.stamp.sec, thermal.header.stamp.nanosec = sec, nanosec
        rgb_total = sec * 10**9 + nanosec + rgb_offset_ns
        rgb.header.stamp.sec, rgb.header.stamp.nanosec = divmod(rgb_total, 10**9)
        self.thermal_pub.publish(thermal)
        self.rgb_pub.publish(rgb)


@pytest.fixture
def graph_factory(weights):
    graphs = []

    def make(**overrides):
        graphs.append(Graph(weights, overrides))
        return graphs[-1]

    yield make
    for graph in graphs:
        graph.close()


def thermal_message(ir, encoding='mono16', frame_id='thermal_optical_frame'):
    data = ir.astype(np.uint16) * 64 + 1000 if encoding == 'mono16' else ir
    return numpy_to_image(data, encoding, message_class=Image,
                          header=_header(frame_id))


def rgb_message(vi_bgr, encoding='bgr8', frame_id='rgb_optical_frame'):
    data = vi_bgr if encoding == 'bgr8' else np.ascontiguousarray(vi_bgr[:, :, ::-1])
    return numpy_to_image(data, encoding, message_class=Image, header=_header(frame_id))


def _header(frame_id):
    from std_msgs.msg import Header
    return Header(frame_id=frame_id)


def test_fused_image_carries_the_rgb_header_and_mixes_both_inputs(graph_factory, pair):
    ir, vi_bgr = pair
    graph = graph_factory()
    for i in range(5):
        graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr, 'rgb8'), sec=100 + i,
                           rgb_offset_ns=5_000_000)
        time.sleep(0.15)
    graph.wait_for(lambda: graph.fused and graph.infos, 'a fused image')
    fused = graph.fused[-1]
    assert fused.header.frame_id == 'rgb_optical_frame'
    assert fused.header.stamp.nanosec == 5_000_000, 'stamp must be the RGB stamp, not now()'
    assert 100 <= fused.header.stamp.sec <= 104
    assert (fused.width, fused.height, fused.encoding) == (ir.shape[1], ir.shape[0], 'bgr8')
    info = graph.infos[-1]
    assert info.header == fused.header
    assert (info.width, info.height) == (fused.width, fused.height)
    pixels = image_to_numpy(fused).astype(np.float32)
    grey = cv2.cvtColor(pixels.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(pixels - vi_bgr).mean() > 1.0, 'output is just the visible frame'
    assert np.abs(grey - ir).mean() > 1.0, 'output is just the thermal frame'
    assert np.corrcoef(grey.ravel(), ir.ravel())[0, 1] > 0.1
    snapshot = graph.node.diagnostics_snapshot()
    assert snapshot['lifecycle_state'] == 'active', 'autostart (default) activates the node'
    assert snapshot['published'] >= 1 and snapshot['sync_backend'] in ('builtin',
                                                                       'message_filters')
    assert snapshot['stage_ms']['network']['count'] == snapshot['published']
    assert snapshot['device'] == 'cpu' and snapshot['dtype'] == 'float32'


def test_homography_registers_a_smaller_thermal_camera_and_rgb8_output(graph_factory, pair):
    ir, vi_bgr = pair
    small_ir = cv2.resize(ir, (ir.shape[1] // 2, ir.shape[0] // 2), interpolation=cv2.INTER_AREA)
    graph = graph_factory(**{'registration.mode': 'homography',
                             'registration.homography': [2.0, 0.0, 0.5, 0.0, 2.0, 0.5,
                                                         0.0, 0.0, 1.0],
                             'output.encoding': 'rgb8'})
    info = CameraInfo(width=vi_bgr.shape[1], height=vi_bgr.shape[0],
                      k=[300.0, 0.0, 180.0, 0.0, 300.0, 135.0, 0.0, 0.0, 1.0],
                      p=[300.0, 0.0, 180.0, 0.0, 0.0, 300.0, 135.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                      distortion_model='plumb_bob', d=[0.0] * 5)
    graph.rgb_info_pub.publish(info)
    for i in range(5):
        graph.rgb_info_pub.publish(info)
        graph.publish_pair(thermal_message(small_ir, 'mono8'), rgb_message(vi_bgr), sec=10 + i)
        time.sleep(0.15)
    graph.wait_for(lambda: graph.fused, 'a fused image')
    fused = graph.fused[-1]
    assert fused.encoding == 'rgb8'
    assert fused.width <= vi_bgr.shape[1] and fused.height <= vi_bgr.shape[0]
    assert fused.width > 0.9 * vi_bgr.shape[1] and fused.height > 0.9 * vi_bgr.shape[0]
    graph.wait_for(lambda: any(i.k[0] == 300.0 for i in graph.infos), 'calibrated info')
    calibrated = [i for i in graph.infos if i.k[0] == 300.0][-1]
    assert (calibrated.width, calibrated.height) == (fused.width, fused.height)
    snapshot = graph.node.diagnostics_snapshot()
    assert snapshot['rgb_camera_info'] == f'{vi_bgr.shape[1]}x{vi_bgr.shape[0]}, calibrated'
    assert snapshot['thermal_camera_info'] == 'none received'


def test_sim_time_diagnostics_and_bad_inputs_leave_the_node_alive(graph_factory, pair):
    ir, vi_bgr = pair
    graph = graph_factory(use_sim_time=True)
    graph.clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=500).to_msg()))
    time.sleep(0.2)

    good_thermal, good_rgb = thermal_message(ir), rgb_message(vi_bgr)
    unknown = rgb_message(vi_bgr)
    unknown.encoding = 'no_such_encoding'
    short = thermal_message(ir)
    short.data = bytes(short.data)[:-100]
    for i, (thermal, rgb) in enumerate([(good_thermal, unknown), (short, good_rgb)]):
        graph.publish_pair(thermal, rgb, sec=500 + i)
        time.sleep(0.2)
    zero = rgb_message(vi_bgr)
    graph.rgb_pub.publish(zero)  # stamp 0
    time.sleep(0.1)
    invalid = thermal_message(ir)
    invalid.header.stamp.sec, invalid.header.stamp.nanosec = 505, 2_000_000_000  # not a Time
    graph.thermal_pub.publish(invalid)
    time.sleep(0.1)
    # The thermal stream stops: RGB alone must not produce output or errors.
    for i in range(5):
        rgb = rgb_message(vi_bgr)
        rgb.header.stamp.sec = 510 + i
        graph.rgb_pub.publish(rgb)
        time.sleep(0.05)
    graph.clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=530).to_msg()))
    graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr), sec=530)
    graph.wait_for(lambda: graph.fused, 'a fused image after bad inputs')

    def counted():
        snap = graph.node.diagnostics_snapshot()
        return (snap['dropped_bad_input'] >= 2 and snap['rgb_zero_stamp'] >= 1
                and snap['thermal_bad_stamp'] >= 1 and snap['rgb_bad_encoding'] >= 1
                and snap['thermal_bad_encoding'] >= 1)

    try:
        graph.wait_for(counted, 'bad inputs counted in diagnostics', timeout=10.0)
    except AssertionError:
        raise AssertionError(str(graph.node.diagnostics_snapshot()))
    graph.wait_for(lambda: any(a.header.stamp.sec >= 500 for a in graph.diagnostics),
                   '/diagnostics stamped with sim time', timeout=15.0)
    status = graph.diagnostics[-1].status[0]
    keys = {kv.key for kv in status.values}
    assert {'thermal_rate_hz', 'rgb_rate_hz', 'pairs_rate_hz', 'pair_dt_s', 'processing_ms',
            'latency_ms', 'dropped_busy', 'dropped_late', 'device', 'last_error'} <= keys
    assert graph.fused[-1].header.stamp.sec == 530
    assert graph.node.diagnostics_snapshot()['error_kinds'].get('ImageEncodingError', 0) >= 2


def test_parameter_updates_apply_or_are_rejected_with_a_reason(graph_factory):
    graph = graph_factory()
    node = graph.node
    result = node.set_parameters([Parameter('sync.slop', value=0.04)])[0]
    assert result.successful and node.get_parameter('sync.slop').value == 0.04
    result = node.set_parameters([Parameter('sync.slop', value=3.0)])[0]
    assert not result.successful
    result = node.set_parameters([Parameter('output.encoding', value='mono8')])[0]
    assert not result.successful and 'output.encoding' in result.reason
    result = node.set_parameters([Parameter('thermal.percentile_low', value=99.5)])[0]
    assert not result.successful and 'percentile_low' in result.reason
    result = node.set_parameters([Parameter('model.device', value='cuda')])[0]
    assert not result.successful, 'read-only parameters must not change at runtime'
    result = node.set_parameters([Parameter('thermal.normalization', value='minmax')])[0]
    assert result.successful and node.engine.normalizer.mode == 'minmax'
    # Applied only after every on-set callback accepted: a veto leaves the engine as it was.
    from rcl_interfaces.msg import SetParametersResult

    # rclpy runs the latest-added on-set callback first: re-add the node's after the veto so
    # the node's validation runs first and accepts.
    node.remove_on_set_parameters_callback(node._on_set_parameters)
    node.add_on_set_parameters_callback(
        lambda parameters: SetParametersResult(successful=False, reason='vetoed'))
    node.add_on_set_parameters_callback(node._on_set_parameters)
    result = node.set_parameters([Parameter('thermal.normalization', value='fixed_range')])[0]
    assert not result.successful and result.reason == 'vetoed'
    assert node.engine.normalizer.mode == 'minmax'
    assert node.get_parameter('thermal.normalization').value == 'minmax'


def test_live_semantics_are_published_latched(graph_factory, pair):
    ir, vi_bgr = pair
    graph = graph_factory(**{'semantics.mode': 'live', 'semantics.period': 0.5})
    for i in range(4):
        graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr), sec=20 + i)
        time.sleep(0.3)
    graph.wait_for(lambda: graph.fused, 'a fused image')
    graph.wait_for(lambda: graph.semantics, 'latched semantics', timeout=30.0)
    import json
    record = json.loads(graph.semantics[-1].data)
    assert record['description'] and isinstance(record['phrases'], list)
    prompt_pub = graph.driver.create_publisher(String, '/tesg_fusion/prompt', 10)
    graph.wait_for(lambda: prompt_pub.get_subscription_count() > 0, 'prompt subscriber')
    prompt_pub.publish(String(data='highlight the pedestrians'))

    def prompted():
        graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr), sec=int(time.time()))
        time.sleep(0.3)
        return any(json.loads(m.data)['description'] == 'highlight the pedestrians'
                   for m in graph.semantics)

    graph.wait_for(prompted, 'the operator prompt in the semantics', timeout=30.0)


def test_compressed_transport_inputs(graph_factory, pair):
    from sensor_msgs.msg import CompressedImage

    from tesg_ros.sensor.image_codec import numpy_to_compressed

    ir, vi_bgr = pair
    graph = graph_factory(**{'thermal.transport': 'compressed', 'rgb.transport': 'compressed'})
    thermal_pub = graph.driver.create_publisher(CompressedImage, 'thermal/image/compressed',
                                                qos_profile_sensor_data)
    rgb_pub = graph.driver.create_publisher(CompressedImage, 'rgb/image/compressed',
                                            qos_profile_sensor_data)
    graph.wait_for(lambda: thermal_pub.get_subscription_count() > 0
                   and rgb_pub.get_subscription_count() > 0, 'compressed subscribers')
    for i in range(4):
        thermal = numpy_to_compressed(ir.astype(np.uint16) * 64 + 1000, 'png',
                                      header=_header('thermal_optical_frame'),
                                      message_class=CompressedImage)
        rgb = numpy_to_compressed(vi_bgr, 'jpeg', header=_header('rgb_optical_frame'),
                                  message_class=CompressedImage)
        thermal.header.stamp.sec = rgb.header.stamp.sec = 40 + i
        thermal_pub.publish(thermal)
        rgb_pub.publish(rgb)
        time.sleep(0.15)
    graph.wait_for(lambda: graph.fused, 'a fused image from compressed inputs')
    fused = graph.fused[-1]
    assert fused.header.frame_id == 'rgb_optical_frame' and 40 <= fused.header.stamp.sec <= 43
    assert (fused.width, fused.height) == (ir.shape[1], ir.shape[0])
    assert graph.node.diagnostics_snapshot()['dropped_bad_input'] == 0


def _threads_named(*names):
    return [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def test_bad_configuration_fails_configure_and_autostart_raises_the_reason(weights):
    from tesg_ros.errors import ConfigError
    from tesg_ros.ros.fusion_node import FusionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    singular = [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    params = {'model.weights': weights, 'semantics.mode': 'disabled',
              'registration.mode': 'homography', 'registration.homography': singular}
    overrides = [Parameter(name, value=value) for name, value in params.items()]
    try:
        with pytest.raises(ConfigError, match='singular'):
            FusionNode(context=context, parameter_overrides=overrides)
        node = FusionNode(context=context, parameter_overrides=overrides + [
            Parameter('autostart', value=False)])
        assert node.lifecycle_state == 'unconfigured'
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == 'unconfigured' and node.engine is None
        node.shutdown()
        assert node.lifecycle_state == 'finalized'
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_lifecycle_services_gate_the_output_and_shutdown_joins_the_threads(weights, pair):
    from lifecycle_msgs.srv import ChangeState, GetState

    from tesg_ros.ros.fusion_node import FusionNode

    ir, vi_bgr = pair
    context = rclpy.Context()
    rclpy.init(context=context)
    params = {'model.weights': weights, 'semantics.mode': 'live', 'semantics.period': 0.5,
              'sync.slop': 0.02, 'autostart': False}
    node = FusionNode(context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()])
    helper = rclpy.create_node('tesg_lifecycle_driver', context=context)
    fused = []
    helper.create_subscription(Image, 'fused/image', fused.append, QoSProfile(depth=10))
    thermal_pub = helper.create_publisher(Image, 'thermal/image', qos_profile_sensor_data)
    rgb_pub = helper.create_publisher(Image, 'rgb/image', qos_profile_sensor_data)
    change = helper.create_client(ChangeState, '/tesg_fusion/change_state')
    get_state = helper.create_client(GetState, '/tesg_fusion/get_state')
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(helper)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    worker_names = ('tesg_fusion_worker', 'tesg-semantics')
    stamps = iter(range(200, 400))

    def call(client, request):
        assert client.wait_for_service(timeout_sec=20.0), client.srv_name
        future = client.call_async(request)
        deadline = time.monotonic() + 120.0  # activate loads the model and the text encoder
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f'{client.srv_name} did not answer'
        return future.result()

    def transition(label):
        request = ChangeState.Request()
        request.transition.label = label
        assert call(change, request).success, label
        return call(get_state, GetState.Request()).current_state.label

    def publish_pairs(count):
        for _ in range(count):
            sec = next(stamps)
            thermal, rgb = thermal_message(ir), rgb_message(vi_bgr)
            thermal.header.stamp.sec = rgb.header.stamp.sec = sec
            thermal_pub.publish(thermal)
            rgb_pub.publish(rgb)
            time.sleep(0.1)

    def wait_until(predicate, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f'timed out waiting for {what}'
            time.sleep(0.02)

    def wait_for_fused():
        deadline = time.monotonic() + 30.0
        while not fused and time.monotonic() < deadline:
            publish_pairs(1)
        assert fused, 'no fused image while active'

    try:
        assert call(get_state, GetState.Request()).current_state.label == 'unconfigured'
        assert transition('configure') == 'inactive'
        wait_until(lambda: helper.count_publishers('/fused/image') == 1, 'the publisher')
        publish_pairs(5)
        assert not fused and node.diagnostics_snapshot()['thermal_received'] == 0
        assert not _threads_named(*worker_names)

        assert transition('activate') == 'active'
        assert {t.name for t in _threads_named(*worker_names)} == set(worker_names)
        wait_for_fused()

        assert transition('deactivate') == 'inactive'
        assert not _threads_named(*worker_names) and node.engine is None
        received = node.diagnostics_snapshot()['thermal_received']
        time.sleep(0.5)  # let a frame published just before deactivate arrive
        fused.clear()
        publish_pairs(5)
        assert not fused, 'fused output while inactive'
        assert node.diagnostics_snapshot()['thermal_received'] == received

        assert transition('activate') == 'active'
        wait_for_fused()
        assert transition('shutdown') == 'finalized'
        assert not _threads_named(*worker_names) and node.engine is None
        wait_until(lambda: helper.count_publishers('/fused/image') == 0, 'no publisher')
    finally:
        node.shutdown()
        executor.shutdown()
        spinner.join(timeout=10.0)
        node.destroy_node()
        helper.destroy_node()
        rclpy.shutdown(context=context)
    assert not _threads_named(*worker_names)


def test_engine_fast_luma_and_colour_match_the_training_colour_maths(weights, pair):
    """The engine's fast luma/colour path (network.colour.*_uint8) equals the YCbCr round trip
    (the network's own output: the low-light tone off)."""
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.network.colour import bgr_to_ycbcr_np, restore_colour_np, uint8_to_float
    from tesg_ros.node_params import defaults

    ir, vi_bgr = pair
    params = dict(defaults(), **{'model.weights': weights, 'semantics.mode': 'disabled',
                                 'model.device': 'cpu', 'model.lowlight_tone': False})
    engine = FusionEngine(EngineSettings.from_params(params))
    result = engine.process(ir, vi_bgr)
    vis_y = bgr_to_ycbcr_np(uint8_to_float(vi_bgr))[..., 0]
    masks = np.zeros((engine.mask_channels, *ir.shape), np.float32)
    fused_y = engine._forward(result.thermal_registered, vis_y, masks, engine._zero_text)
    reference = restore_colour_np(fused_y, vi_bgr)
    difference = np.abs(result.bgr.astype(np.int16) - reference)
    assert result.bgr.dtype == np.uint8 and result.bgr.shape == vi_bgr.shape
    assert difference.max() <= 1 and np.count_nonzero(difference) < 1e-3 * difference.size
    assert np.abs(result.bgr.astype(np.int16) - vi_bgr).mean() > 1.0, 'fusion changed nothing'
    assert set(result.timings_ms) == {'normalise', 'register', 'semantics', 'network',
                                      'colour', 'total'}
    # The staged path (pinned buffers on CUDA) on the CPU, in float64 so it is taken here.
    engine.net, engine.dtype = engine.net.double(), torch.float64
    staged_y = engine._forward(result.thermal_registered, vis_y, masks, engine._zero_text)
    buffers = [buffer.data_ptr() for buffer in engine._staging.values()]
    engine._forward(result.thermal_registered, vis_y, masks, engine._zero_text)
    assert [buffer.data_ptr() for buffer in engine._staging.values()] == buffers, 'not reused'
    np.testing.assert_allclose(staged_y, fused_y, atol=1e-4)


def test_cuda_out_of_memory_falls_back_to_the_cpu_and_says_so(weights, pair):
    """A CUDA OOM in the forward pass is not fatal: the engine moves to the CPU (float32),
    fuses the same frame there, counts the fallback and logs an error."""
    import torch

    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults

    class OutOfMemoryOnce(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.raised = net, False

        def forward(self, *inputs):
            if not self.raised:
                self.raised = True
                raise torch.cuda.OutOfMemoryError('CUDA out of memory (simulated)')
            return self.net(*inputs)

    class Logger:
        def __init__(self):
            self.errors = []

        def error(self, message):
            self.errors.append(message)

        def info(self, message):
            pass

        warning = debug = info

    ir, vi_bgr = pair
    params = dict(defaults(), **{'model.weights': weights, 'semantics.mode': 'disabled',
                                 'model.device': 'cpu'})
    reference = FusionEngine(EngineSettings.from_params(params)).process(ir, vi_bgr).bgr
    logger = Logger()
    engine = FusionEngine(EngineSettings.from_params(params), logger=logger)
    engine.net = OutOfMemoryOnce(engine.net)
    engine.dtype = torch.float64  # as if on the GPU in half precision: the fallback resets it
    result = engine.process(ir, vi_bgr)
    assert engine.fallbacks == 1 and engine.net.raised
    assert (engine.device.type, engine.dtype) == ('cpu', torch.float32)
    assert any('out of memory' in message for message in logger.errors)
    assert engine.diagnostics()['cuda_fallbacks'] == 1
    np.testing.assert_array_equal(result.bgr, reference)


def _fused_by_stamp(graph, ir, vi_bgr, start_sec, count):
    """Send ``count`` pairs stamped 0.1 s apart (a camera's spacing, inside the node's
    time-jump bound), each after the previous one is published or counted as failed, so that
    a slow machine drops none; returns (stamp ns, fused pixels) in publishing order."""
    for index in range(count):
        graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr), sec=start_sec,
                           nanosec=index * 100_000_000)
        graph.wait_for(lambda: _finished(graph) > index, f'pair {index} to be finished', 60.0)
    return [(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, image_to_numpy(m).copy())
            for m in graph.fused]


def _finished(graph):
    snapshot = graph.node.diagnostics_snapshot()
    return min(len(graph.fused), snapshot['published']) + snapshot['dropped_error']


def test_the_finishing_thread_publishes_the_same_frames_in_order(weights, pair):
    """worker.pipeline (a second thread colours and publishes frame N while the network runs
    on N + 1) changes when frames are finished, not what or in which order: the same pixels as
    the serial worker for every stamp, stamps increasing, every stage counted; the network at a
    smaller working size, so the upsampling runs on the finishing thread."""
    ir, vi_bgr = pair
    results = {}
    for pipeline in (True, False):
        graph = Graph(weights, {'worker.pipeline': pipeline, 'model.max_pixels': 20000})
        try:  # one graph at a time: both would publish on the same topics
            results[pipeline] = dict(_fused_by_stamp(graph, ir, vi_bgr, 300, 6))
            stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in graph.fused]
            snapshot = graph.node.diagnostics_snapshot()
        finally:
            graph.close()
        assert stamps == sorted(set(stamps)), 'published out of order'
        for stage in ('network', 'handoff', 'upsample', 'colour', 'publish'):
            assert snapshot['stage_ms'][stage]['count'] == snapshot['published'], stage
        assert snapshot['dropped_error'] == 0
    common = set(results[True]) & set(results[False])
    assert len(common) == 6
    for sec in common:
        assert np.array_equal(results[True][sec], results[False][sec]), sec


def test_a_failing_finish_is_counted_and_the_worker_goes_on(graph_factory, pair, monkeypatch):
    from tesg_ros.engine import FusionEngine

    ir, vi_bgr = pair
    original = FusionEngine.finish
    failures = []

    def finish_failing_once(inferred):
        if not failures:
            failures.append(1)
            raise RuntimeError('injected failure in finish')
        return original(inferred)

    monkeypatch.setattr(FusionEngine, 'finish', staticmethod(finish_failing_once))
    graph = graph_factory()
    _fused_by_stamp(graph, ir, vi_bgr, 400, 4)
    snapshot = graph.node.diagnostics_snapshot()
    assert failures and snapshot['dropped_error'] == 1
    assert 'RuntimeError' in snapshot['error_kinds'] and snapshot['published'] >= 2
