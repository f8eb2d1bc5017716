# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Persons found vs present by the SIG person masks (test/data/person_counts.csv).

A counted person is found when the person mask reaches 0.5 within ``radius`` (a fraction of
the frame height, default 2 %) of the person's marked torso centre. A kept person object
(thermal) or HOG box that covers no marked person counts as a false person.

    python bench/person_recall.py ../shared/data        [--backends thermal hog describer-hog]

Backends: ``thermal`` = ThermalMaskBackend with the phrase 'people' (the node's default);
``hog`` = HogMaskBackend (frames halved, the node's 'hog' setting: HOG on the visible and the
thermal frame); ``hog-visible`` = the same on the visible frame only; ``describer-hog`` = the
offline describer's HOG (visible frame resized to 920 px high); ``thermal+hog`` = thermal and
describer-hog joined.
"""

import argparse
import collections
import csv
from dataclasses import replace
from pathlib import Path
import sys
import time

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tesg_ros.sig.masks import (  # noqa: E402
    boxes_soft_mask, HogMaskBackend, HogPeopleDetector, PERSON, segment_warm_objects,
    ThermalMaskBackend, ThermalSegmentationParams)

COUNTS = ROOT / 'test' / 'data' / 'person_counts.csv'
SETS = {'llvip32_night': '.jpg', 'tno25': '.png'}


def read_counts(path=COUNTS):
    """{(set, frame): [(x, y), ...]} (an empty list for a frame without persons)."""
    persons = collections.defaultdict(list)
    with open(path, encoding='utf-8') as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith('#')):
            key = (row['set'], row['frame'])
            persons[key]  # noqa: B018 - a frame without persons still appears
            if row['x']:
                persons[key].append((int(row['x']), int(row['y'])))
    return dict(persons)


def found(mask, points, radius):
    """Per point: True when ``mask`` reaches 0.5 within ``radius`` px of it."""
    height, width = mask.shape
    result = []
    for x, y in points:
        y0, y1 = max(0, y - radius), min(height, y + radius + 1)
        x0, x1 = max(0, x - radius), min(width, x + radius + 1)
        result.append(bool(mask[y0:y1, x0:x1].max() >= 0.5) if y1 > y0 and x1 > x0
                      else False)
    return result


def false_boxes(boxes, points):
    """Boxes (x, y, w, h) that contain none of ``points``."""
    return sum(1 for x, y, w, h in boxes
               if not any(x <= px < x + w and y <= py < y + h for px, py in points))


def person_masks(backend, visible, thermal, params=ThermalSegmentationParams()):
    """(mask H x W, boxes) of one backend for one pair."""
    if backend == 'thermal':
        segmentation = segment_warm_objects(thermal, params)
        people = [obj for obj in segmentation.objects if obj.label == PERSON]
        mask = ThermalMaskBackend(params)(visible, thermal, ['people'])[0]
        return mask, [obj.box for obj in people]
    if backend in ('hog', 'hog-visible'):
        images = ('visible', 'thermal') if backend == 'hog' else ('visible',)
        boxes = HogMaskBackend(images=images).boxes(visible, thermal)
        return boxes_soft_mask(boxes, thermal.shape), boxes
    if backend == 'describer-hog':
        detector = HogPeopleDetector()
        boxes = [box for box, _ in detector.detect(visible, scale=920 / visible.shape[0])]
        return boxes_soft_mask(boxes, thermal.shape), boxes
    if backend == 'thermal+hog':
        thermal_mask, thermal_boxes = person_masks('thermal', visible, thermal, params)
        hog_mask, hog_boxes = person_masks('describer-hog', visible, thermal)
        return np.maximum(thermal_mask, hog_mask), thermal_boxes + hog_boxes
    raise ValueError(f'unknown backend {backend!r}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data', type=Path, help='the shared data folder (../shared/data)')
    parser.add_argument('--backends', nargs='+', default=['thermal', 'hog', 'describer-hog'])
    parser.add_argument('--radius', type=float, default=0.02)
    parser.add_argument('--sets', nargs='+', default=list(SETS))
    parser.add_argument('--misses', action='store_true', help='list missed persons')
    parser.add_argument('--person-aspect', type=float, default=None,
                        help='thermal: ThermalSegmentationParams.person_aspect (default 1.4)')
    args = parser.parse_args(argv)
    params = ThermalSegmentationParams()
    if args.person_aspect is not None:
        params = replace(params, person_aspect=args.person_aspect)
    counts = read_counts()
    print('| set | backend | persons present | found | recall | false persons | s/frame |')
    print('|---|---|---|---|---|---|---|')
    for name in args.sets:
        frames = sorted(frame for set_name, frame in counts if set_name == name)
        for backend in args.backends:
            present = hit = false = 0
            seconds = 0.0
            missed = []
            for frame in frames:
                thermal = cv2.imread(str(args.data / name / 'ir' / f'{frame}{SETS[name]}'),
                                     cv2.IMREAD_GRAYSCALE)
                visible = cv2.imread(str(args.data / name / 'vi' / f'{frame}{SETS[name]}'),
                                     cv2.IMREAD_COLOR)
                points = counts[(name, frame)]
                start = time.perf_counter()
                mask, boxes = person_masks(backend, visible, thermal, params)
                seconds += time.perf_counter() - start
                radius = max(1, round(args.radius * thermal.shape[0]))
                flags = found(mask, points, radius)
                present += len(points)
                hit += sum(flags)
                false += false_boxes(boxes, points)
                missed += [(frame, point) for point, flag in zip(points, flags) if not flag]
            recall = hit / present if present else float('nan')
            print(f'| {name} | {backend} | {present} | {hit} | {recall:.2f} | {false} | '
                  f'{seconds / len(frames):.2f} |')
            if args.misses:
                print(f'  missed: {missed}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
