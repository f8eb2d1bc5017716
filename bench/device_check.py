# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The checks a lent GPU machine is for, as one short run: CUDA timings and float16 numerics.

1. ``bench_network.py`` with the shipped weights on ``--device``: float16 (the node's CUDA
   default, ``model.half``) at 320x240 to 1920x1080, then float32 at 640x480 and 1920x1080.
2. The shipped weights on the repository's TNO 19 pair (``test/data``, thermal masks, a fixed
   text vector) in float16 against float32 on the same device: the largest and mean difference
   of the fused luma in grey levels.

Needs only torch, numpy, OpenCV and safetensors (no ROS, no ``../shared``), so it runs with a
GPU machine's own python3 from the repository root::

    PYTHONPATH=. python3 bench/device_check.py --device cuda
    . scripts/env.sh && python bench/device_check.py --device cpu   # a dry run here

On a CPU the timings are float32 only and the float16 comparison uses torch's CPU kernels.
"""

import argparse
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
WEIGHTS = ROOT / 'model' / 'tesg_fusion.safetensors'
PAIR = ROOT / 'test' / 'data' / 'tno'


def float16_difference(device, weights=WEIGHTS, name='19'):
    """(max, mean) |float16 - float32| of the fused luma on one TNO pair, in grey levels."""
    import cv2
    import numpy as np
    import torch

    from tesg_ros.engine import fit_masks
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig.masks import ThermalMaskBackend

    ir = cv2.imread(str(PAIR / 'ir' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(PAIR / 'vi' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
    if ir is None or vi is None:
        raise SystemExit(f'cannot read TNO pair {name} under {PAIR}')
    net = load_fusion_net(str(weights), device='cpu').eval().to(device)
    masks = ThermalMaskBackend()(None, ir, ['a warm person-shaped object', 'a hot spot'])
    text = np.random.default_rng(0).normal(size=net.config.text_dim).astype(np.float32)
    inputs = [torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device) for a in (
        ir[None, None] / 255.0, vi[None, None] / 255.0,
        fit_masks(masks, net.config.mask_channels)[None],
        (text / np.linalg.norm(text))[None])]
    with torch.inference_mode():
        single = net(*inputs)[0, 0].float().cpu().numpy()
        half = net.half()(*[t.half() for t in inputs])[0, 0].float().cpu().numpy()
    if not np.isfinite(half).all():
        return float('inf'), float('inf')
    difference = np.abs(half - single) * 255
    return float(difference.max()), float(difference.mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', help='cuda[:N] or cpu (dry run)')
    parser.add_argument('--runs', type=int, default=200, help='timed runs per size')
    args = parser.parse_args(argv)

    import torch

    import bench_network

    on_gpu = torch.device(args.device).type == 'cuda'
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: CUDA is not available here')
    common = ['--device', args.device, '--weights', str(WEIGHTS), '--runs', str(args.runs),
              '--warmup', '20']
    if on_gpu:
        print('## float16 (model.half, the node default on CUDA)', flush=True)
        bench_network.main(common + ['--half', '--sizes', '320x240', '640x480', '1280x720',
                                     '1920x1080'])
    print('## float32', flush=True)
    bench_network.main(common + ['--sizes', '640x480', '1920x1080'])
    largest, mean = float16_difference(args.device)
    print(f'## float16 vs float32 on {args.device}, TNO 19 (test/data), fused luma: max '
          f'{largest:.2f}, mean {mean:.3f} grey levels', flush=True)


if __name__ == '__main__':
    main()
