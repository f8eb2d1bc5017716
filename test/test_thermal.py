# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of tesg_ros.sensor.thermal: every window mode against values worked out by hand,
smoothing, invalid pixels, CLAHE, configuration errors, and the real TNO infrared images."""

import math

import cv2
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.errors import ImageEncodingError
from tesg_ros.errors import TesgError
from tesg_ros.sensor.thermal import DEFAULTS
from tesg_ros.sensor.thermal import ThermalNormalizer
from tesg_ros.sensor.thermal import ThermalStats

KELVIN_AT_0_DEGC = 273.15


def read_tno_ir(test_data, name):
    image = cv2.imread(str(test_data / 'tno' / 'ir' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2 and image.dtype == np.uint8
    return image


def ramp_14bit(first=1000):
    """128x128 uint16 holding every 14-bit count once, shifted by ``first``."""
    return (np.arange(2 ** 14, dtype=np.uint16) + first).reshape(128, 128)


# -- passthrough ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', ['07', '10', '19'])
def test_passthrough_tno_is_exactly_divided_by_255(test_data, name):
    image = read_tno_ir(test_data, name)
    normalizer = ThermalNormalizer('passthrough')
    output = normalizer.normalize(image)
    assert output.dtype == np.float32 and output.shape == image.shape
    np.testing.assert_array_equal(output, image.astype(np.float32) / np.float32(255))
    stats = normalizer.last_stats
    assert (stats.low, stats.high) == (0.0, 255.0)
    assert stats.fraction_clipped == 0.0 and stats.fraction_invalid == 0.0


@pytest.mark.parametrize('dtype', [np.uint16, np.float32])
def test_passthrough_refuses_non_8bit_and_suggests_a_mode(dtype):
    normalizer = ThermalNormalizer('passthrough')
    with pytest.raises(ImageEncodingError, match='passthrough') as info:
        normalizer.normalize(np.full((4, 4), 300, dtype=dtype))
    assert 'fixed_range' in str(info.value) and 'percentile' in str(info.value)


def test_passthrough_mask_sets_invalid_pixels_to_zero():
    image = np.full((3, 4), 200, dtype=np.uint8)
    valid = np.ones((3, 4), dtype=bool)
    valid[1, 2] = False
    normalizer = ThermalNormalizer('passthrough')
    output = normalizer.normalize(image, valid)
    assert output[1, 2] == 0.0
    assert np.all(output[valid] == np.float32(200) / np.float32(255))
    assert normalizer.last_stats.fraction_invalid == pytest.approx(1 / 12)


# -- minmax ---------------------------------------------------------------------------------


def test_minmax_maps_a_14bit_ramp_linearly_onto_0_1():
    image = ramp_14bit(first=1000)
    normalizer = ThermalNormalizer('minmax')
    output = normalizer.normalize(image)
    expected = (image.astype(np.float64) - 1000) / (2 ** 14 - 1)
    np.testing.assert_allclose(output, expected, atol=1e-6)
    assert output.min() == 0.0 and output.max() == 1.0
    stats = normalizer.last_stats
    assert (stats.low, stats.high) == (1000.0, 1000.0 + 2 ** 14 - 1)
    assert stats.fraction_clipped == 0.0


def test_minmax_flat_frame_is_mid_grey_not_nan():
    normalizer = ThermalNormalizer('minmax')
    output = normalizer.normalize(np.full((5, 6), 7000, dtype=np.uint16))
    np.testing.assert_allclose(output, 0.5, atol=1e-3)
    assert normalizer.last_stats.high > normalizer.last_stats.low


def test_min_span_in_value_units_limits_noise_stretch():
    # Lepton-like centikelvin frame with only 0.1 K of noise: without min_span minmax
    # would stretch the noise to full black/white.
    rng = np.random.default_rng(3)
    raw = (rng.integers(0, 11, size=(32, 32)) + 30000).astype(np.uint16)
    stretched = ThermalNormalizer('minmax', scale=0.01).normalize(raw)
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    normalizer = ThermalNormalizer('minmax', scale=0.01, min_span=1.0)  # 1 K = 100 counts
    output = normalizer.normalize(raw)
    stats = normalizer.last_stats
    assert stats.high - stats.low == pytest.approx(1.0)
    assert (stats.low + stats.high) / 2 == pytest.approx((raw.min() + raw.max()) / 200)
    np.testing.assert_allclose(output, 0.5 + (raw - (raw.min() + raw.max()) / 2) / 100,
                               atol=1e-5)


# -- percentile -----------------------------------------------------------------------------


def test_percentile_ignores_hot_pixels_on_a_ramp():
    # Counts 0..9999 once each, the ten coldest replaced by saturated hot pixels: sorted, the
    # frame is 10..9999 then 10 x 16383. Linear-interpolated percentiles at positions
    # 0.01 * 9999 and 0.99 * 9999 are 10 + 99.99 and 10 + 9899.01.
    image = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    image.flat[:10] = 16383
    normalizer = ThermalNormalizer('percentile')
    output = normalizer.normalize(image)
    stats = normalizer.last_stats
    assert stats.low == pytest.approx(109.99) and stats.high == pytest.approx(9909.01)
    expected = np.clip((image.astype(np.float64) - 109.99) / (9909.01 - 109.99), 0, 1)
    np.testing.assert_allclose(output, expected, atol=1e-6)
    # 100 pixels (10..109) below the window, 90 ramp pixels + 10 hot ones above it.
    assert stats.fraction_clipped_low == pytest.approx(0.01)
    assert stats.fraction_clipped_high == pytest.approx(0.01)
    # minmax on the same frame is ruined by the ten hot pixels: the ramp only reaches 0.61.
    minmax = ThermalNormalizer('minmax').normalize(image)
    assert minmax[image < 16383].max() == pytest.approx((9999 - 10) / (16383 - 10), abs=1e-6)
    assert output[image == 9909].item() == pytest.approx(1 - 0.01 / 9799.02, abs=1e-6)


def test_custom_percentiles():
    image = ramp_14bit(first=0)
    normalizer = ThermalNormalizer('percentile', low_percentile=10, high_percentile=60)
    normalizer.normalize(image)
    stats = normalizer.last_stats
    assert stats.low == pytest.approx(0.1 * 16383) and stats.high == pytest.approx(0.6 * 16383)


@pytest.mark.parametrize('name', ['07', '10', '19'])
def test_percentile_on_tno_stretches_and_clips_about_one_percent(test_data, name):
    image = read_tno_ir(test_data, name)
    normalizer = ThermalNormalizer('percentile')
    output = normalizer.normalize(image)
    stats = normalizer.last_stats
    low, high = np.percentile(image, [1, 99])
    assert (stats.low, stats.high) == pytest.approx((low, high))
    # 8-bit data has ties, so strictly-outside fractions are at most the nominal 1 %.
    assert 0.0 <= stats.fraction_clipped_low <= 0.01
    assert 0.0 <= stats.fraction_clipped_high <= 0.01
    assert stats.fraction_clipped_low == pytest.approx(np.mean(image < low))
    assert stats.fraction_clipped_high == pytest.approx(np.mean(image > high))
    np.testing.assert_allclose(output, np.clip((image - low) / (high - low), 0, 1), atol=1e-6)
    passthrough = ThermalNormalizer('passthrough').normalize(image)
    assert output.std() > passthrough.std()


@settings(max_examples=80, deadline=None)
@given(dtype=st.sampled_from([np.uint8, np.uint16]), size=st.integers(1, 300),
       seed=st.integers(0, 2 ** 32 - 1),
       percents=st.lists(st.floats(0.0, 100.0), min_size=2, max_size=2, unique=True),
       masked=st.booleans())
def test_integer_percentiles_equal_numpy(dtype, size, seed, percents, masked):
    # uint8/uint16 frames take a histogram shortcut; it must agree with np.percentile.
    rng = np.random.default_rng(seed)
    top = int(rng.integers(1, np.iinfo(dtype).max + 1))
    image = rng.integers(0, top, size=(1, size), endpoint=True).astype(dtype)
    valid = rng.random(image.shape) > 0.3 if masked else None
    if valid is not None and not valid.any():
        valid[0, 0] = True
    low, high = sorted(percents)
    normalizer = ThermalNormalizer('percentile', low_percentile=low, high_percentile=high)
    normalizer.normalize(image, valid)
    values = image if valid is None else image[valid]
    expected_low, expected_high = np.percentile(values, [low, high])
    stats = normalizer.last_stats
    if expected_high - expected_low > 0.1:  # else the flat-window guard widens it
        assert stats.low == pytest.approx(expected_low, rel=1e-12, abs=1e-9)
        assert stats.high == pytest.approx(expected_high, rel=1e-12, abs=1e-9)
    assert stats.frame_low <= stats.frame_high


# -- fixed_range ----------------------------------------------------------------------------


def test_fixed_range_in_raw_counts():
    image = np.array([[1000, 2000, 4000], [6000, 7000, 5000]], dtype=np.uint16)
    normalizer = ThermalNormalizer('fixed_range', range_low=2000, range_high=6000)
    output = normalizer.normalize(image)
    np.testing.assert_allclose(output, [[0.0, 0.0, 0.5], [1.0, 1.0, 0.75]], atol=1e-7)
    stats = normalizer.last_stats
    assert stats.fraction_clipped_low == pytest.approx(1 / 6)
    assert stats.fraction_clipped_high == pytest.approx(1 / 6)


def test_fixed_range_lepton_centikelvin_window_in_degc():
    temperatures_degc = np.array([[10.0, 20.0, 25.0], [30.0, 40.0, 55.0]])
    raw = np.round((temperatures_degc + KELVIN_AT_0_DEGC) * 100).astype(np.uint16)
    normalizer = ThermalNormalizer('fixed_range', range_low=20.0, range_high=40.0,
                                   scale=0.01, offset=-KELVIN_AT_0_DEGC)
    output = normalizer.normalize(raw)
    np.testing.assert_allclose(output, [[0.0, 0.0, 0.25], [0.5, 1.0, 1.0]], atol=1e-6)
    stats = normalizer.last_stats
    assert (stats.low, stats.high) == pytest.approx((20.0, 40.0))
    assert stats.fraction_clipped_low == pytest.approx(1 / 6)
    assert stats.fraction_clipped_high == pytest.approx(1 / 6)


def test_fixed_range_optris_degc_and_float_kelvin_agree():
    temperatures_degc = np.linspace(-20.0, 120.0, 15).reshape(3, 5)
    optris_raw = np.round(temperatures_degc * 10 + 1000).astype(np.uint16)
    optris = ThermalNormalizer('fixed_range', range_low=0.0, range_high=100.0,
                               scale=0.1, offset=-100.0).normalize(optris_raw)
    kelvin = (temperatures_degc + KELVIN_AT_0_DEGC).astype(np.float32)
    float_kelvin = ThermalNormalizer('fixed_range', range_low=KELVIN_AT_0_DEGC,
                                     range_high=KELVIN_AT_0_DEGC + 100).normalize(kelvin)
    expected = np.clip(temperatures_degc / 100.0, 0, 1)
    np.testing.assert_allclose(optris, expected, atol=1e-6)
    np.testing.assert_allclose(float_kelvin, expected, atol=1e-5)


def test_scale_and_offset_do_not_change_adaptive_modes_only_units():
    image = ramp_14bit(first=27000)
    plain = ThermalNormalizer('percentile')
    kelvin = ThermalNormalizer('percentile', scale=0.01)
    np.testing.assert_allclose(plain.normalize(image), kelvin.normalize(image), atol=1e-6)
    assert kelvin.last_stats.low == pytest.approx(plain.last_stats.low * 0.01)
    assert kelvin.last_stats.high == pytest.approx(plain.last_stats.high * 0.01)


# -- invalid pixels -------------------------------------------------------------------------


def test_nan_and_inf_are_excluded_from_statistics_and_zero_in_output():
    image = np.linspace(290.0, 310.0, 20, dtype=np.float32).reshape(4, 5)
    image[0, 1] = np.nan
    image[2, 2] = np.inf
    image[3, 4] = -np.inf
    original = image.copy()
    normalizer = ThermalNormalizer('minmax')
    output = normalizer.normalize(image)
    finite = np.isfinite(image)
    assert np.all(np.isfinite(output))
    assert output[0, 1] == 0.0 and output[2, 2] == 0.0 and output[3, 4] == 0.0
    stats = normalizer.last_stats
    assert (stats.low, stats.high) == (image[finite].min(), image[finite].max())
    assert stats.fraction_invalid == pytest.approx(3 / 20)
    np.testing.assert_allclose(
        output[finite], (image[finite] - stats.low) / (stats.high - stats.low), atol=1e-6)
    np.testing.assert_array_equal(image, original)  # input untouched (NaNs compare equal)


def test_valid_mask_excludes_pixels_from_statistics():
    image = np.arange(100, dtype=np.uint16).reshape(10, 10) + 5000
    image[0, 0] = 65535  # a dead pixel the driver reports in its mask
    valid = np.ones_like(image, dtype=bool)
    valid[0, 0] = False
    normalizer = ThermalNormalizer('minmax')
    output = normalizer.normalize(image, valid)
    assert (normalizer.last_stats.low, normalizer.last_stats.high) == (5001.0, 5099.0)
    assert output[0, 0] == 0.0
    assert output[9, 9] == 1.0 and output[0, 1] == 0.0
    assert normalizer.last_stats.fraction_clipped == 0.0


def test_frame_without_valid_pixels_holds_the_smoothed_window():
    first = np.array([[300.0, 310.0]], dtype=np.float32)
    third = np.array([[305.0, 300.0]], dtype=np.float32)
    normalizer = ThermalNormalizer('minmax', alpha=0.5)
    normalizer.normalize(first)
    output = normalizer.normalize(np.full((1, 2), np.nan, dtype=np.float32))
    np.testing.assert_array_equal(output, 0.0)
    stats = normalizer.last_stats
    assert (stats.low, stats.high) == (300.0, 310.0)
    assert math.isnan(stats.frame_low) and stats.fraction_invalid == 1.0
    # The empty frame left the state alone: same as never having seen it.
    without_gap = ThermalNormalizer('minmax', alpha=0.5)
    without_gap.normalize(first)
    output = normalizer.normalize(third)
    np.testing.assert_array_equal(output, without_gap.normalize(third))
    # 305 K is 0.5 under the old window and 1.0 under the frame's; alpha = 0.5 averages the
    # brightness map: 0.75, i.e. window (300, 306.67).
    np.testing.assert_allclose(output, [[0.75, 0.0]], atol=1e-5)
    assert normalizer.last_stats.high == pytest.approx(300.0 + 20.0 / 3.0)


def test_first_frame_without_valid_pixels_gives_zeros_and_nan_window():
    normalizer = ThermalNormalizer('percentile')
    output = normalizer.normalize(np.full((3, 3), np.nan, dtype=np.float32))
    assert output.dtype == np.float32
    np.testing.assert_array_equal(output, 0.0)
    assert math.isnan(normalizer.last_stats.low) and math.isnan(normalizer.last_stats.high)


# -- temporal smoothing ---------------------------------------------------------------------


def hot_object_sequence(frames=40, enters_at=5):
    """Float Kelvin frames: a 295..305 K background; a 400 K object appears at ``enters_at``."""
    background = np.tile(np.linspace(295.0, 305.0, 64, dtype=np.float32), (64, 1))
    for index in range(frames):
        frame = background.copy()
        if index >= enters_at:
            frame[20:30, 20:30] = 400.0
        yield frame


BACKGROUND_PIXEL = (60, 32)  # lies outside the hot object


def test_hot_object_without_smoothing_darkens_background_in_one_frame():
    normalizer = ThermalNormalizer('minmax', alpha=1.0)
    outputs = [normalizer.normalize(frame)[BACKGROUND_PIXEL] for frame in hot_object_sequence()]
    steps = np.abs(np.diff(outputs))
    assert steps.max() > 0.4  # from about 0.5 to about 0.05 at once


def test_hot_object_with_smoothing_darkens_background_gradually():
    alpha = 0.1
    frames = list(hot_object_sequence(frames=80))
    value = float(frames[0][BACKGROUND_PIXEL])
    before = (value - 295.0) / 10.0  # window 295..305 K
    after = (value - 295.0) / 105.0  # window 295..400 K
    normalizer = ThermalNormalizer('minmax', alpha=alpha)
    outputs, windows = [], []
    for frame in frames:
        outputs.append(normalizer.normalize(frame)[BACKGROUND_PIXEL])
        windows.append((normalizer.last_stats.low, normalizer.last_stats.high))
    # Every brightness moves alpha of the way to its target per frame:
    # out_k = after + (before - after) (1 - alpha)^(k - 4) once the object is in view.
    for k in range(5, 80):
        decay = (1 - alpha) ** (k - 4)
        assert outputs[k] == pytest.approx(after + (before - after) * decay, abs=1e-5)
        gain = 1 / 105.0 + (1 / 10.0 - 1 / 105.0) * decay
        assert windows[k] == pytest.approx((295.0, 295.0 + 1 / gain), rel=1e-9)
    steps = np.abs(np.diff(outputs))
    assert steps.max() <= alpha * (before - after) + 1e-5  # bounded change per frame
    assert steps[4] > 0.0 and outputs[5] > 0.4  # starts moving at once, but gently
    assert normalizer.last_stats.frame_high == 400.0
    settled = ThermalNormalizer('minmax').normalize(frames[-1])[BACKGROUND_PIXEL]
    assert outputs[-1] == pytest.approx(settled, abs=1e-3)


def test_hot_object_saturates_while_the_window_catches_up():
    normalizer = ThermalNormalizer('minmax', alpha=0.1)
    frames = list(hot_object_sequence(frames=6))
    for frame in frames:
        output = normalizer.normalize(frame)
    assert np.all(output[20:30, 20:30] == 1.0)
    assert normalizer.last_stats.fraction_clipped_high == pytest.approx(100 / 64 ** 2)


def test_smoothing_reduces_flicker():
    rng = np.random.default_rng(0)
    flat = np.tile(np.linspace(295.0, 305.0, 32, dtype=np.float32), (32, 1))
    frames = []
    for index in range(60):
        frame = flat.copy()
        frame[0, 0] = 320.0 if index % 2 else 306.0  # a blinking reflection
        frame += rng.normal(0.0, 0.05, frame.shape).astype(np.float32)
        frames.append(frame)
    jitter = {}
    for alpha in (1.0, 0.1):
        normalizer = ThermalNormalizer('minmax', alpha=alpha)
        values = [normalizer.normalize(frame)[16, 16] for frame in frames]
        jitter[alpha] = np.std(np.diff(values[20:]))
    assert jitter[0.1] < 0.25 * jitter[1.0]


def test_reset_forgets_the_window():
    frames = list(hot_object_sequence(frames=10))
    fresh = ThermalNormalizer('percentile').normalize(frames[0])
    kept, reset = (ThermalNormalizer('percentile', alpha=0.2) for _ in range(2))
    for frame in frames:
        kept.normalize(frame)
        reset.normalize(frame)
    reset.reset()
    assert reset.last_stats is None
    np.testing.assert_array_equal(reset.normalize(frames[0]), fresh)
    # Without reset the hot object's window still lingers (the bag-loop problem).
    assert np.abs(kept.normalize(frames[0]) - fresh).max() > 0.1


def test_fixed_range_ignores_smoothing():
    normalizer = ThermalNormalizer('fixed_range', range_low=0, range_high=100, alpha=0.1)
    np.testing.assert_allclose(normalizer.normalize(np.full((2, 2), 25, np.uint16)), 0.25)
    np.testing.assert_allclose(normalizer.normalize(np.full((2, 2), 75, np.uint16)), 0.75)


# -- CLAHE ----------------------------------------------------------------------------------


def two_region_texture():
    """Low-contrast stripes on a dark left half and a bright right half, 128x128 uint16."""
    x = np.arange(128)
    stripes = 60.0 * np.sin(2 * np.pi * x / 8.0)
    image = np.tile(stripes, (128, 1))
    image[:, :64] += 3000
    image[:, 64:] += 12000
    return np.round(image).astype(np.uint16)


def texture_contrast(image):
    """Mean standard deviation of the stripes inside each half, away from the middle edge."""
    return float(np.mean([image[:, 8:56].std(), image[:, 72:120].std()]))


def test_clahe_raises_local_contrast():
    image = two_region_texture()
    plain = ThermalNormalizer('minmax').normalize(image)
    assert texture_contrast(plain) < 0.01  # the global window leaves the stripes faint
    defaults = ThermalNormalizer('minmax', clahe=True).normalize(image)
    assert texture_contrast(defaults) > 1.5 * texture_contrast(plain)
    normalizer = ThermalNormalizer('minmax', clahe=True, clahe_clip_limit=4.0,
                                   clahe_tile_grid=(4, 4))
    equalised = normalizer.normalize(image)
    assert equalised.dtype == np.float32 and equalised.shape == image.shape
    assert 0.0 <= equalised.min() and equalised.max() <= 1.0
    assert texture_contrast(equalised) > 3.0 * texture_contrast(plain)
    # The halves keep their order: CLAHE is local, not an inversion.
    assert equalised[:, 8:56].mean() < equalised[:, 72:120].mean()
    # Normalisation statistics describe the window, not the CLAHE output.
    assert (normalizer.last_stats.low, normalizer.last_stats.high) == (image.min(), image.max())


def test_clahe_parameters_reach_opencv():
    image = two_region_texture()
    plain = ThermalNormalizer('minmax').normalize(image)
    quantised = np.round(plain * 255).astype(np.uint8)
    for clip_limit, grid in ((2.0, (8, 8)), (6.0, (2, 4))):
        normalizer = ThermalNormalizer('minmax', clahe=True, clahe_clip_limit=clip_limit,
                                       clahe_tile_grid=grid)
        expected = cv2.createCLAHE(clip_limit, grid).apply(quantised) / 255.0
        np.testing.assert_allclose(normalizer.normalize(image), expected, atol=1e-6)


def test_clahe_keeps_invalid_pixels_at_zero():
    image = two_region_texture().astype(np.float32)
    image[10:20, 70:80] = np.nan
    output = ThermalNormalizer('percentile', clahe=True).normalize(image)
    assert np.all(output[10:20, 70:80] == 0.0)
    assert np.all(np.isfinite(output)) and output.max() <= 1.0


# -- input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize('image, match', [
    (np.zeros((4, 4, 3), np.uint8), 'single-channel'),
    (np.zeros((4, 4, 1), np.uint16), 'single-channel'),
    (np.zeros(16, np.uint16), '2-D'),
    (np.zeros((0, 4), np.uint16), 'empty'),
    (np.zeros((4, 4), np.int32), 'int32'),
    (np.zeros((4, 4), np.int16), 'int16'),
    ([[1, 2], [3, 4]], 'numpy array'),
])
def test_bad_images_raise_image_encoding_error(image, match):
    with pytest.raises(ImageEncodingError, match=match):
        ThermalNormalizer('minmax').normalize(image)


@pytest.mark.parametrize('mask, match', [
    (np.ones((4, 4), np.uint8), 'bool'),
    (np.ones((4, 5), bool), 'shape'),
])
def test_bad_masks_raise(mask, match):
    with pytest.raises(ImageEncodingError, match=match):
        ThermalNormalizer('minmax').normalize(np.zeros((4, 4), np.uint16), mask)


def test_float64_input_is_accepted():
    image = np.array([[1.5, 2.5], [3.5, 5.5]])
    output = ThermalNormalizer('minmax').normalize(image)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, [[0.0, 0.25], [0.5, 1.0]])


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize('config, key', [
    ({'mode': 'agc'}, 'mode'),
    ({'alhpa': 0.5}, 'alhpa'),
    ({'alpha': 0.0}, 'alpha'),
    ({'alpha': 1.5}, 'alpha'),
    ({'alpha': True}, 'alpha'),
    ({'alpha': '0.5'}, 'alpha'),
    ({'alpha': float('nan')}, 'alpha'),
    ({'low_percentile': -1.0}, 'low_percentile'),
    ({'high_percentile': 100.5}, 'high_percentile'),
    ({'low_percentile': 60, 'high_percentile': 40}, 'high_percentile'),
    ({'mode': 'fixed_range', 'range_high': 40.0}, 'range_low'),
    ({'mode': 'fixed_range', 'range_low': 20.0}, 'range_high'),
    ({'mode': 'fixed_range', 'range_low': 40.0, 'range_high': 20.0}, 'range_high'),
    ({'scale': 0.0}, 'scale'),
    ({'scale': -0.01}, 'scale'),
    ({'mode': 'passthrough', 'scale': 0.01}, 'scale'),
    ({'mode': 'passthrough', 'offset': -273.15}, 'offset'),
    ({'min_span': -1.0}, 'min_span'),
    ({'clahe': 'yes'}, 'clahe'),
    ({'clahe_clip_limit': 0.0}, 'clahe_clip_limit'),
    ({'clahe_tile_grid': (0, 8)}, 'clahe_tile_grid'),
    ({'clahe_tile_grid': (8,)}, 'clahe_tile_grid'),
    ({'clahe_tile_grid': (8.0, 8.0)}, 'clahe_tile_grid'),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        ThermalNormalizer.from_config(config)


def test_config_error_is_a_tesg_error():
    with pytest.raises(TesgError):
        ThermalNormalizer.from_config({'alpha': 2})
    with pytest.raises(ConfigError, match='mapping'):
        ThermalNormalizer.from_config(['mode', 'minmax'])


def test_from_config_matches_constructor_and_round_trips():
    config = {'mode': 'fixed_range', 'range_low': 20.0, 'range_high': 40.0, 'scale': 0.01,
              'offset': -KELVIN_AT_0_DEGC, 'clahe': True, 'clahe_tile_grid': [4, 2],
              'clahe_clip_limit': 3.0}
    normalizer = ThermalNormalizer.from_config(config)
    assert normalizer.mode == 'fixed_range'
    assert normalizer.config['clahe_tile_grid'] == (4, 2)
    again = ThermalNormalizer.from_config(normalizer.config)
    assert again.config == normalizer.config
    raw = np.round((np.linspace(15.0, 45.0, 64).reshape(8, 8) + KELVIN_AT_0_DEGC) * 100)
    raw = raw.astype(np.uint16)
    np.testing.assert_array_equal(normalizer.normalize(raw), again.normalize(raw))


def test_empty_config_gives_defaults():
    normalizer = ThermalNormalizer.from_config({})
    assert normalizer.config == {**DEFAULTS, 'range_low': None, 'range_high': None}
    assert ThermalNormalizer.from_config({'alpha': None}).config['alpha'] == 1.0


def test_stats_as_dict():
    normalizer = ThermalNormalizer('fixed_range', range_low=2000, range_high=6000)
    normalizer.normalize(np.array([[1000, 4000, 8000, 9000]], dtype=np.uint16))
    stats = normalizer.last_stats
    assert isinstance(stats, ThermalStats)
    assert stats.fraction_clipped == pytest.approx(0.75)
    values = stats.as_dict()
    assert values['window_low'] == 2000.0 and values['window_high'] == 6000.0
    assert values['fraction_clipped_low'] == 0.25 and values['fraction_clipped_high'] == 0.5
    assert values['mode'] == 'fixed_range'


# -- properties over random input -----------------------------------------------------------


@st.composite
def frames_and_settings(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    height = draw(st.integers(1, 12))
    width = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if dtype == np.uint8:
        image = rng.integers(0, 256, (height, width)).astype(dtype)
    elif dtype == np.uint16:
        image = rng.integers(0, 65536, (height, width)).astype(dtype)
    else:
        image = rng.normal(300.0, draw(st.sampled_from([1e-3, 1.0, 50.0])), (height, width))
        image = image.astype(dtype)
        image[rng.random((height, width)) < 0.2] = np.nan
        image[rng.random((height, width)) < 0.05] = np.inf
    mask = rng.random((height, width)) > 0.1 if draw(st.booleans()) else None
    mode = draw(st.sampled_from(['minmax', 'percentile', 'fixed_range']))
    config = {'mode': mode, 'alpha': draw(st.sampled_from([1.0, 0.3])),
              'clahe': draw(st.booleans())}
    if mode == 'fixed_range':
        config.update(range_low=290.0, range_high=310.0)
    return image, mask, config


@settings(max_examples=60, deadline=None)
@given(frames_and_settings())
def test_output_is_finite_float32_in_unit_range_with_invalid_zero(case):
    image, mask, config = case
    normalizer = ThermalNormalizer.from_config(config)
    for _ in range(2):  # second frame exercises the smoothed window
        output = normalizer.normalize(image, mask)
    assert output.dtype == np.float32 and output.shape == image.shape
    assert np.all(np.isfinite(output))
    assert output.min() >= 0.0 and output.max() <= 1.0
    valid = np.isfinite(image) if image.dtype.kind == 'f' else np.ones(image.shape, bool)
    if mask is not None:
        valid &= mask
    assert np.all(output[~valid] == 0.0)
    stats = normalizer.last_stats
    assert stats.fraction_invalid == pytest.approx(1.0 - valid.mean())
    assert 0.0 <= stats.fraction_clipped <= 1.0
    if not config['clahe'] and valid.any():
        # The window is monotonic: brighter input never gives darker output.
        order = np.argsort(image[valid].astype(np.float64), kind='stable')
        assert np.all(np.diff(output[valid][order]) >= 0.0)
