# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Montage of saved fused images at full resolution: IR | visible | method 1 | method 2 ...

Reads ``DIR/<dataset folder name>/<pair>.png`` for every ``--fused LABEL=DIR`` (as written by
``bench/fuse_models.py``) and crops the same ``--crop WxH`` window around ``--anchor`` from
every tile, without rescaling, so artefacts show as they are::

    python bench/montage_fused.py ../shared/data/llvip32_night --pairs 010001 010010 \\
        --fused previous=out/fused/previous --fused new=out/fused/new --crop 320x256 \\
        --anchor 0.7,0.75 --out docs/llvip_montage.jpg
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np


def crop(image, size, anchor):
    width, height = size
    top = max(0, min(image.shape[0] - height, int(anchor[1] * image.shape[0]) - height // 2))
    left = max(0, min(image.shape[1] - width, int(anchor[0] * image.shape[1]) - width // 2))
    return image[top:top + height, left:left + width]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('datasets', nargs='+')
    parser.add_argument('--pairs', nargs='+', required=True, help='pair names (any dataset)')
    parser.add_argument('--fused', action='append', required=True, help='LABEL=DIR')
    parser.add_argument('--crop', default='320x256')
    parser.add_argument('--anchor', default='0.5,0.5', help='crop centre x,y (fractions); '
                        'per pair as NAME:x,y in --anchors')
    parser.add_argument('--anchors', nargs='*', default=[])
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)

    from tesg_ros.training.dataset import find_pairs, read_ir, read_visible

    size = tuple(int(v) for v in args.crop.lower().split('x'))
    default_anchor = tuple(float(v) for v in args.anchor.split(','))
    anchors = {name: tuple(float(v) for v in value.split(','))
               for name, value in (item.split(':') for item in args.anchors)}
    fused = [item.split('=', 1) for item in args.fused]
    rows = []
    for dataset in args.datasets:
        by_name = {pair.name: pair for pair in find_pairs(dataset)}
        for name in args.pairs:
            pair = by_name.get(name)
            if pair is None:
                continue
            ir = cv2.cvtColor(np.round(read_ir(pair.ir) * 255).astype(np.uint8),
                              cv2.COLOR_GRAY2BGR)
            tiles = [ir, read_visible(pair.vi)]
            for _, folder in fused:
                path = Path(folder) / Path(dataset).name / f'{name}.png'
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise SystemExit(f'missing fused image {path}')
                tiles.append(image)
            anchor = anchors.get(name, default_anchor)
            tiles = [crop(t, size, anchor) for t in tiles]
            height = min(t.shape[0] for t in tiles)
            rows.append(np.hstack([np.pad(t[:height], ((0, 0), (0, 4), (0, 0)))
                                   for t in tiles]))
    width = max(r.shape[1] for r in rows)
    montage = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows])
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if args.out.lower().endswith('.jpg') else []
    cv2.imwrite(args.out, montage, params)
    labels = ' | '.join(['IR', 'visible'] + [label for label, _ in fused])
    print(f'{args.out}: {labels}, {len(rows)} rows, crops {size[0]}x{size[1]} at full resolution')
    return 0


if __name__ == '__main__':
    sys.exit(main())
