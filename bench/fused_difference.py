# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""How far one model's fused images are from another's (e.g. a distilled student from its
teacher), pair by pair, on the luma of the PNGs ``bench/fuse_models.py`` writes.

Prints a Markdown table per dataset folder present in both: mean |difference|, its 99th
percentile and the maximum (grey levels 0..255), averaged over the pairs, plus the worst pair::

    python bench/fuse_models.py ../shared/data/tno25 ../shared/data/llvip32_night \\
        --model teacher=model/tesg_fusion.safetensors \\
        --model fast=model/tesg_fusion_fast.safetensors --out out/fused_distill
    python bench/fused_difference.py out/fused_distill/teacher out/fused_distill/fast
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np


def luma(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f'cannot read {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)


def compare(reference_dir, other_dir):
    """Rows ``(pair, mean, p99, max)`` for the PNGs present in both folders."""
    rows = []
    for path in sorted(Path(reference_dir).glob('*.png')):
        other = Path(other_dir) / path.name
        if not other.is_file():
            continue
        first, second = luma(path), luma(other)
        if first.shape != second.shape:
            raise SystemExit(f'{path} and {other} differ in size')
        difference = np.abs(first - second)
        rows.append((path.stem, float(difference.mean()), float(np.percentile(difference, 99)),
                     float(difference.max())))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('reference', help='OUT/<label> of fuse_models.py (e.g. the teacher)')
    parser.add_argument('other', help='OUT/<label> to compare with it')
    args = parser.parse_args(argv)
    datasets = sorted(p.name for p in Path(args.reference).iterdir()
                      if p.is_dir() and (Path(args.other) / p.name).is_dir())
    if not datasets:
        raise SystemExit(f'no dataset folder in both {args.reference} and {args.other}')
    print('| dataset | pairs | mean abs diff | p99 abs diff | max abs diff | worst pair (mean) |')
    print('|---|---|---|---|---|---|')
    for name in datasets:
        rows = compare(Path(args.reference) / name, Path(args.other) / name)
        if not rows:
            continue
        worst = max(rows, key=lambda row: row[1])
        means = np.mean([row[1:] for row in rows], axis=0)
        print(f'| {name} | {len(rows)} | {means[0]:.2f} | {means[1]:.1f} | '
              f'{max(row[3] for row in rows):.0f} (mean of maxima {means[2]:.0f}) | '
              f'{worst[0]} ({worst[1]:.2f}) |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
