# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Thermal-to-RGB homographies: from a plane and extrinsics, for a resize, their YAML file
and the invertibility check (ROS-free; conventions in :mod:`tesg_ros.sensor.registration`)."""

import math
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
import yaml

from tesg_ros.errors import CalibrationError, ConfigError
from tesg_ros.sensor.camera_model import as_matrix

HOMOGRAPHY_FILE_FORMAT = 'tesg_ros/homography/v1'


# ---------------------------------------------------------------------------------------------
# Homography sources
# ---------------------------------------------------------------------------------------------

def rotation_from_spec(rotation=None, quaternion=None, rpy=None, error=ConfigError,
                       prefix='extrinsics'):
    """Rotation matrix (3x3 float64) from exactly one of the three forms.

    ``rotation``: 9 numbers, row-major 3x3; ``quaternion``: ``[x, y, z, w]`` (ROS order);
    ``rpy``: ``[roll, pitch, yaw]`` radians, fixed axes x, y, z, i.e.
    ``R = Rz(yaw) Ry(pitch) Rx(roll)`` like tf2.
    """
    given = [name for name, value in
             (('rotation', rotation), ('quaternion', quaternion), ('rpy', rpy))
             if value is not None]
    if len(given) != 1:
        raise error(f'{prefix}: give exactly one of rotation, quaternion, rpy (got '
                    f'{given or "none"})')
    if rotation is not None:
        matrix = as_matrix(rotation, (3, 3), f'{prefix}.rotation', error)
        # 1e-4 tolerates calibration files printed with ~5 decimals; the matrix is used as is.
        if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-4) or np.linalg.det(matrix) < 0:
            raise error(f'{prefix}.rotation is not a rotation matrix (orthonormal, det +1): '
                        f'{matrix.tolist()}')
        return matrix
    if quaternion is not None:
        quat = as_matrix(quaternion, (4,), f'{prefix}.quaternion', error)
        norm = np.linalg.norm(quat)
        if abs(norm - 1.0) > 1e-3:
            raise error(f'{prefix}.quaternion [x, y, z, w] must have unit norm, got {norm:.6f}')
        return Rotation.from_quat(quat / norm).as_matrix()
    angles = as_matrix(rpy, (3,), f'{prefix}.rpy', error)
    return Rotation.from_euler('xyz', angles).as_matrix()


def plane_homography(thermal_K, rgb_K, rotation, translation, normal, distance):
    """Plane-induced homography ``H = K_rgb (R - t n^T / d) K_thermal^-1`` (3x3 float64).

    ``rotation`` (3x3) and ``translation`` (3,) map thermal-frame points into the RGB frame;
    the plane is ``n . X + d = 0`` in the thermal frame (``n`` unit normal pointing towards the
    thermal camera, ``d > 0`` metres). H is scaled so that ``H[2, 2] == 1`` when possible.
    """
    normal = as_matrix(normal, (3,), 'plane.normal', CalibrationError)
    norm = np.linalg.norm(normal)
    if norm < 1e-9:
        raise CalibrationError('plane.normal must be a non-zero vector')
    distance = float(distance)
    if not math.isfinite(distance) or distance <= 0:
        raise CalibrationError(f'plane.distance must be > 0 metres, got {distance}')
    translation = as_matrix(translation, (3,), 'extrinsics.translation', CalibrationError)
    rotation = as_matrix(rotation, (3, 3), 'extrinsics.rotation', CalibrationError)
    euclidean = rotation - np.outer(translation, normal / norm) / distance
    homography = as_matrix(rgb_K, (3, 3), 'rgb K') @ euclidean @ np.linalg.inv(
        as_matrix(thermal_K, (3, 3), 'thermal K'))
    if abs(homography[2, 2]) > 1e-12:
        homography = homography / homography[2, 2]
    return homography


def resize_homography(thermal_size, rgb_size):
    """Scale homography of a plain resize (pixel-centre convention, like ``cv2.resize``)."""
    scale_x = rgb_size[0] / thermal_size[0]
    scale_y = rgb_size[1] / thermal_size[1]
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5],
                     [0.0, scale_y, 0.5 * scale_y - 0.5],
                     [0.0, 0.0, 1.0]])


def extrinsics_from_transform(transform):
    """``(R 3x3, t (3,))`` from a duck-typed ``geometry_msgs/Transform`` (or
    ``TransformStamped``): what ``tf2`` returns for ``lookup_transform(target=<rgb optical
    frame>, source=<thermal optical frame>)`` maps thermal points into the RGB frame,
    ``X_rgb = R X_thermal + t``, the convention of :func:`plane_homography`."""
    transform = getattr(transform, 'transform', transform)
    try:
        translation = [float(getattr(transform.translation, axis)) for axis in 'xyz']
        quaternion = [float(getattr(transform.rotation, axis)) for axis in 'xyzw']
    except AttributeError as exc:
        raise CalibrationError(f'not a geometry_msgs/Transform: {exc}') from None
    rotation = rotation_from_spec(quaternion=quaternion, error=CalibrationError,
                                  prefix='transform')
    return rotation, as_matrix(translation, (3,), 'transform.translation', CalibrationError)


def save_homography_file(path, homography, thermal_size=None, rgb_size=None, **metadata):
    """Write H (thermal -> RGB pixels) as the YAML :func:`load_homography_file` reads."""
    homography = as_matrix(homography, (3, 3), 'homography', CalibrationError)
    document = {
        'format': HOMOGRAPHY_FILE_FORMAT,
        'direction': 'thermal_to_rgb',
        'homography': {'rows': 3, 'cols': 3,
                       'data': [float(v) for v in homography.ravel()]},
    }
    if thermal_size is not None:
        document['thermal_size'] = [int(v) for v in thermal_size]
    if rgb_size is not None:
        document['rgb_size'] = [int(v) for v in rgb_size]
    document.update(metadata)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write('# thermal -> RGB pixel homography, p_rgb ~ H p_thermal '
                     '(see docs/registration.md)\n')
        yaml.safe_dump(document, stream, sort_keys=False, default_flow_style=None)
    return Path(path)


def load_homography_file(path):
    """Read a homography YAML; returns ``(H 3x3 float64, document dict)``.

    Accepts the tool's format (``homography: {rows, cols, data}``) or a bare list of 9.
    """
    try:
        with open(path, encoding='utf-8') as stream:
            document = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f'homography_file: cannot read {path}: {exc}') from exc
    if not isinstance(document, dict) or 'homography' not in document:
        raise ConfigError(f'homography_file: {path} has no "homography" key')
    direction = document.get('direction', 'thermal_to_rgb')
    if direction != 'thermal_to_rgb':
        raise ConfigError(f'homography_file: {path} direction {direction!r}; only '
                          '"thermal_to_rgb" is supported')
    entry = document['homography']
    values = entry.get('data') if isinstance(entry, dict) else entry
    return as_matrix(values, (3, 3), f'homography_file {path}', ConfigError), document


def check_invertible(homography):
    """Raise CalibrationError when the 3x3 ``homography`` is singular (any scale: a
    homography is defined up to one)."""
    homography = np.asarray(homography, np.float64).reshape(3, 3)
    if not np.max(np.abs(homography)) > 0 or np.linalg.cond(homography) > 1e12:
        raise CalibrationError(f'homography is singular: {homography.tolist()}')
