# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion node over real DDS: camera geometry (no silent stretch, plane registration from
CameraInfo) and the outputs created lazily (compressed, debug masks and weights), with the
topic table of docs/node.md checked against the topics the node really creates."""

import json
from pathlib import Path
import re
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
pytest.importorskip('torch')
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from test_fusion_node import Graph, rgb_message, thermal_message  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / 'docs'


@pytest.fixture
def graph_factory(random_weights):
    graphs = []

    def make(**overrides):
        graphs.append(Graph(random_weights, overrides))
        return graphs[-1]

    yield make
    for graph in graphs:
        graph.close()


def _status(graph):
    return graph.diagnostics[-1].status[0] if graph.diagnostics else None


def _publish_pairs(graph, thermal, rgb, start, count, period=0.15):
    for i in range(count):
        graph.publish_pair(thermal_message(thermal), rgb_message(rgb), sec=start + i)
        time.sleep(period)


def test_identity_refuses_another_aspect_ratio_with_an_error_status_then_recovers(
        graph_factory, pair):
    ir, vi_bgr = pair
    graph = graph_factory(**{'diagnostics.period': 0.2})
    wide = cv2.resize(vi_bgr, (480, 270))  # 16:9 against the 4:3 thermal image

    def refused():
        _publish_pairs(graph, ir, wide, int(time.time()) % 1000, 1)
        status = _status(graph)
        return status is not None and status.level == DiagnosticStatus.ERROR

    graph.wait_for(refused, 'an ERROR status for the stretch')
    message = _status(graph).message
    assert 'registration.mode' in message and 'tesg-compute-homography' in message
    assert not graph.fused, 'nothing may be fused across aspect ratios'
    snapshot = graph.node.diagnostics_snapshot()
    assert snapshot['lifecycle_state'] == 'active' and snapshot['dropped_bad_input'] >= 1
    # The same aspect ratio at twice the size: resized, fused, the status back from ERROR.
    big = cv2.resize(vi_bgr, (720, 540))

    def fused_big():
        _publish_pairs(graph, ir, big, 2000 + len(graph.fused), 1)
        return any(f.width == 720 and f.height == 540 for f in graph.fused)

    graph.wait_for(fused_big, 'a fused 720x540 frame')
    graph.diagnostics.clear()
    graph.wait_for(lambda: graph.diagnostics, 'a fresh status')
    status = _status(graph)
    assert status.level != DiagnosticStatus.ERROR, status.message
    values = {kv.key: kv.value for kv in status.values}
    assert 'scales the thermal image 360x270' in values['registration']


def test_allow_stretch_fuses_across_aspect_ratios(graph_factory, pair):
    ir, vi_bgr = pair
    graph = graph_factory(**{'registration.allow_stretch': True})
    wide = cv2.resize(vi_bgr, (480, 270))
    graph.wait_for(lambda: _publish_pairs(graph, ir, wide, 3000 + len(graph.fused), 1)
                   or graph.fused, 'a stretched fused frame')
    assert (graph.fused[-1].width, graph.fused[-1].height) == (480, 270)


def _info(width, height, fx, frame_id):
    k = [fx, 0.0, (width - 1) / 2, 0.0, fx, (height - 1) / 2, 0.0, 0.0, 1.0]
    info = CameraInfo(width=width, height=height, k=k, distortion_model='plumb_bob',
                      d=[0.0] * 5, r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0])
    info.header.frame_id = frame_id
    return info


def test_plane_registration_from_camera_info_and_parameter_extrinsics(graph_factory, pair):
    from tesg_ros.sensor.registration import plane_homography

    ir, vi_bgr = pair
    graph = graph_factory(**{
        'registration.mode': 'plane', 'registration.extrinsics.source': 'parameters',
        'registration.extrinsics.translation': [0.1, 0.0, 0.0],
        'registration.plane.distance': 5.0, 'diagnostics.period': 0.2})
    thermal_info_pub = graph.driver.create_publisher(
        CameraInfo, 'thermal/camera_info', rclpy.qos.qos_profile_sensor_data)
    graph.wait_for(lambda: thermal_info_pub.get_subscription_count() > 0, 'info subscriber')

    def waiting():
        _publish_pairs(graph, ir, vi_bgr, 4000 + len(graph.diagnostics), 1)
        status = _status(graph)
        return status is not None and 'waits for' in status.message

    graph.wait_for(waiting, 'a status saying what plane registration waits for')
    assert _status(graph).level == DiagnosticStatus.WARN and not graph.fused
    thermal_info = _info(360, 270, 400.0, 'thermal_optical_frame')
    rgb_info = _info(360, 270, 420.0, 'rgb_optical_frame')

    def plane_h():
        values = graph.node.diagnostics_snapshot().get('registration_plane', {})
        return values.get('homography')

    def fused_with(info, distance=5.0):
        thermal_info_pub.publish(thermal_info)
        graph.rgb_info_pub.publish(info)
        _publish_pairs(graph, ir, vi_bgr, 5000 + len(graph.fused), 1)
        expected = plane_homography(np.reshape(thermal_info.k, (3, 3)),
                                    np.reshape(info.k, (3, 3)), np.eye(3), [0.1, 0, 0],
                                    [0, 0, -1], distance)
        return bool(graph.fused) and plane_h() is not None and np.allclose(
            plane_h(), expected.ravel(), atol=1e-5)

    graph.wait_for(lambda: fused_with(rgb_info), 'a fused frame with the plane homography')
    # A recalibrated RGB camera: the homography follows the new CameraInfo.
    recalibrated = _info(360, 270, 480.0, 'rgb_optical_frame')
    graph.wait_for(lambda: fused_with(recalibrated), 'the homography of the new CameraInfo')
    # The plane distance at runtime.
    result = graph.node.set_parameters([rclpy.parameter.Parameter(
        'registration.plane.distance', value=2.0)])[0]
    assert result.successful
    graph.wait_for(lambda: fused_with(recalibrated, distance=2.0), 'the new plane distance')
    graph.diagnostics.clear()
    graph.wait_for(lambda: graph.diagnostics, 'a fresh status')
    assert 'no fused output' not in _status(graph).message


def test_plane_mode_configuration_errors_fail_configure(random_weights):
    from rclpy.parameter import Parameter

    from tesg_ros.errors import ConfigError
    from tesg_ros.ros.fusion_node import FusionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for overrides, match in (
                ({'registration.extrinsics.source': 'tf'}, 'tf2_ros'),
                ({'registration.plane.normal': [0.0, 0.0, 0.0]}, 'normal'),
                ({'registration.file': '/tmp/h.yaml'}, 'registration.file')):
            params = {'model.weights': random_weights, 'semantics.mode': 'disabled',
                      'registration.mode': 'plane', **overrides}
            with pytest.raises(ConfigError, match=match):
                FusionNode(context=context, parameter_overrides=[
                    Parameter(name, value=value) for name, value in params.items()])
    finally:
        rclpy.shutdown(context=context)


def _topic_rows():
    text = (DOCS / 'node.md').read_text(encoding='utf-8')
    section = text[text.index('## Topics'):]
    section = section[:section.index('\n## ', 4)]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) >= 4 and cells[0].startswith('`'):
            for name in re.findall(r'`([^`]+)`', cells[0]):
                rows[name] = cells[1]
    return rows


def test_lazy_outputs_cost_nothing_unsubscribed_and_match_fused_image(graph_factory, pair,
                                                                      monkeypatch):
    from tesg_ros import debug_images
    from tesg_ros.engine import SEMANTICS_SCHEMA
    from tesg_ros.sensor.image_codec import compressed_to_numpy, image_to_numpy

    ir, vi_bgr = pair
    overlays = []
    original_overlay = debug_images.mask_overlay
    monkeypatch.setattr(debug_images, 'mask_overlay',
                        lambda *a, **k: overlays.append(1) or original_overlay(*a, **k))
    # Replay semantics: the masks come from recorded phrases, per frame, with no background
    # describer thread (and the record's schema field is what the node reads).
    graph = graph_factory(**{'semantics.mode': 'replay', 'output.jpeg_quality': 95})
    node = graph.node
    recorded_pub = graph.driver.create_publisher(String, 'semantics', QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    recorded_pub.publish(String(data=json.dumps({
        'schema': SEMANTICS_SCHEMA, 'description': 'a warm person near a hot object',
        'phrases': ['warm person', 'hot object'], 'source': 'operator', 'model_id': '',
        'age_s': 0.0, 'error': ''})))
    asked = []
    engine_infer = node.engine.infer
    node.engine.infer = lambda *a, **k: asked.append(k.get('want_weights')) or \
        engine_infer(*a, **k)
    graph.wait_for(lambda: _publish_pairs(graph, ir, vi_bgr, 100 + len(graph.fused), 1)
                   or len(graph.fused) >= 2, 'fused frames', 60.0)

    graph.wait_for(lambda: node.engine._recorded is not None, 'the recorded semantics taken')
    assert 'bad_semantics' not in node.diagnostics_snapshot()['error_kinds']
    assert asked and not any(asked), 'no weight map without a subscriber'
    assert not overlays, 'no overlay without a subscriber'

    received = {'compressed': [], 'masks': [], 'weights': []}
    reliable = QoSProfile(depth=10)
    graph.driver.create_subscription(CompressedImage, 'fused/image/compressed',
                                     received['compressed'].append, reliable)
    graph.driver.create_subscription(Image, '/tesg_fusion/debug/masks',
                                     received['masks'].append, reliable)
    graph.driver.create_subscription(Image, '/tesg_fusion/debug/weights',
                                     received['weights'].append, reliable)
    graph.wait_for(lambda: node._debug_weights_pub.get_subscription_count() > 0
                   and node._debug_masks_pub.get_subscription_count() > 0
                   and node._compressed_pub.get_subscription_count() > 0, 'subscriptions')
    graph.fused.clear()

    # Stamps keep increasing: the jump from ~100 to 200 s is a forward time jump, confirmed
    # by the second pair (the first is dropped as dropped_future, docs/node.md).
    next_stamp = iter(range(200, 10**6))

    def all_outputs():
        _publish_pairs(graph, ir, vi_bgr, next(next_stamp), 1, period=0.3)
        stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in graph.fused}
        return all(any((m.header.stamp.sec, m.header.stamp.nanosec) in stamps for m in got)
                   for got in received.values())

    graph.wait_for(all_outputs, 'compressed, masks and weights of one fused frame', 60.0)
    by_stamp = {m.header.stamp.sec: m for m in graph.fused}
    compressed = [m for m in received['compressed'] if m.header.stamp.sec in by_stamp][-1]
    fused = image_to_numpy(by_stamp[compressed.header.stamp.sec]).astype(np.float32)
    assert compressed.format == 'bgr8; jpeg compressed bgr8'
    assert compressed.header.frame_id == 'rgb_optical_frame'
    jpeg, jpeg_encoding = compressed_to_numpy(compressed)
    assert jpeg_encoding == 'bgr8'
    jpeg = jpeg.astype(np.float32)
    assert jpeg.shape == fused.shape and np.abs(jpeg - fused).mean() < 3.0

    weights = [m for m in received['weights'] if m.header.stamp.sec in by_stamp][-1]
    assert weights.encoding == '32FC1' and (weights.width, weights.height) == (360, 270)
    share = image_to_numpy(weights)
    assert 0.0 <= share.min() and share.max() <= 1.0 and share.std() > 1e-3
    assert any(asked), 'the engine was asked for the weight map once subscribed'

    painted = []
    for masks in (m for m in received['masks'] if m.header.stamp.sec in by_stamp):
        overlay = image_to_numpy(masks).astype(np.float32)
        fused = image_to_numpy(by_stamp[masks.header.stamp.sec]).astype(np.float32)
        assert masks.encoding == 'bgr8' and overlay.shape == fused.shape
        painted.append((np.abs(overlay - fused).max(axis=2) > 2).mean())
    assert overlays and 0.0 < max(painted) < 0.5, \
        f'the warm objects are painted, the rest is the image: {painted}'

    # docs/node.md lists every topic the node created, with its type.
    documented = _topic_rows()
    required = {'fused/image', 'fused/image/compressed', '~/debug/masks', '~/debug/weights',
                'thermal/image', 'rgb/camera_info', '/diagnostics', 'semantics'}

    def type_name(message_class):  # sensor_msgs.msg._image.Image -> sensor_msgs/Image
        return f'{message_class.__module__.split(".")[0]}/{message_class.__name__}'

    # From the node's own entities, not the graph cache (discovery lags on a loaded machine).
    node_topics = [(entity.topic_name, [type_name(entity.msg_type)])
                   for entity in (*node.publishers, *node.subscriptions)]
    seen = set()
    for topic, types in node_topics:
        relative = topic.replace('/tesg_fusion/', '~/').lstrip('/')
        key = next((k for k in (relative, topic, '/' + relative) if k in documented), None)
        assert key is not None, f'{topic} is not in the topic table of docs/node.md'
        short = types[0]
        assert short in documented[key], f'{topic}: {short} not in "{documented[key]}"'
        seen.add(key)
    assert required <= seen, seen


def _tf2_stand_in():
    """A minimal module with tf2_ros's Python API as the node uses it (Buffer.lookup_transform,
    TransformListener, TransformException). tf2_ros (with its C++ tf2_py) cannot be installed
    here; this checks the node's wiring (frames, direction, waiting, updates), not tf2."""
    import types

    from geometry_msgs.msg import TransformStamped

    module = types.ModuleType('tf2_ros')

    class TransformException(Exception):
        pass

    class Buffer:
        transforms = {}
        lookups = []

        def lookup_transform(self, target_frame, source_frame, time):
            Buffer.lookups.append((target_frame, source_frame))
            translation = Buffer.transforms.get((target_frame, source_frame))
            if translation is None:
                raise TransformException(f'"{target_frame}" and "{source_frame}" are not '
                                         'connected')
            stamped = TransformStamped()
            stamped.header.frame_id, stamped.child_frame_id = target_frame, source_frame
            (stamped.transform.translation.x, stamped.transform.translation.y,
             stamped.transform.translation.z) = translation
            stamped.transform.rotation.w = 1.0
            return stamped

    class TransformListener:
        def __init__(self, buffer, node):
            self.buffer, self.node, self.registered = buffer, node, True

        def unregister(self):
            self.registered = False

    module.Buffer, module.TransformListener = Buffer, TransformListener
    module.TransformException = TransformException
    return module


def test_plane_extrinsics_from_tf_where_tf2_ros_is_importable(graph_factory, pair, monkeypatch):
    import sys

    from tesg_ros.sensor.registration import plane_homography

    tf2 = _tf2_stand_in()
    monkeypatch.setitem(sys.modules, 'tf2_ros', tf2)
    ir, vi_bgr = pair
    graph = graph_factory(**{'registration.mode': 'plane', 'registration.plane.distance': 6.0,
                             'diagnostics.period': 0.2})  # extrinsics.source: auto
    thermal_info_pub = graph.driver.create_publisher(
        CameraInfo, 'thermal/camera_info', rclpy.qos.qos_profile_sensor_data)
    graph.wait_for(lambda: thermal_info_pub.get_subscription_count() > 0, 'info subscriber')
    thermal_info = _info(360, 270, 400.0, 'thermal_optical_frame')
    rgb_info = _info(360, 270, 420.0, 'rgb_optical_frame')

    def publish():
        thermal_info_pub.publish(thermal_info)
        graph.rgb_info_pub.publish(rgb_info)
        _publish_pairs(graph, ir, vi_bgr, 6000 + len(graph.diagnostics), 1)

    def waiting_for_tf():
        publish()
        status = _status(graph)
        return status is not None and 'no TF' in status.message

    graph.wait_for(waiting_for_tf, 'a status saying that the TF lookup fails')
    assert ('rgb_optical_frame', 'thermal_optical_frame') in tf2.Buffer.lookups
    assert not graph.fused
    tf2.Buffer.transforms[('rgb_optical_frame', 'thermal_optical_frame')] = (0.15, 0.0, 0.0)
    expected = plane_homography(np.reshape(thermal_info.k, (3, 3)),
                                np.reshape(rgb_info.k, (3, 3)), np.eye(3), [0.15, 0, 0],
                                [0, 0, -1], 6.0)

    def fused_with_tf():
        publish()
        plane = graph.node.diagnostics_snapshot().get('registration_plane', {})
        return bool(graph.fused) and plane.get('extrinsics') == 'tf' and np.allclose(
            plane.get('homography', np.zeros(9)), expected.ravel(), atol=1e-5)

    graph.wait_for(fused_with_tf, 'a fused frame registered with the TF extrinsics')
    listener = graph.node._geometry.tf_listener
    assert listener.registered and listener.node is graph.node
    # A new activation (new engine) builds with the TF extrinsics only, never the parameters.
    from rclpy.lifecycle import TransitionCallbackReturn

    from tesg_ros.sensor.registration import Registration
    built_with = []
    original = Registration.from_config.__func__
    monkeypatch.setattr(Registration, 'from_config', classmethod(
        lambda cls, config, *a, **k: built_with.append(config['extrinsics']['translation'])
        or original(cls, config, *a, **k)))
    assert graph.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert graph.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    graph.fused.clear()
    graph.wait_for(fused_with_tf, 'a fused frame with the TF extrinsics after reactivation')
    assert built_with and all(t == [0.15, 0.0, 0.0] for t in built_with), built_with
