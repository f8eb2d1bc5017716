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


def test_counted_percentiles_counts_and_reports_the_tail():
    from tesg_ros.stats import counted_percentiles
    assert counted_percentiles([]) == {'count': 0}
    summary = counted_percentiles(range(1, 101))
    assert summary['count'] == 100 and summary['max'] == 100.0 and summary['mean'] == 50.5
    assert summary['p50'] == 50.5 and abs(summary['p99'] - 99.01) < 1e-9


def test_percentiles_or_nan_keeps_its_keys_when_empty():
    import math
    from tesg_ros.stats import percentiles_or_nan
    empty = percentiles_or_nan([])
    assert list(empty) == ['p50', 'p90', 'max', 'mean']
    assert all(math.isnan(value) for value in empty.values())
    assert percentiles_or_nan([1.0, 3.0]) == {'p50': 2.0, 'p90': 2.8, 'max': 3.0, 'mean': 2.0}
