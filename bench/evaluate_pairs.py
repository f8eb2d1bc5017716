# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Score the fusion model on a folder of registered pairs, beside baselines and an ablation.

For each pair of ``DATASET/{ir,vi}``: the offline describer describes it (synchronously), the
thermal mask backend makes the masks, and the network fuses it four ways (masks + text, no
masks, no text, neither); the IR copy, the visible copy, the pixel average and a Laplacian
pyramid fusion are scored with the same metrics (``tesg_ros.metrics``, convention
``--convention``). Prints a Markdown table of the means and writes a montage.

    . scripts/env.sh && python bench/evaluate_pairs.py ../shared/data/tno25
"""

import argparse
from pathlib import Path
import sys
import time
from typing import NamedTuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REPORTED = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'CC')


def laplacian_pyramid_fusion(ir, vi, levels=4):
    """Classical fusion: average the base, keep the larger-magnitude detail per level."""
    def pyramid(image):
        gaussian = [image]
        for _ in range(levels):
            gaussian.append(cv2.pyrDown(gaussian[-1]))
        details = [g - cv2.pyrUp(n, dstsize=(g.shape[1], g.shape[0]))
                   for g, n in zip(gaussian[:-1], gaussian[1:])]
        return details, gaussian[-1]

    ir_details, ir_base = pyramid(ir.astype(np.float32))
    vi_details, vi_base = pyramid(vi.astype(np.float32))
    fused = (ir_base + vi_base) / 2
    for ir_d, vi_d in reversed(list(zip(ir_details, vi_details))):
        fused = cv2.pyrUp(fused, dstsize=(ir_d.shape[1], ir_d.shape[0]))
        fused += np.where(np.abs(ir_d) >= np.abs(vi_d), ir_d, vi_d)
    return np.clip(fused, 0, 255).round().astype(np.uint8)


class PairInputs(NamedTuple):
    """One pair as the network sees it: ``ir_unit`` / ``vis_y`` (H, W) float32 in [0, 1],
    ``ir`` (H, W) uint8, ``vi_bgr`` (H, W, 3) uint8, ``semantics`` (the SIG's description) and
    ``masks`` (M, H, W) float32 from the SIG's mask backend (not yet fitted to a network)."""

    ir_unit: np.ndarray
    ir: np.ndarray
    vi_bgr: np.ndarray
    vis_y: np.ndarray
    semantics: object
    masks: np.ndarray


def pair_inputs(sig, pair):
    """Read ``pair`` and describe it with ``sig`` (synchronously) -> :class:`PairInputs`."""
    from tesg_ros.network.colour import bgr_to_ycbcr_np, float_to_uint8, uint8_to_float
    from tesg_ros.training.dataset import read_ir, read_visible

    ir_unit = read_ir(pair.ir)
    vi_bgr = read_visible(pair.vi)
    semantics = sig.describe_now(vi_bgr, ir_unit)
    masks = np.asarray(sig.mask_backend(vi_bgr, ir_unit, semantics.phrases), np.float32)
    return PairInputs(ir_unit, float_to_uint8(ir_unit), vi_bgr,
                      bgr_to_ycbcr_np(uint8_to_float(vi_bgr))[..., 0], semantics, masks)


def fuse_pair(net, inputs, use_masks=True, use_text=True):
    """Fuse :class:`PairInputs` with ``net`` (CPU, float32) -> ``(fused_bgr, network_ms)``:
    the colour-restored (H, W, 3) uint8 image the metrics score and the forward time."""
    import torch

    from tesg_ros.engine import fit_masks
    from tesg_ros.network.colour import restore_colour_np

    masks = fit_masks(inputs.masks, net.config.mask_channels)
    text = (inputs.semantics.text_embedding if use_text
            else np.zeros(net.config.text_dim, np.float32))
    tensors = [torch.from_numpy(np.array(a, np.float32)) for a in (
        inputs.ir_unit[None, None], inputs.vis_y[None, None],
        (masks if use_masks else np.zeros_like(masks))[None], text[None])]
    start = time.perf_counter()
    with torch.inference_mode():
        fused_y = net(*tensors)[0, 0].numpy()
    network_ms = (time.perf_counter() - start) * 1e3
    return restore_colour_np(fused_y, inputs.vi_bgr), network_ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', default=str(ROOT / 'model' / 'tesg_fusion.safetensors'))
    parser.add_argument('--convention', default='common', choices=('common', 'vifb'))
    parser.add_argument('--montage', default='', help='write a montage PNG of a few pairs')
    args = parser.parse_args(argv)

    import torch

    from tesg_ros.metrics import evaluate, metric_units
    from tesg_ros.network.colour import restore_colour_np
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.training.dataset import find_pairs

    net = load_fusion_net(args.weights)
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    methods = ('TeSG (masks + text)', 'TeSG, no masks', 'TeSG, no text', 'TeSG, neither',
               'IR copy', 'visible copy', 'pixel average', 'Laplacian pyramid')
    scores = {m: [] for m in methods}
    network_ms = []
    montage_rows = []
    pairs = find_pairs(args.dataset)
    for index, pair in enumerate(pairs):
        inputs = pair_inputs(sig, pair)
        ir, vi_bgr, semantics = inputs.ir, inputs.vi_bgr, inputs.semantics
        fused_images = {}
        for name, use_masks, use_text in ((methods[0], True, True), (methods[1], False, True),
                                          (methods[2], True, False),
                                          (methods[3], False, False)):
            fused_images[name], forward_ms = fuse_pair(net, inputs, use_masks, use_text)
            if name == methods[0]:
                network_ms.append(forward_ms)
        grey_vi = cv2.cvtColor(vi_bgr, cv2.COLOR_BGR2GRAY)
        fused_images['IR copy'] = cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR)
        fused_images['visible copy'] = vi_bgr
        fused_images['pixel average'] = ((ir[..., None].astype(np.float32) + vi_bgr) / 2
                                         ).round().astype(np.uint8)
        fused_images['Laplacian pyramid'] = restore_colour_np(
            laplacian_pyramid_fusion(ir, grey_vi) / 255.0, vi_bgr)
        vi_rgb = vi_bgr[:, :, ::-1]
        for name, image in fused_images.items():
            scores[name].append(evaluate(ir, vi_rgb, image[:, :, ::-1],
                                         convention=args.convention))
        if args.montage and index < 4:
            tiles = [cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR), vi_bgr,
                     fused_images['pixel average'], fused_images['Laplacian pyramid'],
                     fused_images[methods[0]]]
            height = 200
            montage_rows.append(np.hstack([cv2.resize(
                t, (int(t.shape[1] * height / t.shape[0]), height)) for t in tiles]))
        print(f'[{index + 1}/{len(pairs)}] {pair.name}: {semantics.description}',
              file=sys.stderr)
    sig.stop()

    units = metric_units(args.convention)
    print(f'# {args.dataset}: {len(pairs)} pairs, metrics convention "{args.convention}" '
          f'(MI in {units.get("MI", "?")}, SSIM {units.get("SSIM", "?")})')
    print(f'- weights: {args.weights}; network forward (1 pair at a time, CPU, '
          f'{torch.get_num_threads()} threads): median {np.median(network_ms):.1f} ms')
    print(f'- command: python bench/evaluate_pairs.py {" ".join(sys.argv[1:])}')
    print()
    print('| method | ' + ' | '.join(REPORTED) + ' |')
    print('|---' * (len(REPORTED) + 1) + '|')
    for name in methods:
        means = [np.nanmean([s[key] for s in scores[name]]) for key in REPORTED]
        print(f'| {name} | ' + ' | '.join(f'{v:.3f}' if abs(v) < 10 else f'{v:.2f}'
                                          for v in means) + ' |')
    if args.montage:
        width = max(r.shape[1] for r in montage_rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in montage_rows]
        cv2.imwrite(args.montage, np.vstack(rows))
        print(f'\nmontage (IR | visible | average | Laplacian pyramid | TeSG): {args.montage}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
