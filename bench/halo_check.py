# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Halo/noise check: how far fused images leave the range spanned by their two sources.

For each pair of ``DATASET/{ir,vi}`` and each ``--weights`` file, the network fuses the pair
the way ``bench/evaluate_pairs.py`` scores its "TeSG (masks + text)" row (offline describer,
thermal masks, colour-restored output) and, on the 0..255 luma, this script measures

    out_of_range = relu(min(I, V) - F) + relu(F - max(I, V))      (per pixel, grey levels)

A fused value darker than both sources is an undershoot (the dark rim, or halo, beside hot
targets); one brighter than both is an overshoot (ringing, noise).

A glow or rim can also lie between the two sources: the infrared share that a highlighted
target gets spills past its edge. ``edge spill`` measures that with the effective IR share
``s = (F - V) / (I - V)`` (clipped to [0, 1], only where the sources differ by >= 10 levels):
the mean of ``s`` in a band 1-4 px outside the SIG masks minus its mean 8-16 px outside. 0 means
the fusion just beside a target is the fusion of its wider surroundings; positive, that the IR
leaks into the band (0.3 = 30 percentage points more IR right beside the targets).

Prints one line per weights file (means over pairs of per-pair means; edge spill over the
pairs with masks) so models can be compared, plus the Laplacian pyramid fusion of
``evaluate_pairs`` for scale.

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
NEAR_BAND = (1.0, 4.0)  # px outside the masks: where a spilled target weight shows
FAR_BAND = (8.0, 16.0)  # px outside the masks: the target's surroundings, for reference
MIN_SOURCE_DIFFERENCE = 10.0  # grey levels; below this the IR share is undefined (noise)


def _images(fused, ir, visible):
    """The three images as float32 ``(H, W)`` arrays of one shape, or ConfigError."""
    fused, ir, visible = (np.asarray(a, np.float32) for a in (fused, ir, visible))
    if not fused.shape == ir.shape == visible.shape or fused.ndim != 2:
        raise ConfigError(f'expected three (H, W) arrays of one shape, got {fused.shape}, '
                          f'{ir.shape}, {visible.shape}')
    return fused, ir, visible


def out_of_range(fused, ir, visible):
    """Per-pixel distance of ``fused`` outside ``[min(ir, visible), max(ir, visible)]``.

    All three ``(H, W)`` arrays on the same scale (here 0..255 luma, any numeric dtype).
    Returns ``(undershoot, overshoot)``, two ``(H, W)`` float32 arrays >= 0, at most one of
    them non-zero at each pixel: ``relu(min(I, V) - F)`` and ``relu(F - max(I, V))``.
    """
    fused, ir, visible = _images(fused, ir, visible)
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


def effective_ir_share(fused, ir, visible, min_difference=MIN_SOURCE_DIFFERENCE):
    """Per-pixel IR share ``(F - V) / (I - V)`` clipped to [0, 1], NaN where ``|I - V|`` is
    below ``min_difference``. Three ``(H, W)`` arrays on one scale -> ``(H, W)`` float32."""
    fused, ir, visible = _images(fused, ir, visible)
    difference = ir - visible
    defined = np.abs(difference) >= min_difference
    share = np.full(fused.shape, np.nan, np.float32)
    share[defined] = np.clip((fused - visible)[defined] / difference[defined], 0.0, 1.0)
    return share


def edge_spill(fused, ir, visible, masks, near=NEAR_BAND, far=FAR_BAND,
               min_difference=MIN_SOURCE_DIFFERENCE):
    """How much more IR the fusion takes just outside the targets than around them.

    ``fused``, ``ir``, ``visible``: ``(H, W)`` on one scale; ``masks``: ``(M, H, W)`` or
    ``(H, W)`` soft masks in [0, 1], a target being their union >= 0.5. Returns
    ``mean(share in near band) - mean(share in far band)`` (bands in px of Euclidean distance
    outside the targets, both ends included), or NaN when there is no target or a band has no
    pixel where the IR share is defined.
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != np.shape(fused):
        raise ConfigError(f'masks {masks.shape} do not match the image {np.shape(fused)}')
    if masks.shape[0] == 0:
        return float('nan')
    union = masks.max(axis=0)
    inside = union >= 0.5
    if not inside.any():
        return float('nan')
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    share = effective_ir_share(fused, ir, visible, min_difference)
    means = []
    for low, high in (near, far):
        band = share[(distance >= low) & (distance <= high)]
        band = band[np.isfinite(band)]
        if band.size == 0:
            return float('nan')
        means.append(float(band.mean()))
    return means[0] - means[1]


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
            fused = {path: cv2.cvtColor(fuse_pair(net, inputs)[0], cv2.COLOR_BGR2GRAY)
                     for path, net in nets.items()}
            fused['Laplacian pyramid'] = laplacian_pyramid_fusion(ir, grey_vi)
            for name, image in fused.items():
                row = halo_scores(image, ir, grey_vi, args.threshold)
                row['spill'] = edge_spill(image, ir, grey_vi, inputs.masks)
                scores[name].append(row)
            print(f'[{index + 1}/{len(pairs)}] {pair.name}', file=sys.stderr)
    finally:
        sig.stop()

    print(f'# {args.dataset}: {len(pairs)} pairs; out = mean relu(min(I,V) - F) + '
          f'relu(F - max(I,V)) on 0..255 luma (under + over); share = pixels > '
          f'{args.threshold:g} grey levels; edge spill = IR share {NEAR_BAND[0]:g}-'
          f'{NEAR_BAND[1]:g} px outside the masks minus {FAR_BAND[0]:g}-{FAR_BAND[1]:g} px '
          f'outside')
    print('| weights | out | under | over | share > %g | edge spill |' % args.threshold)
    print('|---|---|---|---|---|---|')
    for name, rows in scores.items():
        means = {key: float(np.nanmean([row[key] for row in rows])) if any(
            np.isfinite(row[key]) for row in rows) else float('nan') for key in rows[0]}
        print(f'| {name} | {means["out"]:.3f} | {means["under"]:.3f} | {means["over"]:.3f} '
              f'| {100 * means["share"]:.2f} % | {means["spill"]:+.3f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
