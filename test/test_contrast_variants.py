# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Contrast-restoration candidates of bench/contrast_variants.py on constructed cases."""

import numpy as np
import pytest

from bench_scripts import load_bench_script


def _bench():
    return load_bench_script('contrast_variants')


def _pattern(shape=(128, 160), period=16):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return (np.sin(2 * np.pi * cols / period) * np.sin(2 * np.pi * rows / period)).astype(
        np.float32)


@pytest.mark.parametrize('variant', ['base', 'combo', 'capped', 'window', 'lowlight',
                                     'base_low', 'capped_low'])
def test_a_copy_of_the_stronger_source_is_unchanged(variant):
    bench = _bench()
    ir = 0.5 + 0.4 * _pattern()
    vis = (0.5 + 0.1 * _pattern(period=24)).astype(np.float32)   # weaker everywhere
    out = bench.apply_variant(variant, ir, ir, vis)
    assert np.abs(out - ir).max() < 1e-4


@pytest.mark.parametrize('variant, max_gain', [('combo', 2.0), ('capped', 1.5)])
def test_a_mix_of_disagreeing_patterns_gets_contrast_back_within_the_bound(variant, max_gain):
    bench = _bench()
    ir = 0.5 + 0.3 * _pattern()
    vis = 0.5 - 0.3 * _pattern()                  # the same pattern, inverted
    fused = (0.7 * ir + 0.3 * vis).astype(np.float32)   # local std 0.4 of the sources'
    out = bench.apply_variant(variant, fused, ir, vis)
    inner = (slice(20, -20), slice(20, -20))
    ratio = np.std(out[inner]) / np.std(fused[inner])
    assert ratio > 1.3
    # never above the gain bound (the base stretch may add up to its own 1.6 first)
    assert ratio <= 1.6 * max_gain + 1e-3
    assert np.std(out[inner]) <= 1.02 * np.std(ir[inner])


@pytest.mark.parametrize('variant', ['base', 'combo', 'capped', 'window', 'lowlight', 'detail',
                                     'base_low', 'capped_low', 'clahe_base'])
def test_no_structure_where_both_sources_are_flat(variant):
    bench = _bench()
    ir = (0.5 + 0.3 * _pattern()).astype(np.float32)
    vis = (0.5 - 0.3 * _pattern()).astype(np.float32)
    ir[:, 80:] = 0.6
    vis[:, 80:] = 0.2
    fused = (0.7 * ir + 0.3 * vis).astype(np.float32)
    out = bench.apply_variant(variant, fused, ir, vis)
    flat = out[:, 110:]        # farther from the patterned half than any window radius
    assert np.std(flat) < 1e-3


def test_an_unknown_variant_is_a_clear_error():
    bench = _bench()
    plane = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match='unknown variant'):
        bench.apply_variant('sharpen', plane, plane, plane)
