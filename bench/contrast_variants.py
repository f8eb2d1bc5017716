# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Contrast-restoration candidates applied to saved fused images, for bench/evaluate_pairs.py.

Reads a model's fused PNGs (``--from DIR/<dataset>/<pair>.png``, e.g. written by
bench/fuse_models.py), takes their luma F, applies each candidate step with the pair's sources
I (infrared) and V (visible luma), restores the visible chroma and writes
``OUT/<variant>/<dataset>/<pair>.png``. Score them with::

    python bench/contrast_variants.py ../shared/data/tno25 ../shared/data/llvip32_night \\
        --from out/fused/new --out out/contrast
    python bench/evaluate_pairs.py ../shared/data/tno25 --model-from out/contrast/combo \\
        --peer base=out/contrast/base --peer capped=out/contrast/capped --peer TarDAL=out/tardal

The candidates (n = the longer image side; all gains only expand, g >= 1):

- ``base``: the global range stretch of tesg_ros.network.tone.restore_range applied to the
  base layer B = Gauss(F, n/200) only, fine detail F - B kept: F' = R(B) + (F - B).
  A global stretch of F itself sharpens every edge already as strong as a source's (Nabf).
- ``combo``: ``base``, then local contrast restoration of the base layer in windows of radius
  n/8: per window g = clip(max(std I, std V) / std F, 1, 2) (stds of the n/200-smoothed
  images), applied as a guided-filter style local linear map box(g) B + box(m_F (1 - g)).
- ``capped``: ``base``, then the same window gain (radius n/16, at most 1.5) on the whole
  image, capped per pixel by max(|grad I|, |grad V|) / |grad F| (smoothed at n/200) so that
  no edge is made stronger than the stronger source's.
- ``window``: for comparison, no base stretch and no cap: the window gain (radius n/16, at
  most 2) on the whole image, F' = box(g) F + box(m_F (1 - g)).
- ``clahe``: F + 0.5 (CLAHE(F) - F), clip limit 2, 8 tiles across the longer side.
- ``clahe_base``: CLAHE (the same) of the base layer only, fine detail kept.
- ``lowlight``: a gamma on the base layer from the frame's own mean (``lowlight_tone``):
  only a frame darker than the target (0.3) is brightened, gamma at least 0.7.
- ``detail``: the detail layer F - Gauss(F, n/200) times clip(1.3 S_src / S_F, 1, 2), S the
  smoothed gradient magnitudes: weak detail boosted more, capped at 1.3x the stronger source.
- ``capped_clahe``, ``capped_detail``, ``capped_clahe_detail``, ``capped_low``: ``capped``
  followed by those steps.
- ``base_low``: tesg_ros.network.tone.lowlight_tone (the base stretch and the low-light gamma
  in one function, the engine's ``model.lowlight_tone``).

``--time`` times tesg_ros.network.tone.lowlight_tone on the first pair at 640x480 and 1280x1024.

Inputs are the 8-bit luma of the saved images, not the network's float output.
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

VARIANTS = ('base', 'combo', 'capped', 'window', 'clahe', 'clahe_base', 'capped_clahe',
            'lowlight', 'detail', 'capped_detail', 'capped_clahe_detail', 'base_low',
            'capped_low')


def _box(x, radius):
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1),
                         borderType=cv2.BORDER_REFLECT)


def _local_stats(x, radius):
    mean = _box(x, radius)
    return mean, np.sqrt(np.maximum(_box(x * x, radius) - mean * mean, 0.0))


def _blur(x, sigma):
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _gradient(x):
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(gx * gx + gy * gy)


def base_stretch(fused, ir, vis, fine=1 / 200):
    from tesg_ros.network.tone import restore_range

    sigma = max(0.5, fine * max(fused.shape))
    base = _blur(fused, sigma)
    stretched = restore_range(base, _blur(ir, sigma), _blur(vis, sigma))
    return np.clip(stretched + (fused - base), 0, 1)


def local_base_gain(fused, ir, vis, frac=1 / 8, fine=1 / 200, max_gain=2.0, eps=1 / 255):
    size = max(fused.shape)
    radius, sigma = max(1, int(round(frac * size))), max(0.5, fine * size)
    base, base_ir, base_vis = _blur(fused, sigma), _blur(ir, sigma), _blur(vis, sigma)
    mean_f, std_f = _local_stats(base, radius)
    std_t = np.maximum(_local_stats(base_ir, radius)[1], _local_stats(base_vis, radius)[1])
    gain = np.clip(std_t / np.maximum(std_f, eps), 1.0, max_gain)
    out = _box(gain, radius) * base + _box(mean_f * (1 - gain), radius) + (fused - base)
    return np.clip(out, 0, 1)


def capped_gain(fused, ir, vis, frac=1 / 16, fine=1 / 200, max_gain=1.5, eps=2 / 255):
    size = max(fused.shape)
    radius, sigma = max(1, int(round(frac * size))), max(0.5, fine * size)
    mean_f, std_f = _local_stats(fused, radius)
    std_t = np.maximum(_local_stats(ir, radius)[1], _local_stats(vis, radius)[1])
    gain = _box(np.clip(std_t / np.maximum(std_f, eps), 1.0, max_gain), radius)
    cap = _blur(np.maximum(_gradient(ir), _gradient(vis)), sigma) / np.maximum(
        _blur(_gradient(fused), sigma), 1e-3)
    gain = np.maximum(np.minimum(gain, cap), 1.0)
    return np.clip(gain * (fused - mean_f) + mean_f, 0, 1)


def window_gain(fused, ir, vis, frac=1 / 16, max_gain=2.0, eps=2 / 255):
    radius = max(1, int(round(frac * max(fused.shape))))
    mean_f, std_f = _local_stats(fused, radius)
    std_t = np.maximum(_local_stats(ir, radius)[1], _local_stats(vis, radius)[1])
    gain = np.clip(std_t / np.maximum(std_f, eps), 1.0, max_gain)
    return np.clip(_box(gain, radius) * fused + _box(mean_f * (1 - gain), radius), 0, 1)


def clahe(fused, clip=2.0, tiles=8, amount=1.0):
    """F + amount (CLAHE(F) - F); the tile grid has ``tiles`` tiles across the longer side
    (tiles scale with the image). CLAHE runs on the 8-bit quantised luma; its per-pixel change
    is added to F so detail finer than one grey level is kept."""
    height, width = fused.shape
    side = max(height, width) / tiles
    grid = (max(1, int(round(width / side))), max(1, int(round(height / side))))
    quantised = np.clip(np.round(fused * 255), 0, 255).astype(np.uint8)
    equalised = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid).apply(quantised)
    change = (equalised.astype(np.float32) - quantised) / 255.0
    return np.clip(fused + amount * change, 0, 1)


def clahe_base(fused, fine=1 / 200, **kwargs):
    """CLAHE of the base layer B = Gauss(F, n/200) only, fine detail F - B kept."""
    sigma = max(0.5, fine * max(fused.shape))
    base = _blur(fused, sigma)
    return np.clip(clahe(base, **kwargs) + (fused - base), 0, 1)


def lowlight_tone(fused, fine=1 / 200, target=0.3, max_gamma=0.7):
    """Gamma on the base layer from the frame's own mean: a base mean m < target gets
    gamma = log(target) / log(m) (at least max_gamma, i.e. at most that much brightening);
    a frame already at or above the target is unchanged. Fine detail is kept and scaled by
    the local slope of the curve so that dark detail is brightened with its base."""
    sigma = max(0.5, fine * max(fused.shape))
    base = np.clip(_blur(fused, sigma), 1e-3, 1)
    mean = float(base[::4, ::4].mean())
    if mean >= target:
        return fused
    gamma = max(max_gamma, np.log(target) / np.log(max(mean, 1e-3)))
    toned = base ** gamma
    slope = np.minimum(gamma * base ** (gamma - 1), 1 / gamma)
    return np.clip(toned + slope * (fused - base), 0, 1)


def detail_gain(fused, ir, vis, k=1.3, max_gain=2.0, fine=1 / 200, floor=2 / 255):
    """Detail layer D = F - Gauss(F, n/200) boosted by g = clip(k S_src / S_F, 1, max_gain),
    S = the n/200-smoothed gradient magnitude (S_src of the stronger source): weak fused
    detail is boosted more, and no edge beyond k times the stronger source's. ``floor``
    keeps a near-flat fused region (S_F ~ 0) from a huge ratio."""
    sigma = max(0.5, fine * max(fused.shape))
    base = _blur(fused, sigma)
    source = _blur(np.maximum(_gradient(ir), _gradient(vis)), sigma)
    own = _blur(_gradient(fused), sigma)
    gain = np.clip(k * source / np.maximum(own, floor), 1.0, max_gain)
    return np.clip(base + gain * (fused - base), 0, 1)


def apply_variant(name, fused, ir, vis):
    """``name`` of VARIANTS on (H, W) float32 luma planes in [0, 1] -> (H, W) float32."""
    if name == 'window':
        return window_gain(fused, ir, vis)
    if name == 'clahe':
        return clahe(fused, amount=0.5)
    if name == 'clahe_base':
        return clahe_base(fused)
    if name == 'lowlight':
        return lowlight_tone(fused)
    if name == 'detail':
        return detail_gain(fused, ir, vis)
    based = base_stretch(fused, ir, vis)
    if name == 'base':
        return based
    if name == 'combo':
        return local_base_gain(based, ir, vis)
    if name == 'capped':
        return capped_gain(based, ir, vis)
    if name == 'base_low':
        from tesg_ros.network.tone import lowlight_tone as shipped_lowlight_tone

        return shipped_lowlight_tone(fused, ir, vis)
    if name == 'capped_low':
        return lowlight_tone(capped_gain(based, ir, vis))
    if name == 'capped_clahe':
        return clahe(capped_gain(based, ir, vis), amount=0.5)
    if name == 'capped_detail':
        return detail_gain(capped_gain(based, ir, vis), ir, vis)
    if name == 'capped_clahe_detail':
        return detail_gain(clahe(capped_gain(based, ir, vis), amount=0.5), ir, vis)
    raise ValueError(f'unknown variant {name!r}; known: {VARIANTS}')


def time_lowlight(dataset, source, sizes=((640, 480), (1280, 1024)), repeats=50):
    """Median cost of tesg_ros.network.tone.lowlight_tone on one real pair, per size."""
    import time

    from tesg_ros.network.colour import bgr_to_ycbcr_np, uint8_to_float
    from tesg_ros.network.tone import lowlight_tone
    from tesg_ros.training.dataset import find_pairs, load_pair

    cv2.setNumThreads(1)
    pair = find_pairs(dataset)[0]
    ir, visible = load_pair(pair)
    fused_bgr = cv2.imread(str(Path(source) / Path(dataset).name / f'{pair.name}.png'))
    for width, height in sizes:
        planes = [cv2.resize(np.ascontiguousarray(p, np.float32), (width, height),
                             interpolation=cv2.INTER_LINEAR) for p in (
            bgr_to_ycbcr_np(uint8_to_float(fused_bgr))[..., 0], ir,
            bgr_to_ycbcr_np(uint8_to_float(visible))[..., 0])]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            lowlight_tone(*planes)
            times.append((time.perf_counter() - start) * 1e3)
        print(f'lowlight_tone {width}x{height} ({pair.name}): median {np.median(times):.1f} ms '
              f'over {repeats} runs, 1 thread')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('datasets', nargs='+', help='folders with ir/ and vi/')
    parser.add_argument('--from', dest='source', required=True,
                        help='folder of the fused PNGs: <dataset>/<pair>.png')
    parser.add_argument('--out', required=True)
    parser.add_argument('--variant', action='append', choices=VARIANTS,
                        help='default: all')
    parser.add_argument('--time', action='store_true',
                        help='only time tone.lowlight_tone on the first pair resized to '
                        '640x480 and 1280x1024 (1 OpenCV thread) and print the medians')
    args = parser.parse_args(argv)

    from tesg_ros.network.colour import bgr_to_ycbcr_np, restore_colour_np, uint8_to_float
    from tesg_ros.training.dataset import find_pairs, load_pair

    if args.time:
        return time_lowlight(args.datasets[0], args.source)

    for dataset in args.datasets:
        for pair in find_pairs(dataset):
            path = Path(args.source) / Path(dataset).name / f'{pair.name}.png'
            fused_bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if fused_bgr is None:
                print(f'skipped {pair.name}: cannot read {path}', file=sys.stderr)
                continue
            ir, visible = load_pair(pair)
            vis = bgr_to_ycbcr_np(uint8_to_float(visible))[..., 0]
            fused = bgr_to_ycbcr_np(uint8_to_float(fused_bgr))[..., 0]
            for name in args.variant or VARIANTS:
                folder = Path(args.out) / name / Path(dataset).name
                folder.mkdir(parents=True, exist_ok=True)
                out = apply_variant(name, fused, ir, vis).astype(np.float32)
                cv2.imwrite(str(folder / f'{pair.name}.png'), restore_colour_np(out, visible))
    return 0


if __name__ == '__main__':
    sys.exit(main())
