# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of tesg_ros.metrics: agreement with the VIFB toolbox and known metric properties."""

import csv
import math
import warnings

import cv2
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

from tesg_ros import metrics
from tesg_ros.errors import ConfigError, ImageEncodingError, TesgError

# metrics.csv holds 5 significant digits (rounding error <= 0.005 %); our values agree to
# that, so 0.1 % is a strict bound that still leaves room for JPEG decoder differences.
VIFB_TOLERANCE = 1e-3
VIFB_METHODS = ('ADF', 'SeAFusion', 'U2Fusion')


def _rng():
    return np.random.default_rng(20260)


def _smooth_texture(shape, seed=0):
    """A deterministic (H, W) float image in 0..255 with structure at several scales."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3.0) * 8.0 + noise * 0.3
    smooth -= smooth.min()
    return smooth / smooth.max() * 255.0


@pytest.fixture(scope='module')
def tno_triple(test_data):
    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '07.png'), cv2.IMREAD_UNCHANGED)
    vi = cv2.imread(str(test_data / 'tno' / 'vi' / '07.png'), cv2.IMREAD_UNCHANGED)
    fused = ((ir.astype(np.float64) + vi) / 2.0)
    return ir, vi, fused


# ------------------------------------------------------------------- VIFB reproduction


def test_repo_copy_of_vifb_rows_is_reproduced(test_data):
    reference = test_data / 'vifb_reference'
    errors = metrics.vifb_reference_errors(reference / 'metrics.csv', reference / 'ir',
                                           reference / 'vi', reference / 'fused',
                                           methods=VIFB_METHODS)
    assert len(errors) == 9
    worst = metrics.max_errors_by_method(errors)
    assert set(worst) == set(VIFB_METHODS)
    for method, per_metric in worst.items():
        assert set(per_metric) == set(metrics.VIFB_COLUMNS)
        for name, error in per_metric.items():
            assert error < VIFB_TOLERANCE, (method, name, error)


def test_all_21_vifb_images_of_three_methods_are_reproduced(shared_data):
    # Qcb and Qcv (the slowest) are left to the repo-copy test to keep this file quick.
    reference = shared_data / 'vifb21_reference'
    names = [name for name in metrics.VIFB_COLUMNS if name not in ('Qcb', 'Qcv')]
    errors = metrics.vifb_reference_errors(
        reference / 'metrics.csv', shared_data / 'vifb21' / 'ir', shared_data / 'vifb21' / 'vi',
        reference / 'fused', methods=VIFB_METHODS, names=names)
    assert len(errors) == 21 * len(VIFB_METHODS)
    for (image, method), per_metric in errors.items():
        assert list(per_metric) == names
        for name, error in per_metric.items():
            assert error < VIFB_TOLERANCE, (image, method, name, error)


def test_evaluate_returns_every_metric_and_matches_a_vifb_row(test_data):
    reference = test_data / 'vifb_reference'
    with open(reference / 'metrics.csv', newline='') as table:
        row = next(r for r in csv.DictReader(table)
                   if r['image'] == 'walkingnight' and r['method'] == 'SeAFusion')
    ir = metrics.load_image(reference / 'ir' / 'walkingnight.jpg')
    vi = metrics.load_image(reference / 'vi' / 'walkingnight.jpg')
    fused = metrics.load_image(reference / 'fused' / 'walkingnight_SeAFusion.jpg')
    assert ir.ndim == 2 and vi.shape == fused.shape == ir.shape + (3,)
    values = metrics.evaluate(ir, vi, fused)
    assert set(values) == set(metrics.METRIC_NAMES) == set(metrics.metric_units('vifb'))
    assert values['MI'] == pytest.approx(float(row['Mutinf']), rel=VIFB_TOLERANCE)
    assert values['SSIM'] == pytest.approx(float(row['Ssim']), rel=VIFB_TOLERANCE)
    assert values['Qabf'] == pytest.approx(float(row['Qabf']), rel=VIFB_TOLERANCE)
    for name in ('SCD', 'CC', 'VIF'):
        assert math.isfinite(values[name])


def test_load_image_returns_rgb_order(test_data):
    path = test_data / 'vifb_reference' / 'vi' / 'walking.jpg'
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    rgb = metrics.load_image(path)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    with pytest.raises(ImageEncodingError):
        metrics.load_image(test_data / 'no_such_file.png')


# ---------------------------------------------------------------- fused-only metrics


def test_entropy_known_values():
    assert metrics.entropy(np.full((20, 30), 77, np.uint8)) == 0.0
    half = np.zeros((10, 10), np.uint8)
    half[:, 5:] = 255
    assert metrics.entropy(half) == pytest.approx(1.0)
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert metrics.entropy(every_level) == pytest.approx(8.0)
    # float values are binned by floor, as VIFB does.
    fractional = every_level + 0.9
    fractional[-1, -1] = 255.0
    assert metrics.entropy(fractional) == pytest.approx(8.0)
    assert metrics.entropy(every_level // 2 + 0.5) == pytest.approx(7.0)


def test_constant_image_has_zero_sf_ag_ei_sd():
    constant = np.full((24, 32, 3), 128, np.uint8)
    assert metrics.spatial_frequency(constant) == 0.0
    assert metrics.average_gradient(constant) == 0.0
    assert metrics.edge_intensity(constant) == 0.0
    assert metrics.standard_deviation(constant) == 0.0


def test_spatial_frequency_hand_computed_and_colour_side_by_side():
    stripes = np.zeros((4, 6))
    stripes[:, 1::2] = 10.0
    # 4 rows x 5 horizontal steps of 10, no vertical change, normalised by 24 pixels.
    assert metrics.spatial_frequency(stripes) == pytest.approx(math.sqrt(4 * 5 * 100 / 24))
    colour = np.stack([np.zeros((4, 6)), stripes, np.full((4, 6), 50.0)], axis=2)
    side_by_side = np.concatenate([colour[..., k] for k in range(3)], axis=1)
    assert metrics.spatial_frequency(colour) == pytest.approx(
        metrics.spatial_frequency(side_by_side))


def test_average_gradient_of_a_ramp():
    height, width = 10, 12
    ramp = np.tile(np.arange(width, dtype=np.float64) * 3.0, (height, 1))
    expected = height * width * math.sqrt(9.0 / 2.0) / ((height - 1) * (width - 1))
    assert metrics.average_gradient(ramp) == pytest.approx(expected)


def test_standard_deviation_is_population_std_per_channel():
    image = _rng().integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    expected = np.mean([np.std(image[..., k].astype(np.float64)) for k in range(3)])
    assert metrics.standard_deviation(image) == pytest.approx(expected)


# ------------------------------------------------------------------- source metrics


def test_mutual_information_of_an_image_with_itself_is_its_entropy():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert metrics.mutual_information_pair(image, image) == pytest.approx(math.log(256))
    both = metrics.mutual_information(image, image, image)
    assert both == pytest.approx(2 * math.log(256))
    assert metrics.mutual_information(image, image, image, bits=True) == pytest.approx(16.0)


def test_mutual_information_of_independent_images_is_small():
    rng = _rng()
    a = rng.integers(0, 256, size=(256, 256)).astype(np.uint8)
    b = rng.integers(0, 256, size=(256, 256)).astype(np.uint8)
    # Plug-in estimate bias ~ (bins - 1)^2 / (2 N) nats = 0.99 for 65536 pixels.
    assert metrics.mutual_information_pair(a, b) < 1.2
    assert metrics.mutual_information_pair(a, a) == pytest.approx(
        metrics.mutual_information_pair(a, a.astype(np.float64) * 0.5 + 20))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint8, (3, 12, 12)))
def test_source_metrics_are_symmetric_in_ir_and_vi(stack):
    ir, vi, fused = stack
    for function in (metrics.mutual_information, metrics.qabf, metrics.cross_entropy,
                     metrics.ssim, metrics.rmse, metrics.qcb):
        forward = function(ir, vi, fused)
        backward = function(vi, ir, fused)
        if math.isnan(forward):
            assert math.isnan(backward)
        else:
            assert forward == pytest.approx(backward, rel=1e-12, abs=1e-12), function.__name__


def test_ssim_of_identical_images_is_one_per_source(tno_triple):
    ir, vi, _ = tno_triple
    assert metrics.ssim_pair(ir, ir) == pytest.approx(1.0)
    assert metrics.ssim(ir, ir, ir) == pytest.approx(2.0)
    assert metrics.ssim(ir, ir, ir, reduction='mean') == pytest.approx(1.0)
    mixed = metrics.ssim(ir, vi, ir)
    assert mixed == pytest.approx(1.0 + metrics.ssim_pair(vi, ir))
    assert 1.0 < mixed < 2.0


def test_qabf_of_a_perfect_copy_is_the_model_ceiling(tno_triple):
    ir, _, _ = tno_triple
    # Equal edges everywhere: angle term 1, strength term ~Tg, so Q = Tg * Ta / (1 + e^-4.4).
    ceiling = 0.9994 * 0.9879 / (1.0 + math.exp(-22.0 * (1.0 - 0.8)))
    assert metrics.qabf(ir, ir, ir) == pytest.approx(ceiling, rel=1e-6)


def test_qabf_prefers_keeping_both_sources_edges():
    base = np.full((64, 64), 100.0)
    ir = base.copy()
    ir[:, 16:32] = 200.0  # vertical edges on the left
    vi = base.copy()
    vi[40:56, :] = 30.0  # horizontal edges at the bottom
    union = base.copy()
    union[:, 16:32] = 200.0
    union[40:56, :] = 30.0
    average = (ir + vi) / 2.0
    q_ir_copy = metrics.qabf(ir, vi, ir)
    q_average = metrics.qabf(ir, vi, average)
    q_union = metrics.qabf(ir, vi, union)
    q_vi_copy = metrics.qabf(ir, vi, vi)
    assert q_union > q_ir_copy > q_vi_copy  # the ir edges are the stronger ones
    assert q_union > q_average
    assert 0.0 < q_vi_copy and q_union < 1.0


def test_cross_entropy_is_zero_when_histograms_match_and_hand_computed():
    image = _rng().integers(0, 256, size=(40, 40)).astype(np.uint8)
    shuffled = _rng().permutation(image.ravel()).reshape(image.shape)
    assert metrics.cross_entropy(image, shuffled, image) == pytest.approx(0.0, abs=1e-12)
    source = np.zeros((4, 4), np.uint8)
    source[:2] = 255  # p = (1/2, 1/2) at levels 0 and 255
    fused = np.zeros((4, 4), np.uint8)
    fused[1:] = 255  # q = (1/4, 3/4)
    expected = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    assert metrics.cross_entropy(source, source, fused) == pytest.approx(expected)


def test_vifb_rmse_and_psnr_definitions():
    source = np.zeros((50, 60))
    source[::2] = 10.0  # not constant, so every metric of evaluate() is defined
    fused = source + 4.0
    # VIFB: sqrt(sum of squares) / pixel count = sqrt(3000 * 16) / 3000.
    expected_rmse = math.sqrt(3000 * 16) / 3000
    assert metrics.rmse(source, source, fused) == pytest.approx(expected_rmse)
    assert metrics.psnr(source, source, fused) == pytest.approx(
        20 * math.log10(255 / math.sqrt(expected_rmse)))
    common = metrics.evaluate(source, source, fused, convention='common')
    assert common['RMSE'] == pytest.approx(4.0)
    assert common['PSNR'] == pytest.approx(10 * math.log10(255 ** 2 / 16))


def test_scd_of_the_sum_image_is_two_and_cc_of_a_copy():
    ir = _smooth_texture((64, 64), seed=1) / 2.0
    vi = _smooth_texture((64, 64), seed=2) / 2.0
    assert metrics.scd(ir, vi, ir + vi) == pytest.approx(2.0)
    correlation = np.corrcoef(ir.ravel(), vi.ravel())[0, 1]
    assert metrics.correlation_coefficient(ir, vi, ir) == pytest.approx((1 + correlation) / 2)


def test_vif_properties():
    reference = _smooth_texture((96, 96), seed=3)
    assert metrics.vif_pair(reference, reference) == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(reference, (0, 0), 2.0)
    assert metrics.vif_pair(reference, blurred) < 0.8
    enhanced = np.clip((reference - 128) * 1.5 + 128, 0, 255)
    assert metrics.vif_pair(reference, enhanced) > 1.0
    assert math.isnan(metrics.vif_pair(np.full((96, 96), 9.0), reference))
    assert metrics.vif(reference, reference, reference) == pytest.approx(2.0)


def test_qcb_and_qcv_of_a_perfect_copy():
    image = _smooth_texture((64, 80), seed=4)
    assert metrics.qcb(image, image, image) == pytest.approx(1.0)
    assert metrics.qcv(image, image, image) == pytest.approx(0.0, abs=1e-9)
    assert metrics.qcv(image, image, 255 - image) > 1.0


def test_scd_cc_vif_qabf_match_an_independent_python_implementation(tno_triple):
    # Reference values from CDDFuse's utils/Evaluator.py (Zhaozixiang1228/MMIF-CDDFuse at
    # fd8da1f: SCD, CC, VIFF = compare_viff(ir, f) + compare_viff(vi, f), Qabf) on TNO 07 with
    # the rounded pixel average as fused image.
    ir, vi, _ = tno_triple
    ir = ir.astype(np.float64)
    vi = vi.astype(np.float64)
    fused = np.round((ir + vi) / 2)
    assert metrics.vif(ir, vi, fused) == pytest.approx(0.9514780254849111, rel=1e-9)
    assert metrics.scd(ir, vi, fused) == pytest.approx(0.9513124749104944, rel=1e-9)
    assert metrics.correlation_coefficient(ir, vi, fused) == pytest.approx(
        0.8794834195804411, rel=1e-9)
    assert metrics.qabf(ir, vi, fused) == pytest.approx(0.6347900216796426, rel=1e-6)


# ------------------------------------------------------------------- colour handling


def test_colour_fused_is_scored_per_channel_against_colour_or_grey_sources(tno_triple):
    ir, vi, fused = tno_triple
    grey_values = metrics.evaluate(ir, vi, fused)
    as_colour = [np.repeat(x[..., None], 3, axis=2) for x in (ir, vi, fused)]
    colour_values = metrics.evaluate(*as_colour)
    grey_ir_values = metrics.evaluate(ir, as_colour[1], as_colour[2])
    for name in metrics.METRIC_NAMES:
        if name == 'SF':
            continue  # SF lays the channels side by side, checked separately
        assert colour_values[name] == pytest.approx(grey_values[name], rel=1e-9), name
        assert grey_ir_values[name] == pytest.approx(grey_values[name], rel=1e-9), name


def test_grey_fused_uses_matlab_rgb2gray_of_colour_sources():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 255
    # MATLAB: rgb2gray(uint8 [255 0 0]) = round(76.2287) = 76.
    assert metrics.rgb2gray(rgb)[0, 0] == 76.0
    assert metrics.rgb2gray(rgb.astype(np.float64))[0, 0] == pytest.approx(76.2287, abs=1e-4)
    source = _rng().integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    fused = metrics.rgb2gray(source)
    assert metrics.ssim(source, source, fused) == pytest.approx(2.0)


def test_common_convention_units():
    rng = _rng()
    ir, vi, fused = (rng.integers(0, 256, size=(48, 48)).astype(np.uint8) for _ in range(3))
    vifb = metrics.evaluate(ir, vi, fused, convention='vifb')
    common = metrics.evaluate(ir, vi, fused, convention='common')
    assert common['MI'] == pytest.approx(vifb['MI'] / math.log(2))
    assert common['SSIM'] == pytest.approx(vifb['SSIM'] / 2)
    assert common['EN'] == vifb['EN']
    units = metrics.metric_units('common')
    assert 'bits' in units['MI'] and 'nats' in metrics.metric_units('vifb')['MI']


@pytest.mark.parametrize('level', [0, 100])
def test_blank_frames_give_documented_values_without_warnings(level):
    blank = np.full((60, 80), level, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        values = metrics.evaluate(blank, blank, blank)
    assert values['EN'] == values['SF'] == values['RMSE'] == values['MI'] == 0.0
    assert values['SSIM'] == pytest.approx(2.0)
    assert values['PSNR'] == math.inf
    for name in ('SCD', 'CC', 'VIF', 'Qcb', 'Qcv'):
        assert math.isnan(values[name]), name
    # zero padding gives a constant non-zero frame edges at its border (as in VIFB)
    assert math.isnan(values['Qabf']) == (level == 0)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize('bad_image', [
    np.zeros((20, 20), np.uint16),
    np.full((20, 20), 300.0),
    np.full((20, 20), -1.0),
    np.full((20, 20), np.nan),
    np.zeros((20, 20, 4), np.uint8),
    np.zeros((20, 20), bool),
    np.zeros(20, np.uint8),
])
def test_bad_images_raise_a_tesg_error(bad_image):
    good = np.zeros((20, 20), np.uint8)
    with pytest.raises(ImageEncodingError):
        metrics.evaluate(good, good, bad_image)
    with pytest.raises(TesgError):
        metrics.entropy(bad_image)


def test_mismatched_sizes_and_bad_options_raise():
    good = np.zeros((20, 20), np.uint8)
    with pytest.raises(ImageEncodingError, match='height and width'):
        metrics.qabf(good, good, np.zeros((20, 21), np.uint8))
    with pytest.raises(ConfigError):
        metrics.evaluate(good, good, good, convention='matlab')
    with pytest.raises(ConfigError):
        metrics.ssim(good, good, good, reduction='max')
    with pytest.raises(ImageEncodingError, match='at least'):
        metrics.ssim_pair(np.zeros((8, 8)), np.zeros((8, 8)))
