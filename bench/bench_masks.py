# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame cost of the thermal mask backend (the node runs it on every fused frame).

Each thermal frame of ``DATASET/ir`` is resized to ``--size`` and the backend is timed on it
with the phrases of ``--phrases`` (default: the three kinds the offline describer writes), once
with the shipped settings, once without the completion of upright groups and once with the
warm cores only (no growth, no hole filling, edges from the working image). Prints p50/p90 per
variant, the mean area of the union of the masks (>= 0.5) and the mean mask value 1, 2, 3 and
4 px outside it (how far the soft edge reaches past the objects). ``--size native`` keeps each
frame's own size.

    . scripts/env.sh && python bench/bench_masks.py ../shared/data/tno25 --size 640x480
"""

import argparse
from dataclasses import replace
from pathlib import Path
import sys
import time

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHRASES = ('a day scene', 'two warm person-shaped objects in the centre',
                   'one small hot spot in the centre')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/')
    parser.add_argument('--size', default='640x480',
                        help='WIDTHxHEIGHT or native (default %(default)s)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per frame')
    parser.add_argument('--phrases', nargs='+', default=list(DEFAULT_PHRASES))
    args = parser.parse_args(argv)

    from tesg_ros.sig.masks import (ThermalMaskBackend, ThermalSegmentationParams,
                                    WARM_CORES_ONLY)
    from tesg_ros.training.dataset import find_pairs, read_ir

    native = args.size.lower() == 'native'
    if not native:
        width, height = (int(v) for v in args.size.lower().split('x'))
    shipped = ThermalSegmentationParams()
    variants = {
        'shipped (grown, upright groups completed, full-resolution edges)':
            ThermalMaskBackend(shipped),
        'grown, full-resolution edges, no upright completion': ThermalMaskBackend(replace(
            shipped, complete_upright=False)),
        'warm cores only': ThermalMaskBackend(WARM_CORES_ONLY),
    }
    frames = [read_ir(pair.ir) for pair in find_pairs(args.dataset)]
    if not native:
        frames = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                  for frame in frames]
    size = 'native size' if native else f'{width}x{height}'
    print(f'# {args.dataset}: {len(frames)} frames at {size}, {len(args.phrases)} '
          f'phrases, {args.repeats} runs each, cv2 threads {cv2.getNumThreads()}')
    print('| masks | p50 (ms) | p90 (ms) | mean area (mask >= 0.5) | mask 1 / 2 / 3 / 4 px '
          'outside |')
    print('|---|---|---|---|---|')
    for name, backend in variants.items():
        backend(None, frames[0], args.phrases)  # warm-up
        times, areas, outside = [], [], []
        for frame in frames:
            for _ in range(args.repeats):
                start = time.perf_counter()
                masks = backend(None, frame, args.phrases)
                times.append(1000.0 * (time.perf_counter() - start))
            union = masks.max(axis=0) if len(masks) else np.zeros(frame.shape, np.float32)
            areas.append(float((union >= 0.5).mean()))
            if (union >= 0.5).any():
                outside.append(edge_profile(union))
        print(f'| {name} | {np.percentile(times, 50):.2f} | {np.percentile(times, 90):.2f} | '
              f'{100 * np.mean(areas):.2f} % | '
              + ' / '.join(f'{v:.2f}' for v in np.nanmean(outside, axis=0)) + ' |')
    return 0


def edge_profile(union, distances=(1, 2, 3, 4)):
    """Mean of ``union`` (H x W soft mask) over the pixels at each Euclidean distance (+-0.5
    px) outside its >= 0.5 region; NaN where there is no such pixel."""
    distance = cv2.distanceTransform((union < 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    values = []
    for d in distances:
        ring = union[(distance > d - 0.5) & (distance <= d + 0.5)]
        values.append(float(ring.mean()) if ring.size else float('nan'))
    return values


if __name__ == '__main__':
    sys.exit(main())
