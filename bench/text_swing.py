# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""How far the text alone moves the global balance: the mean infrared share of the background
(outside the masks) fused with the pair's description vs with zero text, per model.

Semantics from tesg-train's cache (as ``bench/fuse_models.py``)::

    python bench/text_swing.py ../shared/data/llvip32_night --limit 4 \\
        --model previous=out/previous.safetensors --model new=model/tesg_fusion.safetensors
"""

import argparse
import sys

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('datasets', nargs='+')
    parser.add_argument('--model', action='append', required=True, help='LABEL=WEIGHTS')
    parser.add_argument('--limit', type=int, default=0)
    parser.add_argument('--cache', default='out/semantics_cache')
    args = parser.parse_args(argv)

    import torch

    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.network.colour import bgr_to_ycbcr_np, uint8_to_float
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.training.dataset import (find_pairs, load_pair, SemanticsCache,
                                           SigComponents)

    models = [(label, load_fusion_net(path)) for label, path in
              (item.split('=', 1) for item in args.model)]
    cache = SemanticsCache(args.cache, SigComponents.settings(), lambda: SigComponents())
    print('| pair | model | IR share, description | IR share, zero text | difference |')
    print('|---|---|---|---|---|')
    totals = {label: [] for label, _ in models}
    for dataset in args.datasets:
        for pair in find_pairs(dataset)[:args.limit or None]:
            ir, visible = load_pair(pair)
            _, text, masks = cache.get(pair, ir, visible)
            vis_y = bgr_to_ycbcr_np(uint8_to_float(visible))[..., 0]
            for label, net in models:
                fitted = fit_masks(masks, net.config.mask_channels)
                background = 1.0 - fitted.max(axis=0)
                inputs = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (
                    ir[None, None], vis_y[None, None], fitted[None])]
                shares = []
                for embedding in (text, np.zeros_like(text)):
                    with torch.inference_mode():
                        _, info = net(*inputs, torch.from_numpy(embedding)[None],
                                      return_intermediates=True)
                    weight = info['weight'][0, 0].numpy()
                    shares.append(float((weight * background).sum() / background.sum()))
                totals[label].append(shares[0] - shares[1])
                print(f'| {pair.name} | {label} | {shares[0]:.3f} | {shares[1]:.3f} | '
                      f'{shares[0] - shares[1]:+.3f} |', flush=True)
    for label, values in totals.items():
        print(f'\n{label}: mean |difference| {np.mean(np.abs(values)):.3f} over {len(values)} '
              'pairs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
