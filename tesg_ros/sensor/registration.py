# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Registration of the thermal image into the RGB camera's pixel grid (ROS-free).

The fusion network needs both images on one pixel grid. This module resamples the thermal
image into the RGB image's grid with ``cv2.remap``; the remap maps are computed once per
(mode, image sizes, calibration) and reused for every frame.

Conventions (see docs/registration.md):

* Sizes are ``(width, height)`` like ``sensor_msgs/CameraInfo``; images are numpy arrays of
  shape ``(height, width)`` or ``(height, width, channels)``.
* Pixel coordinates are OpenCV's: the centre of the top-left pixel is ``(0, 0)``; an image of
  width ``W`` covers ``x`` in ``[-0.5, W - 0.5]``.
* ``H`` (3x3, float64) maps *thermal* pixels to *RGB* pixels: ``p_rgb ~ H @ p_thermal``. With
  undistortion enabled it maps undistorted (ideal pinhole) pixels of both cameras.
* Extrinsics ``R, t`` map points from the thermal camera's optical frame to the RGB camera's
  optical frame (z forward, x right, y down): ``X_rgb = R @ X_thermal + t`` (metres).
* The plane is ``n . X_thermal + d = 0`` in the thermal optical frame: ``n`` is the unit normal
  of the plane's visible side (pointing towards the thermal camera), ``d > 0`` the thermal
  camera's distance to the plane. Then ``H = K_rgb (R - t n^T / d) K_thermal^-1``.

The camera model is :mod:`tesg_ros.sensor.camera_model`, the homographies (plane, resize,
file) :mod:`tesg_ros.sensor.homography`; this module builds and applies the maps.
"""

import math
from pathlib import Path
from typing import NamedTuple
import warnings

import cv2
import numpy as np

from tesg_ros.errors import CalibrationError, ConfigError, ImageEncodingError
# The registration API in one import: the camera model and the homographies are re-exported.
from tesg_ros.sensor.camera_model import (  # noqa: F401
    as_matrix, CameraModel, crop_camera_model, DISTORTION_MODELS)
from tesg_ros.sensor.homography import (  # noqa: F401
    check_invertible, extrinsics_from_transform, HOMOGRAPHY_FILE_FORMAT, load_homography_file,
    plane_homography, resize_homography, rotation_from_spec, save_homography_file)
MODES = ('identity', 'homography', 'plane')
INTERPOLATIONS = {
    'nearest': cv2.INTER_NEAREST,
    'linear': cv2.INTER_LINEAR,
    'cubic': cv2.INTER_CUBIC,
    'lanczos4': cv2.INTER_LANCZOS4,
}
MAP_TYPES = ('fixed_point', 'float32')
# Top-level keys of Registration.from_config (config/registration_example.yaml documents them).
CONFIG_KEYS = ('mode', 'allow_resize', 'allow_stretch', 'homography', 'homography_file',
               'thermal_calibration', 'rgb_calibration', 'extrinsics', 'plane',
               'undistort_thermal', 'undistort_rgb', 'interpolation', 'map_type',
               'crop_to_overlap', 'min_overlap', 'warn_overlap', 'allow_mirror')
# dtypes cv2.remap accepts.
_REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
# Map coordinate given to pixels without thermal data, far outside any image.
_OUTSIDE = -1.0e4
# The exact largest-rectangle search is a Python loop over pixels; above this many pixels it
# runs on a conservatively down-sampled mask (the result stays inside the valid region).
_RECTANGLE_MAX_PIXELS = 400_000
# Identity registration scales a thermal image of another size only when the aspect ratios
# agree to this relative tolerance (1 % is one pixel in a hundred: invisible); anything more is
# a stretch that needs allow_stretch.
ASPECT_TOLERANCE = 0.01


def aspect_difference(thermal_size, rgb_size):
    """Relative difference of the aspect ratios (width / height) of two ``(width, height)``."""
    thermal_aspect = thermal_size[0] / thermal_size[1]
    rgb_aspect = rgb_size[0] / rgb_size[1]
    return abs(thermal_aspect - rgb_aspect) / rgb_aspect


def _aspect_text(size):
    divisor = math.gcd(int(size[0]), int(size[1]))
    return f'{size[0]}x{size[1]} ({size[0] // divisor}:{size[1] // divisor})'


# ---------------------------------------------------------------------------------------------
# Crop helpers
# ---------------------------------------------------------------------------------------------

def _largest_rectangle_exact(mask):
    """Largest all-True axis-aligned rectangle (histogram + stack, O(rows * cols))."""
    rows, cols = mask.shape
    heights = np.zeros(cols + 1, dtype=np.int64)  # trailing 0 flushes the stack
    best_area, best = 0, (0, 0, 0, 0)
    for row in range(rows):
        heights[:cols] = np.where(mask[row], heights[:cols] + 1, 0)
        column_heights = heights.tolist()
        stack = []  # (start column, height), heights increasing
        for col, height in enumerate(column_heights):
            start = col
            while stack and stack[-1][1] >= height:
                start, top = stack.pop()
                area = top * (col - start)
                if area > best_area:
                    best_area, best = area, (start, row - top + 1, col - start, top)
            stack.append((start, height))
    return best


def largest_valid_rectangle(mask):
    """Largest axis-aligned rectangle inside ``mask`` (2-D bool): ``(x, y, width, height)``.

    Exact for masks up to 400k pixels. Larger masks are searched on blocks of ``f x f`` pixels
    that are entirely valid, so the result is always inside the valid region and at most about
    ``f`` pixels per side smaller than the exact answer. Returns ``(0, 0, 0, 0)`` when empty.
    """
    mask = np.asarray(mask, dtype=bool)
    factor = max(1, math.ceil(math.sqrt(mask.size / _RECTANGLE_MAX_PIXELS)))
    if factor == 1:
        return _largest_rectangle_exact(mask)
    rows, cols = mask.shape[0] // factor, mask.shape[1] // factor
    blocks = mask[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor)
    x, y, width, height = _largest_rectangle_exact(blocks.all(axis=(1, 3)))
    return (x * factor, y * factor, width * factor, height * factor)


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

def _check_size(size, name):
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'{name} must be (width, height), got {size!r}') from exc
    if width <= 0 or height <= 0:
        raise ConfigError(f'{name} must be positive, got {size!r}')
    return (width, height)


def _undistortion_map(model, ray_matrix, size, name):
    """Remap maps (float32) that sample ``model``'s raw image for output pixels ``p``.

    The normalised ray of output pixel ``p`` is ``ray_matrix^-1 p``; it is distorted with
    ``model.D`` and projected with ``model.K``. Returns ``(map_x, map_y, valid)``; ``valid``
    drops rays behind the camera and rays outside the image's own undistorted field (where the
    polynomial distortion folds back and would alias far-away scene into the image).
    """
    args = (model.K, model.D, ray_matrix, np.eye(3), size, cv2.CV_32FC1)
    if model.distortion_model == 'equidistant':
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(*args)
    else:
        map_x, map_y = cv2.initUndistortRectifyMap(*args)
    columns, rows = np.meshgrid(np.arange(size[0], dtype=np.float64),
                                np.arange(size[1], dtype=np.float64))
    inverse = np.linalg.inv(ray_matrix)
    rays = np.einsum('ij,jhw->ihw', inverse, np.stack([columns, rows, np.ones_like(rows)]))
    in_front = rays[2] > 1e-12
    with np.errstate(divide='ignore', invalid='ignore'):
        radius_sq = (rays[0] ** 2 + rays[1] ** 2) / rays[2] ** 2
    # Undistorted radius of the image border: the field the calibration actually covers.
    samples = np.linspace(0.0, 1.0, 64)
    border = np.concatenate([
        np.stack([samples * (model.width - 1), np.zeros_like(samples)], 1),
        np.stack([samples * (model.width - 1), np.full_like(samples, model.height - 1)], 1),
        np.stack([np.zeros_like(samples), samples * (model.height - 1)], 1),
        np.stack([np.full_like(samples, model.width - 1), samples * (model.height - 1)], 1),
    ]).reshape(-1, 1, 2)
    if model.distortion_model == 'equidistant':
        border_rays = cv2.fisheye.undistortPoints(border, model.K, model.D)
    else:
        border_rays = cv2.undistortPoints(border, model.K, model.D)
    max_radius_sq = float(np.max(np.sum(border_rays.reshape(-1, 2) ** 2, axis=1)))
    if not math.isfinite(max_radius_sq):
        raise CalibrationError(f'{name} distortion coefficients cannot be inverted at the '
                               f'image border: {model.D.tolist()}')
    valid = in_front & (radius_sq <= max_radius_sq * 1.02) & np.isfinite(map_x) & np.isfinite(
        map_y)
    return map_x, map_y, valid


class _Inputs(NamedTuple):
    thermal_size: tuple
    rgb_size: tuple
    thermal_model: object
    rgb_model: object


class _Built(NamedTuple):
    """Everything derived from one (mode, sizes, calibration): built once, used per frame."""

    inputs: _Inputs
    key: tuple
    homography: np.ndarray
    mirrored: bool
    valid_mask: np.ndarray
    invalid: object
    thermal_maps: object  # None under the exact identity
    rgb_maps: object
    rgb_invalid: object
    overlap_fraction: float
    roi: tuple
    warnings: tuple


class Registration:
    """Resamples thermal frames into the RGB pixel grid with cached ``cv2.remap`` maps.

    Parameters (see :meth:`from_config` for the configuration keys):

    * ``mode``: 'identity', 'homography' or 'plane'.
    * ``thermal_size``, ``rgb_size``: ``(width, height)``.
    * ``homography``: 3x3 (or 9 numbers), thermal -> RGB pixels ('homography' mode).
    * ``thermal_model``, ``rgb_model``: :class:`CameraModel`; needed by 'plane' and by
      undistortion, optional otherwise (used for size checks and crop_camera_info).
    * ``rotation`` (3x3), ``translation`` (3,), ``plane_normal`` (3,), ``plane_distance``:
      'plane' mode (conventions in the module docstring).
    * ``allow_resize``: identity mode with different sizes of the same aspect ratio (within
      :data:`ASPECT_TOLERANCE`) scales the thermal image (a warning of the build).
    * ``allow_stretch``: identity mode also scales between different aspect ratios, which
      distorts the scene (otherwise CalibrationError: register the cameras instead).
    * ``undistort_thermal`` / ``undistort_rgb``: remove lens distortion (new camera matrix K).
    * ``interpolation``: 'nearest', 'linear' (default), 'cubic', 'lanczos4'.
    * ``map_type``: 'fixed_point' (default; CV_16SC2 + CV_16UC1, 6 instead of 8 bytes per
      pixel) or 'float32'. The images are identical: ``cv2.remap`` interpolates at 1/32 px
      steps either way.
    * ``crop_to_overlap``: :meth:`register` crops both images to :attr:`roi`.
    * ``min_overlap``: CalibrationError when less than this fraction of the RGB grid receives
      thermal data; ``warn_overlap``: below this a warning is added to :meth:`summary`.
    * ``allow_mirror``: accept an H that flips orientation (otherwise CalibrationError).
    """

    def __init__(self, mode, thermal_size, rgb_size, *, homography=None, thermal_model=None,
                 rgb_model=None, rotation=None, translation=None, plane_normal=None,
                 plane_distance=None, allow_resize=False, allow_stretch=False,
                 undistort_thermal=False,
                 undistort_rgb=False, interpolation='linear', map_type='fixed_point',
                 crop_to_overlap=False, min_overlap=0.05, warn_overlap=0.5,
                 allow_mirror=False):
        if mode not in MODES:
            raise ConfigError(f'mode must be one of {MODES}, got {mode!r}')
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f'interpolation must be one of {tuple(INTERPOLATIONS)}, got '
                              f'{interpolation!r}')
        if map_type not in MAP_TYPES:
            raise ConfigError(f'map_type must be one of {MAP_TYPES}, got {map_type!r}')
        for name, value in (('min_overlap', min_overlap), ('warn_overlap', warn_overlap)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f'{name} must be in [0, 1], got {value!r}')
        self.mode = mode
        self.interpolation = interpolation
        self.map_type = map_type
        self.allow_resize = bool(allow_resize)
        self.allow_stretch = bool(allow_stretch)
        self.undistort_thermal = bool(undistort_thermal)
        self.undistort_rgb = bool(undistort_rgb)
        self.crop_to_overlap = bool(crop_to_overlap)
        self.min_overlap = float(min_overlap)
        self.warn_overlap = float(warn_overlap)
        self.allow_mirror = bool(allow_mirror)
        self._homography_input = None
        if mode == 'homography':
            if homography is None:
                raise ConfigError('homography mode needs "homography" (9 numbers) or '
                                  '"homography_file"')
            self._homography_input = as_matrix(homography, (3, 3), 'homography', ConfigError)
        self._plane = None
        if mode == 'plane':
            missing = [name for name, value in (
                ('extrinsics rotation', rotation), ('extrinsics.translation', translation),
                ('plane.normal', plane_normal), ('plane.distance', plane_distance))
                if value is None]
            if missing:
                raise ConfigError(f'plane mode needs {", ".join(missing)}')
            self._plane = (
                as_matrix(rotation, (3, 3), 'extrinsics rotation', ConfigError),
                as_matrix(translation, (3,), 'extrinsics.translation', ConfigError),
                as_matrix(plane_normal, (3,), 'plane.normal', ConfigError),
                float(plane_distance))
        inputs = _Inputs(_check_size(thermal_size, 'thermal_size'),
                         _check_size(rgb_size, 'rgb_size'), thermal_model, rgb_model)
        # Everything derived from the calibration lives in one object, replaced in a single
        # assignment: a frame warped concurrently with update() sees old or new, never a mix.
        self._built = self._build(inputs)
        self.build_count = 1

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config, thermal_size, rgb_size, thermal_model=None, rgb_model=None):
        """Build from a configuration mapping (nested or ROS-style dotted keys).

        Every key is documented in config/registration_example.yaml. Unknown or invalid keys
        raise ConfigError naming the key. ``thermal_calibration`` / ``rgb_calibration`` (paths
        to ROS calibration YAMLs) are used when the corresponding model is not passed in.
        """
        config = _unflatten(config)
        known = set(CONFIG_KEYS)
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f'unknown registration key(s) {unknown}; known: {sorted(known)}')
        mode = config.get('mode', 'identity')
        if mode not in MODES:
            raise ConfigError(f'mode must be one of {MODES}, got {mode!r}')
        kwargs = {}
        for key in ('allow_resize', 'allow_stretch', 'undistort_thermal', 'undistort_rgb',
                    'crop_to_overlap', 'allow_mirror'):
            if key in config:
                if not isinstance(config[key], bool):
                    raise ConfigError(f'{key} must be true or false, got {config[key]!r}')
                kwargs[key] = config[key]
        for key in ('interpolation', 'map_type'):
            if key in config:
                kwargs[key] = config[key]
        for key in ('min_overlap', 'warn_overlap'):
            if key in config:
                value = config[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f'{key} must be a number, got {value!r}')
                kwargs[key] = float(value)
        for key, given in (('thermal_calibration', thermal_model),
                           ('rgb_calibration', rgb_model)):
            path = config.get(key)
            if given is None and path:
                try:
                    kwargs[key.replace('calibration', 'model')] = CameraModel.from_yaml(
                        resolve_config_path(path, key))
                except CalibrationError as exc:
                    raise ConfigError(f'{key}: {exc}') from exc
        kwargs.setdefault('thermal_model', thermal_model)
        kwargs.setdefault('rgb_model', rgb_model)

        if mode == 'homography':
            # Empty values count as unset (ROS parameter defaults cannot be null).
            has_numbers = config.get('homography') not in (None, '', [])
            has_file = bool(config.get('homography_file'))
            if has_numbers == has_file:
                raise ConfigError('homography mode needs exactly one of "homography" '
                                  '(9 numbers) and "homography_file"')
            if has_numbers:
                kwargs['homography'] = as_matrix(config['homography'], (3, 3), 'homography',
                                                 ConfigError)
            else:
                kwargs['homography'], document = load_homography_file(
                    resolve_config_path(config['homography_file'], 'homography_file'))
                for key, actual in (('thermal_size', thermal_size), ('rgb_size', rgb_size)):
                    stored = document.get(key)
                    if stored is not None and tuple(stored) != tuple(actual):
                        raise CalibrationError(
                            f'homography_file {config["homography_file"]} was computed for '
                            f'{key} {tuple(stored)} but the images are {tuple(actual)}')
        if mode == 'plane':
            extrinsics = config.get('extrinsics')
            plane = config.get('plane')
            for key, value, allowed in (
                    ('extrinsics', extrinsics, {'translation', 'rotation', 'quaternion', 'rpy'}),
                    ('plane', plane, {'normal', 'distance'})):
                if not isinstance(value, dict):
                    raise ConfigError(f'plane mode needs a "{key}" mapping')
                unknown = sorted(set(value) - allowed)
                if unknown:
                    raise ConfigError(f'unknown key(s) {[f"{key}.{k}" for k in unknown]}')
            if 'translation' not in extrinsics:
                raise ConfigError('plane mode needs extrinsics.translation [x, y, z] (metres)')
            for key in ('normal', 'distance'):
                if key not in plane:
                    raise ConfigError(f'plane mode needs plane.{key}')
            kwargs['rotation'] = rotation_from_spec(
                extrinsics.get('rotation'), extrinsics.get('quaternion'), extrinsics.get('rpy'))
            kwargs['translation'] = as_matrix(extrinsics['translation'], (3,),
                                              'extrinsics.translation', ConfigError)
            kwargs['plane_normal'] = as_matrix(plane['normal'], (3,), 'plane.normal',
                                               ConfigError)
            distance = plane['distance']
            if isinstance(distance, bool) or not isinstance(distance, (int, float)) \
                    or not distance > 0:
                raise ConfigError(f'plane.distance must be a number > 0, got {distance!r}')
            kwargs['plane_distance'] = float(distance)
        else:
            for key in ('extrinsics', 'plane'):
                if key in config:
                    raise ConfigError(f'{key} is only used in plane mode (mode is {mode!r})')
        if mode != 'homography':
            for key in ('homography', 'homography_file'):
                if config.get(key) not in (None, '', []):
                    raise ConfigError(f'{key} is only used in homography mode (mode is '
                                      f'{mode!r})')
        return cls(mode, thermal_size, rgb_size, **kwargs)

    def update(self, thermal_size=None, rgb_size=None, thermal_model=None, rgb_model=None):
        """Change sizes or calibration; rebuilds the maps only if a value really changed.

        Returns True when the maps were rebuilt. Call it with every CameraInfo: an unchanged
        calibration costs one comparison. If the new values are rejected (CalibrationError),
        the previous sizes, models and maps stay in effect.
        """
        current = self._built.inputs
        inputs = _Inputs(
            current.thermal_size if thermal_size is None
            else _check_size(thermal_size, 'thermal_size'),
            current.rgb_size if rgb_size is None else _check_size(rgb_size, 'rgb_size'),
            current.thermal_model if thermal_model is None else thermal_model,
            current.rgb_model if rgb_model is None else rgb_model)
        if self._cache_key(inputs) == self._built.key:
            return False
        self._built = self._build(inputs)
        self.build_count += 1
        return True

    # -- state of the current build --------------------------------------------------------------
    thermal_size = property(lambda self: self._built.inputs.thermal_size,
                            doc='``(width, height)`` of the thermal frames the maps expect.')
    rgb_size = property(lambda self: self._built.inputs.rgb_size,
                        doc='``(width, height)`` of the RGB grid.')
    thermal_model = property(lambda self: self._built.inputs.thermal_model,
                             doc='Thermal :class:`CameraModel` in use (or None).')
    rgb_model = property(lambda self: self._built.inputs.rgb_model,
                         doc='RGB :class:`CameraModel` in use (or None).')
    homography = property(lambda self: self._built.homography,
                          doc='H, 3x3 float64, thermal -> RGB pixels (H[2, 2] = 1 when possible).')
    mirrored = property(lambda self: self._built.mirrored, doc='H flips orientation.')
    valid_mask = property(lambda self: self._built.valid_mask,
                          doc='(rgb_h, rgb_w) bool, read-only: pixels with thermal data.')
    overlap_fraction = property(lambda self: self._built.overlap_fraction,
                                doc='Fraction of RGB pixels with thermal data, 0..1.')
    roi = property(lambda self: self._built.roi,
                   doc='Crop ``(x_offset, y_offset, width, height)`` in the RGB grid.')
    warnings = property(lambda self: list(self._built.warnings),
                        doc='Human-readable warnings of the current build.')

    # -- map construction ---------------------------------------------------------------------
    @staticmethod
    def _cache_key(inputs):
        def fingerprint(model):
            return None if model is None else model.fingerprint()
        return (inputs.thermal_size, inputs.rgb_size, fingerprint(inputs.thermal_model),
                fingerprint(inputs.rgb_model))

    def _check_models(self, inputs):
        for name, model, size in (('thermal', inputs.thermal_model, inputs.thermal_size),
                                  ('rgb', inputs.rgb_model, inputs.rgb_size)):
            if model is None or not np.any(model.K):
                continue  # absent or uncalibrated: nothing to check (yet)
            model.require_full_frame(f'{name} camera')
            if model.size != size:
                raise CalibrationError(
                    f'{name} calibration is for {model.width}x{model.height} but the {name} '
                    f'images are {size[0]}x{size[1]}')
        needs = []
        if self.mode == 'plane':
            needs += [('thermal', 'plane registration'), ('rgb', 'plane registration')]
        if self.undistort_thermal:
            needs.append(('thermal', 'undistort_thermal'))
        if self.undistort_rgb:
            needs.append(('rgb', 'undistort_rgb'))
        for name, purpose in needs:
            model = inputs.thermal_model if name == 'thermal' else inputs.rgb_model
            if model is None:
                raise CalibrationError(f'{purpose} needs the {name} camera calibration '
                                       f'(CameraInfo or {name}_calibration)')
            model.require_intrinsics(purpose, f'{name} camera')

    def _compute_homography(self, inputs):
        if self.mode == 'identity':
            if inputs.thermal_size == inputs.rgb_size:
                return np.eye(3)
            if (aspect_difference(inputs.thermal_size, inputs.rgb_size) > ASPECT_TOLERANCE
                    and not self.allow_stretch):
                raise CalibrationError(
                    f'identity registration would stretch the thermal image '
                    f'{_aspect_text(inputs.thermal_size)} to the RGB image '
                    f'{_aspect_text(inputs.rgb_size)}: the aspect ratios differ, so the cameras '
                    'are not registered by a resize. Set registration.mode to homography with '
                    'a matrix from `tesg-compute-homography points ...` (or plane from both '
                    'calibrations), or set allow_stretch (node: registration.allow_stretch) '
                    'to accept the distortion')
            if not self.allow_resize:
                raise CalibrationError(
                    f'identity registration needs equal sizes, but thermal is '
                    f'{inputs.thermal_size[0]}x{inputs.thermal_size[1]} and RGB is '
                    f'{inputs.rgb_size[0]}x{inputs.rgb_size[1]}; set allow_resize: true to scale '
                    'the thermal image to the RGB size')
            return resize_homography(inputs.thermal_size, inputs.rgb_size)
        if self.mode == 'homography':
            return self._homography_input.copy()
        rotation, translation, normal, distance = self._plane
        return plane_homography(inputs.thermal_model.K, inputs.rgb_model.K, rotation, translation,
                                normal, distance)

    def _validated_homography(self, homography, inputs):
        """Sign-normalise H and reject singular, horizon-crossing or mirroring ones."""
        check_invertible(homography)
        homography = homography / np.max(np.abs(homography))
        width, height = inputs.thermal_size
        corners = np.array([[-0.5, -0.5, 1], [width - 0.5, -0.5, 1],
                            [width - 0.5, height - 0.5, 1], [-0.5, height - 0.5, 1]])
        if self.undistort_thermal:
            # The undistorted thermal image spans further than its raw corners.
            model = inputs.thermal_model
            raw = corners[:, None, :2].astype(np.float64)
            undistort = (cv2.fisheye.undistortPoints if model.distortion_model == 'equidistant'
                         else cv2.undistortPoints)
            ideal = undistort(raw, model.K, model.D, P=model.K).reshape(-1, 2)
            corners = np.hstack([ideal, np.ones((4, 1))])
        depths = corners @ homography[2]
        if np.all(depths < 0):
            homography, depths = -homography, -depths
        if homography[2, 2] > 1e-9:
            homography = homography / homography[2, 2]  # the familiar scale, sign kept
        if not np.all(depths > 0):
            raise CalibrationError(
                'homography maps part of the thermal image to infinity (its horizon line '
                f'crosses the thermal image): {homography.tolist()}')
        # For a projective map the Jacobian determinant is det(H) / w^3, w > 0 here.
        mirrored = bool(np.linalg.det(homography) < 0)
        if mirrored and not self.allow_mirror:
            raise CalibrationError(
                'homography flips the image orientation (mirror); check the point order or '
                'extrinsics, or set allow_mirror: true if the optics really mirror the image')
        return homography, mirrored

    def _build(self, inputs):
        """Compute every per-calibration product; returns a :class:`_Built` (no side effects
        except warnings), so a rejected calibration leaves the current maps in place."""
        self._check_models(inputs)
        homography, mirrored = self._validated_homography(self._compute_homography(inputs),
                                                          inputs)
        rgb_width, rgb_height = inputs.rgb_size
        thermal_width, thermal_height = inputs.thermal_size

        valid_rgb = np.ones((rgb_height, rgb_width), dtype=bool)
        rgb_maps = None
        if self.undistort_rgb:
            model = inputs.rgb_model
            map_x, map_y, valid_rgb = _undistortion_map(model, model.K, inputs.rgb_size, 'rgb')
            valid_rgb &= _inside(map_x, map_y, rgb_width, rgb_height)
            rgb_maps = self._final_maps(map_x, map_y, valid_rgb)

        if self.undistort_thermal:
            model = inputs.thermal_model
            map_x, map_y, valid = _undistortion_map(model, homography @ model.K, inputs.rgb_size,
                                                    'thermal')
        else:
            columns, rows = np.meshgrid(np.arange(rgb_width, dtype=np.float64),
                                        np.arange(rgb_height, dtype=np.float64))
            inverse = np.linalg.inv(homography)
            source = np.einsum('ij,jhw->ihw', inverse,
                               np.stack([columns, rows, np.ones_like(rows)]))
            valid = source[2] > 1e-12
            with np.errstate(divide='ignore', invalid='ignore'):
                map_x = (source[0] / source[2]).astype(np.float32)
                map_y = (source[1] / source[2]).astype(np.float32)
        valid &= _inside(map_x, map_y, thermal_width, thermal_height) & valid_rgb
        thermal_maps = self._final_maps(map_x, map_y, valid)
        if (not self.undistort_thermal and inputs.thermal_size == inputs.rgb_size
                and valid.all() and np.array_equal(homography, np.eye(3))):
            thermal_maps = None  # the exact identity: frames pass through, no remap per frame

        overlap = float(valid.mean())
        if overlap < self.min_overlap:
            raise CalibrationError(
                f'registration leaves only {overlap:.1%} of the RGB image with thermal data '
                f'(min_overlap {self.min_overlap:.1%}); the homography or extrinsics are '
                f'probably wrong: {homography.tolist()}')
        warning_list = []
        if overlap < self.warn_overlap:
            warning_list.append(f'thermal data covers only {overlap:.1%} of the RGB image')
        if mirrored:
            warning_list.append('homography mirrors the thermal image (allow_mirror is set)')
        if self.mode == 'identity' and inputs.thermal_size != inputs.rgb_size:
            kind = ('stretches' if aspect_difference(inputs.thermal_size, inputs.rgb_size)
                    > ASPECT_TOLERANCE else 'scales')
            warning_list.append(
                f'identity registration {kind} the thermal image '
                f'{_aspect_text(inputs.thermal_size)} to {_aspect_text(inputs.rgb_size)} '
                f'(x{homography[0, 0]:.3f}, y{homography[1, 1]:.3f})')
        roi = (0, 0, rgb_width, rgb_height)
        if self.crop_to_overlap:
            roi = largest_valid_rectangle(valid)
            if roi[2] == 0 or roi[3] == 0:
                raise CalibrationError('the valid thermal region contains no rectangle')
        for message in warning_list:
            # stacklevel: _build <- __init__/update <- the caller.
            warnings.warn(f'tesg_ros registration: {message}', RuntimeWarning, stacklevel=3)
        valid.flags.writeable = False
        return _Built(
            inputs=inputs, key=self._cache_key(inputs), homography=homography,
            mirrored=mirrored, valid_mask=valid, invalid=None if valid.all() else ~valid,
            thermal_maps=thermal_maps, rgb_maps=rgb_maps,
            rgb_invalid=None if rgb_maps is None or valid_rgb.all() else ~valid_rgb,
            overlap_fraction=overlap, roi=tuple(int(v) for v in roi),
            warnings=tuple(warning_list))

    def _final_maps(self, map_x, map_y, valid):
        map_x = np.where(valid, map_x, _OUTSIDE).astype(np.float32)
        map_y = np.where(valid, map_y, _OUTSIDE).astype(np.float32)
        if self.map_type == 'fixed_point':
            return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2,
                                   nninterpolation=self.interpolation == 'nearest')
        return map_x, map_y

    # -- per frame ----------------------------------------------------------------------------
    @staticmethod
    def _checked(image, size, name):
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.dtype.type not in _REMAP_DTYPES:
            raise ImageEncodingError(
                f'{name} image must be (height, width[, channels]) of uint8, uint16, int16, '
                f'float32 or float64, got shape {image.shape} dtype {image.dtype}')
        if (image.shape[1], image.shape[0]) != size:
            raise ImageEncodingError(
                f'{name} image is {image.shape[1]}x{image.shape[0]} but the registration was '
                f'built for {size[0]}x{size[1]}; call update({name}_size=...) first')
        return image

    def _remap(self, image, maps, size, invalid, name):
        image = self._checked(image, size, name)
        # Replicate keeps edge pixels' interpolation kernels inside the image; pixels without
        # data are zeroed explicitly below.
        warped = cv2.remap(image, maps[0], maps[1], INTERPOLATIONS[self.interpolation],
                           borderMode=cv2.BORDER_REPLICATE)
        if warped.ndim < image.ndim:
            warped = warped[..., None]  # remap drops a trailing channel axis of 1
        if invalid is not None:
            warped[invalid] = 0
        return warped

    def warp_thermal(self, thermal):
        """Thermal frame ``(th_h, th_w[, c])`` -> the RGB grid ``(rgb_h, rgb_w[, c])``.

        Same dtype as the input (uint8 / uint16 / int16 / float32 / float64); interpolation is
        ``self.interpolation`` (bilinear by default, rounded for integer types). Pixels without
        thermal data are 0; see :attr:`valid_mask`. Not cropped. Under the exact identity
        (equal sizes, identity homography, no undistortion) the input array itself is returned.
        """
        return self._warp_thermal(self._built, thermal)

    def _warp_thermal(self, built, thermal):
        if built.thermal_maps is None:
            return self._checked(thermal, built.inputs.thermal_size, 'thermal')
        return self._remap(thermal, built.thermal_maps, built.inputs.thermal_size,
                           built.invalid, 'thermal')

    def warp_rgb(self, rgb):
        """RGB frame, undistorted when ``undistort_rgb`` is set (else returned unchanged)."""
        return self._warp_rgb(self._built, rgb)

    def _warp_rgb(self, built, rgb):
        size = built.inputs.rgb_size
        if built.rgb_maps is None:
            rgb = np.asarray(rgb)
            if (rgb.ndim < 2 or (rgb.shape[1], rgb.shape[0]) != size):
                raise ImageEncodingError(
                    f'rgb image has shape {rgb.shape} but the registration was built for '
                    f'{size[0]}x{size[1]}')
            return rgb
        return self._remap(rgb, built.rgb_maps, size, built.rgb_invalid, 'rgb')

    def crop(self, image, roi=None):
        """``image[y:y+h, x:x+w]`` for ``roi`` (default :attr:`roi`); a view, no copy."""
        x, y, width, height = self.roi if roi is None else roi
        return image[y:y + height, x:x + width]

    def register(self, thermal, rgb):
        """Both frames on one grid: ``(thermal, rgb, valid_mask)``, cropped to :attr:`roi`
        when ``crop_to_overlap`` is set (:attr:`roi` is the full image otherwise)."""
        built = self._built  # one consistent build for all three outputs
        return (self.crop(self._warp_thermal(built, thermal), built.roi),
                self.crop(self._warp_rgb(built, rgb), built.roi),
                self.crop(built.valid_mask, built.roi))

    def crop_camera_info(self, rgb_model=None):
        """RGB :class:`CameraModel` of the registered (cropped, maybe undistorted) RGB image."""
        built = self._built
        model = rgb_model if rgb_model is not None else built.inputs.rgb_model
        if model is None:
            raise CalibrationError('crop_camera_info needs the RGB camera model')
        if model.size != built.inputs.rgb_size:
            raise CalibrationError(f'rgb model is {model.width}x{model.height} but the '
                                   f'registration is for {built.inputs.rgb_size}')
        return crop_camera_model(model, built.roi, undistorted=self.undistort_rgb)

    def summary(self):
        """Plain-Python status for diagnostics (mode, H, overlap, roi, warnings, ...)."""
        built = self._built
        x_offset, y_offset, width, height = built.roi
        return {
            'mode': self.mode,
            'homography': [float(v) for v in built.homography.ravel()],
            'thermal_size': list(built.inputs.thermal_size),
            'rgb_size': list(built.inputs.rgb_size),
            'overlap_fraction': built.overlap_fraction,
            'roi': {'x_offset': x_offset, 'y_offset': y_offset, 'width': width,
                    'height': height},
            'crop_to_overlap': self.crop_to_overlap,
            'undistort_thermal': self.undistort_thermal,
            'undistort_rgb': self.undistort_rgb,
            'interpolation': self.interpolation,
            'map_type': self.map_type,
            'mirrored': built.mirrored,
            'build_count': self.build_count,
            'warnings': list(built.warnings),
            'ok': not built.warnings,
        }


def _inside(map_x, map_y, width, height):
    """Sample points inside the image area ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``."""
    return ((map_x >= -0.5) & (map_x <= width - 0.5) & (map_y >= -0.5)
            & (map_y <= height - 0.5))


def resolve_config_path(path, key):
    """Absolute paths as given; relative ones under the package share directory.

    Like the rest of tesg_ros, the working directory is never consulted, so a launch file
    finds ``config/homography.yaml`` wherever it is started from.
    """
    path = Path(str(path)).expanduser()
    if path.is_absolute():
        return path
    from tesg_ros.paths import share_dir
    try:
        return share_dir() / path
    except FileNotFoundError as exc:
        raise ConfigError(f'{key}: relative path {str(path)!r} needs the package share '
                          f'directory: {exc}') from exc


def _unflatten(config):
    """Turn ROS-style dotted keys ('plane.distance') into nested mappings."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f'registration config must be a mapping, got {type(config).__name__}')
    nested = {}
    for key, value in config.items():
        parts = str(key).split('.')
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f'registration key {key!r} conflicts with {part!r}')
        if isinstance(value, dict):
            target.setdefault(parts[-1], {}).update(value)
        else:
            target[parts[-1]] = value
    return nested
