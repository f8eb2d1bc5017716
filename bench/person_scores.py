# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""How strongly a people detector responds to each fused image: OpenCV's HOG person score.

For each pair of ``DATASET/{ir,vi}`` the pair is fused the way ``bench/evaluate_pairs.py``
scores its "TeSG (masks + text)" row, once per ``--weights`` file, and OpenCV's HOG people
detector (``tesg_ros.sig.masks.HogPeopleDetector``, full resolution) runs on the grey IR, the
grey visible image and each fused luma. Prints, for every pair where any of them has a
detection, the detections' SVM scores, and a summary line per image kind (pairs with a
detection, mean of the best score per pair over the pairs where the IR has one).

HOG is a weak stand-in for the YOLO-style detectors the fused topic feeds (no such weights
exist on this machine); it shows whether a person stays a person-shaped whole in the fused
image, not detection accuracy (TNO has no labels).

    . scripts/env.sh && python bench/person_scores.py ../shared/data/tno25 \\
        --weights model/tesg_fusion.safetensors out/other/tesg_fusion.safetensors
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_pairs import fuse_pair, pair_inputs  # noqa: E402 (sibling)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', nargs='+',
                        default=[str(ROOT / 'model' / 'tesg_fusion.safetensors')])
    parser.add_argument('--min-score', type=float, default=0.3,
                        help='HOG SVM score a detection needs (default %(default)s)')
    args = parser.parse_args(argv)

    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator
    from tesg_ros.sig.masks import HogPeopleDetector
    from tesg_ros.training.dataset import find_pairs

    detector = HogPeopleDetector(scale=1.0, min_weight=args.min_score)
    nets = {path: load_fusion_net(path) for path in args.weights}
    kinds = ['IR', 'visible', *args.weights]
    best = {kind: {} for kind in kinds}
    sig = SemanticInformationGenerator(MiniLmTextEncoder())
    print(f'# {args.dataset}: HOG people detector, full resolution, SVM score >= '
          f'{args.min_score:g}; scores per pair (empty: no detection)')
    print('| pair | ' + ' | '.join(kinds) + ' |')
    print('|---|' + '---|' * len(kinds))
    try:
        for pair in find_pairs(args.dataset):
            inputs = pair_inputs(sig, pair)
            images = {'IR': inputs.ir,
                      'visible': cv2.cvtColor(inputs.vi_bgr, cv2.COLOR_BGR2GRAY)}
            for path, net in nets.items():
                images[path] = cv2.cvtColor(fuse_pair(net, inputs)[0], cv2.COLOR_BGR2GRAY)
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
