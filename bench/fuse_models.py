# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Fuse folders of pairs with several models, the SIG computed once per pair.

The description comes from tesg-train's semantics cache (``tesg_ros.training.dataset.
SemanticsCache``: the offline describer, synchronous, computed once, keyed by the image
bytes), so every model sees the same semantics and a busy machine does not turn a slow
description into a fallback one. The network gets what the node makes of that description
(``--semantics request``, the default): the request it parses to, the masks of the classes it
names (SIG thermal backend) and the embedding of its canonical sentence; ``--semantics
caption`` feeds the raw caption's embedding and per-phrase masks instead, ``none`` zeros.
``--restore-range`` also writes ``OUT/<label>+range/``: the same fused luma after the node's
range restoration (``tesg_ros.network.tone``); ``--lowlight-tone`` ``OUT/<label>+low/``: after
the node's low-light tone (``model.lowlight_tone``). Writes ``OUT/<label>/<dataset>/<pair>.png``
(colour-restored fused images) for ``bench/evaluate_pairs.py --model-from``/``--peer``::

    python bench/fuse_models.py ../shared/data/tno25 ../shared/data/llvip32_night \\
        --model previous=model/tesg_fusion.safetensors \\
        --model new=out/r1/tesg_fusion.safetensors --out out/fused
"""

import argparse
from pathlib import Path
import sys
import time

import cv2
import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('datasets', nargs='+')
    parser.add_argument('--model', action='append', required=True, help='LABEL=WEIGHTS')
    parser.add_argument('--out', required=True)
    parser.add_argument('--cache', default='out/semantics_cache')
    parser.add_argument('--semantics', choices=('request', 'caption', 'none'), default='request')
    parser.add_argument('--restore-range', action='store_true',
                        help="stretch the fused luma to the sources' range (network/tone.py)")
    parser.add_argument('--lowlight-tone', action='store_true',
                        help='also write the fused luma after the low-light tone (tone.py)')
    parser.add_argument('--limit', type=int, default=0, help='first N pairs of each dataset')
    parser.add_argument('--skip-existing', action='store_true')
    args = parser.parse_args(argv)

    import torch

    from tesg_ros.network.tone import lowlight_tone, restore_range
    from tesg_ros.sig.masks import fit_masks, ThermalMaskBackend
    from tesg_ros.sig.refresher import request_embedding
    from tesg_ros.sig.request import parse_request
    from tesg_ros.sig.text_encoder import make_text_encoder
    from tesg_ros.training.text_targets import class_masks, request_masks
    from tesg_ros.network.colour import bgr_to_ycbcr_np, restore_colour_np, uint8_to_float
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.training.dataset import (find_pairs, load_pair, SemanticsCache,
                                           SigComponents)

    models = []
    for item in args.model:
        label, path = item.split('=', 1)
        models.append((label, load_fusion_net(path)))
    settings = SigComponents.settings('minilm', '', models[0][1].config.text_dim)
    cache = SemanticsCache(args.cache, settings, lambda: SigComponents('minilm', ''))
    encoder = make_text_encoder('minilm', None, expected_dim=models[0][1].config.text_dim,
                                parameter='semantics.text_encoder') \
        if args.semantics == 'request' else None
    backend = ThermalMaskBackend()
    for dataset in args.datasets:
        for pair in find_pairs(dataset)[:args.limit or None]:
            outputs = [Path(args.out) / label / Path(dataset).name / f'{pair.name}.png'
                       for label, _ in models]
            if args.skip_existing and all(path.is_file() for path in outputs):
                continue
            ir, visible = load_pair(pair)
            caption, text, masks = cache.get(pair, ir, visible)
            if args.semantics == 'request':
                request = parse_request(caption)
                masks = request_masks(request, class_masks(visible, ir, backend))
                text = request_embedding(request, encoder)
                caption = f'{caption} -> {request.canonical!r}'
            vis_y = bgr_to_ycbcr_np(uint8_to_float(visible))[..., 0]
            for label, net in models:
                fitted = fit_masks(masks, net.config.mask_channels)
                inputs = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (
                    ir[None, None], vis_y[None, None], fitted[None], text[None])]
                if args.semantics == 'none':
                    inputs[2], inputs[3] = torch.zeros_like(inputs[2]), torch.zeros_like(
                        inputs[3])
                start = time.perf_counter()
                with torch.inference_mode():
                    fused_y = net(*inputs)[0, 0].numpy()
                elapsed = (time.perf_counter() - start) * 1e3
                folder = Path(args.out) / label / Path(dataset).name
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f'{pair.name}.png'), restore_colour_np(fused_y, visible))
                if args.restore_range:
                    folder = Path(args.out) / f'{label}+range' / Path(dataset).name
                    folder.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(folder / f'{pair.name}.png'), restore_colour_np(
                        restore_range(fused_y, ir, vis_y), visible))
                if args.lowlight_tone:
                    folder = Path(args.out) / f'{label}+low' / Path(dataset).name
                    folder.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(folder / f'{pair.name}.png'), restore_colour_np(
                        lowlight_tone(fused_y, ir, vis_y), visible))
                print(f'{Path(dataset).name}/{pair.name} {label}: {elapsed:.0f} ms; {caption}',
                      file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
