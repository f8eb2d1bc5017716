# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-compute-homography``: write the thermal -> RGB homography YAML the node loads.

Two ways to get H (``p_rgb ~ H p_thermal``, pixels):

* ``points``: from >= 4 point correspondences (CSV or YAML with thermal_x, thermal_y, rgb_x,
  rgb_y), least squares or RANSAC (``cv2.findHomography``).
* ``plane``: from the two ROS calibration YAMLs, the thermal -> RGB extrinsics and a scene
  plane (``H = K_rgb (R - t n^T / d) K_thermal^-1``; conventions in docs/registration.md).

Prints the reprojection RMS error in RGB pixels (for ``plane`` only when ``--points`` gives
check points). Arguments after ``--ros-args`` are ignored so ``ros2 run`` works.

Examples::

    tesg-compute-homography points pairs.csv -o config/homography.yaml --ransac 3
    tesg-compute-homography plane --thermal-calibration thermal.yaml \\
        --rgb-calibration rgb.yaml --translation 0.05 0 0 --rpy 0 0 0 \\
        --plane-normal 0 0 -1 --plane-distance 10 -o config/homography.yaml
"""

import argparse
import csv
import sys

import cv2
import numpy as np
import yaml

from tesg_ros.cli import strip_ros_args
from tesg_ros.errors import CalibrationError, ConfigError, TesgError
from tesg_ros.sensor.registration import (CameraModel, plane_homography, rotation_from_spec,
                                          save_homography_file)

POINT_COLUMNS = ('thermal_x', 'thermal_y', 'rgb_x', 'rgb_y')


def load_correspondences(path):
    """Read point pairs; returns ``(thermal_points, rgb_points)``, each ``(N, 2)`` float64.

    CSV: rows of 4 numbers, optionally with a header naming thermal_x, thermal_y, rgb_x,
    rgb_y (any column order). YAML: ``points:`` (or a bare list) of 4-number lists or of
    mappings with those four keys.
    """
    path = str(path)
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(f'points: cannot read {path}: {exc}') from exc
    if path.lower().endswith(('.yaml', '.yml')):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f'points: {path} is not valid YAML: {exc}') from exc
        entries = document.get('points') if isinstance(document, dict) else document
        if not isinstance(entries, list):
            raise ConfigError(f'points: {path} needs a "points" list')
        rows = []
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                missing = [c for c in POINT_COLUMNS if c not in entry]
                if missing:
                    raise ConfigError(f'points: {path} entry {index} lacks {missing}')
                entry = [entry[c] for c in POINT_COLUMNS]
            rows.append(entry)
    else:
        lines = [row for row in csv.reader(
            line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith('#'))]
        order = list(range(4))
        if lines and not _is_number(lines[0][0]):
            header = [name.strip() for name in lines.pop(0)]
            missing = [c for c in POINT_COLUMNS if c not in header]
            if missing:
                raise ConfigError(f'points: {path} header lacks columns {missing}')
            order = [header.index(c) for c in POINT_COLUMNS]
        rows = []
        for number, row in enumerate(lines):
            if len(row) < 4:
                raise ConfigError(f'points: {path} row {number + 1} has {len(row)} values, '
                                  'needs thermal_x, thermal_y, rgb_x, rgb_y')
            rows.append([row[i] for i in order])
    try:
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    except ValueError as exc:
        raise ConfigError(f'points: {path} has non-numeric or ragged rows: {exc}') from exc
    if not np.all(np.isfinite(table)):
        raise ConfigError(f'points: {path} contains NaN or infinity')
    return table[:, :2], table[:, 2:]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def reprojection_errors(homography, thermal_points, rgb_points):
    """Euclidean distance (RGB pixels) between ``H(thermal_points)`` and ``rgb_points``."""
    projected = cv2.perspectiveTransform(thermal_points.reshape(-1, 1, 2), homography)
    return np.linalg.norm(projected.reshape(-1, 2) - rgb_points, axis=1)


def homography_from_points(thermal_points, rgb_points, ransac_threshold=None):
    """``(H, inlier_mask)`` from >= 4 pairs; RANSAC when ``ransac_threshold`` (px) is given."""
    if len(thermal_points) < 4:
        raise CalibrationError(f'a homography needs at least 4 correspondences, got '
                               f'{len(thermal_points)}')
    if ransac_threshold is None:
        method, threshold = 0, 3.0  # threshold unused by least squares
    else:
        method, threshold = cv2.RANSAC, float(ransac_threshold)
    homography, inliers = cv2.findHomography(thermal_points, rgb_points, method, threshold)
    if homography is None:
        raise CalibrationError('cv2.findHomography failed: the points are degenerate '
                               '(collinear or repeated)')
    return homography, inliers.ravel().astype(bool)


def _build_parser():
    parser = argparse.ArgumentParser(
        prog='tesg-compute-homography',
        description='Compute the thermal -> RGB pixel homography and write the YAML file '
                    'that tesg_ros registration loads (mode: homography, homography_file).')
    commands = parser.add_subparsers(dest='command', required=True)

    points = commands.add_parser('points', help='from point correspondences')
    points.add_argument('points', help='CSV or YAML of thermal_x, thermal_y, rgb_x, rgb_y')
    points.add_argument('--ransac', nargs='?', type=float, const=3.0, default=None,
                        metavar='PIXELS', help='use RANSAC with this inlier threshold '
                        '(default 3 px when given without a value)')
    points.add_argument('--thermal-size', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        help='thermal image size; recorded so the node can check it')
    points.add_argument('--rgb-size', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        help='RGB image size; recorded so the node can check it')

    plane = commands.add_parser('plane', help='from calibrations, extrinsics and a plane')
    plane.add_argument('--thermal-calibration', required=True,
                       help='ROS camera_calibration YAML of the thermal camera')
    plane.add_argument('--rgb-calibration', required=True,
                       help='ROS camera_calibration YAML of the RGB camera')
    plane.add_argument('--translation', type=float, nargs=3, required=True,
                       metavar=('X', 'Y', 'Z'),
                       help='t in X_rgb = R X_thermal + t (metres, optical frames)')
    rotation = plane.add_mutually_exclusive_group(required=True)
    rotation.add_argument('--rotation', type=float, nargs=9, metavar='R',
                          help='R row-major (9 numbers)')
    rotation.add_argument('--quaternion', type=float, nargs=4,
                          metavar=('X', 'Y', 'Z', 'W'), help='R as quaternion x y z w')
    rotation.add_argument('--rpy', type=float, nargs=3, metavar=('ROLL', 'PITCH', 'YAW'),
                          help='R as fixed-axis roll pitch yaw (radians)')
    plane.add_argument('--plane-normal', type=float, nargs=3, required=True,
                       metavar=('NX', 'NY', 'NZ'),
                       help='plane normal in the thermal frame, pointing towards the camera')
    plane.add_argument('--plane-distance', type=float, required=True, metavar='D',
                       help='distance from the thermal camera to the plane (metres)')
    plane.add_argument('--points', help='optional check points (same format as above) for '
                       'the RMS error')
    for sub in (points, plane):
        sub.add_argument('-o', '--output', required=True, help='homography YAML to write')
    return parser


def main(argv=None):
    """Entry point; returns the process exit status (0 ok, 1 bad input, 2 usage)."""
    argv = strip_ros_args(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    try:
        metadata = {'method': args.command}
        thermal_size = rgb_size = None
        thermal_points = rgb_points = None
        if args.command == 'points':
            thermal_points, rgb_points = load_correspondences(args.points)
            homography, inliers = homography_from_points(thermal_points, rgb_points,
                                                         args.ransac)
            thermal_size, rgb_size = args.thermal_size, args.rgb_size
            metadata.update(ransac_threshold_px=args.ransac, num_points=int(len(inliers)),
                            num_inliers=int(inliers.sum()))
        else:
            thermal_model = CameraModel.from_yaml(args.thermal_calibration)
            rgb_model = CameraModel.from_yaml(args.rgb_calibration)
            thermal_model.require_intrinsics('plane homography', 'thermal camera')
            rgb_model.require_intrinsics('plane homography', 'rgb camera')
            rotation = rotation_from_spec(args.rotation, args.quaternion, args.rpy,
                                          prefix='command line')
            homography = plane_homography(thermal_model.K, rgb_model.K, rotation,
                                          args.translation, args.plane_normal,
                                          args.plane_distance)
            thermal_size, rgb_size = thermal_model.size, rgb_model.size
            metadata.update(translation=list(args.translation),
                            rotation=[float(v) for v in rotation.ravel()],
                            plane_normal=list(args.plane_normal),
                            plane_distance=args.plane_distance)
            if args.points:
                thermal_points, rgb_points = load_correspondences(args.points)
            inliers = None if thermal_points is None else np.ones(len(thermal_points), bool)
        if abs(homography[2, 2]) > 1e-12:
            homography = homography / homography[2, 2]
        if thermal_points is not None:
            errors = reprojection_errors(homography, thermal_points, rgb_points)
            rms_all = float(np.sqrt(np.mean(errors ** 2)))
            rms_inliers = float(np.sqrt(np.mean(errors[inliers] ** 2)))
            metadata.update(rms_error_px=rms_inliers, rms_error_all_px=rms_all)
            print(f'reprojection RMS error: {rms_inliers:.4f} px over {int(inliers.sum())} '
                  f'inliers ({rms_all:.4f} px over all {len(errors)} points)')
        else:
            print('reprojection RMS error: n/a (no check points; pass --points)')
        save_homography_file(args.output, homography, thermal_size, rgb_size, **metadata)
    except TesgError as exc:
        print(f'tesg-compute-homography: error: {exc}', file=sys.stderr)
        return 1
    print('H (thermal -> RGB pixels):')
    print(np.array2string(homography, precision=6, suppress_small=True))
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
