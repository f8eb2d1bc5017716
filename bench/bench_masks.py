# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame cost of the thermal mask backend (the node runs it on every fused frame).

Each thermal frame of ``DATASET/ir`` is resized to ``--size`` and the backend is timed on it
with the phrases of ``--phrases`` (default: the three kinds the offline describer writes), once
with the shipped settings and once with the warm cores only (no growth, no hole filling, edges
from the working image: the masks up to session 4). Prints p50/p90 per variant and the mean
mask area.

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
    parser.add_argument('--size', default='640x480', help='WIDTHxHEIGHT (default %(default)s)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per frame')
    parser.add_argument('--phrases', nargs='+', default=list(DEFAULT_PHRASES))
    args = parser.parse_args(argv)

    from tesg_ros.sig.masks import ThermalMaskBackend, ThermalSegmentationParams
    from tesg_ros.training.dataset import find_pairs, read_ir

    width, height = (int(v) for v in args.size.lower().split('x'))
    shipped = ThermalSegmentationParams()
    variants = {
        'shipped (grown, full-resolution edges)': ThermalMaskBackend(shipped),
        'warm cores only (until session 4)': ThermalMaskBackend(replace(
            shipped, grow_ratio=1.0, fill_holes=False, full_resolution_edges=False)),
    }
    frames = [cv2.resize(read_ir(pair.ir), (width, height), interpolation=cv2.INTER_AREA)
              for pair in find_pairs(args.dataset)]
    print(f'# {args.dataset}: {len(frames)} frames at {width}x{height}, {len(args.phrases)} '
          f'phrases, {args.repeats} runs each, cv2 threads {cv2.getNumThreads()}')
    print('| masks | p50 (ms) | p90 (ms) | mean area (mask >= 0.5) |')
    print('|---|---|---|---|')
    for name, backend in variants.items():
        backend(None, frames[0], args.phrases)  # warm-up
        times, areas = [], []
        for frame in frames:
            for _ in range(args.repeats):
                start = time.perf_counter()
                masks = backend(None, frame, args.phrases)
                times.append(1000.0 * (time.perf_counter() - start))
            areas.append(float((masks.max(axis=0) >= 0.5).mean()) if len(masks) else 0.0)
        print(f'| {name} | {np.percentile(times, 50):.2f} | {np.percentile(times, 90):.2f} | '
              f'{100 * np.mean(areas):.2f} % |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
