# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Image-fusion quality metrics that reproduce the VIFB MATLAB toolbox.

Every function takes plain numpy arrays and needs no ROS graph.

Inputs
    ``ir``, ``vi`` and ``fused`` are arrays of the same height and width, each either grey
    ``(H, W)`` (``(H, W, 1)`` is accepted) or colour ``(H, W, 3)`` in **RGB** order (as ROS
    ``rgb8``; convert OpenCV's BGR first). The dtype is ``uint8`` or float with values in
    0..255; anything else (uint16 thermal counts, NaN, negative values) raises
    :class:`~tesg_ros.errors.ImageEncodingError` instead of being rescaled silently.

Colour handling (``convention='vifb'``, the VIFB toolbox exactly)
    * A colour fused image is scored per channel and the channel values are averaged:
      channel ``k`` of the fused image is compared with channel ``k`` of each colour source,
      or with the whole source where that source is grey.
    * A grey fused image is compared with the sources converted by MATLAB's ``rgb2gray``
      (weights 0.298936, 0.587043, 0.114021); where VIFB passes a ``uint8`` source to
      ``rgb2gray`` (EN, MI, SSIM, CE) the grey value is rounded to ``uint8`` as MATLAB does.
    * Spatial frequency of a colour image is taken over the three channels laid side by side
      (MATLAB's ``size`` folds the channels into the column count), edge intensity is the
      mean over all channels.

``convention='common'`` converts every image to 8-bit grey (``rgb2gray``, rounded) first, reports
MI in bits and SSIM as the mean of SSIM(f, ir) and SSIM(f, vi), as much of the fusion
literature does. :func:`metric_units` names the unit of every value under each convention.

Formulas, sources and the measured agreement with VIFB's published values are in
``docs/metrics.md``.
"""

import argparse
import csv
import math
from pathlib import Path

import cv2
import numpy as np
import scipy.fft

from tesg_ros.errors import ConfigError, ImageEncodingError

CONVENTIONS = ('vifb', 'common')

# MATLAB rgb2gray: first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]).
RGB2GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# Smallest side SSIM's 11x11 'valid' window accepts.
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5

# Xydeas & Petrovic model constants as in VIFB's metricsQabf.m.
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
_SOBEL_ROWS = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
_SOBEL_COLS = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

# Sheikh & Bovik pixel-domain VIF: assumed HVS noise variance and division guard.
_VIF_NOISE_VARIANCE = 2.0
_VIF_EPS = 1e-10
# Four scales of 'valid' filtering and decimation leave at least one pixel from 41 on.
_VIF_MIN_SIDE = 41

# Our metric name -> column of VIFB's evaluation table (metrics.csv).
VIFB_COLUMNS = {'EN': 'Entropy', 'SD': 'Variance', 'SF': 'Spatial_frequency',
                'AG': 'Avg_gradient', 'EI': 'Edge_intensity', 'MI': 'Mutinf',
                'CE': 'Cross_entropy', 'Qabf': 'Qabf', 'SSIM': 'Ssim', 'PSNR': 'Psnr',
                'RMSE': 'Rmse', 'Qcb': 'Qcb', 'Qcv': 'Qcv'}

METRIC_NAMES = ('EN', 'SD', 'SF', 'AG', 'EI', 'MI', 'CE', 'Qabf', 'SSIM', 'PSNR', 'RMSE',
                'Qcb', 'Qcv', 'SCD', 'CC', 'VIF', 'Nabf', 'Blotch')
# Artefact measures: lower is better (0 for a copy of a source).
ARTEFACT_NAMES = ('Nabf', 'Blotch')


def metric_units(convention='vifb'):
    """Return ``{metric name: unit / definition}`` for the values :func:`evaluate` returns."""
    _check_convention(convention)
    vifb = convention == 'vifb'
    return {
        'EN': 'bits (Shannon entropy of the 256-bin histogram)',
        'SD': 'grey levels (population standard deviation)',
        'SF': 'grey levels per pixel',
        'AG': 'grey levels per pixel',
        'EI': 'grey levels (mean Sobel magnitude)',
        'MI': ('nats, MI(f, ir) + MI(f, vi)' if vifb else 'bits, MI(f, ir) + MI(f, vi)'),
        'CE': ('bits, mean over ir and vi of sum p_s log2(p_s / p_f) over bins that are '
               'non-empty in both histograms (VIFB; can be negative)'),
        'Qabf': 'unitless, 0..1',
        'SSIM': ('unitless, SSIM(f, ir) + SSIM(f, vi), at most 2' if vifb
                 else 'unitless, mean of SSIM(f, ir) and SSIM(f, vi), at most 1'),
        'PSNR': ('dB, VIFB definition 20 log10(255 / sqrt(RMSE))' if vifb
                 else 'dB, 10 log10(255^2 / MSE), MSE averaged over both sources'),
        'RMSE': ('VIFB definition: mean over sources of sqrt(sum sq. error) / pixel count'
                 if vifb else 'grey levels, sqrt of MSE averaged over both sources'),
        'Qcb': 'unitless, 0..1 (Chen-Blum)',
        'Qcv': 'squared grey levels, lower is better (Chen-Varshney)',
        'SCD': 'unitless, corr(f - vi, ir) + corr(f - ir, vi), -2..2',
        'CC': 'unitless, mean of corr(f, ir) and corr(f, vi), -1..1',
        'VIF': 'unitless, VIFp(ir -> f) + VIFp(vi -> f), pixel-domain multiscale',
        'Nabf': ("unitless, 0..1, lower is better (Kumar's modified fusion-artefact measure "
                 'on 0..255 grey levels)'),
        'Blotch': ('grey levels, lower is better (RMS of the fused band-pass structure at '
                   '1/80..1/10 of the image size that no local linear mix of the sources '
                   'explains)'),
    }


# --------------------------------------------------------------------------- input handling


def _check_convention(convention):
    if convention not in CONVENTIONS:
        raise ConfigError(f'convention must be one of {CONVENTIONS}, got {convention!r}')


def _check_image(image, name):
    """Return ``image`` as an (H, W) or (H, W, 3) array in 0..255, dtype kept."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageEncodingError(
            f'{name}: expected an (H, W) grey or (H, W, 3) RGB array, got shape {array.shape}')
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ImageEncodingError(f'{name}: image of shape {array.shape} is too small')
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != 'f':
        # Wider integers are usually raw sensor counts (e.g. 16-bit thermal); refuse them.
        raise ImageEncodingError(
            f'{name}: unsupported dtype {array.dtype}; use uint8, or float scaled to 0..255')
    if not np.all(np.isfinite(array)):
        raise ImageEncodingError(f'{name}: contains NaN or infinite values')
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise ImageEncodingError(
            f'{name}: values span {low}..{high}, outside 0..255; scale the image to 8-bit '
            'range first (16-bit thermal counts are not rescaled automatically)')
    return array


def _check_triple(ir, vi, fused):
    ir = _check_image(ir, 'ir')
    vi = _check_image(vi, 'vi')
    fused = _check_image(fused, 'fused')
    if not ir.shape[:2] == vi.shape[:2] == fused.shape[:2]:
        raise ImageEncodingError(
            f'ir, vi and fused must share height and width, got {ir.shape[:2]}, '
            f'{vi.shape[:2]} and {fused.shape[:2]}')
    return ir, vi, fused


def _round_half_away(values):
    """MATLAB's round() for non-negative values (numpy rounds halves to even)."""
    return np.floor(values + 0.5)


def rgb2gray(image, round_uint8=None):
    """MATLAB ``rgb2gray``: (H, W, 3) RGB -> (H, W) float64; grey input is returned as float.

    ``round_uint8`` (default: when ``image`` is uint8) rounds to integers as MATLAB does for a
    uint8 input.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        return array.astype(np.float64)
    if round_uint8 is None:
        round_uint8 = array.dtype == np.uint8
    grey = array.astype(np.float64) @ RGB2GRAY_WEIGHTS
    return _round_half_away(grey) if round_uint8 else grey


def _vifb_grey(image, matlab_uint8):
    """Grey conversion as a VIFB helper sees its argument.

    ``matlab_uint8``: the VIFB helper receives the image still as uint8 (so rgb2gray rounds);
    otherwise it was converted with double() first.
    """
    return rgb2gray(image, round_uint8=matlab_uint8 and image.dtype == np.uint8)


def _channel_triples(ir, vi, fused):
    """Split a triple as VIFB's metric wrappers do.

    A grey fused image gives one triple with the (possibly colour) sources; a colour fused
    image gives one triple per channel, a grey source being reused for every channel.
    """
    if fused.ndim == 2:
        return [(ir, vi, fused)]
    return [(ir[..., k] if ir.ndim == 3 else ir,
             vi[..., k] if vi.ndim == 3 else vi,
             fused[..., k]) for k in range(3)]


def _mean_over_channels(single, ir, vi, fused):
    return float(np.mean([single(i, v, f) for i, v, f in _channel_triples(ir, vi, fused)]))


def _fused_channels(fused):
    """(H, W) float64 planes of ``fused``: one per channel."""
    if fused.ndim == 2:
        return [fused.astype(np.float64)]
    return [fused[..., k].astype(np.float64) for k in range(fused.shape[2])]


# --------------------------------------------------------------------- fused-only metrics


def _entropy_plane(plane):
    levels = np.clip(np.floor(plane), 0, 255).astype(np.intp)
    counts = np.bincount(levels.ravel(), minlength=256)
    probabilities = counts[counts > 0] / levels.size
    return float(-np.sum(probabilities * np.log2(probabilities)))


def entropy(fused):
    """EN in bits: Shannon entropy of the 256-bin histogram of floor(values).

    ``fused``: (H, W) or (H, W, 3), 0..255; colour -> mean over channels. Range 0..8.
    """
    fused = _check_image(fused, 'fused')
    return float(np.mean([_entropy_plane(p) for p in _fused_channels(fused)]))


def standard_deviation(fused):
    """SD (VIFB ``Variance``): population std of the grey levels, mean over channels."""
    fused = _check_image(fused, 'fused')
    return float(np.mean([np.std(p) for p in _fused_channels(fused)]))


def spatial_frequency(fused):
    """SF = sqrt(RF^2 + CF^2), both normalised by the pixel count (MATLAB ``m*n``).

    RF^2 / CF^2: sum of squared horizontal / vertical neighbour differences. A colour image
    is laid out as its R, G, B planes side by side (an H x 3W image), as VIFB's code does.
    """
    fused = _check_image(fused, 'fused')
    planes = _fused_channels(fused)
    side_by_side = np.concatenate(planes, axis=1)
    row_energy = np.sum(np.diff(side_by_side, axis=1) ** 2)
    column_energy = np.sum(np.diff(side_by_side, axis=0) ** 2)
    return float(math.sqrt((row_energy + column_energy) / side_by_side.size))


def average_gradient(fused):
    """AG = sum(sqrt((gx^2 + gy^2) / 2)) / ((H - 1)(W - 1)), mean over channels.

    gx, gy: MATLAB ``gradient`` (central differences inside, one-sided at the border).
    """
    fused = _check_image(fused, 'fused')
    values = []
    for plane in _fused_channels(fused):
        grad_y, grad_x = np.gradient(plane)
        magnitude = np.sqrt((grad_x ** 2 + grad_y ** 2) / 2.0)
        values.append(magnitude.sum() / ((plane.shape[0] - 1) * (plane.shape[1] - 1)))
    return float(np.mean(values))


def edge_intensity(fused):
    """EI: mean Sobel gradient magnitude (``imfilter`` with replicated border), all channels."""
    fused = _check_image(fused, 'fused')
    values = []
    for plane in _fused_channels(fused):
        response_y = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_ROWS,
                                  borderType=cv2.BORDER_REPLICATE)
        response_x = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_ROWS.T,
                                  borderType=cv2.BORDER_REPLICATE)
        values.append(np.mean(np.hypot(response_x, response_y)))
    return float(np.mean(values))


# ------------------------------------------------------------------ information metrics


def _normalised_levels(plane):
    """VIFB mutinf: stretch to 0..1, then int16(x * 255), as bin indices 0..255."""
    low, high = plane.min(), plane.max()
    if high == low:
        return np.zeros(plane.shape, dtype=np.intp)
    stretched = (plane - low) / (high - low)
    return _round_half_away(stretched * 255).astype(np.intp)


def _entropy_of_counts(counts):
    probabilities = counts[counts > 0] / counts.sum()
    return float(-np.sum(probabilities * np.log(probabilities)))


def mutual_information_pair(source, fused):
    """MI(source; fused) in nats, VIFB ``mutinf``: each image min-max stretched to 256 bins.

    ``source``, ``fused``: (H, W) float arrays (already grey).
    """
    levels_a = _normalised_levels(np.asarray(source, dtype=np.float64))
    levels_b = _normalised_levels(np.asarray(fused, dtype=np.float64))
    joint = np.bincount((levels_a * 256 + levels_b).ravel(), minlength=256 * 256)
    joint = joint.reshape(256, 256)
    return (_entropy_of_counts(joint.sum(axis=1)) + _entropy_of_counts(joint.sum(axis=0))
            - _entropy_of_counts(joint))


def mutual_information(ir, vi, fused, bits=False):
    """MI = MI(ir; f) + MI(vi; f), in nats (VIFB) or bits (``bits=True``)."""
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        return (mutual_information_pair(_vifb_grey(i, True), _vifb_grey(f, True))
                + mutual_information_pair(_vifb_grey(v, True), _vifb_grey(f, True)))

    nats = _mean_over_channels(single, ir, vi, fused)
    return nats / math.log(2.0) if bits else nats


def _histogram_256(plane):
    levels = np.clip(np.floor(plane), 0, 255).astype(np.intp)
    return np.bincount(levels.ravel(), minlength=256) / levels.size


def _relative_entropy_bits(source, fused):
    p_source = _histogram_256(source)
    p_fused = _histogram_256(fused)
    both = (p_source > 0) & (p_fused > 0)
    return float(np.sum(p_source[both] * np.log2(p_source[both] / p_fused[both])))


def cross_entropy(ir, vi, fused):
    """CE in bits (VIFB ``Cross_entropy``): mean of sum p_s log2(p_s / p_f) over ir and vi.

    Bins empty in either histogram are skipped, as VIFB does, so unlike a true relative
    entropy the value can be negative when the fused histogram misses source levels.
    Lower is better.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        grey_f = _vifb_grey(f, True)
        return (_relative_entropy_bits(_vifb_grey(v, True), grey_f)
                + _relative_entropy_bits(_vifb_grey(i, True), grey_f)) / 2.0

    return _mean_over_channels(single, ir, vi, fused)


# ------------------------------------------------------------------- structural metrics


def _sobel_strength_and_angle(plane):
    # MATLAB conv2(..., 'same') is a correlation with the flipped kernel, zero padded.
    response_x = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_COLS[::-1, ::-1].copy(),
                              borderType=cv2.BORDER_CONSTANT)
    response_y = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_ROWS[::-1, ::-1].copy(),
                              borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(response_x ** 2 + response_y ** 2)
    zero_x = response_x == 0
    with np.errstate(divide='ignore', invalid='ignore'):
        angle = np.arctan(response_y / np.where(zero_x, 1.0, response_x))
    angle[zero_x] = np.pi / 2
    return strength, angle


def _edge_preservation(strength_src, angle_src, strength_f, angle_f):
    """Q^{SF} map of Xydeas & Petrovic with VIFB's handling of equal strengths."""
    with np.errstate(divide='ignore', invalid='ignore'):
        relative_strength = np.where(
            strength_src > strength_f, strength_f / strength_src,
            # VIFB sets G = gF (not 1) where the strengths are equal; kept for fidelity.
            np.where(strength_src == strength_f, strength_f, strength_src / strength_f))
    relative_angle = 1.0 - np.abs(angle_src - angle_f) / (np.pi / 2)
    q_strength = _QABF_TG / (1.0 + np.exp(_QABF_KG * (relative_strength - _QABF_DG)))
    q_angle = _QABF_TA / (1.0 + np.exp(_QABF_KA * (relative_angle - _QABF_DA)))
    return q_strength * q_angle


def _qabf_single(ir, vi, fused):
    # VIFB multiplies by 255 after im2double of data that is already double (0..255).
    planes = [255.0 * _vifb_grey(x, False) for x in (vi, ir, fused)]
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = [_sobel_strength_and_angle(p) for p in planes]
    q_af = _edge_preservation(g_a, a_a, g_f, a_f)
    q_bf = _edge_preservation(g_b, a_b, g_f, a_f)
    denominator = np.sum(g_a + g_b)
    if denominator == 0:
        return float('nan')
    return float(np.sum(q_af * g_a + q_bf * g_b) / denominator)


def qabf(ir, vi, fused):
    """Q^{AB/F} (Xydeas & Petrovic 2000), VIFB parameters; 0..1, higher is better.

    NaN when neither source has any edge (the ratio is undefined).
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    return _mean_over_channels(_qabf_single, ir, vi, fused)


def _matlab_gaussian_1d(size, sigma):
    """1-D factor of ``fspecial('gaussian', size, sigma)``, whose 2-D kernel is its outer product.

    fspecial zeroes taps below eps * max; none are that small for the windows used here.
    """
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return kernel / kernel.sum()


def _filter_valid(plane, kernel_1d):
    """MATLAB ``filter2(w, x, 'valid')`` for a separable symmetric window w."""
    filtered = cv2.sepFilter2D(plane, cv2.CV_64F, kernel_1d, kernel_1d,
                               borderType=cv2.BORDER_REFLECT)
    half = len(kernel_1d) // 2
    return filtered[half:plane.shape[0] - half, half:plane.shape[1] - half]


def ssim_pair(reference, fused):
    """Mean SSIM (Wang et al. 2004) of two grey (H, W) images, 0..255 scale.

    11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03), L = 255, 'valid' region only, as in
    VIFB's ``metricsSsim.m``. 1.0 for identical images.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(fused, dtype=np.float64)
    if min(a.shape) < _SSIM_WINDOW:
        raise ImageEncodingError(
            f'SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {a.shape}')
    window = _matlab_gaussian_1d(_SSIM_WINDOW, _SSIM_SIGMA)
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_a = _filter_valid(a, window)
    mu_b = _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a ** 2
    var_b = _filter_valid(b * b, window) - mu_b ** 2
    cov_ab = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = (((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2))
                / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(ssim_map.mean())


def ssim(ir, vi, fused, reduction='sum'):
    """SSIM(f, ir) + SSIM(f, vi) (``reduction='sum'``, VIFB, at most 2) or their mean."""
    if reduction not in ('sum', 'mean'):
        raise ConfigError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        grey_f = _vifb_grey(f, True)
        return ssim_pair(_vifb_grey(v, True), grey_f) + ssim_pair(_vifb_grey(i, True), grey_f)

    total = _mean_over_channels(single, ir, vi, fused)
    return total if reduction == 'sum' else total / 2.0


def _vifb_error_norm(source, fused):
    """VIFB's ``mse``: sqrt(sum of squared errors) / pixel count (not a mean square)."""
    difference = source - fused
    return math.sqrt(float(np.sum(difference * difference))) / difference.size


def rmse(ir, vi, fused):
    """VIFB ``Rmse``: mean over ir and vi of sqrt(sum (s - f)^2) / (H W). Lower is better.

    Note this is VIFB's own definition (it scales as 1/sqrt(H W)), not a root mean square.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        grey_f = _vifb_grey(f, False)
        return (_vifb_error_norm(_vifb_grey(v, False), grey_f)
                + _vifb_error_norm(_vifb_grey(i, False), grey_f)) / 2.0

    return _mean_over_channels(single, ir, vi, fused)


def psnr(ir, vi, fused):
    """VIFB ``Psnr`` in dB: 20 log10(255 / sqrt(E)), E = VIFB's ``Rmse`` value per channel."""
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        grey_f = _vifb_grey(f, False)
        error = (_vifb_error_norm(_vifb_grey(v, False), grey_f)
                 + _vifb_error_norm(_vifb_grey(i, False), grey_f)) / 2.0
        return 20.0 * math.log10(255.0 / math.sqrt(error)) if error > 0 else float('inf')

    return _mean_over_channels(single, ir, vi, fused)


def _mse_pair(a, b):
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.mean(difference * difference))


def _common_psnr_rmse(ir, vi, fused):
    mse = (_mse_pair(ir, fused) + _mse_pair(vi, fused)) / 2.0
    value_psnr = 10.0 * math.log10(255.0 ** 2 / mse) if mse > 0 else float('inf')
    return value_psnr, math.sqrt(mse)


# ----------------------------------------------------------------- correlation metrics


def _correlation(a, b):
    """Pearson correlation (MATLAB ``corr2``) of two equally shaped arrays; NaN if constant."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    if denominator == 0:
        return float('nan')
    return float(np.sum(a * b) / denominator)


def _grey_triples(ir, vi, fused):
    """Per-channel triples of float grey planes (VIFB's split, unrounded grey conversion)."""
    return [tuple(_vifb_grey(x, False) for x in triple)
            for triple in _channel_triples(ir, vi, fused)]


def scd(ir, vi, fused):
    """Sum of the correlations of differences (Aslantas & Bendes 2015).

    SCD = corr(f - vi, ir) + corr(f - ir, vi); range -2..2, higher is better. Not part of
    VIFB; colour is handled like VIFB's metrics (per channel, averaged). NaN where a
    difference image or source is constant.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    values = [_correlation(f - v, i) + _correlation(f - i, v)
              for i, v, f in _grey_triples(ir, vi, fused)]
    return float(np.mean(values))


def correlation_coefficient(ir, vi, fused):
    """CC = (corr(f, ir) + corr(f, vi)) / 2, Pearson; range -1..1. Not part of VIFB."""
    ir, vi, fused = _check_triple(ir, vi, fused)
    values = [(_correlation(f, i) + _correlation(f, v)) / 2.0
              for i, v, f in _grey_triples(ir, vi, fused)]
    return float(np.mean(values))


def vif_pair(reference, distorted):
    """Pixel-domain multiscale VIF (Sheikh & Bovik 2006, ``vifp_mscale.m``) of grey planes.

    Four scales with Gaussian windows N = 17, 9, 5, 3 (sigma N / 5), noise variance 2,
    'valid' filtering and 2x decimation between scales. 1.0 for identical images; can
    exceed 1 for contrast-enhanced ``distorted``. NaN for a constant reference. Both sides
    must be at least 41 pixels.
    """
    ref = np.asarray(reference, dtype=np.float64)
    dist = np.asarray(distorted, dtype=np.float64)
    numerator = 0.0
    denominator = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = _matlab_gaussian_1d(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        if min(ref.shape) < size:
            raise ImageEncodingError(
                f'VIF needs images of at least {_VIF_MIN_SIDE}x{_VIF_MIN_SIDE} pixels, '
                f'got {np.shape(reference)}')
        mu_ref = _filter_valid(ref, window)
        mu_dist = _filter_valid(dist, window)
        var_ref = np.maximum(_filter_valid(ref * ref, window) - mu_ref ** 2, 0.0)
        var_dist = np.maximum(_filter_valid(dist * dist, window) - mu_dist ** 2, 0.0)
        covariance = _filter_valid(ref * dist, window) - mu_ref * mu_dist

        gain = covariance / (var_ref + _VIF_EPS)
        noise_var = var_dist - gain * covariance
        flat_ref = var_ref < _VIF_EPS
        gain[flat_ref] = 0.0
        noise_var[flat_ref] = var_dist[flat_ref]
        var_ref[flat_ref] = 0.0
        flat_dist = var_dist < _VIF_EPS
        gain[flat_dist] = 0.0
        noise_var[flat_dist] = 0.0
        negative = gain < 0
        noise_var[negative] = var_dist[negative]
        gain[negative] = 0.0
        noise_var = np.maximum(noise_var, _VIF_EPS)

        numerator += np.sum(np.log10(
            1.0 + gain ** 2 * var_ref / (noise_var + _VIF_NOISE_VARIANCE)))
        denominator += np.sum(np.log10(1.0 + var_ref / _VIF_NOISE_VARIANCE))
    if denominator == 0:
        return float('nan')
    return float(numerator / denominator)


def vif(ir, vi, fused):
    """VIF = VIFp(ir -> f) + VIFp(vi -> f), :func:`vif_pair` per source; higher is better.

    This is the fusion literature's common "VIF" (e.g. the SeAFusion/CDDFuse evaluation
    scripts), not Han et al.'s VIFF. Not part of VIFB; colour per channel, averaged.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    values = [vif_pair(i, f) + vif_pair(v, f) for i, v, f in _grey_triples(ir, vi, fused)]
    return float(np.mean(values))


# ---------------------------------------------------- human-perception metrics (Qcb, Qcv)


def _stretch_to_255(plane):
    """Z. Liu's ``normalize1``: min-max stretch to 0..255, rounded; all-zero input unchanged."""
    low, high = plane.min(), plane.max()
    if high == 0 and low == 0:
        return plane
    with np.errstate(divide='ignore', invalid='ignore'):
        return _round_half_away((plane - low) / (high - low) * 255)


def _freqspace(rows, cols):
    """MATLAB ``freqspace([rows, cols], 'meshgrid')``: (u, v) normalised frequency grids."""
    def axis(n):
        return (np.arange(n) - n // 2) * (2.0 / n)
    return np.meshgrid(axis(cols), axis(rows))


def _filter_frequency(plane, centred_response):
    """ifft2(ifftshift(fftshift(fft2(x)) .* S)) for a filter S given with DC at the centre.

    The filters are radially symmetric, so the result is real (MATLAB keeps round-off
    imaginary parts, which are negligible) and a real FFT suffices.
    """
    response = np.fft.ifftshift(centred_response)[:, :plane.shape[1] // 2 + 1]
    return scipy.fft.irfft2(scipy.fft.rfft2(plane) * response, s=plane.shape)


def _gaussian_31(sigma):
    """1-D factor of Chen-Blum's unnormalised 31x31 Gaussian exp(-r^2 / 2 s^2) / (2 pi s^2)."""
    offsets = np.arange(-15, 16, dtype=np.float64)
    return np.exp(-offsets ** 2 / (2.0 * sigma * sigma)) / math.sqrt(2.0 * np.pi * sigma * sigma)


def _filter_same_zero(plane, kernel_1d):
    """MATLAB ``filter2(w, x, 'same')`` for a separable symmetric w, zero outside the image."""
    return cv2.sepFilter2D(plane, cv2.CV_64F, kernel_1d, kernel_1d,
                           borderType=cv2.BORDER_CONSTANT)


def _chen_blum_contrast(plane):
    inner = _filter_same_zero(plane, _gaussian_31(2.0))
    outer = _filter_same_zero(plane, _gaussian_31(4.0))
    with np.errstate(divide='ignore', invalid='ignore'):
        contrast = np.abs(inner / outer - 1.0)
        # k = h = 1, p = 3, q = 2, Z = 1e-4 as in Z. Liu's metricChenBlum.m.
        return contrast ** 3 / (contrast ** 2 + 1e-4)


def _qcb_single(ir, vi, fused):
    planes = [_stretch_to_255(_vifb_grey(x, False)) for x in (vi, ir, fused)]
    rows, cols = planes[0].shape
    u, v = _freqspace(rows, cols)
    radius = np.hypot(u * cols / 30.0, v * rows / 30.0)
    # Difference-of-Gaussians contrast sensitivity filter, f0 = 15.387, f1 = 1.3456, a = 0.7622.
    csf = np.exp(-(radius / 15.3870) ** 2) - 0.7622 * np.exp(-(radius / 1.3456) ** 2)
    c_vi, c_ir, c_f = [_chen_blum_contrast(_filter_frequency(p, csf)) for p in planes]
    with np.errstate(divide='ignore', invalid='ignore'):
        q_vi = np.where(c_vi < c_f, c_vi / c_f, c_f / c_vi)
        q_ir = np.where(c_ir < c_f, c_ir / c_f, c_f / c_ir)
        saliency_total = c_vi * c_vi + c_ir * c_ir
        quality = (c_vi * c_vi * q_vi + c_ir * c_ir * q_ir) / saliency_total
    return float(np.mean(quality))


def qcb(ir, vi, fused):
    """Q_CB, Chen & Blum 2009 (Z. Liu's ``metricChenBlum.m`` as in VIFB); 0..1, higher is better.

    Colour per channel as VIFB; a grey fused image is compared with ``rgb2gray`` sources (VIFB
    itself fails on that case). NaN where the contrast maps are 0/0 somewhere.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    return _mean_over_channels(_qcb_single, ir, vi, fused)


def _block_reduce(values, block, reducer):
    """MATLAB ``blkproc(x, [block block], fun)``: zero-pad to whole blocks, reduce each block."""
    rows = -(-values.shape[0] // block) * block
    cols = -(-values.shape[1] // block) * block
    padded = np.zeros((rows, cols))
    padded[:values.shape[0], :values.shape[1]] = values
    blocks = padded.reshape(rows // block, block, cols // block, block)
    return reducer(blocks, axis=(1, 3))


def _qcv_single(ir, vi, fused):
    window = 16
    alpha = 5
    planes = [_stretch_to_255(_vifb_grey(x, False)) for x in (vi, ir, fused)]
    saliency = []
    for plane in planes[:2]:
        response_x = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_COLS, borderType=cv2.BORDER_CONSTANT)
        response_y = cv2.filter2D(plane, cv2.CV_64F, -_SOBEL_ROWS, borderType=cv2.BORDER_CONSTANT)
        strength = np.sqrt(response_x ** 2 + response_y ** 2)
        saliency.append(_block_reduce(strength ** alpha, window, np.sum))
    rows, cols = planes[0].shape
    u, v = _freqspace(rows, cols)
    radius = np.hypot(u * cols / 8.0, v * rows / 8.0)
    # Mannos-Sakrison contrast sensitivity function.
    csf = 2.6 * (0.0192 + 0.144 * radius) * np.exp(-(0.144 * radius) ** 1.1)
    distortion = [_block_reduce(_filter_frequency(source - planes[2], csf) ** 2, window, np.sum)
                  / (window * window) for source in planes[:2]]
    total_saliency = np.sum(saliency[0] + saliency[1])
    if total_saliency == 0:
        return float('nan')  # neither source has an edge: the weighting is undefined
    return float(np.sum(saliency[0] * distortion[0] + saliency[1] * distortion[1])
                 / total_saliency)


def qcv(ir, vi, fused):
    """Q_CV, Chen & Varshney 2007 (Z. Liu's ``metricChen.m`` as in VIFB); >= 0, LOWER is better.

    16x16 regions, saliency exponent 5, Mannos-Sakrison CSF; squared grey-level units.
    Colour per channel as VIFB; grey fused with colour sources uses ``rgb2gray``.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    return _mean_over_channels(_qcv_single, ir, vi, fused)


# ------------------------------------------------------------- artefact measures (Nabf, Blotch)

# Kumar's objective_fusion_perform_fn.m (2011; in VIFB's methods/CBF): Petrovic's model with
# these constants, Sobel / 8 with a mirrored border, weights g^1.5 above a threshold of 2.
_NABF_TD, _NABF_WT_MIN, _NABF_LG = 2.0, 0.001, 1.5
_NABF_NRG, _NABF_KG, _NABF_SIGMA_G = 0.9999, 19.0, 0.5
_NABF_NRA, _NABF_KA, _NABF_SIGMA_A = 0.9995, 22.0, 0.5


def _kumar_sobel(plane):
    """Kumar's ``sobel_fn``: Sobel / 8 after ``per_extn_im_fn`` (the border mirrored without
    repeating the edge pixel, OpenCV's BORDER_REFLECT_101) -> (strength, angle).

    Computed as differences first, so a derivative that the mirrored border makes zero is
    exactly zero (as in MATLAB on integer grey levels): Nabf compares strengths with '>', and
    a rounding residue at such a pixel would flip it.
    """
    ext = cv2.copyMakeBorder(plane, 1, 1, 1, 1, cv2.BORDER_REFLECT_101)
    across = ext[:, 2:] - ext[:, :-2]
    down = ext[2:, :] - ext[:-2, :]
    g_v = (across[:-2] + 2.0 * across[1:-1] + across[2:]) / 8.0   # Kumar's vtemp response
    g_h = (down[:, :-2] + 2.0 * down[:, 1:-1] + down[:, 2:]) / 8.0  # Kumar's htemp response
    strength = np.sqrt(g_h * g_h + g_v * g_v)
    with np.errstate(divide='ignore', invalid='ignore'):
        # MATLAB atan(gv / gh): +-pi/2 where gh = 0; 0 where both are 0 (Kumar's rule).
        angle = np.arctan(g_v / g_h)
    angle[(g_v == 0) & (g_h == 0)] = 0.0
    return strength, angle


def _kumar_preservation(strength_src, angle_src, strength_f, angle_f):
    with np.errstate(divide='ignore', invalid='ignore'):
        relative = np.where(strength_src > strength_f, strength_f / strength_src,
                            strength_src / strength_f)
    relative[(strength_src == 0) | (strength_f == 0)] = 0.0
    orientation = np.abs(np.abs(angle_src - angle_f) - np.pi / 2) * 2 / np.pi
    q_strength = _NABF_NRG / (1.0 + np.exp(-_NABF_KG * (relative - _NABF_SIGMA_G)))
    q_angle = _NABF_NRA / (1.0 + np.exp(-_NABF_KA * (orientation - _NABF_SIGMA_A)))
    return np.sqrt(q_strength * q_angle)


def _kumar_weight(strength):
    weight = np.full(strength.shape, _NABF_WT_MIN)
    strong = strength >= _NABF_TD
    weight[strong] = strength[strong] ** _NABF_LG
    return weight


def nabf_pair(vi, ir, fused):
    """Kumar's modified Nabf of grey (H, W) planes in the scale given (0..255 expected).

    Argument order as Kumar's code (sources A = ``vi``, B = ``ir``; the value is symmetric).
    """
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = [
        _kumar_sobel(np.asarray(x, dtype=np.float64)) for x in (vi, ir, fused)]
    q_af = _kumar_preservation(g_a, a_a, g_f, a_f)
    q_bf = _kumar_preservation(g_b, a_b, g_f, a_f)
    w_a, w_b = _kumar_weight(g_a), _kumar_weight(g_b)
    artefact = (g_f > g_a) & (g_f > g_b)
    return float(np.sum(artefact * ((1 - q_af) * w_a + (1 - q_bf) * w_b))
                 / np.sum(w_a + w_b))


def nabf(ir, vi, fused, unit_range=False):
    """N^{AB/F}, Kumar's modified fusion-artefact measure; 0..1, LOWER is better.

    B. K. Shreyamsha Kumar, SIViP 2013 (``objective_fusion_perform_fn.m``): at pixels where
    the fused edge is stronger than both sources' edges, the edge-information loss
    (1 - Q^{AF}) w^A + (1 - Q^{BF}) w^B, summed and divided by sum(w^A + w^B). Grey levels
    0..255 (Kumar's own use). 0 for a copy of either source. ``unit_range=True`` divides all
    images by 255 first, as evaluation scripts that pass ``im2double`` images do (their
    threshold Td = 2 then never fires: every weight is 0.001, a different, unweighted measure).
    Colour per channel as the other metrics (VIFB split).
    """
    ir, vi, fused = _check_triple(ir, vi, fused)
    divisor = 255.0 if unit_range else 1.0

    def single(i, v, f):
        return nabf_pair(_vifb_grey(v, False) / divisor, _vifb_grey(i, False) / divisor,
                         _vifb_grey(f, False) / divisor)

    return _mean_over_channels(single, ir, vi, fused)


# Blotch measure: images are block-averaged so the longer side is about BLOTCH_WORK_SIDE pixels
# (the measure is relative to the image size); bands are difference-of-Gaussians (sigma,
# 2 sigma) at these sigmas there (about 1/80 to 1/10 of the longer side: blotch and block
# sizes; finer detail is Nabf's domain).
BLOTCH_WORK_SIDE = 320
BLOTCH_SIGMAS = (4.0, 8.0, 16.0)
# A tiny ridge keeps the 2 x 2 solve defined where a source band is empty (grey levels^2).
BLOTCH_EPS = 0.01
# Share of the sources' own band energy a fused band may leave unexplained without counting:
# room for a legitimately non-linear mix (per-pixel weights, pyramid selection) at sources'
# structure. 0.15 keeps those at <= 0.06 grey levels on the constructed cases of the tests.
BLOTCH_KAPPA = 0.15


def _reduce_for_blotch(plane, factor):
    """Mean over factor x factor blocks (OpenCV INTER_AREA at an integer factor)."""
    if factor == 1:
        return plane
    rows = plane.shape[0] // factor * factor
    cols = plane.shape[1] // factor * factor
    return plane[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).mean(
        axis=(1, 3))


def blotch_factor(shape):
    """Integer reduction factor the blotch measure uses for an image of ``shape`` (H, W)."""
    return max(1, int(round(max(shape[:2]) / BLOTCH_WORK_SIDE)))


def _dog_band(plane, sigma):
    """Difference-of-Gaussians band (sigma, 2 sigma) of ``plane``, mirrored border."""
    return (cv2.GaussianBlur(plane, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
            - cv2.GaussianBlur(plane, (0, 0), 2 * sigma, borderType=cv2.BORDER_REFLECT_101))


def blotch_map(ir, vi, fused):
    """Per-pixel unexplained fused band energy (grey levels^2) of grey (H, W) planes.

    Every plane is block-averaged by :func:`blotch_factor`. For each difference-of-Gaussians
    band (sigma, 2 sigma), sigma in :data:`BLOTCH_SIGMAS` (pixels at the reduced size), the
    fused band is fitted locally (Gaussian window of 2 sigma) as a ir + b vi of the source
    bands by least squares (ridge BLOTCH_EPS); the energy the fit leaves, less BLOTCH_KAPPA
    times the sources' own band energy there (room for a legitimately non-linear mix where the
    sources have structure) and less BLOTCH_EPS (the ridge's own shrinkage), is the excess.
    The map is the mean over the bands. Returned at the reduced size.
    """
    factor = blotch_factor(np.shape(fused))
    planes = [_reduce_for_blotch(np.asarray(x, dtype=np.float64), factor)
              for x in (ir, vi, fused)]
    total = np.zeros(planes[2].shape)
    for sigma in BLOTCH_SIGMAS:
        i, v, f = [_dog_band(p, sigma) for p in planes]

        def local(x, sigma=sigma):
            return cv2.GaussianBlur(x, (0, 0), 2 * sigma, borderType=cv2.BORDER_REFLECT_101)

        e_ii, e_vv, e_ff = local(i * i), local(v * v), local(f * f)
        e_iv, e_if, e_vf = local(i * v), local(i * f), local(v * f)
        s_ii, s_vv = e_ii + BLOTCH_EPS, e_vv + BLOTCH_EPS
        determinant = s_ii * s_vv - e_iv * e_iv
        a = (s_vv * e_if - e_iv * e_vf) / determinant
        b = (s_ii * e_vf - e_iv * e_if) / determinant
        residual = (e_ff - 2 * (a * e_if + b * e_vf)
                    + a * a * e_ii + 2 * a * b * e_iv + b * b * e_vv)
        total += np.maximum(residual - BLOTCH_KAPPA * (e_ii + e_vv) - BLOTCH_EPS, 0.0)
    return total / len(BLOTCH_SIGMAS)


def blotch(ir, vi, fused):
    """Blotch measure in grey levels: sqrt of the mean of :func:`blotch_map`; LOWER is better.

    The band-pass structure of the fused image at 1/80 to 1/10 of the image size (blotches,
    block edges of a coarse weight map, rims) that no local linear mix of the sources' bands
    explains, beyond 15 % of the sources' own band energy there. 0 for a copy of a source and for
    any fixed weighted average; about 0 for per-pixel weights and pyramid fusion. Not a
    published metric: defined and tested here (docs/metrics.md). Colour per channel.
    """
    ir, vi, fused = _check_triple(ir, vi, fused)

    def single(i, v, f):
        return math.sqrt(float(np.mean(blotch_map(_vifb_grey(i, False), _vifb_grey(v, False),
                                                  _vifb_grey(f, False)))))

    return _mean_over_channels(single, ir, vi, fused)


# ----------------------------------------------------- resolution and shift agreement checks


def _agreement(a, b, margin=0):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if margin:
        a = a[margin:-margin, margin:-margin]
        b = b[margin:-margin, margin:-margin]
    difference = np.abs(a - b)
    if difference.ndim == 3:
        difference = difference.mean(axis=2)
    mse = float(np.mean(difference ** 2))
    # Mean absolute difference over 16 x 16 blocks: a local disagreement (one block of a coarse
    # weight map) shows here even when the image-wide mean is small.
    block = _block_reduce(difference, 16, np.mean) if min(difference.shape) >= 16 else difference
    return {'mae': float(np.mean(difference)),
            'psnr': 10.0 * math.log10(255.0 ** 2 / mse) if mse > 0 else float('inf'),
            'p99': float(np.percentile(difference, 99)),
            'max_block_mae': float(np.max(block))}


def resolution_check(fuse, ir, vi, scale=0.5, margin=8):
    """Does ``fuse`` give the same picture at full size and at ``scale`` times the size?

    ``fuse(ir, vi) -> fused``: any fusion callable on arrays of one size (0..255 values, grey
    or colour as the caller wants). The full-size result is reduced to the small size
    (INTER_AREA) and compared with the fusion of the reduced inputs, so the unavoidable loss of
    fine detail at the small size does not count; only a dependence of the fusion itself on
    the resolution does. Returns {'mae', 'psnr', 'p99', 'max_block_mae'} (grey levels, dB;
    ``margin`` pixels of border left out at the small size).
    """
    height, width = np.shape(ir)[:2]
    small = (max(2, int(round(width * scale))), max(2, int(round(height * scale))))
    full = np.asarray(fuse(ir, vi), dtype=np.float32)
    reduced = [cv2.resize(np.asarray(x, dtype=np.float32), small, interpolation=cv2.INTER_AREA)
               for x in (ir, vi)]
    fused_small = np.asarray(fuse(*reduced), dtype=np.float64)
    full_reduced = cv2.resize(full, small, interpolation=cv2.INTER_AREA)
    return _agreement(full_reduced, fused_small, margin)


def shift_check(fuse, ir, vi, shift=(5, 3), margin=16):
    """Does ``fuse``'s output move with its input? (tiles, windows or a coarse grid would not.)

    The inputs are cropped by ``shift`` = (rows, cols) pixels at the top left, fused, and
    compared with the full fusion cropped the same way, leaving ``margin`` border pixels out.
    Returns {'mae', 'psnr', 'p99', 'max_block_mae'} like :func:`resolution_check`.
    """
    rows, cols = shift
    full = np.asarray(fuse(ir, vi), dtype=np.float64)
    shifted = np.asarray(fuse(np.asarray(ir)[rows:, cols:], np.asarray(vi)[rows:, cols:]),
                         dtype=np.float64)
    return _agreement(full[rows:, cols:], shifted, margin)


# --------------------------------------------------------------------------- evaluate


def _vifb_toolbox_values(ir, vi, fused, names=None):
    """The metrics VIFB's toolbox computes (keys of :data:`VIFB_COLUMNS`, or ``names``)."""
    functions = {
        'EN': lambda: entropy(fused),
        'SD': lambda: standard_deviation(fused),
        'SF': lambda: spatial_frequency(fused),
        'AG': lambda: average_gradient(fused),
        'EI': lambda: edge_intensity(fused),
        'MI': lambda: mutual_information(ir, vi, fused),
        'CE': lambda: cross_entropy(ir, vi, fused),
        'Qabf': lambda: qabf(ir, vi, fused),
        'SSIM': lambda: ssim(ir, vi, fused),
        'PSNR': lambda: psnr(ir, vi, fused),
        'RMSE': lambda: rmse(ir, vi, fused),
        'Qcb': lambda: qcb(ir, vi, fused),
        'Qcv': lambda: qcv(ir, vi, fused),
    }
    return {name: functions[name]() for name in (functions if names is None else names)}


def _evaluate_vifb(ir, vi, fused, names=METRIC_NAMES):
    values = _vifb_toolbox_values(ir, vi, fused, names=[n for n in names if n in VIFB_COLUMNS])
    others = _convention_free_metrics(ir, vi, fused)
    values.update({name: others[name]() for name in names if name in others})
    return {name: values[name] for name in names}


def _convention_free_metrics(ir, vi, fused):
    """The metrics both conventions compute the same way, as lazy calls by name."""
    return {
        'SCD': lambda: scd(ir, vi, fused),
        'CC': lambda: correlation_coefficient(ir, vi, fused),
        'VIF': lambda: vif(ir, vi, fused),
        'Nabf': lambda: nabf(ir, vi, fused),
        'Blotch': lambda: blotch(ir, vi, fused),
    }


def _evaluate_common(ir, vi, fused, names=METRIC_NAMES):
    # An 8-bit grey image, as evaluators that read files with cv2.IMREAD_GRAYSCALE see it.
    ir, vi, fused = (_round_half_away(rgb2gray(x, round_uint8=False)).astype(np.uint8)
                     for x in (ir, vi, fused))
    shared = [name for name in VIFB_COLUMNS if name not in ('MI', 'SSIM', 'PSNR', 'RMSE')]
    values = _vifb_toolbox_values(ir, vi, fused, names=[n for n in names if n in shared])
    others = {
        'MI': lambda: mutual_information(ir, vi, fused, bits=True),
        'SSIM': lambda: ssim(ir, vi, fused, reduction='mean'),
        'PSNR': lambda: _common_psnr_rmse(ir, vi, fused)[0],
        'RMSE': lambda: _common_psnr_rmse(ir, vi, fused)[1],
        **_convention_free_metrics(ir, vi, fused),
    }
    values.update({name: others[name]() for name in names if name in others})
    return {name: values[name] for name in names}


def evaluate(ir, vi, fused, convention='vifb', names=None):
    """All metrics of one ir / vi / fused triple as ``{name: float}`` (see :data:`METRIC_NAMES`).

    ``convention='vifb'`` reproduces the VIFB toolbox (MI in nats, SSIM summed, colour per
    channel); ``'common'`` scores grey versions with MI in bits and SSIM averaged. Units per
    key: :func:`metric_units`. ``names``: compute only these metrics (default: all; the others
    cost time on large images). Raises ImageEncodingError for unusable arrays, ConfigError for
    an unknown convention or metric name.
    """
    _check_convention(convention)
    if names is None:
        names = METRIC_NAMES
    unknown = sorted(set(names) - set(METRIC_NAMES))
    if unknown:
        raise ConfigError(f'unknown metric name(s) {unknown}; known: {METRIC_NAMES}')
    ir, vi, fused = _check_triple(ir, vi, fused)
    if convention == 'vifb':
        return _evaluate_vifb(ir, vi, fused, tuple(names))
    return _evaluate_common(ir, vi, fused, tuple(names))


def load_image(path):
    """Read an image file as MATLAB ``imread`` presents it: uint8 (H, W) or RGB (H, W, 3).

    Channels are kept as stored (a 3-channel grey JPEG stays 3-channel, which matters for
    VIFB's per-channel scoring).
    """
    image = cv2.imread(str(Path(path)), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageEncodingError(f'cannot read image file {path}')
    if image.dtype != np.uint8:
        raise ImageEncodingError(f'{path}: expected an 8-bit image, got {image.dtype}')
    if image.ndim == 3 and image.shape[2] == 4:
        raise ImageEncodingError(f'{path}: images with an alpha channel are not supported')
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def vifb_reference_errors(metrics_csv, ir_dir, vi_dir, fused_dir, methods=None, names=None):
    """Relative errors of the VIFB-convention metrics against VIFB's per-image table.

    ``metrics_csv``: VIFB values with columns ``image, method`` and :data:`VIFB_COLUMNS`;
    images are read from ``<ir_dir>/<image>.jpg``, ``<vi_dir>/<image>.jpg`` and
    ``<fused_dir>/<image>_<method>.jpg``. ``methods``: restrict to these (default: every
    method whose fused file exists). ``names``: the metrics to check (default: all of
    :data:`VIFB_COLUMNS`). Returns ``{(image, method): {metric: |ours - vifb| / |vifb|}}``.
    """
    names = list(VIFB_COLUMNS) if names is None else list(names)
    unknown = set(names) - set(VIFB_COLUMNS)
    if unknown:
        raise ConfigError(f'VIFB has no column for {sorted(unknown)}')
    ir_dir, vi_dir, fused_dir = Path(ir_dir), Path(vi_dir), Path(fused_dir)
    errors = {}
    with open(metrics_csv, newline='') as table:
        rows = list(csv.DictReader(table))
    for row in rows:
        image, method = row['image'], row['method']
        fused_path = fused_dir / f'{image}_{method}.jpg'
        if methods is not None and method not in methods:
            continue
        if methods is None and not fused_path.is_file():
            continue
        triple = _check_triple(load_image(ir_dir / f'{image}.jpg'),
                               load_image(vi_dir / f'{image}.jpg'), load_image(fused_path))
        values = _vifb_toolbox_values(*triple, names=names)
        errors[(image, method)] = {
            name: abs(values[name] - float(row[VIFB_COLUMNS[name]]))
            / abs(float(row[VIFB_COLUMNS[name]])) for name in names}
    return errors


def max_errors_by_method(errors):
    """``{method: {metric: max relative error over images}}`` of :func:`vifb_reference_errors`."""
    worst = {}
    for (_, method), per_metric in errors.items():
        method_worst = worst.setdefault(method, {})
        for name, error in per_metric.items():
            method_worst[name] = max(method_worst.get(name, 0.0), error)
    return worst


def main(argv=None):
    """Print the max relative error per metric and method against VIFB's table (Markdown)."""
    parser = argparse.ArgumentParser(
        description='Compare tesg_ros.metrics with the VIFB toolbox values.')
    parser.add_argument('data_dir', type=Path,
                        help='folder holding vifb21/{ir,vi} and vifb21_reference/')
    parser.add_argument('--methods', default='ADF,SeAFusion,U2Fusion,SwinFusion',
                        help='comma-separated fused methods (default: %(default)s)')
    args = parser.parse_args(argv)
    methods = args.methods.split(',')
    errors = vifb_reference_errors(
        args.data_dir / 'vifb21_reference' / 'metrics.csv', args.data_dir / 'vifb21' / 'ir',
        args.data_dir / 'vifb21' / 'vi', args.data_dir / 'vifb21_reference' / 'fused', methods)
    worst = max_errors_by_method(errors)
    names = list(VIFB_COLUMNS)
    print('| method | images | ' + ' | '.join(names) + ' |')
    print('|---|---|' + '---|' * len(names))
    for method in methods:
        count = sum(1 for (_, m) in errors if m == method)
        cells = ' | '.join(f'{100 * worst[method][n]:.3f} %' for n in names)
        print(f'| {method} | {count} | {cells} |')


if __name__ == '__main__':
    main()
