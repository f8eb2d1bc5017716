# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The engine's geometry and debug outputs without ROS: aspect-ratio refusal, plane
registration from CameraInfo + extrinsics, the infrared-share map, mask overlays and the
versioned semantics record."""

from pathlib import Path
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tesg_ros.errors import CalibrationError, ConfigError, ImageEncodingError

torch = pytest.importorskip('torch')

DOCS = Path(__file__).resolve().parent.parent / 'docs'


def _engine(weights, **overrides):
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults

    params = dict(defaults(), **{'model.weights': weights, 'semantics.mode': 'disabled',
                                 'model.device': 'cpu'})
    params.update(overrides)
    return FusionEngine(EngineSettings.from_params(params))


def _camera_info(width, height, fx, cx, cy, frame_id):
    """A duck-typed sensor_msgs/CameraInfo (the engine reads fields only)."""
    k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0] if fx else [0.0] * 9  # 0: uncalibrated
    return SimpleNamespace(width=width, height=height, k=k, d=[0.0] * 5, r=[0.0] * 9,
                           p=[0.0] * 12, distortion_model='plumb_bob', binning_x=0,
                           binning_y=0, roi=None, header=SimpleNamespace(frame_id=frame_id))


# --- identity across sizes ----------------------------------------------------------------

def test_engine_refuses_to_stretch_and_resizes_the_same_aspect(random_weights, pair):
    ir, vi_bgr = pair  # 360x270, 4:3
    engine = _engine(random_weights)
    wide = cv2.resize(vi_bgr, (480, 270))  # 16:9
    with pytest.raises(CalibrationError) as caught:
        engine.process(ir, wide)
    assert 'registration.mode' in str(caught.value)
    assert 'tesg-compute-homography' in str(caught.value)
    assert engine.diagnostics()['registration_error'] == str(caught.value)
    # The same aspect, twice the size: scaled, and the diagnostics list it as a warning.
    big = cv2.resize(vi_bgr, (720, 540))
    with pytest.warns(RuntimeWarning, match='scales'):
        result = engine.process(ir, big)
    assert result.bgr.shape == big.shape
    diagnostics = engine.diagnostics()
    assert 'registration_error' not in diagnostics, 'a working registration clears the error'
    assert any('scales the thermal image 360x270' in w
               for w in diagnostics['registration']['warnings'])
    stretching = _engine(random_weights, **{'registration.allow_stretch': True})
    with pytest.warns(RuntimeWarning, match='stretches'):
        assert stretching.process(ir, wide).bgr.shape == wide.shape


# --- plane registration -------------------------------------------------------------------

def test_engine_plane_registration_from_camera_info_and_extrinsics(random_weights, pair,
                                                                   monkeypatch):
    from scipy.spatial.transform import Rotation

    from tesg_ros.sensor.registration import plane_homography

    ir, vi_bgr = pair
    thermal_info = _camera_info(360, 270, 300.0, 180.0, 135.0, 'thermal_optical')
    rgb_info = _camera_info(360, 270, 330.0, 178.0, 136.0, 'rgb_optical')
    rpy, translation, distance = [0.0, 0.01, 0.0], [0.05, 0.0, 0.0], 8.0
    engine = _engine(random_weights, **{
        'registration.mode': 'plane', 'registration.plane.distance': distance,
        'registration.extrinsics.translation': translation,
        'registration.extrinsics.rpy': rpy, 'registration.crop_to_overlap': False})
    with pytest.raises(CalibrationError, match='waits for a calibrated CameraInfo'):
        engine.process(ir, vi_bgr)
    engine.set_camera_info(thermal_info, rgb_info)
    engine.process(ir, vi_bgr)
    rotation = Rotation.from_euler('xyz', rpy).as_matrix()
    expected = plane_homography(np.reshape(thermal_info.k, (3, 3)),
                                np.reshape(rgb_info.k, (3, 3)), rotation, translation,
                                [0, 0, -1], distance)
    np.testing.assert_allclose(engine.registration.homography, expected, atol=1e-9)
    first = engine.registration
    # Unchanged CameraInfo (new messages, same values): no rebuild.
    engine.set_camera_info(_camera_info(360, 270, 300.0, 180.0, 135.0, 'thermal_optical'),
                           _camera_info(360, 270, 330.0, 178.0, 136.0, 'rgb_optical'))
    engine.process(ir, vi_bgr)
    assert engine.registration is first
    # A new RGB calibration: recomputed at the next frame.
    new_rgb = _camera_info(360, 270, 360.0, 178.0, 136.0, 'rgb_optical')
    engine.set_camera_info(rgb_info=new_rgb)
    engine.process(ir, vi_bgr)
    assert engine.registration is not first
    np.testing.assert_allclose(engine.registration.homography, plane_homography(
        np.reshape(thermal_info.k, (3, 3)), np.reshape(new_rgb.k, (3, 3)), rotation,
        translation, [0, 0, -1], distance), atol=1e-9)
    # Extrinsics from TF replace the parameters; a runtime plane distance too.
    engine.set_extrinsics(np.eye(3), [0.2, 0.0, 0.0])
    engine.update_settings(dict(_params(random_weights), **{
        'registration.mode': 'plane', 'registration.plane.distance': 4.0}))
    engine.process(ir, vi_bgr)
    expected = plane_homography(np.reshape(thermal_info.k, (3, 3)),
                                np.reshape(new_rgb.k, (3, 3)), np.eye(3), [0.2, 0, 0],
                                [0, 0, -1], 4.0)
    np.testing.assert_allclose(engine.registration.homography, expected, atol=1e-9)
    plane = engine.diagnostics()['registration_plane']
    assert plane['distance_m'] == 4.0 and plane['extrinsics'] == 'tf'
    # Waiting for TF: no registration build, a reason.
    engine.set_extrinsics(waiting='no TF rgb_optical <- thermal_optical')
    with pytest.raises(CalibrationError, match='waits for the thermal -> RGB extrinsics'):
        engine.process(ir, vi_bgr)
    # An uncalibrated CameraInfo (K = 0) is refused with the reason, cached per calibration.
    engine.set_extrinsics(np.eye(3), [0.2, 0.0, 0.0])
    engine.set_camera_info(thermal_info=_camera_info(360, 270, 0.0, 0.0, 0.0, 'thermal'))
    from tesg_ros.sensor import registration as registration_module
    builds = []
    original = registration_module.Registration.from_config
    monkeypatch.setattr(registration_module.Registration, 'from_config',
                        lambda *args, **kwargs: builds.append(1) or original(*args, **kwargs))
    for _ in range(3):
        with pytest.raises(CalibrationError, match='uncalibrated'):
            engine.process(ir, vi_bgr)
    assert len(builds) == 1, 'a refused calibration is not rebuilt at every frame'


def _params(weights):
    from tesg_ros.node_params import defaults
    return dict(defaults(), **{'model.weights': weights, 'semantics.mode': 'disabled',
                               'model.device': 'cpu'})


# --- infrared share, masks overlay ----------------------------------------------------------

def test_weights_are_the_networks_infrared_share_and_cost_nothing_unless_asked(random_weights,
                                                                               pair):
    from tesg_ros.network.colour import luma_from_bgr_uint8

    ir, vi_bgr = pair
    engine = _engine(random_weights)
    plain = engine.process(ir, vi_bgr)
    assert plain.weights is None
    result = engine.process(ir, vi_bgr, want_weights=True)
    weights = result.weights
    assert weights.shape == ir.shape and weights.dtype == np.float32
    assert 0.0 <= weights.min() and weights.max() <= 1.0 and weights.std() > 1e-3
    # The same network call with intermediates gives the same map.
    vis_y = luma_from_bgr_uint8(vi_bgr)
    tensors = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (
        result.thermal_registered[None, None], vis_y[None, None], result.masks[None],
        np.zeros((1, engine.text_dim), np.float32))]
    with torch.inference_mode():
        fused, info = engine.net(*tensors, return_intermediates=True)
    np.testing.assert_allclose(weights, info['weight'][0, 0].numpy(), atol=1e-6)
    # Where the weight is near 1 the fused luma follows the infrared, near 0 the visible.
    fused_y = fused[0, 0].numpy()
    ir_y = result.thermal_registered
    high, low = weights > np.quantile(weights, 0.9), weights < np.quantile(weights, 0.1)
    assert np.abs(fused_y - ir_y)[high].mean() < np.abs(fused_y - vis_y)[high].mean()
    assert np.abs(fused_y - vis_y)[low].mean() < np.abs(fused_y - ir_y)[low].mean()
    # Asking for the map does not change the fused image beyond float rounding.
    assert np.abs(result.bgr.astype(int) - plain.bgr).max() <= 1


def test_mask_overlay_paints_each_class_in_its_colour():
    from tesg_ros.debug_images import mask_overlay, OVERLAY_ALPHA, PALETTE_BGR, weights_image

    bgr = np.full((4, 6, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 6), np.float32)
    masks[0, 0, 0] = 1.0
    masks[1, 1, 1] = 1.0
    masks[1, 2, 2] = 0.5
    out = mask_overlay(bgr, masks)
    assert out.dtype == np.uint8 and out.shape == bgr.shape
    expected0 = np.floor(100 + OVERLAY_ALPHA * (PALETTE_BGR[0] - 100) + 0.5)
    expected1 = np.floor(100 + OVERLAY_ALPHA * (PALETTE_BGR[1] - 100) + 0.5)
    np.testing.assert_array_equal(out[0, 0], expected0)
    np.testing.assert_array_equal(out[1, 1], expected1)
    np.testing.assert_array_equal(out[2, 2],
                                  np.floor(100 + 0.25 * (PALETTE_BGR[1] - 100) + 0.5))
    assert not np.array_equal(out[0, 0], out[1, 1]), 'one colour per class'
    untouched = np.ones((4, 6), bool)
    untouched[0, 0] = untouched[1, 1] = untouched[2, 2] = False
    assert (out[untouched] == 100).all()
    np.testing.assert_array_equal(mask_overlay(bgr, masks[:0]), bgr)
    with pytest.raises(ImageEncodingError, match='do not match'):
        mask_overlay(bgr, np.zeros((1, 3, 3), np.float32))
    assert weights_image(np.array([[-0.1, 0.5], [1.0, 2.0]])).tolist() == [[0, 0.5], [1, 1]]


# --- semantics schema ---------------------------------------------------------------------

def test_semantics_record_carries_its_schema_version_and_docs_list_every_field():
    from tesg_ros.engine import FusionEngine, SEMANTICS_FIELDS, SEMANTICS_SCHEMA

    current = SimpleNamespace(description='a person', phrases=('person',), source='describer',
                              model_id='offline', error='', age=lambda: 1.23456)
    engine = FusionEngine.__new__(FusionEngine)  # only the snapshot code, no model
    engine.sig = SimpleNamespace(semantics=lambda: current)
    engine._semantics_mode = 'live'
    engine._snapshot_of = engine._snapshot = None
    record = engine.semantics_snapshot()
    assert tuple(record) == SEMANTICS_FIELDS
    assert record['schema'] == SEMANTICS_SCHEMA == 'tesg_ros/semantics/1.1'
    assert record['age_s'] == 1.235
    text = (DOCS / 'node.md').read_text(encoding='utf-8')
    section = text[text.index('## The semantics message'):]
    section = section[:section.index('\n## ', 4)]
    assert SEMANTICS_SCHEMA in section
    documented = re.findall(r'^\| `(\w+)` \|', section, re.MULTILINE)
    assert tuple(documented) == SEMANTICS_FIELDS


def test_recorded_semantics_of_another_major_version_are_rejected():
    from tesg_ros.engine import FusionEngine

    engine = FusionEngine.__new__(FusionEngine)
    encoded = []
    engine.sig = SimpleNamespace(encoder=SimpleNamespace(
        encode=lambda texts: encoded.append(texts) or [np.zeros(4, np.float32)]))
    record = {'description': 'a car', 'phrases': ['car']}
    engine.set_recorded_semantics(record)  # recordings from before the schema field
    engine.set_recorded_semantics(dict(record, schema='tesg_ros/semantics/1.4'))
    assert engine._recorded[0] == ('vehicles',) and len(encoded) == 2  # the request's class
    with pytest.raises(ConfigError, match='schema'):
        engine.set_recorded_semantics(dict(record, schema='tesg_ros/semantics/2.0'))


def test_input_ranges_are_checked_once_per_frame_on_the_host(random_weights, pair):
    from tesg_ros.errors import NetworkInputError

    ir, vi_bgr = pair
    engine = _engine(random_weights)
    assert engine.net.validate_inputs is False, 'the network does not re-check per call'

    def bad_semantics(visible, thermal):
        engine._phrase_masks = (None, ())
        return np.full((engine.mask_channels,) + thermal.shape, 2.0, np.float32), \
            engine._zero_text

    engine._semantics = bad_semantics
    with pytest.raises(NetworkInputError, match=r'masks must lie in \[0, 1\]'):
        engine.process(ir, vi_bgr)


# --- the CPU profile: the student by name, masks on every N-th frame ------------------------

def test_cpu_profile_loads_the_shipped_student_by_name_and_strides_the_masks():
    """config/fusion_cpu.yaml names only known parameters; its bare weights name resolves to
    the student in share/tesg_ros/model, and its mask_every wraps the thermal backend so that
    three live frames run the backend once."""
    from tesg_ros.node_params import load_params_file, PARAMETERS_BY_NAME
    from tesg_ros.paths import share_path
    from tesg_ros.sig.mask_refresher import EveryNthFrame

    if not share_path('model', 'tesg_fusion_fast.safetensors').exists():
        pytest.skip('the student weights are not shipped in this tree')
    profile = load_params_file(share_path('config', 'fusion_cpu.yaml'))
    assert profile and set(profile) <= set(PARAMETERS_BY_NAME)
    engine = _engine(profile['model.weights'], **{
        'semantics.mode': 'live', 'semantics.mask_every': profile['semantics.mask_every']})
    try:
        assert engine.weights_path == str(share_path('model', 'tesg_fusion_fast.safetensors'))
        backend = engine.sig.mask_backend
        assert isinstance(backend, EveryNthFrame) and backend.every == 3
        assert engine.sig.mask_status()['backend'] == 'thermal, every 3 frames'
        thermal = np.zeros((48, 64), np.float32)
        thermal[10:30, 20:30] = 0.9
        for _ in range(3):
            backend(None, thermal, ['person'])
        assert backend.computed == 1
    finally:
        engine.close()
