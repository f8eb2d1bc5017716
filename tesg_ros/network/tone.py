# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Range restoration of the fused luma: the fused image spans the range the sources span.

A per-pixel mix of two images is flatter than either where they disagree (night: a dark visible
image mixed with a bright infrared one gives a grey picture with a compressed histogram). The
fused luma F is therefore stretched, globally and monotonically, so that its robust range
(the ``low``/``high`` quantiles) covers the union of the two sources' robust ranges::

    lo_S = min(q_low(I), q_low(V)),   hi_S = max(q_high(I), q_high(V))
    g = clip((hi_S - lo_S) / (q_high(F) - q_low(F)), 1, max_gain)
    F' = clip(c_S + g (F - c_F), 0, 1)   with c the mid-points of the ranges

It only expands (``g >= 1``: a fused image already as wide as its sources is returned
unchanged) and is one global affine map: it cannot create a local structure, a
halo or a blotch that F does not have (the artefact measures of ``tesg_ros.metrics`` see the same
edges, scaled). ``max_gain`` bounds the stretch of a nearly flat frame (noise is stretched with
it). Quantiles come from every ``stride``-th pixel: the cost is independent of the frame's
aspect and about 1 ms at 1280x1024.

Why not a local (CLAHE-like) stretch: it changes the relative brightness of regions, which is
what the infrared share and the masks decide; a global map keeps that decision.
"""

import numpy as np

from tesg_ros.errors import ConfigError

DEFAULT_QUANTILES = (0.005, 0.995)
DEFAULT_MAX_GAIN = 1.6


def _range(image, low, high, stride):
    sample = np.asarray(image, np.float32)[::stride, ::stride]
    lo, hi = np.quantile(sample, (low, high))
    return float(lo), float(hi)


def _stretch(fused_stats, ir, vis_y, low, high, max_gain, stride):
    """``(gain, fused_mid, source_mid)`` of restore_range's affine map; ``(1, 0, 0)``, the
    identity, when the fused image is as wide as its sources already."""
    fused_lo, fused_hi = _range(fused_stats, low, high, stride)
    ir_lo, ir_hi = _range(ir, low, high, stride)
    vis_lo, vis_hi = _range(vis_y, low, high, stride)
    source_lo, source_hi = min(ir_lo, vis_lo), max(ir_hi, vis_hi)
    span = fused_hi - fused_lo
    gain = 1.0 if span <= 1e-6 else float(np.clip((source_hi - source_lo) / span, 1.0, max_gain))
    if gain == 1.0:
        return 1.0, 0.0, 0.0
    return gain, 0.5 * (fused_lo + fused_hi), 0.5 * (source_lo + source_hi)


def restore_range(fused_y, ir, vis_y, low=DEFAULT_QUANTILES[0], high=DEFAULT_QUANTILES[1],
                  max_gain=DEFAULT_MAX_GAIN, stride=4):
    """``(H, W)`` float32 in [0, 1]: ``fused_y`` stretched to the sources' robust range.

    ``fused_y``, ``ir``, ``vis_y``: (H, W) float arrays in [0, 1] on the same grid (the
    infrared registered to the visible image). ``low`` < ``high`` quantiles in [0, 1],
    ``max_gain`` >= 1. See the module docstring.
    """
    if not 0.0 <= low < high <= 1.0:
        raise ConfigError(f'range quantiles must satisfy 0 <= low < high <= 1, got {low}, {high}')
    if not max_gain >= 1.0:
        raise ConfigError(f'max_gain must be >= 1, got {max_gain}')
    fused = np.asarray(fused_y, np.float32)
    if np.shape(ir) != fused.shape or np.shape(vis_y) != fused.shape:
        raise ValueError(f'fused {fused.shape}, ir {np.shape(ir)} and visible '
                         f'{np.shape(vis_y)} must share one grid')
    gain, fused_mid, source_mid = _stretch(fused, ir, vis_y, low, high, max_gain,
                                           max(1, int(stride)))
    if gain == 1.0:
        return fused
    out = (fused - fused_mid) * gain + source_mid
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


DEFAULT_LOWLIGHT_TARGET = 0.3
DEFAULT_LOWLIGHT_MAX_GAMMA = 0.7
LOWLIGHT_FINE = 1 / 200
_LUT_SIZE = 8192


def _blur(image, sigma):
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _small_blur(image, sigma, factor):
    """``image`` area-reduced by ``factor`` and blurred by ``sigma / factor`` (quantiles of a
    smoothed image at a fraction of the cost)."""
    import cv2

    image = np.asarray(image, np.float32)
    size = (max(1, image.shape[1] // factor), max(1, image.shape[0] // factor))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return _blur(small, sigma / factor) if sigma / factor >= 0.5 else small


def _gauss_base(image, sigma):
    """Gauss(``image``, ``sigma``); for ``sigma`` >= 6 (frames 1200 px wide and more) through
    the image halved, blurred there and bilinearly enlarged: a quarter of the pixels and half
    the kernel, within 0.2 grey levels of the exact blur (the halving's own smoothing, about
    1 px^2 of variance, is taken off the blur)."""
    import cv2

    if sigma < 6:
        return _blur(image, sigma)
    height, width = image.shape
    small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    small = _blur(small, np.sqrt(sigma ** 2 - 1.0) / 2)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def lowlight_tone(fused_y, ir, vis_y, target=DEFAULT_LOWLIGHT_TARGET,
                  max_gamma=DEFAULT_LOWLIGHT_MAX_GAMMA, fine=LOWLIGHT_FINE, stride=4):
    """``(H, W)`` float32 in [0, 1]: the base layer of ``fused_y`` range-stretched and, in a
    dark frame, brightened by a gamma taken from the frame's own mean; fine detail kept.

    With n the longer side, B = Gauss(F, n/200) and D = F - B (the fine detail):

    1. B' = restore_range(B, Gauss(I), Gauss(V)): the base spans the sources' robust range.
       Only the base is stretched: a stretch of F itself would sharpen edges already as
       strong as a source's (Nabf).
    2. m = mean(B'); a frame with m < ``target`` gets gamma = clip(log(target) / log(m),
       ``max_gamma``, 1), F' = B'^gamma + s D with s = min(gamma B'^(gamma - 1), 1 / gamma)
       the local slope of the curve (dark detail is brightened with its base, by at most
       1/gamma); a frame at or above ``target`` keeps gamma = 1 (F' = B' + D).

    A monotonic curve of a smooth base and a bounded scale of the detail: flat stays flat, no
    edge appears where F has none. ``fused_y``, ``ir``, ``vis_y``: (H, W) float arrays in
    [0, 1] on one grid; ``0 < target < 1``, ``0 < max_gamma <= 1``.
    """
    if not 0.0 < target < 1.0:
        raise ConfigError(f'low-light target must be in (0, 1), got {target}')
    if not 0.0 < max_gamma <= 1.0:
        raise ConfigError(f'low-light max_gamma must be in (0, 1], got {max_gamma}')
    fused = np.asarray(fused_y, np.float32)
    if np.shape(ir) != fused.shape or np.shape(vis_y) != fused.shape:
        raise ValueError(f'fused {fused.shape}, ir {np.shape(ir)} and visible '
                         f'{np.shape(vis_y)} must share one grid')
    sigma = max(0.5, fine * max(fused.shape))
    base = _gauss_base(fused, sigma)
    detail = fused - base
    stride = max(1, int(stride))
    # the smoothed ranges only feed quantiles: all three taken alike at 1/stride resolution
    gain, fused_mid, source_mid = _stretch(
        _small_blur(fused, sigma, stride), *(_small_blur(s, sigma, stride) for s in (ir, vis_y)),
        DEFAULT_QUANTILES[0], DEFAULT_QUANTILES[1], DEFAULT_MAX_GAIN, 1)

    def stretched(b):  # B' as a function of B: restore_range's map, clipped
        return np.clip((b - fused_mid) * gain + source_mid, 0.0, 1.0)

    mean = float(stretched(base[::stride, ::stride]).mean())
    gamma = 1.0
    if 1e-3 < mean < target:
        gamma = float(np.clip(np.log(target) / np.log(mean), max_gamma, 1.0))
    if gamma == 1.0:
        out = stretched(base).astype(np.float32, copy=False)
        out += detail
    else:
        # the stretch, the curve and its slope in one table over B: the base is smooth
        levels = stretched(np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float32))
        curve = (levels ** gamma).astype(np.float32)
        slope = np.minimum(gamma * np.maximum(levels, 1e-3) ** (gamma - 1),
                           1 / gamma).astype(np.float32)
        index = np.clip(base, 0.0, 1.0, out=base)
        index *= _LUT_SIZE - 1
        index += 0.5
        index = index.astype(np.int32)
        out = np.take(slope, index)
        out *= detail
        out += np.take(curve, index)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
