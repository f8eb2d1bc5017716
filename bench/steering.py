# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Does the text steer the fusion as docs/semantics.md says? A fixed prompt table.

Every prompt goes through the node's own path (the engine in replay mode: the request is
parsed from the text, the named classes' masks are selected, the canonical sentence is
embedded, or zeros when neutral) and the default (or ``--weights``) network. Per prompt and
pair, on the fused luma F, the infrared I (as normalised by the engine) and the visible luma V:

* IR share ``s = clip((F - V) / (I - V), 0, 1)`` where ``|I - V| >= 0.1`` (elsewhere the
  share is undefined), averaged over a region of the pair, then over the pairs that have at
  least 50 such pixels there;
* regions: **selected** = the prompt's masks (>= 0.5); **other warm** = every warm object of
  the thermal backend (the 'warm objects' mask >= 0.5) not selected; **background** = no
  warm object (< 0.05); **poor visible** = background where the visible image carries little
  (:func:`tesg_ros.training.text_targets.visible_information` < 0.5);
* each share is also given as the change from the neutral fusion (prompt '') on the same
  pixels (``d``); ``grey`` = mean |F - F_neutral| in grey levels (0-255);
* paraphrase spread: per group of paraphrases, the mean |F_a - F_b| in grey levels between
  the group's first prompt and each other, averaged.

Pass rules (the contract's directions, margin ``--margin`` = 0.05 IR share):

* a class request raises the share in its objects (d selected >= margin, or the share there
  is already >= 0.95) and not in other warm objects (d other < margin; with an intent too,
  d other less the intent-only prompt's d other < margin: the intent itself may raise them);
* 'visible' lowers the background share (d background <= -margin);
* 'thermal' raises it where the visible image carries little (d poor visible >= margin);
* neutral and unknown texts stay within 1 grey level of the neutral fusion;
* paraphrase spread <= 1 grey level.

Prompts whose network inputs are bit-identical share one forward pass (the forward is
deterministic), so their spread is 0 by construction; the table says how many forward passes
there were.

    python bench/steering.py ../shared/data --sets tno25 llvip32_night --max-side 640

``--ablate text`` zeroes every prompt's text vector (its masks kept) and ``--ablate masks`` its
masks (its text kept): what each of the two inputs adds. Regions are still those the request
selects.
"""

import argparse
from collections import OrderedDict
import hashlib
from pathlib import Path
import sys
import time

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (label, prompt, paraphrase group or None, kind); kind decides the pass rule.
PROMPTS = (
    ('empty', '', None, 'neutral'),
    ('nothing', 'nothing', None, 'neutral'),
    ('unknown', 'flibber wug the gorp', None, 'neutral'),
    ('class-free', 'a street with trees', None, 'neutral'),
    ('people', 'people', 'people', 'class'),
    ('pedestrians', 'show me the pedestrians', 'people', 'class'),
    ('a man walking', 'a man walking', 'people', 'class'),
    ('people walking', 'people walking', 'people', 'class'),
    ('vehicles', 'vehicles', 'vehicles', 'class'),
    ('cars and trucks', 'cars and trucks', 'vehicles', 'class'),
    ('hot spots', 'hot spots', 'warm', 'class'),
    ('warm objects', 'highlight the warm objects', 'warm', 'class'),
    ('visible', 'show the visible scene', 'visible', 'visible'),
    ('daylight detail', 'daylight detail', 'visible', 'visible'),
    ('dark', 'it is dark', 'thermal', 'thermal'),
    ('smoke', 'smoke', 'thermal', 'thermal'),
    ('fog', 'fog', 'thermal', 'thermal'),
    ('glare', 'glare', 'thermal', 'thermal'),
    ('people + dark', 'people, it is dark', None, 'class+thermal'),
    ('visible, no warm', 'show the visible scene only, no warm objects', 'visible', 'visible'),
)
INTENT_ONLY = 'dark'   # a 'class+thermal' row's other warm objects compare with this row
SETS = {'tno25': '.png', 'llvip32_night': '.jpg', 'roadscene50': '.jpg', 'vifb21': '.jpg'}
MIN_PIXELS = 50
SATURATED = 0.95   # a share this close to 1 cannot rise by the margin
DIFFERENT = 0.1


def load_engine(weights):
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults
    params = dict(defaults())
    # replay: semantics set per call; no temporal smoothing between unrelated pairs
    # The shares are measured on the network's output: the range restoration and the
    # low-light tone (monotonic maps after the network) would move every share by one map.
    params.update({'model.device': 'cpu', 'semantics.mode': 'replay',
                   'thermal.temporal_alpha': 1.0, 'model.weights': weights or '',
                   'model.restore_range': False, 'model.lowlight_tone': False})
    return FusionEngine(EngineSettings.from_params(params))


def shares(fused, ir, vis, region):
    """Mean IR share over ``region`` where the sources differ, or None (too few pixels)."""
    valid = region & (np.abs(ir - vis) >= DIFFERENT)
    if np.count_nonzero(valid) < MIN_PIXELS:
        return None
    share = (fused[valid] - vis[valid]) / (ir[valid] - vis[valid])
    return float(np.clip(share, 0.0, 1.0).mean())


def load_pairs(data, name, max_side):
    folder = data / name
    suffix = SETS[name]
    for path in sorted((folder / 'ir').glob(f'*{suffix}')):
        ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(folder / 'vi' / path.name), cv2.IMREAD_COLOR)
        scale = min(1.0, max_side / max(ir.shape)) if max_side else 1.0
        if scale < 1.0:
            size = (round(ir.shape[1] * scale), round(ir.shape[0] * scale))
            ir = cv2.resize(ir, size, interpolation=cv2.INTER_AREA)
            vi = cv2.resize(vi, size, interpolation=cv2.INTER_AREA)
        yield path.stem, ir, vi


class Accumulator:
    """Per prompt: lists of per-pair values (None skipped)."""

    def __init__(self):
        self.values = OrderedDict()

    def add(self, label, key, value):
        if value is not None:
            self.values.setdefault(label, {}).setdefault(key, []).append(value)

    def mean(self, label, key):
        values = self.values.get(label, {}).get(key, [])
        return (float(np.mean(values)), len(values)) if values else (None, 0)


def run_set(engine, data, name, max_side, limit=None, ablate='none'):
    from tesg_ros.network.colour import luma_from_bgr_uint8
    from tesg_ros.sig.masks import ThermalMaskBackend
    from tesg_ros.training.text_targets import visible_information

    warm_backend = ThermalMaskBackend()
    acc = Accumulator()
    distinct = set()
    forwards = 0
    for index, (stem, ir_raw, vi) in enumerate(load_pairs(data, name, max_side)):
        if limit is not None and index >= limit:
            break
        ir = engine.normalizer.normalize(ir_raw)
        vis_y = luma_from_bgr_uint8(vi)
        warm = warm_backend(vi, ir, ['warm objects'])[0]
        background = warm < 0.05
        poor = background & (visible_information(vis_y) < 0.5)
        cache = {}
        fused = {}
        selected = {}
        for label, prompt, _, _ in PROMPTS:
            engine.set_recorded_semantics({'description': prompt, 'phrases': []})
            masks, text = engine._semantics(vi, ir)   # the engine's own per-frame semantics
            selected[label] = masks.max(axis=0) >= 0.5  # measured where the request points
            if ablate == 'text':
                text = np.zeros_like(text)
            elif ablate == 'masks':
                masks = np.zeros_like(masks)
            key = hashlib.sha256(masks.tobytes() + np.asarray(text, np.float32).tobytes())
            key = key.hexdigest()
            if key not in cache:
                cache[key] = engine._forward(ir, vis_y, masks, text)
                forwards += 1
            distinct.add((stem, key))
            fused[label] = cache[key]
        neutral = fused['empty']
        for label, _, _, _ in PROMPTS:
            out = fused[label]
            chosen = selected[label]
            other = (warm >= 0.5) & ~chosen
            for region_name, region in (('selected', chosen), ('other', other),
                                        ('background', background), ('poor', poor)):
                value = shares(out, ir, vis_y, region)
                base = shares(neutral, ir, vis_y, region)
                acc.add(label, region_name, value)
                if value is not None and base is not None:
                    acc.add(label, 'd_' + region_name, value - base)
            acc.add(label, 'grey', float(np.abs(out - neutral).mean() * 255.0))
        groups = OrderedDict()
        for label, _, group, _ in PROMPTS:
            if group is not None:
                groups.setdefault(group, []).append(label)
        for group, labels in groups.items():
            first = fused[labels[0]]
            spread = [np.abs(fused[other] - first).mean() * 255.0 for other in labels[1:]]
            acc.add('group:' + group, 'spread', float(np.mean(spread)))
    return acc, forwards


def verdict(kind, acc, label, margin):
    d_sel = acc.mean(label, 'd_selected')[0]
    d_other = acc.mean(label, 'd_other')[0]
    d_bg = acc.mean(label, 'd_background')[0]
    d_poor = acc.mean(label, 'd_poor')[0]
    grey = acc.mean(label, 'grey')[0]
    if kind == 'neutral':
        return 'pass' if grey is not None and grey <= 1.0 else 'FAIL'
    if kind == 'visible':
        return 'pass' if d_bg is not None and d_bg <= -margin else 'FAIL'
    if kind == 'thermal':
        return 'pass' if d_poor is not None and d_poor >= margin else 'FAIL'
    if kind in ('class', 'class+thermal'):
        if d_sel is None:
            return 'n/a (no selected pixels)'
        selected = acc.mean(label, 'selected')[0]
        other_base = 0.0
        if kind == 'class+thermal':
            # The intent raises every warm object where the visible image is poor; the class
            # must not add to that: other warm objects are compared with the intent alone.
            other_base = acc.mean(INTENT_ONLY, 'd_other')[0] or 0.0
        ok = (d_sel >= margin or selected >= SATURATED) and (
            d_other is None or d_other - other_base < margin)
        if kind == 'class+thermal':
            ok = ok and d_poor is not None and d_poor >= margin
        return 'pass' if ok else 'FAIL'
    return '?'


def fmt(value, digits=2, signed=False):
    if value is None:
        return '-'
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def report(name, acc, forwards, pairs, margin):
    print(f'\n### {name}: {pairs} pairs, {forwards} forward passes\n')
    print('| prompt | text | selected (d) | other warm (d) | background (d) | poor visible (d) '
          '| grey vs neutral | contract |')
    print('|---|---|---|---|---|---|---|---|')
    for label, prompt, _, kind in PROMPTS:
        cells = []
        for region in ('selected', 'other', 'background', 'poor'):
            value, count = acc.mean(label, region)
            delta = acc.mean(label, 'd_' + region)[0]
            cells.append('-' if value is None else
                         f'{fmt(value)} ({fmt(delta, signed=True)}, n={count})')
        grey = acc.mean(label, 'grey')[0]
        print(f'| {label} | "{prompt}" | ' + ' | '.join(cells)
              + f' | {fmt(grey)} | {verdict(kind, acc, label, margin)} |')
    print('\n| paraphrase group | spread (grey levels) | contract |')
    print('|---|---|---|')
    for key in acc.values:
        if key.startswith('group:'):
            spread = acc.mean(key, 'spread')[0]
            ok = 'pass' if spread is not None and spread <= 1.0 else 'FAIL'
            print(f'| {key[6:]} | {fmt(spread, 3)} | {ok} |')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data', type=Path, help='the shared data folder (../shared/data)')
    parser.add_argument('--sets', nargs='+', default=['tno25', 'llvip32_night'])
    parser.add_argument('--weights', default='', help='default: the node default')
    parser.add_argument('--max-side', type=int, default=640,
                        help='downscale larger pairs to this longer side (0: native)')
    parser.add_argument('--limit', type=int, default=None, help='first N pairs per set')
    parser.add_argument('--margin', type=float, default=0.05)
    parser.add_argument('--ablate', choices=('none', 'text', 'masks'), default='none',
                        help='zero the text (masks kept) or the masks (text kept) of every '
                             'prompt: what each input adds')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    engine = load_engine(args.weights)
    print(f'# weights: {engine.weights_path}; max side {args.max_side}; margin {args.margin}'
          + ('' if args.ablate == 'none' else f'; ablation: {args.ablate} zeroed'))
    for name in args.sets:
        start = time.perf_counter()
        acc, forwards = run_set(engine, args.data, name, args.max_side, args.limit,
                                args.ablate)
        pairs = len(acc.values and next(iter(acc.values.values())).get('grey', []))
        report(name, acc, forwards, pairs, args.margin)
        print(f'\n({time.perf_counter() - start:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
