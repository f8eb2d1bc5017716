# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Range restoration of the fused luma (tesg_ros.network.tone)."""

import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.network.tone import restore_range


def _night_pair(seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:120, 0:160].astype(np.float32)
    ir = 0.3 + 0.5 * (cols / 160.0) + rng.normal(0, 0.01, cols.shape)
    ir[40:80, 60:80] = 0.95                                   # a warm person
    vis = 0.02 + 0.1 * (rows / 120.0) + rng.normal(0, 0.005, rows.shape)   # dark street
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vis, 0, 1).astype(np.float32)


def test_a_flat_mix_is_stretched_to_the_sources_range_keeping_its_order():
    ir, vis = _night_pair()
    fused = 0.5 * (ir + vis)
    out = restore_range(fused, ir, vis)
    lo, hi = np.quantile(out, (0.005, 0.995))
    src_lo = min(np.quantile(ir, 0.005), np.quantile(vis, 0.005))
    src_hi = max(np.quantile(ir, 0.995), np.quantile(vis, 0.995))
    # The mix spans about half the sources' range: stretched by up to max_gain (1.6).
    assert hi - lo == pytest.approx(min(1.6 * (np.quantile(fused, 0.995)
                                               - np.quantile(fused, 0.005)),
                                        src_hi - src_lo), rel=0.05)
    assert np.std(out) > 1.4 * np.std(fused)
    order = np.argsort(fused.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)      # monotonic: no new structure
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_a_fused_image_as_wide_as_its_sources_is_unchanged():
    ir, vis = _night_pair(1)
    fused = np.where(np.arange(160)[None, :] < 80, ir, vis).astype(np.float32)
    wide = np.linspace(0, 1, fused.size, dtype=np.float32).reshape(fused.shape)
    assert restore_range(wide, ir, vis) is wide or np.array_equal(
        restore_range(wide, ir, vis), wide)
    flat = np.full_like(ir, 0.4)
    assert np.array_equal(restore_range(flat, ir, vis), flat)    # nothing to stretch


def test_bad_arguments_are_clear_errors():
    ir, vis = _night_pair()
    with pytest.raises(ConfigError):
        restore_range(ir, ir, vis, low=0.9, high=0.1)
    with pytest.raises(ConfigError):
        restore_range(ir, ir, vis, max_gain=0.5)
    with pytest.raises(ValueError):
        restore_range(ir[:10], ir, vis)


def test_the_artefact_measures_do_not_rise_on_a_stretched_mix():
    from tesg_ros.metrics import blotch
    ir, vis = _night_pair(2)
    fused = 0.5 * (ir + vis)
    out = restore_range(fused, ir, vis)
    before = blotch(ir * 255, vis * 255, fused * 255)
    after = blotch(ir * 255, vis * 255, out * 255)
    # A global affine map of a local mix is still a local mix: nothing new to explain.
    assert after <= 1.6 * before + 0.02
