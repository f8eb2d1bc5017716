# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Halo/noise check: how far fused images leave the range spanned by their two sources.

For each pair of ``DATASET/{ir,vi}`` and each ``--weights`` file, the network fuses the pair
the way ``bench/evaluate_pairs.py`` scores its "TeSG (masks + text)" row (offline describer,
thermal masks, colour-restored output) and, on the 0..255 luma, this script measures

    out_of_range = relu(min(I, V) - F) + relu(F - max(I, V))      (per pixel, grey levels)

A fused value darker than both sources is an undershoot (the dark rim, or halo, beside hot
targets); one brighter than both is an overshoot (ringing, noise). Prints one line per
weights file (means over pairs of per-pair means) so models can be compared, plus the
Laplacian pyramid fusion of ``evaluate_pairs`` for scale.

    . scripts/env.sh && python bench/halo_check.py ../shared/data/tno25 \\
        --weights model/tesg_fusion.safetensors out/train_e9/tesg_fusion.safetensors
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

from tesg_ros.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_pairs import (fuse_pair, laplacian_pyramid_fusion,  # noqa: E402 (sibling)
                            pair_inputs)

HALO_THRESHOLD = 10.0   # grey levels; a step this large outside both sources is visible


def out_of_range(fused, ir, visible):
    """Per-pixel distance of ``fused`` outside ``[min(ir, visible), max(ir, visible)]``.

    All three ``(H, W)`` arrays on the same scale (here 0..255 luma, any numeric dtype).
    Returns ``(undershoot, overshoot)``, two ``(H, W)`` float32 arrays >= 0, at most one of
    them non-zero at each pixel: ``relu(min(I, V) - F)`` and ``relu(F - max(I, V))``.
    """
    fused, ir, visible = (np.asarray(a, np.float32) for a in (fused, ir, visible))
    if not fused.shape == ir.shape == visible.shape or fused.ndim != 2:
        raise ConfigError(f'expected three (H, W) arrays of one shape, got {fused.shape}, '
                          f'{ir.shape}, {visible.shape}')
    undershoot = np.maximum(np.minimum(ir, visible) - fused, 0.0)
    overshoot = np.maximum(fused - np.maximum(ir, visible), 0.0)
    return undershoot, overshoot


def halo_scores(fused, ir, visible, threshold=HALO_THRESHOLD):
    """Scalar halo scores of one image, see :func:`out_of_range` for the inputs.

    Returns a dict: ``out`` mean of undershoot + overshoot (grey levels), ``under`` and
    ``over`` its two parts, ``share`` the fraction of pixels whose distance exceeds
    ``threshold`` (0..1).
    """
    undershoot, overshoot = out_of_range(fused, ir, visible)
    distance = undershoot + overshoot
    return {'out': float(distance.mean()), 'under': float(undershoot.mean()),
            'over': float(overshoot.mean()), 'share': float((distance > threshold).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', nargs='+',
                        default=[str(ROOT / 'model' / 'tesg_fusion.safetensors')],
                        help='one or more fusion weights files; one output line each')
    parser.add_argument('--threshold', type=float, default=HALO_THRESHOLD,
                        help='grey levels for the share column (default %(default)s)')
    args = parser.parse_args(argv)

    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.training.dataset import find_pairs

    nets = {path: load_fusion_net(path) for path in args.weights}
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    scores = {name: [] for name in [*args.weights, 'Laplacian pyramid']}
    pairs = find_pairs(args.dataset)
    try:
        for index, pair in enumerate(pairs):
            # The same inputs and output as evaluate_pairs.py's "TeSG (masks + text)" row.
            inputs = pair_inputs(sig, pair)
            ir = inputs.ir
            grey_vi = cv2.cvtColor(inputs.vi_bgr, cv2.COLOR_BGR2GRAY)
            for path, net in nets.items():
                fused_bgr, _ = fuse_pair(net, inputs)
                scores[path].append(halo_scores(
                    cv2.cvtColor(fused_bgr, cv2.COLOR_BGR2GRAY), ir, grey_vi, args.threshold))
            pyramid = laplacian_pyramid_fusion(ir, grey_vi)
            scores['Laplacian pyramid'].append(halo_scores(pyramid, ir, grey_vi,
                                                           args.threshold))
            print(f'[{index + 1}/{len(pairs)}] {pair.name}', file=sys.stderr)
    finally:
        sig.stop()

    print(f'# {args.dataset}: {len(pairs)} pairs; out = mean relu(min(I,V) - F) + '
          f'relu(F - max(I,V)) on 0..255 luma (under + over); share = pixels > '
          f'{args.threshold:g} grey levels')
    print('| weights | out | under | over | share > %g |' % args.threshold)
    print('|---|---|---|---|---|')
    for name, rows in scores.items():
        means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        print(f'| {name} | {means["out"]:.3f} | {means["under"]:.3f} | {means["over"]:.3f} '
              f'| {100 * means["share"]:.2f} % |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
