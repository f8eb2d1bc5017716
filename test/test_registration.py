# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of tesg_ros.sensor.registration and the tesg-compute-homography tool (real TNO images)."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import yaml

from tesg_ros.errors import CalibrationError, ConfigError, ImageEncodingError
from tesg_ros.sensor.registration import (
    CameraModel, crop_camera_model, largest_valid_rectangle, load_homography_file,
    plane_homography, Registration, rotation_from_spec)
from tesg_ros.cli import compute_homography

# A mild perspective warp of a 256x256 thermal image into a 300x240 RGB grid.
TRUE_H = np.array([[0.9, 0.05, 10.0], [-0.04, 0.95, 5.0], [1e-4, 5e-5, 1.0]])
THERMAL_SIZE = (256, 256)
RGB_SIZE = (300, 240)


@pytest.fixture(scope='module')
def thermal(test_data):
    image = cv2.imread(str(test_data / 'tno' / 'ir' / '07.png'), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape == (256, 256)
    return image


def _eroded(mask, pixels=2):
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel) > 0


def _camera(width, height, fx, fy, cx, cy, distortion=None, model='plumb_bob'):
    return CameraModel(width, height, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                       D=[] if distortion is None else distortion, distortion_model=model)


# --- CameraModel ------------------------------------------------------------------------------

def test_camera_info_round_trip_with_rclpy_message():
    from sensor_msgs.msg import CameraInfo
    model = CameraModel(640, 512, [[500, 0, 320.5], [0, 505, 250], [0, 0, 1]],
                        D=[-0.2, 0.05, 0.001, -0.002, 0.0],
                        P=[[480, 0, 318, 0], [0, 490, 252, 0], [0, 0, 1, 0]], frame_id='thermal')
    msg = model.to_camera_info()
    assert isinstance(msg, CameraInfo)
    assert (msg.width, msg.height, msg.header.frame_id) == (640, 512, 'thermal')
    assert list(msg.k) == [500, 0, 320.5, 0, 505, 250, 0, 0, 1]
    assert list(msg.p) == [480, 0, 318, 0, 0, 490, 252, 0, 0, 0, 1, 0]
    assert list(msg.r) == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    back = CameraModel.from_camera_info(msg)
    np.testing.assert_array_equal(back.K, model.K)
    np.testing.assert_array_equal(back.D, model.D)
    np.testing.assert_array_equal(back.P, model.P)
    assert back.fingerprint() == model.fingerprint()
    assert back.frame_id == 'thermal' and back.roi is None


def test_from_camera_info_is_duck_typed_and_reads_rosbags_style_fields():
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0)
    msg = SimpleNamespace(width=320, height=240, distortion_model='equidistant',
                          k=np.array([200.0, 0, 160, 0, 201, 120, 0, 0, 1]),
                          d=np.array([0.1, -0.01, 0.002, 0.0]), r=np.zeros(9), p=np.zeros(12),
                          binning_x=0, binning_y=0, roi=roi,
                          header=SimpleNamespace(frame_id='cam'))
    model = CameraModel.from_camera_info(msg)
    assert model.size == (320, 240) and model.distortion_model == 'equidistant'
    assert model.K[1, 1] == 201 and model.R is None and model.P is None  # zeros: absent
    np.testing.assert_array_equal(model.projection[:, :3], model.K)


def test_camera_yaml_round_trip_and_ros_format(tmp_path):
    text = """image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [430.2, 0, 306.7, 0, 430.9, 227.2, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.3, 0.09, -0.0003, -0.0004, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [300.3, 0, 306.6, 0, 0, 375.6, 228.4, 0, 0, 0, 1, 0]
"""
    path = tmp_path / 'cam.yaml'
    path.write_text(text)
    model = CameraModel.from_yaml(path)
    assert model.size == (640, 480) and model.frame_id == 'narrow_stereo'
    assert model.K[0, 2] == pytest.approx(306.7) and model.D[0] == pytest.approx(-0.3)
    assert model.P[1, 2] == pytest.approx(228.4)
    again = CameraModel.from_yaml(model.to_yaml_dict())
    assert again.fingerprint() == model.fingerprint()


@pytest.mark.parametrize('kwargs, match', [
    ({'distortion_model': 'fisheye'}, 'distortion_model'),
    ({'D': [0.1, 0.2, 0.3]}, 'distortion coefficients'),
    ({'distortion_model': 'equidistant', 'D': [0.1] * 5}, 'equidistant needs 4'),
    ({'K': [1, 2, 3]}, 'K needs 9'),
])
def test_camera_model_rejects_bad_calibration(kwargs, match):
    base = dict(width=64, height=48, K=np.eye(3))
    base.update(kwargs)
    with pytest.raises(CalibrationError, match=match):
        CameraModel(**base)


def test_camera_yaml_missing_key_is_named(tmp_path):
    path = tmp_path / 'cam.yaml'
    path.write_text('image_width: 64\nimage_height: 48\n')
    with pytest.raises(CalibrationError, match='camera_matrix'):
        CameraModel.from_yaml(path)


def test_all_zero_K_is_uncalibrated_where_intrinsics_are_needed():
    uncalibrated = CameraModel(256, 256, np.zeros((3, 3)))
    assert not uncalibrated.is_calibrated
    # Identity needs no intrinsics: fine.
    Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=uncalibrated)
    with pytest.raises(CalibrationError, match='uncalibrated'):
        Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=uncalibrated,
                     undistort_thermal=True)
    # What an uncalibrated driver publishes: all zeros, even the size.
    from sensor_msgs.msg import CameraInfo
    empty = CameraModel.from_camera_info(CameraInfo())
    assert not empty.is_calibrated and not empty.has_distortion
    registration = Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=empty)
    assert registration.update(thermal_model=empty) is False
    with pytest.raises(CalibrationError, match='uncalibrated'):
        Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=empty,
                     undistort_thermal=True)
    rgb = _camera(256, 256, 300, 300, 128, 128)
    with pytest.raises(CalibrationError, match='thermal camera is uncalibrated'):
        Registration('plane', THERMAL_SIZE, THERMAL_SIZE, thermal_model=uncalibrated,
                     rgb_model=rgb, rotation=np.eye(3), translation=[0.1, 0, 0],
                     plane_normal=[0, 0, -1], plane_distance=5)


# --- homography mode ----------------------------------------------------------------------------

def test_known_homography_matches_warp_perspective_on_real_image(thermal):
    registration = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H)
    warped = registration.warp_thermal(thermal)
    assert warped.shape == (240, 300) and warped.dtype == np.uint8
    expected = cv2.warpPerspective(thermal, TRUE_H, RGB_SIZE, flags=cv2.INTER_LINEAR)
    inner = _eroded(registration.valid_mask)
    difference = np.abs(warped.astype(int) - expected.astype(int))[inner]
    # warpPerspective quantises coordinates to 1/32 px: a few steep-edge pixels differ.
    assert difference.mean() < 0.05 and np.mean(difference > 1) < 1e-3
    assert np.all(warped[~registration.valid_mask] == 0)
    # The validity mask is the thermal footprint in the RGB grid.
    footprint = cv2.warpPerspective(np.ones_like(thermal), TRUE_H, RGB_SIZE,
                                    flags=cv2.INTER_NEAREST) > 0
    agreement = np.mean(footprint == registration.valid_mask)
    assert agreement > 0.995
    assert registration.overlap_fraction == pytest.approx(footprint.mean(), abs=0.01)
    # A slightly different H does not match: the comparison above can fail.
    wrong = Registration('homography', THERMAL_SIZE, RGB_SIZE,
                         homography=TRUE_H + [[0, 0, 3], [0, 0, 0], [0, 0, 0]])
    wrong_difference = np.abs(wrong.warp_thermal(thermal).astype(int) - expected)[inner]
    assert wrong_difference.mean() > 1.0


def test_float_and_fixed_point_maps_agree_and_dtypes_are_kept(thermal):
    image16 = thermal.astype(np.uint16) * 250
    exact = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H,
                         map_type='float32')
    fixed = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H)
    a, b = exact.warp_thermal(image16), fixed.warp_thermal(image16)
    assert a.dtype == b.dtype == np.uint16
    inner = _eroded(exact.valid_mask)
    # remap quantises to 1/32 px with float maps too, so both map types give the same image.
    np.testing.assert_array_equal(a, b)
    assert exact.map_type == 'float32' and fixed.map_type == 'fixed_point'
    as_float = exact.warp_thermal(thermal.astype(np.float32) / 255.0)
    assert as_float.dtype == np.float32
    assert np.abs(as_float * 255.0 - a / 250.0)[inner].max() < 1.0
    three = exact.warp_thermal(np.dstack([thermal] * 3))
    assert three.shape == (240, 300, 3)
    np.testing.assert_array_equal(three[..., 1], exact.warp_thermal(thermal))


def test_wrong_frame_size_or_dtype_is_rejected(thermal):
    registration = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H)
    with pytest.raises(ImageEncodingError, match='256x256'):
        registration.warp_thermal(thermal[:200])
    with pytest.raises(ImageEncodingError, match='dtype'):
        registration.warp_thermal(thermal.astype(bool))


@pytest.mark.parametrize('homography, match', [
    (np.zeros((3, 3)), 'singular'),
    ([[1, 0, 0], [2, 0, 0], [0, 0, 1]], 'singular'),
    ([[-1, 0, 255], [0, 1, 0], [0, 0, 1]], 'mirror'),
    ([[0.02, 0, 0], [0, 0.02, 0], [0, 0, 1]], 'only'),
    ([[1, 0, 0], [0, 1, 0], [-0.01, 0, 1]], 'infinity'),
])
def test_bad_homographies_raise(homography, match):
    with pytest.raises(CalibrationError, match=match):
        Registration('homography', THERMAL_SIZE, THERMAL_SIZE, homography=homography)


def test_mirror_allowed_and_low_overlap_are_flagged(thermal):
    mirror = [[-1, 0, 255], [0, 1, 0], [0, 0, 1]]
    with pytest.warns(RuntimeWarning, match='mirrors'):
        registration = Registration('homography', THERMAL_SIZE, THERMAL_SIZE,
                                    homography=mirror, allow_mirror=True)
    np.testing.assert_array_equal(registration.warp_thermal(thermal), thermal[:, ::-1])
    summary = registration.summary()
    assert summary['mirrored'] and not summary['ok']
    with pytest.warns(RuntimeWarning, match='covers only'):
        small = Registration('homography', THERMAL_SIZE, THERMAL_SIZE,
                             homography=[[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])
    assert small.overlap_fraction == pytest.approx(0.25, abs=0.01)
    assert small.summary()['warnings']


# --- plane mode -------------------------------------------------------------------------------

def test_plane_homography_matches_projection_of_3d_points():
    rng = np.random.default_rng(3)
    thermal_K = np.array([[400.0, 0, 160], [0, 410, 120], [0, 0, 1]])
    rgb_K = np.array([[900.0, 0, 640], [0, 905, 360], [0, 0, 1]])
    rotation = Rotation.from_euler('xyz', [0.02, -0.05, 0.01]).as_matrix()
    translation = np.array([0.12, -0.03, 0.02])
    normal = np.array([0.1, -0.3, -1.0])
    normal /= np.linalg.norm(normal)
    distance = 7.5
    # Points on n . X + d = 0 in front of the thermal camera.
    xy = rng.uniform(-2, 2, size=(50, 2))
    z = -(distance + normal[0] * xy[:, 0] + normal[1] * xy[:, 1]) / normal[2]
    points = np.column_stack([xy, z])
    assert np.all(z > 0) and np.allclose(points @ normal + distance, 0)
    thermal_pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), thermal_K, None)
    rgb_pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], translation, rgb_K,
                                      None)
    homography = plane_homography(thermal_K, rgb_K, rotation, translation, normal, distance)
    mapped = cv2.perspectiveTransform(thermal_pixels, homography)
    np.testing.assert_allclose(mapped, rgb_pixels, atol=1e-6)
    # Ignoring the baseline (t = 0) is measurably wrong at 7.5 m: the test can fail.
    no_baseline = plane_homography(thermal_K, rgb_K, rotation, np.zeros(3), normal, distance)
    assert np.abs(cv2.perspectiveTransform(thermal_pixels, no_baseline) - rgb_pixels).max() > 5


def test_plane_mode_from_config_with_quaternion_and_rpy():
    thermal_model = _camera(320, 240, 400, 400, 160, 120)
    rgb_model = _camera(640, 480, 700, 700, 320, 240)
    rpy = [0.01, 0.02, -0.03]
    quaternion = Rotation.from_euler('xyz', rpy).as_quat()  # x, y, z, w
    base = {'mode': 'plane', 'extrinsics': {'translation': [0.05, 0.0, 0.0]},
            'plane': {'normal': [0, 0, -1], 'distance': 10.0}}
    results = []
    for rotation in ({'rpy': rpy}, {'quaternion': list(quaternion)},
                     {'rotation': Rotation.from_euler('xyz', rpy).as_matrix().tolist()}):
        config = {**base, 'extrinsics': {**base['extrinsics'], **rotation}}
        registration = Registration.from_config(config, (320, 240), (640, 480),
                                                thermal_model, rgb_model)
        results.append(registration.homography / registration.homography[2, 2])
    np.testing.assert_allclose(results[0], results[1], atol=1e-9)
    np.testing.assert_allclose(results[0], results[2], atol=1e-9)
    # roll about x then pitch about y then yaw about z (fixed axes): Rz @ Ry @ Rx.
    rz = Rotation.from_rotvec([0, 0, rpy[2]]).as_matrix()
    ry = Rotation.from_rotvec([0, rpy[1], 0]).as_matrix()
    rx = Rotation.from_rotvec([rpy[0], 0, 0]).as_matrix()
    np.testing.assert_allclose(rotation_from_spec(rpy=rpy), rz @ ry @ rx, atol=1e-12)


# --- identity mode ----------------------------------------------------------------------------

def test_identity_same_size_is_exact(thermal):
    registration = Registration('identity', THERMAL_SIZE, THERMAL_SIZE)
    np.testing.assert_array_equal(registration.warp_thermal(thermal), thermal)
    assert registration.valid_mask.all() and registration.overlap_fraction == 1.0


def test_exact_identity_passes_frames_through_and_still_checks_them(thermal):
    as_float = thermal.astype(np.float32)
    for registration in (Registration('identity', THERMAL_SIZE, THERMAL_SIZE),
                         Registration('homography', THERMAL_SIZE, THERMAL_SIZE,
                                      homography=np.eye(3))):
        assert registration.warp_thermal(as_float) is as_float  # no remap, no copy
        warped, _, valid = registration.register(as_float, np.zeros((256, 256, 3), np.uint8))
        assert np.shares_memory(warped, as_float) and np.array_equal(warped, as_float)
        assert valid.all()
        with pytest.raises(ImageEncodingError, match='256x256'):
            registration.warp_thermal(as_float[:200])
        with pytest.raises(ImageEncodingError, match='dtype'):
            registration.warp_thermal(thermal.astype(bool))
    # A tenth of a pixel off the identity is a real warp: interpolated, a new array.
    shifted = Registration('homography', THERMAL_SIZE, THERMAL_SIZE,
                           homography=[[1, 0, 0.1], [0, 1, 0], [0, 0, 1]])
    result = shifted.warp_thermal(as_float)
    assert result is not as_float and not np.array_equal(result, as_float)


def test_identity_size_mismatch_errors_unless_resize_is_allowed(thermal):
    with pytest.raises(CalibrationError, match='allow_resize'):
        Registration('identity', THERMAL_SIZE, (384, 384))
    with pytest.warns(RuntimeWarning, match='scales the thermal image 256x256'):
        registration = Registration('identity', THERMAL_SIZE, (384, 384), allow_resize=True)
    assert registration.valid_mask.all()
    assert 'scales the thermal image 256x256 (1:1) to 384x384 (1:1)' in registration.warnings[0]
    # A different aspect ratio is a stretch, refused unless allowed explicitly.
    with pytest.raises(CalibrationError, match='allow_stretch'):
        Registration('identity', THERMAL_SIZE, (384, 320), allow_resize=True)
    with pytest.warns(RuntimeWarning, match='stretches'):
        registration = Registration('identity', THERMAL_SIZE, (384, 320), allow_resize=True,
                                    allow_stretch=True)
    # Same sampling positions as cv2.resize (pixel-centre convention).
    as_float = thermal.astype(np.float32)
    expected = cv2.resize(as_float, (384, 320), interpolation=cv2.INTER_LINEAR)
    # (remap interpolates at 1/32 px steps, hence not bit-exact; a half-pixel offset would
    # give errors of several grey levels.)
    difference = np.abs(registration.warp_thermal(as_float) - expected)
    assert difference.mean() < 0.1 and difference.max() < 3.0
    # uint8 resize uses fixed-point weights: off by rounding only.
    warped = registration.warp_thermal(thermal)
    expected8 = cv2.resize(thermal, (384, 320), interpolation=cv2.INTER_LINEAR)
    assert np.abs(warped.astype(int) - expected8).max() <= 2


# --- undistortion -----------------------------------------------------------------------------

def _distort(image, model):
    """Render what a camera with ``model``'s distortion sees of the ideal ``image``."""
    height, width = image.shape[:2]
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float64),
                                np.arange(height, dtype=np.float64))
    raw = np.stack([columns, rows], -1).reshape(-1, 1, 2)
    if model.distortion_model == 'equidistant':
        ideal = cv2.fisheye.undistortPoints(raw, model.K, model.D, P=model.K)
    else:
        ideal = cv2.undistortPointsIter(raw, model.K, model.D, None, model.K,
                                        (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50,
                                         1e-9))
    ideal = ideal.reshape(height, width, 2).astype(np.float32)
    return cv2.remap(image, ideal[..., 0], ideal[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT)


@pytest.mark.parametrize('distortion_model, distortion', [
    ('plumb_bob', [-0.25, 0.08, 0.001, -0.0015, 0.0]),
    ('equidistant', [0.05, -0.02, 0.004, 0.0]),
    ('rational_polynomial', [-0.2, 0.06, 0.001, -0.001, 0.0, 0.02, 0.01, 0.005]),
])
def test_undistortion_round_trip(thermal, distortion_model, distortion):
    model = _camera(256, 256, 230, 232, 127.0, 129.5, distortion, distortion_model)
    # Smoothed so that the two bilinear resamplings themselves cost little.
    ideal = cv2.GaussianBlur(thermal, (0, 0), 1.0)
    distorted = _distort(ideal, model)
    registration = Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=model,
                                undistort_thermal=True)
    recovered = registration.warp_thermal(distorted)
    # Compare away from the border, where the distorted image had data.
    region = _eroded(registration.valid_mask, 4)
    region[:20], region[-20:], region[:, :20], region[:, -20:] = False, False, False, False
    error = np.abs(recovered.astype(float) - ideal)[region].mean()
    untouched = np.abs(distorted.astype(float) - ideal)[region].mean()
    assert error < 1.0 and untouched > 5 * error
    # The RGB side undistorts the same way.
    rgb_model = replace_size(model)
    rgb_registration = Registration('identity', THERMAL_SIZE, THERMAL_SIZE, rgb_model=rgb_model,
                                    undistort_rgb=True)
    rgb_recovered = rgb_registration.warp_rgb(distorted)
    assert np.abs(rgb_recovered.astype(float) - ideal)[region].mean() < 1.0
    if distortion_model == 'plumb_bob':  # same maps as OpenCV's own undistortion
        reference = cv2.undistort(distorted, model.K, model.D)
        assert np.abs(reference.astype(int) - recovered)[region].max() <= 1


def replace_size(model):
    return CameraModel(model.width, model.height, model.K.copy(), model.D.copy(),
                       model.distortion_model)


# --- crop and camera info ---------------------------------------------------------------------

def test_largest_valid_rectangle_exact_and_downsampled():
    mask = np.zeros((10, 12), bool)
    mask[2:9, 1:5] = True    # 7 x 4 = 28
    mask[4:7, 1:11] = True   # 3 x 10 = 30, the largest
    assert largest_valid_rectangle(mask) == (1, 4, 10, 3)
    assert largest_valid_rectangle(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
    big = np.zeros((900, 1000), bool)
    big[101:801, 53:947] = True
    x, y, width, height = largest_valid_rectangle(big)
    assert big[y:y + height, x:x + width].all()
    assert width * height >= 0.97 * 700 * 894


def test_crop_to_overlap_and_camera_info_adjustment(thermal):
    shift = [[1, 0, 20], [0, 1, 10], [0, 0, 1]]  # thermal pixel (0, 0) -> RGB (20, 10)
    rgb_model = CameraModel(256, 256, [[300, 0, 128], [0, 300, 127], [0, 0, 1]],
                            P=[[290, 0, 126, -15], [0, 290, 125, 0], [0, 0, 1, 0]])
    registration = Registration('homography', THERMAL_SIZE, THERMAL_SIZE, homography=shift,
                                rgb_model=rgb_model, crop_to_overlap=True)
    assert registration.roi == (20, 10, 236, 246)
    rgb = np.dstack([thermal] * 3)
    cropped_thermal, cropped_rgb, valid = registration.register(thermal, rgb)
    assert cropped_thermal.shape == (246, 236) and cropped_rgb.shape == (246, 236, 3)
    assert valid.all()
    np.testing.assert_array_equal(cropped_thermal, thermal[:246, :236])
    model = registration.crop_camera_info()
    assert (model.width, model.height) == (236, 246)
    np.testing.assert_allclose(model.K, [[300, 0, 108], [0, 300, 117], [0, 0, 1]])
    np.testing.assert_allclose(model.P, [[290, 0, 106, -15], [0, 290, 115, 0], [0, 0, 1, 0]])
    msg = model.to_camera_info()
    assert (msg.width, msg.height, msg.k[2], msg.k[5], msg.p[2]) == (236, 246, 108, 117, 106)
    assert msg.roi.width == 0  # the crop is folded into K/P, not repeated as an roi
    summary = registration.summary()
    assert summary['roi'] == {'x_offset': 20, 'y_offset': 10, 'width': 236, 'height': 246}
    assert summary['overlap_fraction'] == pytest.approx(236 * 246 / 256 ** 2)
    assert summary['homography'][2] == pytest.approx(20)
    with pytest.raises(CalibrationError, match='not inside'):
        crop_camera_model(rgb_model, (250, 0, 10, 10))


def test_undistorted_crop_clears_distortion():
    rgb_model = _camera(200, 100, 150, 150, 100, 50, [-0.1, 0.01, 0, 0, 0])
    registration = Registration('identity', (200, 100), (200, 100), rgb_model=rgb_model,
                                undistort_rgb=True, crop_to_overlap=True)
    model = registration.crop_camera_info()
    x, y, width, height = registration.roi
    assert (model.width, model.height) == (width, height) and not model.has_distortion
    assert model.K[0, 2] == pytest.approx(100 - x) and model.K[1, 2] == pytest.approx(50 - y)


# --- caching ----------------------------------------------------------------------------------

def test_maps_are_built_once_and_rebuilt_only_on_change(thermal):
    model = _camera(256, 256, 230, 230, 128, 128, [-0.1, 0.01, 0, 0, 0])
    registration = Registration('identity', THERMAL_SIZE, THERMAL_SIZE, thermal_model=model,
                                undistort_thermal=True)
    first = registration.warp_thermal(thermal)
    for _ in range(5):
        np.testing.assert_array_equal(registration.warp_thermal(thermal), first)
    assert registration.build_count == 1
    same_values = CameraModel.from_camera_info(model.to_camera_info())
    assert same_values.R is not None  # the message carries R = I and P = [K | 0]
    assert registration.update(thermal_model=same_values) is False
    assert registration.build_count == 1
    changed = _camera(256, 256, 230, 230, 128, 128, [-0.2, 0.01, 0, 0, 0])
    assert registration.update(thermal_model=changed) is True
    assert registration.build_count == 2
    assert not np.array_equal(registration.warp_thermal(thermal), first)
    assert registration.update(thermal_size=(256, 256)) is False
    # A rejected update keeps the previous, working registration.
    with pytest.raises(CalibrationError, match='calibration is for 256x256'):
        registration.update(thermal_size=(320, 256))
    assert registration.thermal_size == (256, 256) and registration.build_count == 2
    registration.warp_thermal(thermal)
    with pytest.warns(RuntimeWarning, match='stretches'):
        rebuilt = Registration('identity', (128, 256), (256, 256), allow_resize=True,
                               allow_stretch=True)
    assert rebuilt.update(thermal_size=(256, 256)) is True and rebuilt.build_count == 2
    np.testing.assert_array_equal(rebuilt.warp_thermal(thermal), thermal)


# --- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize('config, match', [
    ({'mode': 'affine'}, 'mode'),
    ({'mode': 'identity', 'homograpy': [1] * 9}, 'homograpy'),
    ({'mode': 'homography'}, 'homography'),
    ({'mode': 'homography', 'homography': [1, 0, 0, 0, 1, 0, 0, 0]}, 'homography needs 9'),
    ({'mode': 'homography', 'homography': [1, 0, 0, 0, 1, 0, 0, 0, 1],
      'homography_file': 'h.yaml'}, 'exactly one'),
    ({'mode': 'identity', 'interpolation': 'bicubic'}, 'interpolation'),
    ({'mode': 'identity', 'map_type': 'int'}, 'map_type'),
    ({'mode': 'identity', 'allow_resize': 'yes'}, 'allow_resize'),
    ({'mode': 'identity', 'min_overlap': 2.0}, 'min_overlap'),
    ({'mode': 'identity', 'plane': {'normal': [0, 0, -1], 'distance': 2}}, 'plane'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'rpy': [0, 0, 0]},
      'plane': {'normal': [0, 0, -1]}}, 'plane.distance'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'rpy': [0, 0, 0]},
      'plane': {'normal': [0, 0, -1], 'distance': -3}}, 'plane.distance'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'rpy': [0, 0, 0],
                                      'quaternion': [0, 0, 0, 1]},
      'plane': {'normal': [0, 0, -1], 'distance': 3}}, 'exactly one'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'rotation': [2, 0, 0, 0, 1, 0,
                                                                             0, 0, 1]},
      'plane': {'normal': [0, 0, -1], 'distance': 3}}, 'extrinsics.rotation'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'rpy': [0, 0, 0],
                                      'scale': 2}, 'plane': {'normal': [0, 0, -1],
                                                             'distance': 3}},
     'extrinsics.scale'),
    ({'mode': 'plane', 'extrinsics': {'rpy': [0, 0, 0]},
      'plane': {'normal': [0, 0, -1], 'distance': 3}}, 'extrinsics.translation'),
    ({'mode': 'plane', 'extrinsics': {'translation': [0, 0, 0], 'quaternion': [0, 0, 0, 2]},
      'plane': {'normal': [0, 0, -1], 'distance': 3}}, 'quaternion'),
])
def test_bad_configs_name_the_key(config, match):
    models = (_camera(256, 256, 200, 200, 128, 128), _camera(256, 256, 200, 200, 128, 128))
    with pytest.raises(ConfigError, match=match):
        Registration.from_config(config, THERMAL_SIZE, THERMAL_SIZE, *models)


def test_dotted_ros_parameter_keys_and_calibration_files(tmp_path, thermal):
    thermal_path, rgb_path = tmp_path / 'thermal.yaml', tmp_path / 'rgb.yaml'
    thermal_model = _camera(256, 256, 240, 240, 128, 128)
    rgb_model = _camera(300, 240, 260, 260, 150, 120)
    thermal_path.write_text(yaml.safe_dump(thermal_model.to_yaml_dict()))
    rgb_path.write_text(yaml.safe_dump(rgb_model.to_yaml_dict()))
    config = {'mode': 'plane', 'thermal_calibration': str(thermal_path),
              'rgb_calibration': str(rgb_path), 'extrinsics.translation': [0.1, 0, 0],
              'extrinsics.rpy': [0, 0, 0], 'plane.normal': [0, 0, -1], 'plane.distance': 4.0,
              'crop_to_overlap': True}
    registration = Registration.from_config(config, THERMAL_SIZE, RGB_SIZE)
    expected = plane_homography(thermal_model.K, rgb_model.K, np.eye(3), [0.1, 0, 0],
                                [0, 0, -1], 4.0)
    np.testing.assert_allclose(registration.homography / registration.homography[2, 2],
                               expected, atol=1e-12)
    # Pure translation of 0.1 m at 4 m: 260 * 0.1 / 4 = 6.5 px shift plus the K change.
    assert expected[0, 2] == pytest.approx(150 + 6.5 - 128 * 260 / 240)
    with pytest.raises(CalibrationError, match='calibration is for 256x256'):
        Registration.from_config(config, (320, 256), RGB_SIZE)


# --- the tool ---------------------------------------------------------------------------------

def _correspondences(count, noise, seed=0):
    rng = np.random.default_rng(seed)
    thermal_points = rng.uniform([5, 5], [250, 250], size=(count, 2))
    rgb_points = cv2.perspectiveTransform(thermal_points.reshape(-1, 1, 2), TRUE_H)
    return thermal_points, rgb_points.reshape(-1, 2) + rng.normal(0, noise, (count, 2))


def test_tool_points_csv_to_registration_end_to_end(tmp_path, thermal, capsys):
    thermal_points, rgb_points = _correspondences(30, noise=0.3)
    rgb_points[:4] += [[40, -25], [-30, 60], [55, 55], [-70, 10]]  # gross outliers
    csv_path = tmp_path / 'pairs.csv'
    rows = ['rgb_x,rgb_y,thermal_x,thermal_y']  # any column order, named by the header
    rows += [f'{r[0]},{r[1]},{t[0]},{t[1]}' for t, r in zip(thermal_points, rgb_points)]
    csv_path.write_text('\n'.join(rows) + '\n')
    output = tmp_path / 'homography.yaml'
    status = compute_homography.main(
        ['points', str(csv_path), '--ransac', '2', '--thermal-size', '256', '256',
         '--rgb-size', '300', '240', '-o', str(output), '--ros-args', '-r', '__node:=x'])
    assert status == 0
    printed = capsys.readouterr().out
    assert 'reprojection RMS error' in printed
    homography, document = load_homography_file(output)
    assert document['num_inliers'] == 26 and document['num_points'] == 30
    assert 0.2 < document['rms_error_px'] < 0.6  # the 0.3 px noise, outliers rejected
    assert document['rms_error_all_px'] > 10
    registration = Registration.from_config(
        {'mode': 'homography', 'homography_file': str(output), 'homography': []},
        THERMAL_SIZE, RGB_SIZE)
    expected = cv2.warpPerspective(thermal, TRUE_H, RGB_SIZE)
    inner = _eroded(registration.valid_mask, 3)
    difference = np.abs(registration.warp_thermal(thermal).astype(int) - expected)[inner]
    assert difference.mean() < 4.0
    with pytest.raises(CalibrationError, match='computed for rgb_size'):
        Registration.from_config({'mode': 'homography', 'homography_file': str(output)},
                                 THERMAL_SIZE, (320, 240))


def test_tool_points_yaml_exact_least_squares(tmp_path):
    thermal_points, rgb_points = _correspondences(6, noise=0.0)
    entries = [{'thermal_x': float(t[0]), 'thermal_y': float(t[1]), 'rgb_x': float(r[0]),
                'rgb_y': float(r[1])} for t, r in zip(thermal_points, rgb_points)]
    points_path = tmp_path / 'pairs.yaml'
    points_path.write_text(yaml.safe_dump({'points': entries}))
    output = tmp_path / 'h.yaml'
    assert compute_homography.main(['points', str(points_path), '-o', str(output)]) == 0
    homography, document = load_homography_file(output)
    np.testing.assert_allclose(homography, TRUE_H, rtol=1e-6, atol=1e-7)
    assert document['rms_error_px'] < 1e-4


def test_tool_plane_from_calibration_files(tmp_path, capsys):
    thermal_model = _camera(320, 256, 400, 400, 160, 128)
    rgb_model = _camera(640, 480, 800, 800, 320, 240)
    thermal_path, rgb_path = tmp_path / 'thermal.yaml', tmp_path / 'rgb.yaml'
    thermal_path.write_text(yaml.safe_dump(thermal_model.to_yaml_dict()))
    rgb_path.write_text(yaml.safe_dump(rgb_model.to_yaml_dict()))
    output = tmp_path / 'h.yaml'
    status = compute_homography.main([
        'plane', '--thermal-calibration', str(thermal_path), '--rgb-calibration', str(rgb_path),
        '--translation', '0.1', '0', '0', '--rpy', '0', '0', '0.05', '--plane-normal', '0', '0',
        '-1', '--plane-distance', '8', '-o', str(output)])
    assert status == 0
    assert 'n/a' in capsys.readouterr().out
    homography, document = load_homography_file(output)
    expected = plane_homography(thermal_model.K, rgb_model.K, rotation_from_spec(rpy=[0, 0,
                                                                                      0.05]),
                                [0.1, 0, 0], [0, 0, -1], 8)
    np.testing.assert_allclose(homography, expected / expected[2, 2], atol=1e-9)
    assert document['thermal_size'] == [320, 256] and document['rgb_size'] == [640, 480]
    registration = Registration.from_config(
        {'mode': 'homography', 'homography_file': str(output)}, (320, 256), (640, 480))
    assert registration.overlap_fraction > 0.5


def test_tool_reports_bad_input(tmp_path, capsys):
    csv_path = tmp_path / 'few.csv'
    csv_path.write_text('1,2,3,4\n5,6,7,8\n9,10,11,12\n')
    assert compute_homography.main(['points', str(csv_path), '-o',
                                    str(tmp_path / 'h.yaml')]) == 1
    assert 'at least 4' in capsys.readouterr().err
    assert not (tmp_path / 'h.yaml').exists()
    assert compute_homography.strip_ros_args(['a', '--ros-args', '-p', 'x:=1', '--', 'b']) == [
        'a', 'b']


# --- composition, paths, example configuration ------------------------------------------------

def test_undistortion_and_homography_compose(thermal):
    """Undistort-then-warp in one remap equals cv2.undistort followed by warpPerspective."""
    model = _camera(256, 256, 230, 232, 127.0, 129.5, [-0.2, 0.05, 0.0, 0.0, 0.0])
    smooth = cv2.GaussianBlur(thermal, (0, 0), 1.0).astype(np.float32)
    registration = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H,
                                thermal_model=model, undistort_thermal=True)
    reference = cv2.warpPerspective(cv2.undistort(smooth, model.K, model.D), TRUE_H, RGB_SIZE)
    region = _eroded(registration.valid_mask, 3)
    reference_valid = _eroded(cv2.warpPerspective(
        cv2.undistort(np.ones_like(smooth), model.K, model.D), TRUE_H, RGB_SIZE) > 0.99, 3)
    region &= reference_valid
    assert region.mean() > 0.5
    difference = np.abs(registration.warp_thermal(smooth) - reference)[region]
    assert difference.mean() < 0.5  # two resamplings vs one
    without = Registration('homography', THERMAL_SIZE, RGB_SIZE, homography=TRUE_H)
    assert np.abs(without.warp_thermal(smooth) - reference)[region].mean() > 4 * (
        difference.mean())


def test_relative_paths_resolve_under_the_share_directory():
    with pytest.raises(ConfigError, match='homography_file'):
        Registration.from_config({'mode': 'homography',
                                  'homography_file': 'config/no_such_homography.yaml'},
                                 THERMAL_SIZE, RGB_SIZE)


def test_example_config_loads_and_documents_every_key(thermal):
    from tesg_ros.paths import share_path
    from tesg_ros.sensor.registration import CONFIG_KEYS
    path = share_path('config', 'registration_example.yaml')
    text = path.read_text(encoding='utf-8')
    for key in CONFIG_KEYS + ('translation', 'rpy', 'quaternion', 'rotation', 'normal',
                              'distance'):
        assert f'{key}:' in text, key
    config = yaml.safe_load(text)
    registration = Registration.from_config(config, (640, 512), (1280, 720))
    assert registration.roi == (0, 0, 1260, 720)
    big = cv2.resize(thermal, (640, 512))
    _, rgb, _ = registration.register(big, np.zeros((720, 1280, 3), np.uint8))
    assert rgb.shape == (720, 1260, 3)


def test_camera_info_from_rosbags_message_after_cdr_round_trip():
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='rgb_optical')
    roi = types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    message = types['sensor_msgs/msg/CameraInfo'](
        header=header, height=480, width=640, distortion_model='rational_polynomial',
        d=np.array([-0.3, 0.1, 0.001, 0.002, 0.0, 0.01, 0.02, 0.03]),
        k=np.array([610.0, 0, 321, 0, 612, 239, 0, 0, 1]), r=np.eye(3).ravel(),
        p=np.array([600.0, 0, 320, 0, 0, 601, 240, 0, 0, 0, 1, 0]), binning_x=0, binning_y=0,
        roi=roi)
    raw = store.serialize_cdr(message, 'sensor_msgs/msg/CameraInfo')
    decoded = store.deserialize_cdr(raw, 'sensor_msgs/msg/CameraInfo')
    model = CameraModel.from_camera_info(decoded)
    assert model.size == (640, 480) and model.frame_id == 'rgb_optical'
    assert model.distortion_model == 'rational_polynomial' and model.D[7] == 0.03
    assert model.K[0, 2] == 321 and model.P[1, 1] == 601


def test_tool_recovers_homography_from_sift_matches_on_real_image(test_data, tmp_path):
    """'Recover it': match SIFT features of a real TNO image and its warped copy."""
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / '07.png'), cv2.IMREAD_GRAYSCALE)
    warped = cv2.warpPerspective(visible, TRUE_H, RGB_SIZE)
    sift = cv2.SIFT_create()
    keypoints_a, descriptors_a = sift.detectAndCompute(visible, None)
    keypoints_b, descriptors_b = sift.detectAndCompute(warped, None)
    matches = [best for best, second in
               cv2.BFMatcher().knnMatch(descriptors_a, descriptors_b, k=2)
               if best.distance < 0.75 * second.distance]
    assert len(matches) > 50
    rows = ['thermal_x,thermal_y,rgb_x,rgb_y']
    for match in matches:
        (tx, ty), (rx, ry) = keypoints_a[match.queryIdx].pt, keypoints_b[match.trainIdx].pt
        rows.append(f'{tx},{ty},{rx},{ry}')
    (tmp_path / 'matches.csv').write_text('\n'.join(rows))
    output = tmp_path / 'h.yaml'
    assert compute_homography.main(['points', str(tmp_path / 'matches.csv'), '--ransac', '2',
                                    '-o', str(output)]) == 0
    recovered, document = load_homography_file(output)
    corners = np.array([[0, 0], [255, 0], [255, 255], [0, 255]], np.float64).reshape(-1, 1, 2)
    corner_error = np.abs(cv2.perspectiveTransform(corners, recovered)
                          - cv2.perspectiveTransform(corners, TRUE_H)).max()
    assert corner_error < 0.5 and document['rms_error_px'] < 1.0


def test_plane_mode_registers_a_rendered_planar_scene(thermal):
    """Render one textured plane into both cameras; plane mode must align the renderings."""
    thermal_model = _camera(256, 256, 260, 260, 128, 128)
    rgb_model = _camera(320, 240, 300, 300, 160, 120)
    rotation = Rotation.from_euler('xyz', [0.01, -0.03, 0.02]).as_matrix()
    translation = np.array([0.4, 0.05, 0.0])  # a wide 40 cm baseline: large parallax
    distance = 3.0
    # Texture pixel (u, v) -> point on the wall Z = 3 m (normal [0, 0, -1]) in thermal frame.
    metres_per_pixel = 0.012
    texture_to_wall = np.array([[metres_per_pixel, 0, -128 * metres_per_pixel],
                                [0, metres_per_pixel, -128 * metres_per_pixel],
                                [0, 0, distance]])
    thermal_view = thermal_model.K @ texture_to_wall
    # Thermal-frame point X = texture_to_wall @ (u, v, 1); RGB frame: R X + t with X_z = 3.
    rgb_view = rgb_model.K @ (rotation @ texture_to_wall
                              + np.outer(translation, [0, 0, 1]))
    texture = cv2.GaussianBlur(thermal, (0, 0), 1.0).astype(np.float32)
    thermal_image = cv2.warpPerspective(texture, thermal_view, (256, 256))
    rgb_image = cv2.warpPerspective(texture, rgb_view, (320, 240))
    config = {'mode': 'plane', 'extrinsics': {'translation': translation.tolist(),
                                              'rotation': rotation.ravel().tolist()},
              'plane': {'normal': [0, 0, -1], 'distance': distance}}
    registration = Registration.from_config(config, (256, 256), (320, 240), thermal_model,
                                            rgb_model)
    registered = registration.warp_thermal(thermal_image)
    # Compare where both renderings show the texture.
    texture_in_rgb = cv2.warpPerspective(np.ones_like(texture), rgb_view, (320, 240)) > 0.999
    region = _eroded(registration.valid_mask & texture_in_rgb, 3)
    assert region.mean() > 0.3
    error = np.abs(registered - rgb_image)[region].mean()
    wrong_depth = Registration.from_config({**config, 'plane': {'normal': [0, 0, -1],
                                                                'distance': 1.5}},
                                           (256, 256), (320, 240), thermal_model, rgb_model)
    wrong_error = np.abs(wrong_depth.warp_thermal(thermal_image) - rgb_image)[region].mean()
    assert error < 1.0 and wrong_error > 5 * error


def test_core_and_tool_do_not_import_rclpy():
    import subprocess
    import sys
    code = ('import sys, tesg_ros.sensor.registration, tesg_ros.cli.compute_homography; '
            'assert "rclpy" not in sys.modules, "rclpy imported"')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_rays_beyond_the_calibrated_field_are_invalid_not_folded_back(thermal):
    """Barrel distortion folds back for wide rays; those must not bring ghost content."""
    model = _camera(256, 256, 200, 200, 128, 128, [-0.15, 0.0, 0.0, 0.0, 0.0])
    shrink = [[0.3, 0, 0], [0, 0.3, 0], [0, 0, 1]]
    shrink = np.array([[1, 0, 128], [0, 1, 128], [0, 0, 1]]) @ shrink @ np.array(
        [[1, 0, -128], [0, 1, -128], [0, 0, 1]])  # shrink about the centre of both grids
    registration = Registration('homography', THERMAL_SIZE, THERMAL_SIZE, homography=shrink,
                                thermal_model=model, undistort_thermal=True,
                                warn_overlap=0.0)
    # Footprint: the undistorted thermal border, mapped by H.
    border = np.concatenate([np.stack([np.linspace(0, 255, 200), np.full(200, edge)], 1)
                             for edge in (0, 255)] +
                            [np.stack([np.full(200, edge), np.linspace(0, 255, 200)], 1)
                             for edge in (0, 255)]).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(border, model.K, model.D, P=model.K)
    outline = cv2.convexHull(cv2.perspectiveTransform(ideal, shrink).astype(np.float32))
    footprint = np.zeros((256, 256), np.uint8)
    cv2.fillConvexPoly(footprint, np.round(outline).astype(np.int32), 1)
    footprint = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) > 0
    assert registration.valid_mask.any()
    assert not np.any(registration.valid_mask & ~footprint)
    assert not np.any(registration.warp_thermal(thermal)[~footprint])


# --- aspect ratio under identity (no silent stretch) ------------------------------------------

def test_identity_refuses_to_stretch_5_4_thermal_into_16_9_rgb_and_names_the_way_out():
    """640x512 thermal with 1280x720 RGB: resizing would stretch 5:4 to 16:9."""
    for config in ({'mode': 'identity'}, {'mode': 'identity', 'allow_resize': True}):
        with pytest.raises(CalibrationError) as caught:
            Registration.from_config(config, (640, 512), (1280, 720))
        message = str(caught.value)
        for needle in ('registration.mode', 'tesg-compute-homography', 'allow_stretch',
                       '640x512 (5:4)', '1280x720 (16:9)'):
            assert needle in message, needle
    with pytest.warns(RuntimeWarning, match='stretches'):
        stretched = Registration.from_config(
            {'mode': 'identity', 'allow_resize': True, 'allow_stretch': True},
            (640, 512), (1280, 720))
    assert stretched.homography[0, 0] == pytest.approx(2.0)
    assert stretched.homography[1, 1] == pytest.approx(720 / 512)
    assert not stretched.summary()['ok']


def test_identity_same_aspect_resizes_with_a_warning_and_tolerates_one_percent():
    from tesg_ros.sensor.registration import ASPECT_TOLERANCE, aspect_difference
    assert aspect_difference((640, 512), (1280, 1024)) == 0.0
    assert aspect_difference((640, 512), (1280, 720)) == pytest.approx(1 - 1.25 / (16 / 9))
    with pytest.warns(RuntimeWarning, match='scales the thermal image 640x512'):
        doubled = Registration('identity', (640, 512), (1280, 1024), allow_resize=True)
    assert doubled.summary()['warnings'] and not doubled.summary()['ok']
    # 1280x1020 differs by 0.4 %: a resize, not a stretch.
    assert aspect_difference((640, 512), (1280, 1020)) < ASPECT_TOLERANCE
    with pytest.warns(RuntimeWarning, match='scales'):
        Registration('identity', (640, 512), (1280, 1020), allow_resize=True)
    # Equal sizes: nothing to warn about.
    assert Registration('identity', (640, 512), (640, 512)).summary()['ok']


def test_extrinsics_from_a_tf_transform_give_the_plane_homography_of_a_projection():
    """The TF path of the node: a geometry_msgs/Transform (thermal pose in the RGB optical
    frame, as tf2's lookup_transform(rgb, thermal) returns it) -> R, t -> H, checked against
    points on the plane projected through both cameras."""
    geometry_msgs = pytest.importorskip('geometry_msgs.msg')
    from tesg_ros.sensor.registration import extrinsics_from_transform

    rotation = Rotation.from_euler('xyz', [0.03, -0.04, 0.02])
    translation = np.array([0.08, -0.02, 0.01])
    x, y, z, w = rotation.as_quat()
    stamped = geometry_msgs.TransformStamped()
    stamped.transform.translation.x, stamped.transform.translation.y = translation[:2]
    stamped.transform.translation.z = translation[2]
    stamped.transform.rotation.x, stamped.transform.rotation.y = x, y
    stamped.transform.rotation.z, stamped.transform.rotation.w = z, w
    R, t = extrinsics_from_transform(stamped)
    np.testing.assert_allclose(R, rotation.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(t, translation)

    thermal_K = np.array([[500.0, 0, 320], [0, 500, 256], [0, 0, 1]])
    rgb_K = np.array([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
    normal, distance = np.array([0.0, 0.0, -1.0]), 12.0
    rng = np.random.default_rng(5)
    points = np.column_stack([rng.uniform(-4, 4, (40, 2)), np.full(40, distance)])
    thermal_pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), thermal_K, None)
    rgb_pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(R)[0], t, rgb_K, None)
    homography = plane_homography(thermal_K, rgb_K, R, t, normal, distance)
    np.testing.assert_allclose(cv2.perspectiveTransform(thermal_pixels, homography),
                               rgb_pixels, atol=1e-6)
    # The inverse transform (lookup_transform with the frames swapped) is measurably wrong.
    inverse = plane_homography(thermal_K, rgb_K, R.T, -R.T @ t, normal, distance)
    assert np.abs(cv2.perspectiveTransform(thermal_pixels, inverse) - rgb_pixels).max() > 5
    with pytest.raises(CalibrationError, match='unit norm'):
        stamped.transform.rotation.w = 3.0
        extrinsics_from_transform(stamped.transform)
