# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Pairing under reordering: the builtin policy beside ros2/message_filters' Python synchroniser.

Both inputs stamped periodically (+-1 ms jitter), each message delayed by its own uniform
latency in [0, spread] (so each topic arrives out of order). Prints pairs and mean |dt| for
message_filters' ApproximateTimeSynchronizer, the builtin with reorder_window 0 (in-order
assumption) and with reorder_window = spread, and the brute-force oracle of docs/pairing.md.
The builtin gets two far-future sentinels at the end so its last waiting frames are decided.

    . scripts/env.sh
    python bench/pairing_reorder.py --message-filters <ros2/message_filters>/src
"""

import argparse
import importlib.util
from pathlib import Path
import random
import statistics
import sys
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tesg_ros.sensor.pairing import (  # noqa: E402
    ApproximateTimePairingPolicy, NS_PER_S, RGB, THERMAL)

MS = 1_000_000
T0 = 1_700_000_000 * NS_PER_S


def streams(rng, thermal_hz, rgb_hz, seconds, spread_ms):
    events = []
    for input_index, rate in ((THERMAL, thermal_hz), (RGB, rgb_hz)):
        start = T0 + rng.randint(0, NS_PER_S // rate)
        for index in range(int(seconds * rate)):
            stamp = start + index * NS_PER_S // rate + rng.randint(-MS, MS)
            events.append((stamp + rng.randint(0, spread_ms * MS), input_index, stamp))
    events.sort()
    return [(input_index, stamp) for _, input_index, stamp in events]


def oracle(events, slop_ns):
    rgb = sorted(stamp for input_index, stamp in events if input_index == RGB)
    pairs, first_free = [], 0
    for thermal in sorted(stamp for input_index, stamp in events if input_index == THERMAL):
        candidates = rgb[first_free:]
        if not candidates:
            continue
        best = min(candidates, key=lambda stamp: (abs(stamp - thermal), stamp))
        if abs(best - thermal) <= slop_ns:
            pairs.append((thermal, best))
            first_free = rgb.index(best) + 1
    return pairs


def builtin(events, queue_size, slop, reorder_window):
    policy = ApproximateTimePairingPolicy(queue_size, slop, reorder_window=reorder_window)
    pairs = []
    for input_index, stamp in events:
        pairs += policy.add(input_index, stamp, None)
    far = max(stamp for _, stamp in events) + 2 * NS_PER_S
    pairs += policy.add_rgb(far, None) + policy.add_thermal(far + NS_PER_S // 2, None)
    return [(pair.thermal_stamp_ns, pair.rgb_stamp_ns) for pair in pairs
            if pair.thermal_stamp_ns < far]


def message_filters_pairs(module, events, queue_size, slop):
    from rclpy.time import Time
    inputs = [module.SimpleFilter(), module.SimpleFilter()]
    sync = module.ApproximateTimeSynchronizer(inputs, queue_size, slop)
    pairs = []
    sync.registerCallback(lambda thermal, rgb: pairs.append(
        (thermal.header.stamp.nanoseconds, rgb.header.stamp.nanoseconds)))
    for input_index, stamp in events:
        inputs[input_index].signalMessage(
            SimpleNamespace(header=SimpleNamespace(stamp=Time(nanoseconds=stamp))))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--message-filters', type=Path, required=True,
                        help="ros2/message_filters' src/ folder (holds message_filters/)")
    parser.add_argument('--thermal-hz', type=int, default=100)
    parser.add_argument('--rgb-hz', type=int, default=100)
    parser.add_argument('--spread-ms', type=int, default=80)
    parser.add_argument('--slop', type=float, default=0.033)
    parser.add_argument('--queue-size', type=int, default=13)
    parser.add_argument('--seconds', type=float, default=10)
    parser.add_argument('--seeds', type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location(
        'upstream_message_filters', args.message_filters / 'message_filters' / '__init__.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f'thermal {args.thermal_hz} Hz, RGB {args.rgb_hz} Hz, latency 0-{args.spread_ms} ms, '
          f'slop {args.slop} s, queue {args.queue_size}, {args.seconds} s, '
          f'seeds 0-{args.seeds - 1}')
    print('| seed | pairer | pairs | mean abs dt (ms) |\n|---|---|---|---|')
    for seed in range(args.seeds):
        events = streams(random.Random(seed), args.thermal_hz, args.rgb_hz, args.seconds,
                         args.spread_ms)
        results = {
            'message_filters': message_filters_pairs(module, events, args.queue_size, args.slop),
            'builtin, reorder_window 0': builtin(events, args.queue_size, args.slop, 0.0),
            f'builtin, reorder_window {args.spread_ms / 1000}': builtin(
                events, args.queue_size, args.slop, args.spread_ms / 1000),
            'oracle': oracle(events, round(args.slop * NS_PER_S)),
        }
        for name, pairs in results.items():
            mean = statistics.mean(abs(t - r) for t, r in pairs) / MS if pairs else float('nan')
            print(f'| {seed} | {name} | {len(pairs)} | {mean:.2f} |')


if __name__ == '__main__':
    main()
