# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Are persons fused in one tone? The effective IR share inside each thermal person.

A person the masks cover only in part comes out in two tones: the masked part from the IR,
the rest from the visible image. For each pair of ``DATASET/{ir,vi}`` the person region is the
union of the person objects of the *shipped* SIG (``segment_warm_objects``: warm parts grown,
upright groups completed and merged, mask >= 0.5), the same region for every model. Inside it,
where the sources differ by >= 10 grey levels, the effective IR share
``s = (F - V) / (I - V)`` (clipped to [0, 1], as in ``halo_check.py``) is measured; the script
prints per model the mean ``s`` and the fraction of person pixels with ``s < 0.5`` (rendered
closer to the visible image), averaged over the pairs that have a person.

``--weights`` models are fused with the shipped SIG; ``--no-upright-weights`` models with the
SIG without upright completion (parts not merged), for models trained on those semantics, so
each model is compared with the semantics it was trained with.

    . scripts/env.sh && python bench/person_tone.py ../shared/data/tno25 \\
        --weights model/tesg_fusion.safetensors --no-upright-weights out/no_upright.safetensors
"""

import argparse
from dataclasses import replace
from pathlib import Path
import sys

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_pairs import fuse_pair, pair_inputs  # noqa: E402 (sibling)
from halo_check import effective_ir_share  # noqa: E402 (sibling)


def person_region(ir_unit, params):
    """Bool (H, W): the person objects of ``segment_warm_objects`` (mask >= 0.5)."""
    from tesg_ros.sig.masks import PERSON, segment_warm_objects

    segmentation = segment_warm_objects(ir_unit, params)
    people = [obj for obj in segmentation.objects if obj.label == PERSON]
    return segmentation.soft_mask(people) >= 0.5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', help='folder with ir/ and vi/')
    parser.add_argument('--weights', nargs='*',
                        default=[str(ROOT / 'model' / 'tesg_fusion.safetensors')])
    parser.add_argument('--no-upright-weights', nargs='*', default=[])
    args = parser.parse_args(argv)

    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import (MiniLmTextEncoder, OfflineDescriber,
                              SemanticInformationGenerator, ThermalMaskBackend)
    from tesg_ros.sig.masks import ThermalSegmentationParams
    from tesg_ros.training.dataset import find_pairs

    shipped = ThermalSegmentationParams()
    no_upright = replace(shipped, complete_upright=False)
    encoder = MiniLmTextEncoder()
    sigs = {'shipped': SemanticInformationGenerator(encoder),
            'no upright completion': SemanticInformationGenerator(
                encoder, mask_backend=ThermalMaskBackend(no_upright),
                describer=OfflineDescriber(no_upright))}
    models = [(path, 'shipped', load_fusion_net(path)) for path in args.weights] + [
        (path, 'no upright completion', load_fusion_net(path))
        for path in args.no_upright_weights]
    rows = {(path, semantics): [] for path, semantics, _ in models}
    pairs = find_pairs(args.dataset)
    with_people = 0
    try:
        for index, pair in enumerate(pairs, 1):
            inputs = {name: pair_inputs(sig, pair) for name, sig in sigs.items()
                      if any(semantics == name for _, semantics, _ in models)}
            first = next(iter(inputs.values()))
            region = person_region(first.ir_unit, shipped)
            if region.any():
                with_people += 1
                grey_vi = cv2.cvtColor(first.vi_bgr, cv2.COLOR_BGR2GRAY)
                for path, semantics, net in models:
                    fused = cv2.cvtColor(fuse_pair(net, inputs[semantics])[0],
                                         cv2.COLOR_BGR2GRAY)
                    share = effective_ir_share(fused, first.ir, grey_vi)[region]
                    share = share[np.isfinite(share)]
                    if share.size:
                        rows[(path, semantics)].append(
                            (float(share.mean()), float((share < 0.5).mean())))
            print(f'[{index}/{len(pairs)}] {pair.name}', file=sys.stderr)
    finally:
        for sig in sigs.values():
            sig.stop()
    print(f'# {args.dataset}: {len(pairs)} pairs, {with_people} with a thermal person; IR share '
          's = (F - V) / (I - V) inside the persons of the shipped SIG where |I - V| >= 10')
    print('| weights | semantics | mean IR share in persons | person pixels with s < 0.5 |')
    print('|---|---|---|---|')
    for (path, semantics), values in rows.items():
        print(f'| {path} | {semantics} | {np.mean([v[0] for v in values]):.3f} | '
              f'{100 * np.mean([v[1] for v in values]):.1f} % |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
