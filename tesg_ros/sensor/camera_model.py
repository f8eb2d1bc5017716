# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""A camera's intrinsics and distortion from ``sensor_msgs/CameraInfo`` (or a mapping), and
the model of a crop of it (ROS-free; conventions in :mod:`tesg_ros.sensor.registration`)."""

from dataclasses import dataclass, field, replace

import numpy as np
import yaml

from tesg_ros.errors import CalibrationError

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')
# Numbers of distortion coefficients OpenCV accepts for each ROS distortion model.
_DISTORTION_LENGTHS = {
    'plumb_bob': (4, 5),
    'rational_polynomial': (8, 12, 14),
    'equidistant': (4,),
}
# Length ROS uses for each model (when a message leaves D empty).
_ROS_DISTORTION_LENGTH = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}


# ---------------------------------------------------------------------------------------------
# Camera model
# ---------------------------------------------------------------------------------------------

def as_matrix(values, shape, name, error=CalibrationError):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f'{name} must be numbers, got {values!r}') from exc
    if array.size != int(np.prod(shape)):
        raise error(f'{name} needs {int(np.prod(shape))} numbers, got {array.size}')
    array = array.reshape(shape)
    if not np.all(np.isfinite(array)):
        raise error(f'{name} contains NaN or infinity: {array.tolist()}')
    return array


def _field(msg, name):
    """Read a CameraInfo field from rclpy (``k``), rosbags (``k``) or ROS 1 style (``K``)."""
    for candidate in (name, name.upper()):
        if hasattr(msg, candidate):
            return getattr(msg, candidate)
    raise CalibrationError(f'camera info message has no field {name!r}')


@dataclass(eq=False)
class CameraModel:
    """Intrinsic calibration of one camera, as in ``sensor_msgs/CameraInfo``.

    ``K`` 3x3 float64 (all zeros: uncalibrated), ``D`` 1-D float64 distortion coefficients in
    ROS order for ``distortion_model`` ('plumb_bob' k1 k2 t1 t2 k3, 'rational_polynomial'
    k1 k2 t1 t2 k3 k4 k5 k6, 'equidistant' k1 k2 k3 k4), ``R`` 3x3 rectification rotation and
    ``P`` 3x4 projection matrix (None when absent), ``roi`` ``(x_offset, y_offset, width,
    height)`` or None for the full image, ``binning`` ``(x, y)``.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = 'plumb_bob'
    R: np.ndarray = None
    P: np.ndarray = None
    roi: tuple = None
    binning: tuple = (1, 1)
    frame_id: str = ''

    def __post_init__(self):
        try:
            self.width, self.height = int(self.width), int(self.height)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f'camera width/height must be integers: {exc}') from exc
        if self.width < 0 or self.height < 0:
            raise CalibrationError(f'negative camera size {self.width}x{self.height}')
        self.K = as_matrix(self.K, (3, 3), 'K')
        if not self.distortion_model and not np.any(np.asarray(self.D, dtype=float)):
            self.distortion_model = 'plumb_bob'  # uncalibrated messages leave it empty
        if self.distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(
                f'distortion_model {self.distortion_model!r} is not supported; '
                f'use one of {DISTORTION_MODELS}')
        D = np.asarray(self.D, dtype=np.float64).ravel()
        if D.size == 0:  # no coefficients: no distortion
            D = np.zeros(_ROS_DISTORTION_LENGTH[self.distortion_model])
        if D.size not in _DISTORTION_LENGTHS[self.distortion_model]:
            raise CalibrationError(
                f'{self.distortion_model} needs '
                f'{" or ".join(map(str, _DISTORTION_LENGTHS[self.distortion_model]))} '
                f'distortion coefficients, got {D.size}')
        if not np.all(np.isfinite(D)):
            raise CalibrationError(f'D contains NaN or infinity: {D.tolist()}')
        self.D = D
        if self.R is not None:
            self.R = as_matrix(self.R, (3, 3), 'R')
        if self.P is not None:
            self.P = as_matrix(self.P, (3, 4), 'P')
        if self.roi is not None:
            self.roi = tuple(int(v) for v in self.roi)
        self.binning = tuple(int(v) for v in self.binning)

    # -- properties ---------------------------------------------------------------------------
    @property
    def size(self):
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    @property
    def is_calibrated(self):
        """True when K holds usable intrinsics (fx, fy > 0; all-zero K means uncalibrated)."""
        return bool(self.K[0, 0] > 0 and self.K[1, 1] > 0 and self.K[2, 2] != 0)

    @property
    def has_distortion(self):
        return bool(np.any(self.D != 0))

    def require_intrinsics(self, purpose, name='camera'):
        """Raise CalibrationError unless K is calibrated; ``purpose`` goes in the message."""
        if not np.any(self.K):
            raise CalibrationError(
                f'{name} is uncalibrated (K is all zeros) but {purpose} needs its intrinsics')
        if not self.is_calibrated:
            raise CalibrationError(
                f'{name} K is not a valid camera matrix (fx, fy must be > 0) but {purpose} '
                f'needs its intrinsics: {self.K.tolist()}')

    def require_full_frame(self, name='camera'):
        """Raise CalibrationError when the model describes a binned or ROI image."""
        if self.binning not in ((1, 1), (0, 0), (0, 1), (1, 0)):
            raise CalibrationError(f'{name}: binning {self.binning} is not supported')
        if self.roi is not None and self.roi != (0, 0, self.width, self.height) and any(
                self.roi[2:]):
            raise CalibrationError(f'{name}: a region of interest {self.roi} is not supported')

    def fingerprint(self):
        """A hashable value that changes whenever any calibration number changes.

        Absent R / P count as their defaults (identity, ``[K | 0]``), so a model loaded from
        YAML and the same model read back from a CameraInfo message compare equal.
        """
        return (self.width, self.height, self.distortion_model, self.K.tobytes(),
                self.D.tobytes(), self.rectification.tobytes(), self.projection.tobytes(),
                self.roi, self.binning)

    # -- conversions --------------------------------------------------------------------------
    @classmethod
    def from_camera_info(cls, msg):
        """Build from a duck-typed ``sensor_msgs/CameraInfo`` (rclpy or rosbags message)."""
        R = np.asarray(_field(msg, 'r'), dtype=np.float64)
        P = np.asarray(_field(msg, 'p'), dtype=np.float64)
        roi = None
        roi_msg = getattr(msg, 'roi', None)
        if roi_msg is not None and (roi_msg.width or roi_msg.height):
            roi = (roi_msg.x_offset, roi_msg.y_offset, roi_msg.width, roi_msg.height)
        header = getattr(msg, 'header', None)
        return cls(
            width=_field(msg, 'width'), height=_field(msg, 'height'),
            K=list(_field(msg, 'k')), D=list(_field(msg, 'd')),
            distortion_model=str(getattr(msg, 'distortion_model', '') or ''),
            R=R if np.any(R) else None, P=P if np.any(P) else None, roi=roi,
            binning=(getattr(msg, 'binning_x', 1), getattr(msg, 'binning_y', 1)),
            frame_id=str(getattr(header, 'frame_id', '') or ''))

    def to_camera_info(self, header=None, message_class=None):
        """Return a ``sensor_msgs.msg.CameraInfo`` (or ``message_class()``) with these values.

        ``message_class`` must be constructible without arguments (rclpy style); ``R`` and
        ``P`` default to identity and ``[K | 0]``.
        """
        if message_class is None:
            from sensor_msgs.msg import CameraInfo as message_class  # lazy: ROS-free core
        msg = message_class()
        if header is not None:
            msg.header = header
        elif self.frame_id and hasattr(msg, 'header'):
            msg.header.frame_id = self.frame_id
        msg.width, msg.height = self.width, self.height
        msg.distortion_model = self.distortion_model
        msg.d = [float(v) for v in self.D]
        msg.k = [float(v) for v in self.K.ravel()]
        msg.r = [float(v) for v in self.rectification.ravel()]
        msg.p = [float(v) for v in self.projection.ravel()]
        msg.binning_x, msg.binning_y = self.binning
        if self.roi is not None:
            msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = self.roi
        return msg

    @property
    def rectification(self):
        """R, or identity when absent (3x3 float64)."""
        return np.eye(3) if self.R is None else self.R

    @property
    def projection(self):
        """P, or ``[K | 0]`` when absent (3x4 float64)."""
        return np.hstack([self.K, np.zeros((3, 1))]) if self.P is None else self.P

    @classmethod
    def from_yaml(cls, source):
        """Load the ROS ``camera_calibration`` YAML format (a path or an already-parsed dict).

        Keys: image_width, image_height, camera_name, camera_matrix, distortion_model,
        distortion_coefficients, rectification_matrix, projection_matrix; matrices are
        ``{rows, cols, data}``.
        """
        if isinstance(source, dict):
            data, where = source, 'calibration'
        else:
            where = str(source)
            try:
                with open(source, encoding='utf-8') as stream:
                    data = yaml.safe_load(stream)
            except (OSError, yaml.YAMLError) as exc:
                raise CalibrationError(f'cannot read calibration file {where}: {exc}') from exc
        if not isinstance(data, dict):
            raise CalibrationError(f'{where}: expected a mapping of calibration keys')

        def matrix(key, shape, required=True):
            entry = data.get(key)
            if entry is None:
                if required:
                    raise CalibrationError(f'{where}: missing key {key!r}')
                return None
            if not isinstance(entry, dict) or 'data' not in entry:
                raise CalibrationError(f'{where}: {key} must be {{rows, cols, data}}')
            values = np.asarray(entry['data'], dtype=np.float64).ravel()
            rows, cols = entry.get('rows'), entry.get('cols')
            if rows is not None and cols is not None and rows * cols != values.size:
                raise CalibrationError(
                    f'{where}: {key} says {rows}x{cols} but has {values.size} numbers')
            if shape is None:
                return values
            return as_matrix(values, shape, f'{where}: {key}')

        for key in ('image_width', 'image_height'):
            if key not in data:
                raise CalibrationError(f'{where}: missing key {key!r}')
        return cls(
            width=data['image_width'], height=data['image_height'],
            K=matrix('camera_matrix', (3, 3)),
            D=matrix('distortion_coefficients', None, required=False)
            if data.get('distortion_coefficients') is not None else [],
            distortion_model=data.get('distortion_model', 'plumb_bob') or 'plumb_bob',
            R=matrix('rectification_matrix', (3, 3), required=False),
            P=matrix('projection_matrix', (3, 4), required=False),
            frame_id=str(data.get('camera_name', '') or ''))

    def to_yaml_dict(self):
        """The ROS ``camera_calibration`` YAML mapping (inverse of :meth:`from_yaml`)."""
        def entry(matrix):
            matrix = np.atleast_2d(matrix)
            return {'rows': int(matrix.shape[0]), 'cols': int(matrix.shape[1]),
                    'data': [float(v) for v in matrix.ravel()]}
        return {
            'image_width': self.width, 'image_height': self.height,
            'camera_name': self.frame_id or 'camera',
            'camera_matrix': entry(self.K),
            'distortion_model': self.distortion_model,
            'distortion_coefficients': entry(self.D[None, :]),
            'rectification_matrix': entry(self.rectification),
            'projection_matrix': entry(self.projection),
        }


def crop_camera_model(model, roi, undistorted=False):
    """Camera model of the ``roi = (x, y, width, height)`` crop of ``model``'s image.

    The result describes the cropped image as a camera of its own: cx, cy and P's principal
    point shifted by the offset, width/height set to the crop, ``roi`` left unset (so
    image_geometry does not shift again). With ``undistorted`` the image was undistorted
    with new camera matrix K, so D becomes zeros and P becomes ``[K | P[:, 3]]``.
    """
    x, y, width, height = (int(v) for v in roi)
    if x < 0 or y < 0 or width <= 0 or height <= 0 or x + width > model.width \
            or y + height > model.height:
        raise CalibrationError(f'crop {roi} is not inside the {model.width}x{model.height} '
                               'image')
    shift = np.array([[1.0, 0.0, -x], [0.0, 1.0, -y], [0.0, 0.0, 1.0]])
    distortion = np.zeros_like(model.D) if undistorted else model.D.copy()
    projection = model.P
    if undistorted:
        last_column = np.zeros((3, 1)) if model.P is None else model.P[:, 3:]
        projection = np.hstack([model.K, last_column])
    return replace(model, width=width, height=height, K=shift @ model.K, D=distortion,
                   P=None if projection is None else shift @ projection, roi=None)
