# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Side-by-side montage of models on real pairs: IR | visible | model 1 | model 2 | ...

Each pair is described by the SIG (offline describer, thermal masks, MiniLM text), fused by every
model with masks and text, and a crop of it is shown at full resolution (no rescaling), so
blotches, blocky patches and rims are visible as they are::

    python bench/montage_models.py ../shared/data/llvip32_night --pairs 010001 010010 \\
        --weights model/tesg_fusion.safetensors out/new.safetensors --crop 640x512 \\
        --out out/llvip.jpg

``--crop WxH`` takes a centred crop (clipped to the image), ``--scale`` resizes the whole
montage afterwards (for docs), ``--weight-maps`` adds each model's infrared-share map as a tile.
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_pairs import fuse_pair, pair_inputs  # noqa: E402


def crop(image, size, anchor):
    width, height = size
    top = max(0, min(image.shape[0] - height, int(anchor[1] * image.shape[0]) - height // 2))
    left = max(0, min(image.shape[1] - width, int(anchor[0] * image.shape[1]) - width // 2))
    return image[top:top + height, left:left + width]


def weight_map(net, inputs):
    import torch

    from tesg_ros.sig.masks import fit_masks
    masks = fit_masks(inputs.masks, net.config.mask_channels)
    tensors = [torch.from_numpy(np.array(a, np.float32)) for a in (
        inputs.ir_unit[None, None], inputs.vis_y[None, None], masks[None],
        inputs.semantics.text_embedding[None])]
    with torch.inference_mode():
        _, info = net(*tensors, return_intermediates=True)
    weight = info['weight'][0, 0].numpy()
    return cv2.cvtColor((weight * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset')
    parser.add_argument('--pairs', nargs='*', default=None, help='pair stems (default: 4 first)')
    parser.add_argument('--weights', nargs='+', required=True)
    parser.add_argument('--crop', default='', help='WxH centred crop at full resolution')
    parser.add_argument('--anchor', default='0.5,0.5', help='crop centre as fractions x,y')
    parser.add_argument('--scale', type=float, default=1.0)
    parser.add_argument('--weight-maps', action='store_true')
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)

    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.training.dataset import find_pairs

    nets = [load_fusion_net(path) for path in args.weights]
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    pairs = find_pairs(args.dataset)
    if args.pairs:
        pairs = [p for p in pairs if p.name in set(args.pairs)]
    else:
        pairs = pairs[:4]
    anchor = tuple(float(v) for v in args.anchor.split(','))
    rows = []
    for pair in pairs:
        inputs = pair_inputs(sig, pair)
        tiles = [cv2.cvtColor(inputs.ir, cv2.COLOR_GRAY2BGR), inputs.vi_bgr]
        for net in nets:
            tiles.append(fuse_pair(net, inputs)[0])
            if args.weight_maps:
                tiles.append(weight_map(net, inputs))
        if args.crop:
            size = tuple(int(v) for v in args.crop.lower().split('x'))
            tiles = [crop(t, size, anchor) for t in tiles]
        height = min(t.shape[0] for t in tiles)
        row = np.hstack([t[:height] for t in tiles])
        rows.append(row)
        print(f'{pair.name}: {inputs.semantics.description}', file=sys.stderr)
    sig.stop()
    width = max(r.shape[1] for r in rows)
    montage = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows])
    if args.scale != 1.0:
        montage = cv2.resize(montage, None, fx=args.scale, fy=args.scale,
                             interpolation=cv2.INTER_AREA)
    cv2.imwrite(args.out, montage, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
