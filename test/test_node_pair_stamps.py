# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The node's pair callback reads stamps with tesg_ros.sensor.pairing.stamp_to_ns: a pair
whose stamp is malformed (message_filters pairs it; the builtin policy refuses it earlier) is
counted as bad input with the reason, never a wrong pair interval or an exception in the
executor."""

import threading
from types import SimpleNamespace

import pytest

pytest.importorskip('rclpy')
fusion_node = pytest.importorskip('tesg_ros.ros.fusion_node')

from tesg_ros.mailbox import LatestMailbox  # noqa: E402
from tesg_ros.stats import RateMeter, RunningStats  # noqa: E402


def _message(sec, nanosec):
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec)))


def _node_state():
    state = SimpleNamespace(
        _lock=threading.Lock(), _counters={'pairs': 0, 'dropped_bad_input': 0},
        _rates={'pairs': RateMeter()}, _pair_dt=RunningStats(), _mailbox=LatestMailbox(),
        errors=[])
    state._count_drop = lambda key: fusion_node.FusionNode._count_drop(state, key)
    state._record_error = lambda kind, message: state.errors.append((kind, message))
    return state


def test_a_well_formed_pair_is_handed_over_with_its_interval():
    state = _node_state()
    fusion_node.FusionNode._on_pair(state, _message(10, 20_000_000), _message(10, 5_000_000))
    assert state._counters == {'pairs': 1, 'dropped_bad_input': 0}
    assert state._pair_dt.summary()['max'] == pytest.approx(0.015)
    assert state._mailbox.take(timeout=0.1) is not None
    assert state.errors == []


def test_a_pair_with_an_out_of_range_nanosec_is_bad_input_with_the_reason():
    state = _node_state()
    fusion_node.FusionNode._on_pair(state, _message(10, 1_500_000_000), _message(10, 0))
    assert state._counters == {'pairs': 1, 'dropped_bad_input': 1}
    assert state._pair_dt.summary() == {'count': 0}
    assert state._mailbox.take(timeout=0.1) is None
    assert state.errors and state.errors[0][0] == 'ConfigError'
    assert 'nanosec=1500000000' in state.errors[0][1]
