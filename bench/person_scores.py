# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""How strongly a people detector responds to each fused image: OpenCV's HOG person score.

For each pair of ``DATASET/{ir,vi}`` the pair is fused the way ``bench/evaluate_pairs.py``
scores its "TeSG (masks + text)" row (the node's default weights and low-light tone unless
``--weights`` / ``--no-lowlight-tone``), once per ``--weights`` file, and OpenCV's HOG people
detector (``tesg_ros.sig.masks.HogPeopleDetector``, full resolution) runs on the grey IR, the
grey visible image, each fused luma and each ``--peer NAME=DIR`` image (another method's fused
images, as in ``evaluate_pairs.py``). Prints, for every pair where any of them has a
detection, the detections' SVM scores, and a summary line per image kind (pairs with a
detection, mean of the best score per pair over the pairs where the IR has one).

HOG is a weak stand-in for the YOLO-style detectors the fused topic feeds (no such weights
exist on this machine); it shows whether a person stays a person-shaped whole in the fused
image, not detection accuracy (TNO has no labels).

    . scripts/env.sh && python bench/person_scores.py ../shared/data/llvip32_night \\
        --weights model/tesg_fusion_fast.safetensors model/tesg_fusion.safetensors \\
        --peer TarDAL=out/tardal
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_pairs import (add_lowlight_tone_option, fuse_pair,  # noqa: E402 (sibling)
                            load_peer_image, pair_inputs, parse_peer)
from tesg_ros.network.onnx_export import default_weights  # noqa: E402 (via evaluate_pairs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', nargs='+', default=[default_weights()])
    add_lowlight_tone_option(parser)
    parser.add_argument('--peer', action='append', type=parse_peer, default=[],
                        metavar='NAME=DIR', help="another method's fused images (repeatable)")
    parser.add_argument('--min-score', type=float, default=0.3,
                        help='HOG SVM score a detection needs (default %(default)s)')
    args = parser.parse_args(argv)

    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.sig.masks import HogPeopleDetector
    from tesg_ros.training.dataset import find_pairs

    detector = HogPeopleDetector(scale=1.0, min_weight=args.min_score)
    nets = {path: load_fusion_net(path) for path in args.weights}
    kinds = ['IR', 'visible', *args.weights, *(name for name, _ in args.peer)]
    best = {kind: {} for kind in kinds}
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    print(f'# {args.dataset}: HOG people detector, full resolution, SVM score >= '
          f'{args.min_score:g}; scores per pair (empty: no detection); low-light tone '
          f'{"on" if args.lowlight_tone else "off"}')
    print('| pair | ' + ' | '.join(kinds) + ' |')
    print('|---|' + '---|' * len(kinds))
    try:
        for pair in find_pairs(args.dataset):
            inputs = pair_inputs(sig, pair)
            images = {'IR': inputs.ir,
                      'visible': cv2.cvtColor(inputs.vi_bgr, cv2.COLOR_BGR2GRAY)}
            for path, net in nets.items():
                fused = fuse_pair(net, inputs, lowlight_tone=args.lowlight_tone)[0]
                images[path] = cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY)
            for name, folder in args.peer:
                image, reason = load_peer_image(folder, args.dataset, pair.name,
                                                inputs.ir.shape)
                if image is None:
                    raise SystemExit(f'--peer {name}: {reason}')
                images[name] = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            scores = {kind: sorted((score for _, score in detector.detect(image)), reverse=True)
                      for kind, image in images.items()}
            for kind, values in scores.items():
                best[kind][pair.name] = values[0] if values else 0.0
            if any(scores.values()):
                print(f'| {pair.name} | ' + ' | '.join(
                    ', '.join(f'{v:.2f}' for v in scores[kind]) for kind in kinds) + ' |')
    finally:
        sig.stop()
    with_person = [name for name, score in best['IR'].items() if score > 0]
    print()
    print('| image | pairs with a detection | mean best score over the pairs where the IR has '
          f'one ({len(with_person)}) |')
    print('|---|---|---|')
    for kind in kinds:
        found = sum(score > 0 for score in best[kind].values())
        mean = float(np.mean([best[kind][name] for name in with_person])) if with_person \
            else float('nan')
        print(f'| {kind} | {found} | {mean:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
