# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Resolution and shift agreement of the fusion model on real pairs, beside reference fusions.

For each pair given as ``DATASET:NAME`` the model (offline describer, thermal masks, network,
all computed on the input it is given, as the node does) fuses the pair at full size and at
half size (``tesg_ros.metrics.resolution_check``: the full-size result reduced to half size is
compared with the half-size fusion), and with the input cropped by a few pixels at the top left
(``tesg_ros.metrics.shift_check``). The pixel average (must agree exactly), a Laplacian pyramid
and a blocky weight map on a fixed 32-pixel grid (must fail) are checked the same way.
Prints a Markdown table of the agreement (grey levels; fused luma, 0..255).

    . scripts/env.sh && python bench/resolution_check.py ../shared/data/tno25:07 \\
        ../shared/data/llvip32_night:010001
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_pairs import PairInputs, fuse_pair, laplacian_pyramid_fusion  # noqa: E402


def blocky_fusion(ir, vi, block=32):
    """A coarse weight map on a fixed pixel grid (block means of IR > visible), nearest-upsampled:
    the artefact shape the checks exist to catch."""
    ir = np.asarray(ir, np.float64)
    vi = np.asarray(vi, np.float64)
    height, width = ir.shape
    weight = cv2.resize((ir > vi).astype(np.float32),
                        (max(1, width // block), max(1, height // block)),
                        interpolation=cv2.INTER_AREA)
    weight = cv2.resize(weight, (width, height), interpolation=cv2.INTER_NEAREST)
    return weight * ir + (1 - weight) * vi


def model_fusion(net, sig):
    """``fuse(ir, vi_bgr) -> fused luma`` through the whole model path on the given arrays."""
    from tesg_ros.network.colour import bgr_to_ycbcr_np, uint8_to_float

    def fuse(ir, vi_bgr):
        ir8 = np.clip(np.round(ir), 0, 255).astype(np.uint8)
        vi8 = np.clip(np.round(vi_bgr), 0, 255).astype(np.uint8)
        ir_unit = ir8.astype(np.float32) / 255.0
        semantics = sig.describe_now(vi8, ir_unit)
        masks = np.asarray(sig.mask_backend(vi8, ir_unit, semantics.phrases), np.float32)
        inputs = PairInputs(ir_unit, ir8, vi8, bgr_to_ycbcr_np(uint8_to_float(vi8))[..., 0],
                            semantics, masks)
        fused_bgr, _ = fuse_pair(net, inputs)
        return cv2.cvtColor(fused_bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)

    return fuse


def grey_only(fuse):
    """Adapt a fusion of grey (ir, vi) planes to the (ir, vi_bgr) calling convention."""
    def wrapped(ir, vi_bgr):
        vi = cv2.cvtColor(np.asarray(vi_bgr, np.float32), cv2.COLOR_BGR2GRAY)
        return fuse(np.asarray(ir, np.float64), vi.astype(np.float64))
    return wrapped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('pairs', nargs='+', help='DATASET_FOLDER:PAIR_NAME')
    parser.add_argument('--weights', default=str(ROOT / 'model' / 'tesg_fusion.safetensors'))
    parser.add_argument('--shift', default='5,3', help='rows,cols cropped (default %(default)s)')
    args = parser.parse_args(argv)
    shift = tuple(int(v) for v in args.shift.split(','))

    from tesg_ros import metrics
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.training.dataset import find_pairs

    net = load_fusion_net(args.weights)
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    methods = {
        'TeSG model': model_fusion(net, sig),
        'pixel average': grey_only(lambda i, v: (i + v) / 2),
        'Laplacian pyramid': grey_only(lambda i, v: laplacian_pyramid_fusion(
            np.clip(np.round(i), 0, 255).astype(np.uint8),
            np.clip(np.round(v), 0, 255).astype(np.uint8)).astype(np.float64)),
        'blocky weight map (32 px grid)': grey_only(blocky_fusion),
    }
    print(f'- command: python bench/resolution_check.py {" ".join(argv or sys.argv[1:])}')
    print('- resolution: full-size fusion reduced to half size vs fusion of the half-size '
          f'pair; shift: input cropped by {shift[0]},{shift[1]} px (rows, cols) vs the full '
          'fusion cropped the same way. Grey levels of the fused luma (0..255); max_block_mae: '
          'worst 16x16-block mean |difference|.')
    print()
    print('| pair | size | method | resolution MAE | PSNR dB | max block MAE | '
          'shift MAE | PSNR dB | max block MAE |')
    print('|---|---|---|---|---|---|---|---|---|')
    try:
        for spec in args.pairs:
            folder, _, name = spec.rpartition(':')
            pair = next((p for p in find_pairs(folder) if p.name == name), None)
            if pair is None:
                parser.error(f'no pair {name!r} in {folder}')
            ir = cv2.imread(str(pair.ir), cv2.IMREAD_GRAYSCALE).astype(np.float64)
            vi = cv2.imread(str(pair.vi), cv2.IMREAD_COLOR).astype(np.float64)
            for method, fuse in methods.items():
                resolution = metrics.resolution_check(fuse, ir, vi)
                moved = metrics.shift_check(fuse, ir, vi, shift=shift)
                print(f'| {Path(folder).name}/{name} | {ir.shape[1]}x{ir.shape[0]} | {method} | '
                      f'{resolution["mae"]:.3f} | {resolution["psnr"]:.1f} | '
                      f'{resolution["max_block_mae"]:.2f} | {moved["mae"]:.3f} | '
                      f'{moved["psnr"]:.1f} | {moved["max_block_mae"]:.2f} |', flush=True)
    finally:
        sig.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
