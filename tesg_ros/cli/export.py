# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-export``: the fusion network (a safetensors checkpoint) to ONNX, optionally checked
against torch (:mod:`tesg_ros.network.onnx_export`).

    python -m tesg_ros.cli.export --out tesg_fusion.onnx [--weights FILE] [--check]
"""

import argparse
import sys
import time

from tesg_ros.cli import strip_ros_args
from tesg_ros.errors import TesgError
from tesg_ros.network.onnx_export import (export_onnx, INPUT_NAMES, META_SHA256, OPSET,
                                          parity)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='tesg-export', description=__doc__.split('\n\n')[0],
        epilog=f'Opset {OPSET}; inputs {", ".join(INPUT_NAMES)}; dynamic height and width.')
    parser.add_argument('--weights', default=None,
                        help='safetensors checkpoint (default: the shipped weights)')
    parser.add_argument('--out', default='tesg_fusion.onnx', help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=OPSET, help=f'default {OPSET}')
    parser.add_argument('--check', action='store_true',
                        help='compare ONNX Runtime with torch on the TNO pairs in test/data '
                             '(480x640, 243x321, 97x131); exit 1 above 1 grey level')
    args = parser.parse_args(strip_ros_args(sys.argv[1:] if argv is None else argv))
    try:
        start = time.monotonic()
        metadata = export_onnx(args.out, args.weights, args.opset)
        print(f'wrote {args.out} (opset {args.opset}, dynamic height/width, weights sha256 '
              f'{metadata[META_SHA256][:16]}...) in {time.monotonic() - start:.0f} s')
        if args.check:
            results = parity(args.out, args.weights,
                             sizes=((480, 640), (243, 321), (97, 131)))
            if not results:
                print('no TNO pairs under test/data: nothing compared', file=sys.stderr)
                return 1
            worst = max(difference for _, _, difference in results)
            for name, size, difference in results:
                print(f'  pair {name} {size[0]}x{size[1]}: max |ort - torch| '
                      f'{difference:.4f} grey levels')
            print(f'parity: worst {worst:.4f} grey levels (limit 1)')
            return 0 if worst <= 1.0 else 1
    except TesgError as error:
        print(f'tesg-export: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
