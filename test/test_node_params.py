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
    pytest.importorskip('rclpy')
    from tesg_ros.fusion_node import resolve_torch_threads

    assert resolve_torch_threads(0, available=2) == 1
    assert resolve_torch_threads(0, available=16) == 15
    assert resolve_torch_threads(0, available=1) == 1
    assert resolve_torch_threads(3, available=2) == 3, 'an explicit count is kept'
    assert PARAMETERS_BY_NAME['model.threads'].default == 0
    assert PARAMETERS_BY_NAME['autostart'].default is True
    assert PARAMETERS_BY_NAME['autostart'].read_only
