# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The node's parameter table, and config/fusion.yaml kept in step with it."""

import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.node_params import (defaults, flatten, load_params_file, PARAMETERS,
                                  PARAMETERS_BY_NAME, validate_overrides)
from tesg_ros.paths import share_path


def test_shipped_yaml_declares_exactly_the_defaults():
    assert load_params_file(share_path('config', 'fusion.yaml')) == defaults()


def test_every_default_passes_its_own_validation_and_has_a_description():
    for spec in PARAMETERS:
        assert spec.validate(spec.default) == spec.default, spec.name
        assert len(spec.description) > 10, spec.name
    assert len(PARAMETERS_BY_NAME) == len(PARAMETERS), 'duplicate parameter names'


@pytest.mark.parametrize('name, value, reason', [
    ('sync.slop', 0.9, 'above the maximum'),
    ('sync.slop', float('nan'), 'finite'),
    ('sync.queue_size', 0, 'below the minimum'),
    ('sync.queue_size', 2.0, 'integer'),
    ('output.encoding', 'mono8', 'not one of'),
    ('registration.mode', 'affine', 'not one of'),
    ('registration.plane.distance', 0.0, 'below the minimum'),
    ('registration.extrinsics.rpy', [0.0, 0.0], 'expected 3 numbers'),
    ('registration.homography', [1.0, 0.0], 'expected 9 numbers'),
    ('thermal.clahe', 'yes', 'bool'),
    ('no.such.parameter', 1, 'unknown parameter'),
])
def test_bad_values_are_rejected_with_the_reason(name, value, reason):
    with pytest.raises(ConfigError, match=reason):
        validate_overrides({name: value})


def test_integers_are_accepted_for_doubles_but_not_the_reverse():
    assert validate_overrides({'sync.slop': 0}) == {'sync.slop': 0.0}
    with pytest.raises(ConfigError):
        validate_overrides({'qos.input_depth': 5.0})


def test_params_file_with_wildcard_section_and_bad_value(tmp_path):
    good = tmp_path / 'good.yaml'
    good.write_text('/**:\n  ros__parameters:\n    use_sim_time: true\n    sync:\n'
                    '      slop: 0.02\n')
    assert load_params_file(good) == {'sync.slop': 0.02}
    bad = tmp_path / 'bad.yaml'
    bad.write_text('tesg_fusion:\n  ros__parameters:\n    model:\n      device: 7\n')
    with pytest.raises(ConfigError, match='model.device'):
        load_params_file(bad)
    empty = tmp_path / 'empty.yaml'
    empty.write_text('other_node:\n  ros__parameters: {}\n')
    with pytest.raises(ConfigError, match='ros__parameters'):
        load_params_file(empty)


def test_flatten_nested_sections():
    assert flatten({'a': {'b': {'c': 1}, 'd': 2}, 'e': 3}) == {'a.b.c': 1, 'a.d': 2, 'e': 3}


def test_auto_torch_threads_leave_one_cpu_for_ros():
    from tesg_ros.settings import resolve_torch_threads

    assert resolve_torch_threads(0, available=2) == 1
    assert resolve_torch_threads(0, available=16) == 15
    assert resolve_torch_threads(0, available=1) == 1
    assert resolve_torch_threads(3, available=2) == 3, 'an explicit count is kept'
    assert PARAMETERS_BY_NAME['model.threads'].default == 0
    assert PARAMETERS_BY_NAME['autostart'].default is True
    assert PARAMETERS_BY_NAME['autostart'].read_only


def test_reorder_window_reaches_the_builtin_policy_and_auto_selects_it():
    from tesg_ros.settings import make_synchronizer, resolve_sync_backend

    assert PARAMETERS_BY_NAME['sync.reorder_window'].default == 0.0
    assert resolve_sync_backend('auto', 0.0, 0.08) == 'builtin'
    with pytest.raises(ConfigError):
        resolve_sync_backend('message_filters', 0.0, 0.08)
    thermal_in, rgb_in, synchronizer = make_synchronizer('builtin', 13, 0.033, 0.0, 0.08)
    assert synchronizer.policy.reorder_window == pytest.approx(0.08)

    class Stamped:
        def __init__(self, ms):
            self.header = type('H', (), {})()
            self.header.stamp = type('S', (), {'sec': 0, 'nanosec': ms * 1_000_000})()

    pairs = []
    synchronizer.registerCallback(lambda thermal, rgb: pairs.append(
        (thermal.header.stamp.nanosec // 1_000_000, rgb.header.stamp.nanosec // 1_000_000)))
    # RGB 30 arrives before RGB 10 (reordered by 20 ms): within the window both still pair
    # with their own thermal frame instead of RGB 10 being rejected as late.
    for kind, ms in (('t', 10), ('t', 30), ('r', 30), ('r', 10), ('t', 150), ('r', 150),
                     ('t', 300), ('r', 300)):
        (thermal_in if kind == 't' else rgb_in).signalMessage(Stamped(ms))
    assert (10, 10) in pairs and (30, 30) in pairs


def test_settings_are_checked_without_ros_or_a_model():
    from tesg_ros.settings import check_engine_settings, cross_check

    params = defaults()
    assert cross_check(params) == ''
    check_engine_settings(params, device=False)
    assert 'percentile_low' in cross_check({**params, 'thermal.percentile_low': 99.0,
                                            'thermal.percentile_high': 1.0})
    singular = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match='registration.homography'):
        check_engine_settings({**params, 'registration.mode': 'homography',
                               'registration.homography': singular}, device=False)
