# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of the artefact measures (Nabf, Blotch) and the resolution / shift checks."""

import math

import cv2
import numpy as np
import pytest

from tesg_ros import metrics
from tesg_ros.errors import ConfigError

# ------------------------------------------------------------------ constructed scenes


def _scene(height=240, width=320, seed=3):
    """A night-street-like pair: flat pavement and sky, a warm person, a lit sign, texture.

    Returns float64 (ir, vi) in 0..255. The lower left quarter is flat in both sources (the
    'pavement' where the tests put blotches).
    """
    rng = np.random.default_rng(seed)
    ir = np.full((height, width), 70.0)
    vi = np.full((height, width), 40.0)
    vi[: height // 3] = 110.0                                       # lit sky / wall
    ir[height // 4: height // 4 + 90, width - 90: width - 60] = 210.0  # warm person
    vi[height // 2: height // 2 + 20, width // 2: width - 20] = 200.0  # lit sign
    texture = cv2.GaussianBlur(rng.normal(size=(height, width)), (0, 0), 1.5) * 40.0
    vi[: height // 3, width // 2:] += texture[: height // 3, width // 2:]  # foliage
    ir = cv2.GaussianBlur(ir, (0, 0), 1.2) + rng.normal(scale=1.0, size=ir.shape)
    vi = cv2.GaussianBlur(vi, (0, 0), 1.0) + rng.normal(scale=1.5, size=vi.shape)
    return np.clip(ir, 0, 255), np.clip(vi, 0, 255)


def _pyramid_fusion(ir, vi, levels=4):
    """Classical Laplacian-pyramid fusion (mean base, larger-magnitude detail per level)."""
    def pyramid(image):
        gaussian = [image.astype(np.float32)]
        for _ in range(levels):
            gaussian.append(cv2.pyrDown(gaussian[-1]))
        details = [g - cv2.pyrUp(n, dstsize=(g.shape[1], g.shape[0]))
                   for g, n in zip(gaussian[:-1], gaussian[1:])]
        return details, gaussian[-1]

    ir_details, ir_base = pyramid(ir)
    vi_details, vi_base = pyramid(vi)
    fused = (ir_base + vi_base) / 2
    for ir_d, vi_d in reversed(list(zip(ir_details, vi_details))):
        fused = cv2.pyrUp(fused, dstsize=(ir_d.shape[1], ir_d.shape[0]))
        fused += np.where(np.abs(ir_d) >= np.abs(vi_d), ir_d, vi_d)
    return np.clip(fused, 0, 255).astype(np.float64)


def _legitimate_fusions(ir, vi):
    height, width = ir.shape
    ramp = np.linspace(0.3, 0.7, width)[None, :]
    pixel_weight = 1.0 / (1.0 + np.exp(-(ir - vi) / 20.0))
    return {
        'IR copy': ir, 'visible copy': vi, 'average': (ir + vi) / 2,
        'weighted 0.3 / 0.7': 0.3 * ir + 0.7 * vi,
        'weight ramp across the frame': ramp * ir + (1 - ramp) * vi,
        'per-pixel weight of the sources': pixel_weight * ir + (1 - pixel_weight) * vi,
        'Laplacian pyramid': _pyramid_fusion(ir, vi),
    }


def _blotched_fusions(ir, vi):
    height, width = ir.shape
    average = (ir + vi) / 2
    rows, cols = np.mgrid[:height, :width]
    side = max(height, width)
    # One soft blotch on the flat pavement (lower left), 15 grey levels, sigma 1/25 side.
    blotch = 15.0 * np.exp(-((rows - 0.8 * height) ** 2 + (cols - 0.25 * width) ** 2)
                           / (2 * (side / 25.0) ** 2))
    # Mottling: smooth random patches of +-8 grey levels over the whole frame.
    rng = np.random.default_rng(11)
    mottle = cv2.GaussianBlur(rng.normal(size=(height, width)), (0, 0), side / 30.0)
    mottle *= 8.0 / mottle.std()
    # A blocky weight map: 1/8-side blocks of IR share 0.2 or 0.8.
    block = side // 8
    weights = rng.choice([0.2, 0.8], size=(height // block + 1, width // block + 1))
    weights = np.kron(weights, np.ones((block, block)))[:height, :width]
    square = average.copy()
    square[int(0.6 * height): int(0.85 * height), int(0.1 * width): int(0.35 * width)] += 20.0
    return {
        'average + one blotch': average + blotch,
        'average + mottling': average + mottle,
        'blocky weight map': weights * ir + (1 - weights) * vi,
        'average + a bright block': square,
    }


@pytest.fixture(scope='module')
def scene():
    return _scene()


# ----------------------------------------------------------------------------- Nabf


def _kumar_reference(fused, vi, ir):
    """Loop-by-loop transcription of Kumar's ``objective_fusion_perform_fn.m`` NABF output
    (with his ``sobel_fn`` and ``per_extn_im_fn``), kept independent of the vectorised code."""
    td, wt_min, lg = 2, 0.001, 1.5
    nrg, kg, sigmag, nra, ka, sigmaa = 0.9999, 19, 0.5, 0.9995, 22, 0.5
    vtemp = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    htemp = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8

    def per_extn(x):
        p, q = x.shape
        out = np.zeros((p + 2, q + 2))
        out[1:p + 1, 1:q + 1] = x
        out[0, :] = out[2, :]            # xout_ext(1:hwsize,:) = xout_ext(wsize:-1:hwsize+2,:)
        out[p + 1, :] = out[p - 1, :]    # xout_ext(p+hwsize+1:...,:) = xout_ext(p+hwsize-1:-1:p,:)
        out[:, 0] = out[:, 2]
        out[:, q + 1] = out[:, q - 1]
        return out

    def sobel(x):
        ext = per_extn(x)
        p, q = x.shape
        gv = np.zeros((p, q))
        gh = np.zeros((p, q))
        for ii in range(p):
            for jj in range(q):
                window = ext[ii:ii + 3, jj:jj + 3]
                gv[ii, jj] = np.sum(window * vtemp)
                gh[ii, jj] = np.sum(window * htemp)
        return gv, gh

    def angle(gv, gh):
        if gv == 0 and gh == 0:
            return 0.0
        if gh == 0:
            return math.copysign(math.pi / 2, gv)  # MATLAB atan(+-Inf)
        return math.atan(gv / gh)

    (gva, gha), (gvb, ghb), (gvf, ghf) = sobel(vi), sobel(ir), sobel(fused)
    p, q = fused.shape
    numerator = 0.0
    wt_sum = 0.0
    for ii in range(p):
        for jj in range(q):
            ga = math.sqrt(gha[ii, jj] ** 2 + gva[ii, jj] ** 2)
            gb = math.sqrt(ghb[ii, jj] ** 2 + gvb[ii, jj] ** 2)
            gf = math.sqrt(ghf[ii, jj] ** 2 + gvf[ii, jj] ** 2)
            q_src = []
            for g, gv, gh in ((ga, gva, gha), (gb, gvb, ghb)):
                if g == 0 or gf == 0:
                    relative = 0.0
                elif g > gf:
                    relative = gf / g
                else:
                    relative = g / gf
                a_src = angle(gv[ii, jj], gh[ii, jj])
                a_f = angle(gvf[ii, jj], ghf[ii, jj])
                orientation = abs(abs(a_src - a_f) - math.pi / 2) * 2 / math.pi
                qg = nrg / (1 + math.exp(-kg * (relative - sigmag)))
                qa = nra / (1 + math.exp(-ka * (orientation - sigmaa)))
                q_src.append(math.sqrt(qg * qa))
            wa = ga ** lg if ga >= td else wt_min
            wb = gb ** lg if gb >= td else wt_min
            wt_sum += wa + wb
            if gf > ga and gf > gb:
                numerator += (1 - q_src[0]) * wa + (1 - q_src[1]) * wb
    return numerator / wt_sum


def _small_triples():
    """Small triples on integer grey levels (as images are: the sums are then exact)."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:13, :17]
    ir = np.where(cols > 8, 180.0, 40.0) + rng.normal(scale=3.0, size=rows.shape)
    vi = 100.0 + 60.0 * np.sin(rows / 2.0) + rng.normal(scale=3.0, size=rows.shape)
    ir, vi = np.round(np.clip(ir, 0, 255)), np.round(np.clip(vi, 0, 255))
    mix = 0.6 * ir + 0.4 * vi + rng.normal(scale=6, size=ir.shape)
    yield 'random mix', ir, vi, np.round(np.clip(mix, 0, 255))
    sharp = 2.0 * ir - cv2.GaussianBlur(ir, (0, 0), 1.0)
    yield 'sharpened', ir, vi, np.round(np.clip(sharp, 0, 255))
    flat_ir, flat_vi = np.full((9, 11), 60.0), np.full((9, 11), 90.0)
    step = flat_vi.copy()
    step[:, 5:] = 140.0                                 # an edge in neither source
    yield 'edge in neither source', flat_ir, flat_vi, step
    # Exact zeros of gh and gv, pure vertical and horizontal edges, integer levels.
    grid = np.zeros((8, 8))
    grid[4:, :] = 255.0
    yield 'integer edges', grid.T.copy(), grid, np.maximum(grid, grid.T)


@pytest.mark.parametrize('case', list(_small_triples()), ids=lambda c: c[0])
def test_nabf_reproduces_kumars_matlab_formula_on_constructed_inputs(case):
    _, ir, vi, fused = case
    expected = _kumar_reference(fused, vi, ir)
    assert metrics.nabf_pair(vi, ir, fused) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert metrics.nabf(ir, vi, fused) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_nabf_of_an_edge_in_neither_source_by_hand():
    _, ir, vi, fused = list(_small_triples())[2]
    # Both 9 x 11 sources are flat: every weight is wt_min, every source angle 0. The step
    # between columns 4 and 5 gives the fused image edges (angle pi/2) in 2 of 11 columns, where
    # G = 0 and A = 0, so Q = sqrt(0.9999 / (1 + e^(19 / 2)) * 0.9995 / (1 + e^(22 / 2))).
    q = math.sqrt(0.9999 / (1 + math.exp(9.5)) * 0.9995 / (1 + math.exp(11.0)))
    assert metrics.nabf(ir, vi, fused) == pytest.approx(2 / 11 * (1 - q), rel=1e-12)


def test_nabf_is_zero_for_a_copy_of_a_source_and_for_weighted_averages(tno_triple_real):
    ir, vi = tno_triple_real
    assert metrics.nabf(ir, vi, ir) == 0.0
    assert metrics.nabf(ir, vi, vi) == 0.0
    for weight in (0.5, 0.3, 0.9):
        # The Sobel response of a convex mix is never stronger than both sources' responses
        # (up to float rounding where all three are equal: a few pixels of weight 0.001).
        assert metrics.nabf(ir, vi, weight * ir + (1 - weight) * vi) < 1e-6


def test_nabf_rises_with_artefacts_and_stays_in_0_1(tno_triple_real):
    ir, vi = tno_triple_real
    average = (ir + vi) / 2
    rng = np.random.default_rng(5)
    noisy = np.clip(average + rng.normal(scale=10, size=ir.shape), 0, 255)
    sharpened = np.clip(3 * average - 2 * cv2.GaussianBlur(average, (0, 0), 2.0), 0, 255)
    values = [metrics.nabf(ir, vi, x) for x in (average, noisy, sharpened)]
    assert values[0] < 1e-9 < values[1] and values[0] < values[2]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_nabf_unit_range_variant_is_the_measure_on_images_divided_by_255(tno_triple_real):
    ir, vi = tno_triple_real
    fused = np.clip(1.4 * ir - 0.2 * vi, 0, 255)
    unit = metrics.nabf(ir, vi, fused, unit_range=True)
    assert unit == pytest.approx(metrics.nabf_pair(vi / 255, ir / 255, fused / 255), rel=1e-12)
    # Kumar's threshold of 2 never fires on 0..1 images: a different value, not a rescaling.
    assert unit != pytest.approx(metrics.nabf(ir, vi, fused), rel=0.05)


@pytest.fixture(scope='module')
def tno_triple_real(test_data):
    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '07.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(test_data / 'tno' / 'vi' / '07.png'), cv2.IMREAD_GRAYSCALE)
    return ir.astype(np.float64), vi.astype(np.float64)


# --------------------------------------------------------------------------- Blotch


def test_blotch_is_low_for_legitimate_fusion_and_high_for_blotches_and_blocks(scene):
    ir, vi = scene
    legitimate = {name: metrics.blotch(ir, vi, np.clip(f, 0, 255))
                  for name, f in _legitimate_fusions(ir, vi).items()}
    blotched = {name: metrics.blotch(ir, vi, np.clip(f, 0, 255))
                for name, f in _blotched_fusions(ir, vi).items()}
    print('legitimate', legitimate, 'blotched', blotched)
    assert legitimate['IR copy'] == legitimate['visible copy'] == 0.0
    assert legitimate['average'] == legitimate['weighted 0.3 / 0.7'] == 0.0
    assert max(legitimate.values()) < 0.1, legitimate
    assert min(blotched.values()) > 0.2, blotched
    assert min(blotched.values()) > 4 * max(legitimate.values())


def test_blotch_rises_with_the_blotch_amplitude(scene):
    ir, vi = scene
    height, width = ir.shape
    rows, cols = np.mgrid[:height, :width]
    shape = np.exp(-((rows - 0.8 * height) ** 2 + (cols - 0.25 * width) ** 2) / (2 * 13.0 ** 2))
    values = [metrics.blotch(ir, vi, np.clip((ir + vi) / 2 + a * shape, 0, 255))
              for a in (0, 5, 10, 20, 40)]
    assert values[0] == 0.0
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_blotch_is_relative_to_the_image_size(scene):
    ir, vi = scene
    fused = np.clip(_blotched_fusions(ir, vi)['average + mottling'], 0, 255)
    value = metrics.blotch(ir, vi, fused)
    # Twice the size (every pixel repeated): the same picture, about the same value.
    large = [np.kron(x, np.ones((2, 2))) for x in (ir, vi, fused)]
    assert metrics.blotch_factor(large[0].shape) == 2 * metrics.blotch_factor(ir.shape)
    assert metrics.blotch(*large) == pytest.approx(value, rel=0.05)


def test_blotch_map_marks_where_the_blotch_is(scene):
    ir, vi = scene
    height, width = ir.shape
    fused = np.clip(_blotched_fusions(ir, vi)['average + one blotch'], 0, 255)
    energy = metrics.blotch_map(ir, vi, fused)
    factor = metrics.blotch_factor(fused.shape)
    row, col = np.unravel_index(np.argmax(energy), energy.shape)
    assert abs(row * factor - 0.8 * height) < height / 8
    assert abs(col * factor - 0.25 * width) < width / 8


def test_evaluate_reports_nabf_and_blotch(scene):
    ir, vi = scene
    for convention in metrics.CONVENTIONS:
        values = metrics.evaluate(ir, vi, (ir + vi) / 2, convention=convention)
        # 'common' rounds to 8 bit: a rounded average may exceed both sources by a level.
        assert values['Nabf'] < 1e-4 and values['Blotch'] < 0.05, (convention, values)
        assert set(metrics.ARTEFACT_NAMES) <= set(values)


# ------------------------------------------------------- resolution and shift checks


def _average_fusion(ir, vi):
    return (np.asarray(ir, np.float64) + np.asarray(vi, np.float64)) / 2


def _blocky_fusion(ir, vi, block=32):
    """A coarse weight map on a fixed pixel grid (block means of IR > visible), upsampled
    nearest: the shape of the artefact the checks must catch."""
    ir = np.asarray(ir, np.float64)
    vi = np.asarray(vi, np.float64)
    height, width = ir.shape
    small = (max(1, width // block), max(1, height // block))
    weight = cv2.resize((ir > vi).astype(np.float32), small, interpolation=cv2.INTER_AREA)
    weight = cv2.resize(weight, (width, height), interpolation=cv2.INTER_NEAREST)
    return weight * ir + (1 - weight) * vi


def test_resolution_and_shift_checks_pass_a_pixelwise_fusion(tno_triple_real):
    ir, vi = tno_triple_real
    resolution = metrics.resolution_check(_average_fusion, ir, vi)
    shift = metrics.shift_check(_average_fusion, ir, vi)
    assert shift['mae'] == 0.0 and shift['psnr'] == float('inf')
    assert resolution['mae'] < 1e-4 and resolution['max_block_mae'] < 1e-3
    assert set(resolution) == set(shift) == {'mae', 'psnr', 'p99', 'max_block_mae'}


def test_resolution_and_shift_checks_fail_a_blocky_weight_map(tno_triple_real):
    ir, vi = tno_triple_real
    resolution = metrics.resolution_check(_blocky_fusion, ir, vi)
    shift = metrics.shift_check(_blocky_fusion, ir, vi, shift=(16, 16))
    print(resolution, shift)
    # Bounds a fusion that follows its input passes (see above) and a grid-bound one fails.
    assert resolution['max_block_mae'] > 10.0 and resolution['psnr'] < 35.0
    assert shift['max_block_mae'] > 10.0 and shift['psnr'] < 35.0


def test_evaluate_computes_only_the_names_asked_for(scene):
    ir, vi = scene
    fused = np.clip(_blotched_fusions(ir, vi)['average + mottling'], 0, 255)
    for convention in metrics.CONVENTIONS:
        everything = metrics.evaluate(ir, vi, fused, convention=convention)
        chosen = ('Blotch', 'MI', 'Nabf', 'PSNR', 'EN')
        some = metrics.evaluate(ir, vi, fused, convention=convention, names=chosen)
        assert tuple(some) == chosen
        for name in chosen:
            assert some[name] == everything[name], (convention, name)
    with pytest.raises(ConfigError):
        metrics.evaluate(ir, vi, fused, names=('EN', 'Nope'))
