# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Small statistics: thread-safe event rates and running summaries for diagnostics, and the
percentile summaries of the replay and evaluation reports."""

from collections import deque
import threading

import numpy as np


class RateMeter:
    """Event rate over a sliding time window (seconds, monotonic clock)."""

    def __init__(self, window=5.0):
        self._window = window
        self._times = deque()
        self._lock = threading.Lock()
        self.last = None  # time of the latest event (kept past the window)

    def tick(self, now):
        with self._lock:
            self._times.append(now)
            self.last = now
            self._expire(now)

    def rate(self, now):
        """Events per second over the window ending at ``now`` (0 with fewer than 2 events)."""
        with self._lock:
            self._expire(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _expire(self, now):
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()


class RunningStats:
    """Keep the last ``size`` samples; summarise as count, mean, p50, p99, max."""

    def __init__(self, size=1000):
        self._samples = deque(maxlen=size)
        self._count = 0
        self._lock = threading.Lock()

    def add(self, value):
        with self._lock:
            self._samples.append(float(value))
            self._count += 1

    def summary(self):
        with self._lock:
            samples = np.array(self._samples, dtype=np.float64)
            count = self._count
        if samples.size == 0:
            return {'count': 0}
        p50, p99 = np.percentile(samples, [50, 99])
        return {'count': count, 'mean': float(samples.mean()), 'p50': float(p50),
                'p99': float(p99), 'min': float(samples.min()), 'max': float(samples.max())}


# Two summaries, because two report formats depend on them: the replay report counts samples
# and reports p99 (a latency tail), the evaluation report keeps one key set even when empty.
def counted_percentiles(values):
    """``{'count', 'mean', 'p50', 'p90', 'p99', 'max'}`` of ``values`` (floats); ``{'count': 0}``
    when empty."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {'count': 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {'count': int(values.size), 'mean': float(values.mean()), 'p50': float(p50),
            'p90': float(p90), 'p99': float(p99), 'max': float(values.max())}


def percentiles_or_nan(values):
    """``{'p50', 'p90', 'max', 'mean'}`` of a list of numbers; every value NaN when empty."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {'p50': float('nan'), 'p90': float('nan'), 'max': float('nan'),
                'mean': float('nan')}
    return {'p50': float(np.percentile(array, 50)), 'p90': float(np.percentile(array, 90)),
            'max': float(array.max()), 'mean': float(array.mean())}
