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
    stride = max(1, int(stride))
    fused_lo, fused_hi = _range(fused, low, high, stride)
    ir_lo, ir_hi = _range(ir, low, high, stride)
    vis_lo, vis_hi = _range(vis_y, low, high, stride)
    source_lo, source_hi = min(ir_lo, vis_lo), max(ir_hi, vis_hi)
    span = fused_hi - fused_lo
    gain = 1.0 if span <= 1e-6 else float(np.clip((source_hi - source_lo) / span, 1.0, max_gain))
    if gain == 1.0:
        return fused
    fused_mid, source_mid = 0.5 * (fused_lo + fused_hi), 0.5 * (source_lo + source_hi)
    out = (fused - fused_mid) * gain + source_mid
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
