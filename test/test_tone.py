# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Range restoration and the low-light tone of the fused luma (tesg_ros.network.tone)."""

import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.network.tone import lowlight_tone, restore_range


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


@pytest.mark.parametrize('tone, bad', [
    (restore_range, [{'low': 0.9, 'high': 0.1}, {'max_gain': 0.5}]),
    (lowlight_tone, [{'target': 1.5}, {'max_gamma': 0.0}])])
def test_bad_arguments_are_clear_errors(tone, bad):
    ir, vis = _night_pair()
    for arguments in bad:
        with pytest.raises(ConfigError):
            tone(ir, ir, vis, **arguments)
    with pytest.raises(ValueError):
        tone(ir[:10], ir, vis)


def test_the_artefact_measures_do_not_rise_on_a_stretched_mix():
    from tesg_ros.metrics import blotch
    ir, vis = _night_pair(2)
    fused = 0.5 * (ir + vis)
    out = restore_range(fused, ir, vis)
    before = blotch(ir * 255, vis * 255, fused * 255)
    after = blotch(ir * 255, vis * 255, out * 255)
    # A global affine map of a local mix is still a local mix: nothing new to explain.
    assert after <= 1.6 * before + 0.02


def _smooth(image, sigma):
    import cv2
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def test_lowlight_brightens_a_dark_mix_keeping_the_order_of_its_base():
    ir, vis = _night_pair(3)
    fused = (0.4 * ir + 0.6 * vis).astype(np.float32)
    fused = np.clip(fused - 0.15, 0, 1).astype(np.float32)   # a dark fused frame, mean ~0.1
    out = lowlight_tone(fused, ir, vis)
    assert out.dtype == np.float32 and out.shape == fused.shape
    assert out.min() >= 0 and out.max() <= 1
    assert out.mean() > 1.3 * fused.mean()
    # the base is mapped monotonically: its brightness order is kept
    sigma = 0.8
    base_in, base_out = _smooth(fused, sigma), _smooth(out, sigma)
    order = np.argsort(base_in.ravel())
    assert np.corrcoef(np.arange(order.size), np.argsort(np.argsort(base_out.ravel()[order])))[
        0, 1] > 0.99


def test_lowlight_leaves_a_bright_frame_as_wide_as_its_sources_alone():
    ir, vis = _night_pair(4)
    fused = np.linspace(0.0, 1.0, ir.size, dtype=np.float32).reshape(ir.shape)
    fused = np.clip(fused + 0.02 * _pattern_like(ir), 0, 1).astype(np.float32)
    out = lowlight_tone(fused, ir, vis)
    assert fused.mean() > 0.3
    assert np.abs(out - fused).max() < 1e-5


def _pattern_like(image):
    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    return np.sin(cols / 3.0) * np.cos(rows / 5.0)


def test_lowlight_keeps_a_flat_frame_flat():
    ir, vis = _night_pair(5)
    dark = np.full_like(ir, 0.1)
    out = lowlight_tone(dark, ir, vis)
    assert np.std(out) < 1e-5
    assert out.mean() == pytest.approx(0.1 ** 0.7, abs=2e-3)    # brightened by max_gamma
    bright = np.full_like(ir, 0.5)
    assert np.abs(lowlight_tone(bright, ir, vis) - 0.5).max() < 1e-5


def test_lowlight_makes_no_edge_where_neither_source_has_one():
    ir, vis = _night_pair(6)
    ir[:, 80:] = 0.6
    vis[:, 80:] = 0.05
    fused = (0.3 * ir + 0.7 * vis - 0.05).astype(np.float32)
    out = lowlight_tone(fused, ir, vis)
    flat = out[:, 90:]                 # farther from the structured half than the base blur
    assert np.std(flat) < 1e-4
    assert out[:, :80].mean() > fused[:, :80].mean()    # the structured half was brightened


def test_lowlight_detail_gain_is_bounded():
    ir, vis = _night_pair(7)
    fused = np.clip(0.1 + 0.02 * _pattern_like(ir), 0, 1).astype(np.float32)
    out = lowlight_tone(fused, ir, vis, max_gamma=0.7)
    # the base stretch (at most 1.6) times the curve's slope (at most 1 / 0.7)
    assert np.std(out) <= 1.6 / 0.7 * np.std(fused) + 1e-3
    assert np.std(out) > np.std(fused)


def test_lowlight_does_not_add_blotches_to_a_night_mix():
    from tesg_ros.metrics import blotch
    ir, vis = _night_pair(8)
    fused = (0.5 * (ir + vis) - 0.1).astype(np.float32)
    out = lowlight_tone(fused, ir, vis)
    before = blotch(ir * 255, vis * 255, fused * 255)
    after = blotch(ir * 255, vis * 255, out * 255)
    assert after <= 1.6 / 0.7 * before + 0.02


@pytest.mark.parametrize('size', [(1024, 1280), (1080, 1920)])
def test_the_reduced_base_blur_tones_as_the_exact_one(test_data, monkeypatch, size):
    """Large frames blur the base layer through a reduced image: a real night-like pair
    upscaled to camera sizes tones within one grey level of the exact Gaussian."""
    import cv2

    from tesg_ros.network import tone

    height, width = size
    ir, vis = (cv2.resize(cv2.imread(str(test_data / 'tno' / side / '19.png'),
                                     cv2.IMREAD_GRAYSCALE), (width, height),
                          interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
               for side in ('ir', 'vi'))
    vis *= 0.3                                                  # dark: the gamma path too
    fused = (0.6 * ir + 0.4 * vis).astype(np.float32)
    fast = tone.lowlight_tone(fused, ir, vis)
    sigma = tone.LOWLIGHT_FINE * width
    base = tone._gauss_base(fused, sigma)
    assert np.abs(base - tone._blur(fused, sigma)).max() * 255 < 0.2
    monkeypatch.setattr(tone, '_gauss_base', tone._blur)
    exact = tone.lowlight_tone(fused, ir, vis)
    difference = np.abs(np.round(fast * 255) - np.round(exact * 255))
    assert difference.max() <= 1 and difference.mean() < 0.05


def test_engine_applies_the_lowlight_tone_by_default_and_not_when_off():
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.network.onnx_export import default_weights, test_data_pairs
    from tesg_ros.node_params import defaults

    pairs = test_data_pairs()
    if not pairs:
        pytest.skip('no TNO pairs under test/data')
    import cv2
    _, ir, vis = pairs[0]
    # a night-like pair: a dark visible image beside a usable thermal one
    ir = np.asarray(ir)
    bgr = cv2.cvtColor((np.asarray(vis, np.float32) * 0.25).astype(np.uint8), cv2.COLOR_GRAY2BGR)

    def run(**overrides):
        params = dict(defaults(), **{'model.weights': default_weights(),
                                     'semantics.mode': 'disabled', 'model.device': 'cpu',
                                     'model.threads': 1}, **overrides)
        return FusionEngine(EngineSettings.from_params(params)).process(ir, bgr).bgr

    assert defaults()['model.lowlight_tone'] is True     # the default fusion is toned
    plain, toned = run(**{'model.lowlight_tone': False}), run()
    assert plain.shape == toned.shape == bgr.shape
    assert toned.mean() > plain.mean() + 3       # brightened, in grey levels
    grey_plain = cv2.cvtColor(plain, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grey_toned = cv2.cvtColor(toned, cv2.COLOR_BGR2GRAY).astype(np.float32)
    # the same picture, toned: strongly correlated with the untoned output
    assert np.corrcoef(grey_plain.ravel(), grey_toned.ravel())[0, 1] > 0.95
