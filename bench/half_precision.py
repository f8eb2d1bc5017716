# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""How far the fused luma moves when the network runs in float16 or bfloat16 instead of float32.

The node runs the network in float16 on CUDA (``model.half``, the default). Without a GPU this
runs torch's CPU kernels of each format, so it checks the format (range and precision of the
attention logits, the gates and the detail gain), not the CUDA kernels, and its times are not
GPU times. For each pair of ``DATASET/{ir,vi}`` (semantics as in ``evaluate_pairs.py``: the
offline describer and the thermal masks), prints per format the largest and the mean absolute
difference from float32 in grey levels (0..255), over the pairs and for the worst pair, and
whether every value is finite.

    . scripts/env.sh && python bench/half_precision.py ../shared/data/tno25
"""

import argparse
import copy
from pathlib import Path
import sys

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', default=str(ROOT / 'model' / 'tesg_fusion.safetensors'))
    parser.add_argument('--pairs', type=int, default=0, help='only the first N pairs (0: all)')
    args = parser.parse_args(argv)

    import torch

    from evaluate_pairs import pair_inputs
    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.training.dataset import find_pairs

    net = load_fusion_net(args.weights).eval()
    formats = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
    nets = {name: copy.deepcopy(net).to(dtype) for name, dtype in formats.items()}
    pairs = find_pairs(args.dataset)
    if args.pairs:
        pairs = pairs[:args.pairs]
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    results = {name: [] for name in formats}
    try:
        for index, pair in enumerate(pairs, 1):
            inputs = pair_inputs(sig, pair)
            masks = fit_masks(inputs.masks, net.config.mask_channels)
            tensors = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (
                inputs.ir_unit[None, None], inputs.vis_y[None, None], masks[None],
                inputs.semantics.text_embedding[None])]
            with torch.inference_mode():
                reference = net(*tensors)[0, 0].numpy()
                for name, dtype in formats.items():
                    fused = nets[name](*[t.to(dtype) for t in tensors])[0, 0].float().numpy()
                    difference = np.abs(fused - reference) * 255
                    results[name].append((pair.name, float(difference.max()),
                                          float(difference.mean()),
                                          bool(np.isfinite(fused).all())))
            print(f'[{index}/{len(pairs)}] {pair.name}', file=sys.stderr)
    finally:
        sig.stop()
    print(f'# {args.dataset}: {len(pairs)} pairs, {args.weights}; |format - float32| of the '
          'fused luma in grey levels')
    print('| format | max | mean | worst pair (max / mean) | all finite |')
    print('|---|---|---|---|---|')
    for name, rows in results.items():
        worst = max(rows, key=lambda row: row[1])
        print(f'| {name} | {max(r[1] for r in rows):.2f} | {np.mean([r[2] for r in rows]):.3f} '
              f'| {worst[0]} ({worst[1]:.2f} / {worst[2]:.3f}) | '
              f'{all(r[3] for r in rows)} |')


if __name__ == '__main__':
    main()
