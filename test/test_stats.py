# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Rate meter and running statistics used by the node's diagnostics."""

import pytest

from tesg_ros.stats import RateMeter, RunningStats


def test_rate_of_a_steady_30_hz_stream():
    meter = RateMeter(window=2.0)
    for i in range(300):
        meter.tick(i / 30.0)
    assert meter.rate(299 / 30.0) == pytest.approx(30.0, rel=0.02)


def test_rate_decays_to_zero_when_a_stream_stops():
    meter = RateMeter(window=2.0)
    for i in range(60):
        meter.tick(i / 30.0)
    assert meter.rate(2.0) > 20.0
    assert meter.rate(10.0) == 0.0


def test_running_stats_summary_and_window():
    stats = RunningStats(size=100)
    assert stats.summary() == {'count': 0}
    for value in range(1, 201):
        stats.add(value)
    summary = stats.summary()
    assert summary['count'] == 200
    assert summary['min'] == 101 and summary['max'] == 200
    assert summary['p50'] == pytest.approx(150.5)
    assert summary['mean'] == pytest.approx(150.5)
