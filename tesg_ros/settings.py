# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The node's settings resolved and checked without ROS: pairing backend, torch threads and
the engine's settings, so a bad value is refused before any model loads.

The parameter table itself is :mod:`tesg_ros.node_params`; the engine's settings object is
:class:`tesg_ros.engine.EngineSettings`.
"""

import os

from tesg_ros.engine import registration_config, resolve_device, thermal_config
from tesg_ros.errors import CalibrationError, ConfigError


def resolve_sync_backend(requested, thermal_time_offset, reorder_window=0.0):
    """Pick the pairing implementation: 'message_filters' or 'builtin'.

    'auto' prefers message_filters when importable, except with a non-zero thermal time
    offset or reorder window, which only the builtin policy supports.
    """
    if requested == 'builtin':
        return 'builtin'
    try:
        import message_filters  # noqa: F401
    except ImportError:
        if requested == 'message_filters':
            raise ConfigError('sync.backend: message_filters is not importable here; install '
                              'ros-<distro>-message-filters or use builtin') from None
        return 'builtin'
    if thermal_time_offset != 0.0:
        if requested == 'message_filters':
            raise ConfigError('thermal.time_offset needs sync.backend builtin or auto: '
                              'message_filters has no per-input offset')
        return 'builtin'
    if reorder_window != 0.0:
        if requested == 'message_filters':
            raise ConfigError('sync.reorder_window needs sync.backend builtin or auto: '
                              'message_filters has no reorder window')
        return 'builtin'
    return 'message_filters'


def make_synchronizer(backend, queue_size, slop, thermal_time_offset, reorder_window=0.0):
    """Return ``(thermal_input, rgb_input, synchronizer)`` for a resolved backend.

    The inputs are filters the subscription callbacks feed with ``signalMessage(msg)``.
    """
    if backend == 'message_filters':
        import message_filters
        inputs = [message_filters.SimpleFilter(), message_filters.SimpleFilter()]
        synchronizer = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
    else:
        from tesg_ros.sensor.pairing import ApproximateTimeSynchronizer, InputFilter
        inputs = [InputFilter(), InputFilter()]
        synchronizer = ApproximateTimeSynchronizer(inputs, queue_size, slop,
                                                   thermal_time_offset=thermal_time_offset,
                                                   reorder_window=reorder_window)
    return inputs[0], inputs[1], synchronizer


def resolve_torch_threads(requested, available=None):
    """torch CPU threads for ``model.threads``: itself when > 0; for 0 (auto) one fewer than the
    CPUs this process may run on, at least 1.

    The spare core keeps the executor, DDS and camera drivers from pre-empting an OpenMP
    thread: torch's spinning barriers then stall every parallel op, and on 2 cores the
    network ran 17x slower with 2 threads than with 1 while one other process was busy
    (docs/benchmarks.md). ``available`` overrides the CPU count (tests).
    """
    if requested > 0:
        return requested
    if available is None:
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            available = os.cpu_count() or 1
    return max(1, available - 1)


def cross_check(params):
    """The reason a combination of parameter values is invalid, or '' when it is fine."""
    if params['thermal.percentile_low'] >= params['thermal.percentile_high']:
        return 'thermal.percentile_low must be below thermal.percentile_high'
    if params['thermal.fixed_low'] >= params['thermal.fixed_high']:
        return 'thermal.fixed_low must be below thermal.fixed_high'
    if not any(params.get('registration.plane.normal', (1.0,))):
        return 'registration.plane.normal must be a non-zero vector'
    return ''


def check_engine_settings(params, device=True):
    """Raise ConfigError for settings the engine would reject, without loading the model.

    The registration maps themselves need the image sizes and are built at the first pair.
    """
    from tesg_ros.sensor.registration import (check_invertible, load_homography_file,
                                              resolve_config_path)
    from tesg_ros.sensor.thermal import ThermalNormalizer

    ThermalNormalizer.from_config(thermal_config(params))
    if device and params.get('model.backend', 'torch') == 'torch':
        resolve_device(params['model.device'], params['model.half'])  # ONNX Runtime falls back
    registration = registration_config(params)
    check_plane_settings(params, registration)
    if registration.get('homography_file'):
        load_homography_file(resolve_config_path(registration['homography_file'],
                                                 'registration.file'))
    elif registration['mode'] == 'homography':
        try:  # the registration's own test, so a value passes here iff it builds later
            check_invertible(registration['homography'])
        except CalibrationError as error:
            raise ConfigError(f'registration.homography: {error}') from None


def check_plane_settings(params, registration):
    """ConfigError for a plane configuration that cannot work, before any image arrives."""
    if registration['mode'] != 'plane':
        return
    from tesg_ros.sensor.registration import rotation_from_spec

    if params['registration.file']:
        raise ConfigError('registration.file is a homography; it is not used with '
                          'registration.mode plane (set one or the other)')
    if params['registration.extrinsics.source'] == 'tf' and not tf2_importable():
        raise ConfigError('registration.extrinsics.source tf needs tf2_ros, which is not '
                          'importable here; install ros-<distro>-tf2-ros or use parameters')
    if not any(params['registration.plane.normal']):
        raise ConfigError('registration.plane.normal must be a non-zero vector')
    rotation_from_spec(rpy=registration['extrinsics']['rpy'],
                       prefix='registration.extrinsics')


def tf2_importable():
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def extrinsics_source(params):
    """'tf' or 'parameters' for plane registration, '' in the other modes."""
    if params['registration.mode'] != 'plane':
        return ''
    source = params['registration.extrinsics.source']
    if source == 'auto':
        return 'tf' if tf2_importable() else 'parameters'
    return source
