# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Score the fusion model on folders of registered pairs, beside baselines and peers.

For each pair of every ``DATASET/{ir,vi}``: the offline describer describes it (synchronously),
the thermal mask backend makes the masks, and the network fuses it (with ``--ablations`` also
without masks, without text and without both). The IR copy, the visible copy, the pixel average,
a Laplacian pyramid fusion and every ``--peer NAME=DIR`` (a folder of another method's fused
images, e.g. TarDAL's) are scored with the same metrics (``tesg_ros.metrics``, convention
``--convention``), the artefact measures Nabf and Blotch included. Prints one Markdown table
per dataset (all datasets in one run, side by side) and, per peer, on how many metrics the
model is ahead.

    . scripts/env.sh && python bench/evaluate_pairs.py ../shared/data/tno25 \
        ../shared/data/llvip32_night --peer TarDAL=out/tardal

A peer folder holds ``<dataset folder name>/<pair name>.<ext>`` (or ``<pair name>.<ext>``
directly); a missing or wrongly sized peer image is reported, not scored.
"""

import argparse
from pathlib import Path
import sys
import time
from typing import NamedTuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tesg_ros.network.onnx_export import default_weights  # noqa: E402 (the repository first)
from tesg_ros.node_params import PARAMETERS_BY_NAME  # noqa: E402
REPORTED = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'Nabf', 'Blotch')
# The nine quality metrics a comparison counts (higher is better) and the artefact measures
# (lower is better).
QUALITY = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM')
ARTEFACTS = ('Nabf', 'Blotch')
PEER_SUFFIXES = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff')


def laplacian_pyramid_fusion(ir, vi, levels=4):
    """Classical fusion: average the base, keep the larger-magnitude detail per level."""
    def pyramid(image):
        gaussian = [image]
        for _ in range(levels):
            gaussian.append(cv2.pyrDown(gaussian[-1]))
        details = [g - cv2.pyrUp(n, dstsize=(g.shape[1], g.shape[0]))
                   for g, n in zip(gaussian[:-1], gaussian[1:])]
        return details, gaussian[-1]

    ir_details, ir_base = pyramid(ir.astype(np.float32))
    vi_details, vi_base = pyramid(vi.astype(np.float32))
    fused = (ir_base + vi_base) / 2
    for ir_d, vi_d in reversed(list(zip(ir_details, vi_details))):
        fused = cv2.pyrUp(fused, dstsize=(ir_d.shape[1], ir_d.shape[0]))
        fused += np.where(np.abs(ir_d) >= np.abs(vi_d), ir_d, vi_d)
    return np.clip(fused, 0, 255).round().astype(np.uint8)


class PairInputs(NamedTuple):
    """One pair as the network sees it: ``ir_unit`` / ``vis_y`` (H, W) float32 in [0, 1],
    ``ir`` (H, W) uint8, ``vi_bgr`` (H, W, 3) uint8, ``semantics`` (the SIG's description) and
    ``masks`` (M, H, W) float32 from the SIG's mask backend (not yet fitted to a network)."""

    ir_unit: np.ndarray
    ir: np.ndarray
    vi_bgr: np.ndarray
    vis_y: np.ndarray
    semantics: object
    masks: np.ndarray


def pair_inputs(sig, pair):
    """Read ``pair`` and describe it with ``sig`` (synchronously) -> :class:`PairInputs`."""
    from tesg_ros.network.colour import bgr_to_ycbcr_np, float_to_uint8, uint8_to_float
    from tesg_ros.training.dataset import read_ir, read_visible

    ir_unit = read_ir(pair.ir)
    vi_bgr = read_visible(pair.vi)
    semantics = sig.describe_now(vi_bgr, ir_unit)
    masks = np.asarray(sig.mask_backend(vi_bgr, ir_unit, semantics.phrases), np.float32)
    return PairInputs(ir_unit, float_to_uint8(ir_unit), vi_bgr,
                      bgr_to_ycbcr_np(uint8_to_float(vi_bgr))[..., 0], semantics, masks)


def fuse_pair(net, inputs, use_masks=True, use_text=True, lowlight_tone=False):
    """Fuse :class:`PairInputs` with ``net`` (CPU, float32) -> ``(fused_bgr, network_ms)``:
    the colour-restored (H, W, 3) uint8 image the metrics score and the forward time;
    ``lowlight_tone``: the node's ``model.lowlight_tone`` on the fused luma first."""
    import torch

    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.network.colour import restore_colour_np
    from tesg_ros.network.tone import lowlight_tone as tone

    masks = fit_masks(inputs.masks, net.config.mask_channels)
    text = (inputs.semantics.text_embedding if use_text
            else np.zeros(net.config.text_dim, np.float32))
    tensors = [torch.from_numpy(np.array(a, np.float32)) for a in (
        inputs.ir_unit[None, None], inputs.vis_y[None, None],
        (masks if use_masks else np.zeros_like(masks))[None], text[None])]
    start = time.perf_counter()
    with torch.inference_mode():
        fused_y = net(*tensors)[0, 0].numpy()
    network_ms = (time.perf_counter() - start) * 1e3
    if lowlight_tone:
        fused_y = tone(fused_y, inputs.ir_unit, inputs.vis_y)
    return restore_colour_np(fused_y, inputs.vi_bgr), network_ms


def read_pair(pair):
    """(ir uint8 (H, W), visible BGR uint8) of ``pair`` as the network path reads them."""
    from tesg_ros.network.colour import float_to_uint8
    from tesg_ros.training.dataset import read_ir, read_visible

    return float_to_uint8(read_ir(pair.ir)), read_visible(pair.vi)


def parse_peer(text):
    """``NAME=DIR`` -> (name, Path); raises argparse.ArgumentTypeError otherwise."""
    name, sep, folder = text.partition('=')
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f'expected NAME=DIR, got {text!r}')
    return name, Path(folder)


def find_peer_image(folder, dataset, pair_name):
    """The peer's fused image for ``pair_name`` of ``dataset`` (a folder path), or None."""
    for base in (folder / Path(dataset).name, folder):
        for suffix in PEER_SUFFIXES:
            path = base / f'{pair_name}{suffix}'
            if path.is_file():
                return path
    return None


def read_peer_image(path, shape):
    """A peer's fused image as BGR uint8 of ``shape`` (H, W), or a reason it cannot be used."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None, f'cannot read {path}'
    if image.shape[:2] != tuple(shape):
        return None, f'{path} is {image.shape[1]}x{image.shape[0]}, the pair {shape[1]}x{shape[0]}'
    return image, ''


def load_peer_image(folder, dataset, pair_name, shape):
    """``(image, reason)``: the peer's fused image for ``pair_name`` read as by
    :func:`read_peer_image`, or None and why (none in ``folder``, unreadable, another size)."""
    path = find_peer_image(folder, dataset, pair_name)
    if path is None:
        return None, f'no fused image for {pair_name} in {folder}'
    return read_peer_image(path, shape)


def nan_mean(values):
    """Mean over the finite values; NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float('nan')


def format_value(value):
    return f'{value:.3f}' if abs(value) < 10 else f'{value:.2f}'


def score_dataset(dataset, net, sig, methods, peers, args, evaluate, montage_rows):
    """Fuse and score every pair of ``dataset`` -> ({method: [scores]}, notes, network_ms,
    pair count); appends montage rows of its first 4 pairs to ``montage_rows``."""
    from tesg_ros.network.colour import restore_colour_np
    from tesg_ros.training.dataset import find_pairs

    scores = {m: [] for m in methods}
    notes = []
    network_ms = []
    pairs = find_pairs(dataset)
    required = list(peers) if args.only_peer_pairs else []
    if args.model_from:
        required.append((methods[0], Path(args.model_from)))
    pairs = [p for p in pairs
             if all(find_peer_image(folder, dataset, p.name) for _, folder in required)]
    pairs = pairs[:args.limit or None]
    for index, pair in enumerate(pairs):
        fused_images = {}
        if args.model_from:
            ir, vi_bgr = read_pair(pair)
            description = f'model output from {args.model_from}'
            fused_images[methods[0]], reason = load_peer_image(
                Path(args.model_from), dataset, pair.name, ir.shape)
            if reason:
                raise SystemExit(f'--model-from: {reason}')
            variants = []
        else:
            inputs = pair_inputs(sig, pair)
            ir, vi_bgr = inputs.ir, inputs.vi_bgr
            description = inputs.semantics.description
            variants = [(methods[0], True, True)]
        if args.ablations and not args.model_from:
            variants += [('TeSG, no masks', False, True), ('TeSG, no text', True, False),
                         ('TeSG, neither', False, False)]
        for name, use_masks, use_text in variants:
            fused_images[name], forward_ms = fuse_pair(net, inputs, use_masks, use_text,
                                                       args.lowlight_tone)
            if name == methods[0]:
                network_ms.append(forward_ms)
        if args.save_fused:
            folder = Path(args.save_fused) / Path(dataset).name
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f'{pair.name}.png'), fused_images[methods[0]])
        grey_vi = cv2.cvtColor(vi_bgr, cv2.COLOR_BGR2GRAY)
        fused_images['IR copy'] = cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR)
        fused_images['visible copy'] = vi_bgr
        fused_images['pixel average'] = ((ir[..., None].astype(np.float32) + vi_bgr) / 2
                                         ).round().astype(np.uint8)
        fused_images['Laplacian pyramid'] = restore_colour_np(
            laplacian_pyramid_fusion(ir, grey_vi) / 255.0, vi_bgr)
        for peer, folder in peers:
            image, reason = load_peer_image(folder, dataset, pair.name, ir.shape)
            if image is None:
                notes.append(f'{peer}: {reason}')
                continue
            fused_images[peer] = image
        vi_rgb = vi_bgr[:, :, ::-1]
        for name, image in fused_images.items():
            scores[name].append(evaluate(ir, vi_rgb, image[:, :, ::-1],
                                         convention=args.convention, names=REPORTED))
        if args.montage and index < 4:
            tiles = [fused_images['IR copy'], vi_bgr, fused_images['pixel average'],
                     fused_images['Laplacian pyramid']]
            tiles += [fused_images[peer] for peer, _ in peers if peer in fused_images]
            tiles.append(fused_images[methods[0]])
            height = 200
            montage_rows.append(np.hstack([cv2.resize(
                t, (int(t.shape[1] * height / t.shape[0]), height)) for t in tiles]))
        print(f'[{index + 1}/{len(pairs)}] {pair.name}: {description}', file=sys.stderr)
    return scores, notes, network_ms, len(pairs)


def print_table(methods, scores):
    print('| method | pairs | ' + ' | '.join(
        f'{key} {"↓" if key in ARTEFACTS else "↑"}' for key in REPORTED) + ' |')
    print('|---' * (len(REPORTED) + 2) + '|')
    for name in methods:
        if not scores[name]:
            print(f'| {name} | 0 |' + ' n/a |' * len(REPORTED))
            continue
        means = [nan_mean([s[key] for s in scores[name]]) for key in REPORTED]
        print(f'| {name} | {len(scores[name])} | '
              + ' | '.join(format_value(v) for v in means) + ' |')


def add_lowlight_tone_option(parser):
    """``--lowlight-tone`` / ``--no-lowlight-tone``, by default as the node's
    ``model.lowlight_tone``."""
    parser.add_argument('--lowlight-tone', action=argparse.BooleanOptionalAction,
                        default=PARAMETERS_BY_NAME['model.lowlight_tone'].default,
                        help="the node's low-light tone after the network (default: as the "
                        "node's model.lowlight_tone)")


def comparison(model_scores, peer_scores):
    """Metrics (of QUALITY) on which the model's mean is ahead, and the artefact verdicts."""
    def mean(scores, key):
        return nan_mean([s[key] for s in scores])

    ahead = [k for k in QUALITY if mean(model_scores, k) > mean(peer_scores, k)]
    lower = [k for k in ARTEFACTS if mean(model_scores, k) < mean(peer_scores, k)]
    return ahead, lower


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('datasets', nargs='+', help='folders with ir/ and vi/')
    parser.add_argument('--weights', default=default_weights(),
                        help="the network (default: the node's default weights)")
    add_lowlight_tone_option(parser)
    parser.add_argument('--convention', default='common', choices=('common', 'vifb'))
    parser.add_argument('--peer', action='append', type=parse_peer, default=[],
                        metavar='NAME=DIR', help="another method's fused images (repeatable)")
    parser.add_argument('--ablations', action='store_true',
                        help='also fuse without masks, without text and without both')
    parser.add_argument('--limit', type=int, default=0, help='first N pairs of each dataset')
    parser.add_argument('--only-peer-pairs', action='store_true',
                        help='score only the pairs every peer has an image for')
    parser.add_argument('--save-fused', default='', help="write the model's fused PNGs here")
    parser.add_argument('--model-from', default='',
                        help='score the model images saved earlier with --save-fused in this '
                        'folder instead of running the network (the pairs it has)')
    parser.add_argument('--montage', default='', help='write a montage PNG of a few pairs')
    args = parser.parse_args(argv)

    import torch

    from tesg_ros.metrics import evaluate, metric_units
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig import MiniLmTextEncoder, SemanticInformationGenerator

    peers = args.peer
    if len({name for name, _ in peers}) != len(peers):
        parser.error('peer names must be distinct')
    for name, folder in peers:
        if not folder.is_dir():
            parser.error(f'peer {name}: {folder} is not a folder')
    net = sig = None
    if not args.model_from:
        net = load_fusion_net(args.weights)
        sig = SemanticInformationGenerator(MiniLmTextEncoder())
    methods = ['TeSG (masks + text)']
    if args.ablations:
        methods += ['TeSG, no masks', 'TeSG, no text', 'TeSG, neither']
    methods += ['IR copy', 'visible copy', 'pixel average', 'Laplacian pyramid']
    methods += [name for name, _ in peers]
    results = {}
    montage_rows = []
    try:
        for dataset in args.datasets:
            results[dataset] = score_dataset(dataset, net, sig, methods, peers, args, evaluate,
                                             montage_rows)
    finally:
        if sig is not None:
            sig.stop()

    units = metric_units(args.convention)
    print(f'# {len(args.datasets)} dataset(s), metrics convention "{args.convention}" '
          f'(MI in {units["MI"]}; SSIM {units["SSIM"]}; Nabf: {units["Nabf"]}; '
          f'Blotch: {units["Blotch"]})')
    model = (f'model images from {args.model_from}' if args.model_from else
             f'weights: {args.weights}, low-light tone {"on" if args.lowlight_tone else "off"}')
    print(f'- {model}; command: python bench/evaluate_pairs.py '
          f'{" ".join(sys.argv[1:] if argv is None else argv)}')
    for dataset, (scores, notes, network_ms, count) in results.items():
        timing = (f'network forward (1 pair at a time, CPU, {torch.get_num_threads()} threads): '
                  f'median {np.median(network_ms):.1f} ms' if network_ms
                  else f'model images from {args.model_from}')
        print(f'\n## {dataset}: {count} pairs; {timing}\n')
        print_table(methods, scores)
        for name, _ in peers:
            if len(scores[name]) != len(scores[methods[0]]):
                continue
            ahead, lower = comparison(scores[methods[0]], scores[name])
            print(f'\n{methods[0]} vs {name}: ahead on {len(ahead)} of {len(QUALITY)} '
                  f'({", ".join(ahead) or "none"}); lower artefact measures: '
                  f'{", ".join(lower) or "none"}')
        for note in notes:
            print(f'- {note}')
    if args.montage:
        width = max(r.shape[1] for r in montage_rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in montage_rows]
        cv2.imwrite(args.montage, np.vstack(rows))
        print(f'\nmontage (IR | visible | pixel average | Laplacian pyramid | peers | TeSG): '
              f'{args.montage}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
