# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""TesgFusionNet: the complete text-semantics-guided infrared/visible fusion network.

Data flow (see docs/network.md for the diagram and the cost budget)::

    ir, vis_y (B,1,H,W) -> pad to a multiple of `reduction`
      -> two modality-specific encoders (one grouped conv per stage):
         full res 3x3 stem -> 1/2 -> 1/4 (skip) -> ... -> 1/reduction features (B,C,h,w) each
      -> MGCA blocks (windowed cross-attention, masks bias the logits), plain then shifted
      -> TDAF (text -> channel gates + text-conditioned spatial gate) -> (B,C,h,w)
      -> decoder at 1/4: [upsampled TDAF, skip features, saliency prior logit, masks] -> 4 maps
      -> bilinear to full res: background weight w_bg and target weight w_tgt in (0,1),
         detail gains g_ir, g_vis in (-g_max, g_max)
      -> w = w_bg + s * (w_tgt - w_bg), s = target_share(union of the masks), full resolution
    fused = vis + w * (ir - vis) + g_ir * hp(ir) + g_vis * hp(vis), clipped to [0, 1]

``hp`` is a learned 3x3 high-pass filter per modality whose kernel is projected to zero sum, so
the detail term never shifts brightness. The weight map is a sigmoid of a fixed-form saliency
prior (scaled by a learnable factor) plus a learned correction; the correction and detail heads
start near zero, so an untrained net, and a net given no masks and no text, fuses like a
saliency-weighted average: convex, smooth weights, no halos, no noise amplification.

The two weights are blended by the full-resolution masks, not at 1/4 resolution, so where the
infrared dominates inside a highlighted target stops at the mask's edge: a 1/4-resolution weight
spills a few pixels past it (a bright glow or, where the IR surround is dark, a dark rim).
"""

from dataclasses import asdict, dataclass, fields
import functools
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from tesg_ros.errors import ConfigError, NetworkInputError
from tesg_ros.network.mgca import MaskGuidedCrossAttention
from tesg_ros.network.tdaf import TextDrivenAttentionalFusion

# Inputs may exceed [0, 1] by this much (rounding in upstream float conversions).
RANGE_TOLERANCE = 1e-3
SKIP_REDUCTION = 4
FILL_RADIUS = 2   # quarter pixels: neighbourhood of background_from_surroundings
# Soft masks with a wide tail (warm-core-only thermal masks fall from 0.4 to 0.05 over
# ~6 px outside a target; CLIPSeg and HOG-box masks are softer still) would give the
# target's IR share a glow that wide. Steepened about 0.5 (0.25 -> 0, 0.75 -> 1) the blend
# switches within ~2 px; the masks reach MGCA unchanged.
MASK_BLEND_GAIN = 2.0


@dataclass(frozen=True)
class TesgConfig:
    """Hyper-parameters of :class:`TesgFusionNet`; ``to_dict``/``from_dict`` round-trip them.

    stem_channels: full-resolution stem width per modality (1/2 resolution uses twice this).
    skip_channels: per-modality width at 1/4 resolution (decoder skip connection).
    channels: per-modality width C where MGCA and TDAF run (1/reduction resolution).
    decoder_channels: decoder width at 1/4 resolution.
    text_dim: sentence-embedding size D. text_hidden: TDAF text MLP width.
    mask_channels: number of masks M. heads, window: MGCA heads and window side (tokens).
    reduction: downsampling factor where MGCA/TDAF run (power of two, >= 4).
    mgca_blocks: number of MGCA blocks; odd-numbered blocks use windows shifted by window // 2.
    max_detail_gain: bound on the per-pixel detail gains.
    max_logit_correction: bound on the learned correction of the weight-map logit.
    prior_scale_init: initial scale of the saliency prior logit.
    guided_radius: 0 = the weight map is upsampled bilinearly and blended with the masks at
        full resolution; > 0 = edge-aware: the 1/4-resolution weight (masks blended in) goes
        through a guided filter with the two sources as guide, this radius in 1/4-resolution
        pixels, and its linear coefficients are applied at full resolution (see
        :func:`guided_weight`).
    guided_eps: regularisation of the guided filter (a guide variance below it counts as flat).
    """

    stem_channels: int = 4
    skip_channels: int = 24
    channels: int = 48
    decoder_channels: int = 32
    text_dim: int = 384
    text_hidden: int = 64
    mask_channels: int = 1
    heads: int = 2
    window: int = 8
    reduction: int = 8
    mgca_blocks: int = 2
    max_detail_gain: float = 0.5
    max_logit_correction: float = 6.0
    prior_scale_init: float = 3.0
    guided_radius: int = 0
    guided_eps: float = 2e-3

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f'TesgConfig.{field.name} must be an int, got {value!r}')
            if field.type is float and (isinstance(value, bool)
                                        or not isinstance(value, (int, float))):
                raise ConfigError(f'TesgConfig.{field.name} must be a number, got {value!r}')
            if value <= 0 and field.name not in ('mgca_blocks', 'guided_radius'):
                raise ConfigError(f'TesgConfig.{field.name} must be > 0, got {value!r}')
        for name in ('mgca_blocks', 'guided_radius'):
            if getattr(self, name) < 0:
                raise ConfigError(f'TesgConfig.{name} must be >= 0, got {getattr(self, name)}')
        if self.reduction < SKIP_REDUCTION or self.reduction & (self.reduction - 1):
            raise ConfigError(f'TesgConfig.reduction must be a power of two >= 4, got '
                              f'{self.reduction}')
        if self.channels % self.heads:
            raise ConfigError(f'TesgConfig.channels ({self.channels}) must be divisible by '
                              f'heads ({self.heads})')

    def to_dict(self):
        """Plain ``{name: int | float}`` dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Build from a dict; unknown keys raise ConfigError, missing keys take defaults."""
        if not isinstance(values, dict):
            raise ConfigError(f'TesgConfig.from_dict expects a dict, got {type(values).__name__}')
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'unknown TesgConfig keys: {unknown}')
        return cls(**values)


def block_diagonal(weight):
    """groups=2 conv weight ``(O, I, k, k)`` -> equivalent dense weight ``(O, 2 I, k, k)``.

    oneDNN runs a dense convolution with a block-diagonal weight several times faster than a
    grouped one when each group has only one to four input channels (full-resolution stages).
    """
    half = weight.shape[0] // 2
    zeros = weight.new_zeros((half, *weight.shape[1:]))
    return torch.cat([torch.cat([weight[:half], zeros], dim=1),
                      torch.cat([zeros, weight[half:]], dim=1)], dim=0)


class DualEncoder(nn.Module):
    """Two modality-specific CNN encoders plus the full-resolution detail filters.

    Every stage holds separate infrared and visible weights (a groups=2 convolution: two
    encoders), executed as one kernel call per stage. The two full-resolution stages run as dense
    convolutions with block-diagonal weights (same result, faster on CPU), and the stem conv also
    computes the learned zero-sum 3x3 high-pass ("detail") filter of each modality.

    Input ``(B, 2, H + 2, W + 2)`` = [ir, vis] padded by one pixel on every side (replicate), with
    H, W multiples of ``reduction``. Outputs ``(skip, deep, high_pass)``:
    skip ``(B, 2 * skip_channels, H/4, W/4)``, deep ``(B, 2 * C, H/r, W/r)``,
    high_pass ``(B, 2, H, W)``; channel halves are [ir, vis].
    """

    def __init__(self, config):
        super().__init__()
        stem, skip, deep = config.stem_channels, config.skip_channels, config.channels
        self.stem_channels = stem
        self.stem = nn.Conv2d(2, 2 * stem, 3, groups=2)
        self.down_half = nn.Conv2d(2 * stem, 4 * stem, 3, stride=2, padding=1, groups=2)
        self.down_quarter = nn.Conv2d(4 * stem, 2 * skip, 3, stride=2, padding=1, groups=2)
        stages = []
        width = skip
        for _ in range(int(math.log2(config.reduction // SKIP_REDUCTION))):
            stages += [nn.Conv2d(2 * width, 2 * deep, 3, stride=2, padding=1, groups=2), nn.GELU()]
            width = deep
        if not stages:
            stages = [nn.Conv2d(2 * skip, 2 * deep, 1, groups=2), nn.GELU()]
        self.deep = nn.Sequential(*stages)
        # Per-modality 3x3 detail filters, initialised as (identity - 3x3 box); the forward
        # pass projects them to zero sum so they never carry brightness.
        detail = torch.full((2, 1, 3, 3), -1.0 / 9.0)
        detail[:, :, 1, 1] += 1.0
        self.detail_kernels = nn.Parameter(detail)

    def forward(self, images):
        stem_out = 2 * self.stem_channels
        detail = self.detail_kernels - self.detail_kernels.mean(dim=(2, 3), keepdim=True)
        weight = torch.cat([block_diagonal(self.stem.weight), block_diagonal(detail)], dim=0)
        bias = torch.cat([self.stem.bias, self.stem.bias.new_zeros(2)])
        full = F.conv2d(images, weight.to(images.dtype), bias.to(images.dtype))
        high_pass = full[:, stem_out:]
        features = F.leaky_relu(full[:, :stem_out], 0.1, inplace=True)
        features = F.leaky_relu(
            F.conv2d(features, block_diagonal(self.down_half.weight), self.down_half.bias,
                     stride=2, padding=1), 0.1, inplace=True)
        skip = F.gelu(self.down_quarter(features))
        return skip, self.deep(skip), high_pass


def target_share(union):
    """How much each pixel belongs to a highlighted target, from the union of the soft masks:
    ``clip(MASK_BLEND_GAIN (m - 0.5) + 0.5, 0, 1)``, any shape; the network blends its target
    and background weights with it."""
    # One full-resolution temporary, two in-place steps.
    return union.mul(MASK_BLEND_GAIN).add_(0.5 - 0.5 * MASK_BLEND_GAIN).clamp_(0.0, 1.0)


def saliency(image_quarter):
    """Visual saliency of a 1/4-resolution image ``(B, 1, h, w)`` -> ``(B, 1, h, w)`` >= 0.

    Global distinctness (distance from the image mean: hot targets, bright or dark objects) plus
    local contrast (distance from the 5x5 local mean: texture, edges), smoothed over 3x3 (12 px at
    full resolution; a 5x5 smoothing diluted small hot targets such as distant people).
    """
    global_term = (image_quarter - image_quarter.mean(dim=(2, 3), keepdim=True)).abs()
    local_term = (image_quarter - band_box_mean(image_quarter, 2)).abs()
    return band_box_mean(global_term + 2.0 * local_term, 1)


class FusionDecoder(nn.Module):
    """Light decoder at 1/4 resolution -> 4 raw maps: weight-logit corrections [background,
    target] and detail gains [ir, vis].

    Inputs: TDAF features ``(B, C, h, w)``, encoder skip ``(B, 2 * skip_channels, H/4, W/4)``,
    the saliency prior logit ``(B, 1, H/4, W/4)`` and the masks at 1/4 resolution
    ``(B, M, H/4, W/4)`` or None. The first layer is a 1x1 conv over [upsampled TDAF, skip,
    prior, masks]; it is computed as summed parts, the TDAF part before upsampling (1x1 conv and
    bilinear upsampling commute), which avoids a ~100-channel concatenation at 1/4 resolution.
    The masks reach the decoder directly so region boundaries are placed at 1/4, not 1/8,
    resolution. Output ``(B, 4, H/4, W/4)``.
    """

    def __init__(self, config):
        super().__init__()
        width = config.decoder_channels
        self.deep = nn.Conv2d(config.channels, width, 1)
        self.skip = nn.Conv2d(2 * config.skip_channels, width, 1, bias=False)
        self.prior_weight = nn.Parameter(torch.empty(1, width, 1, 1).uniform_(-0.5, 0.5))
        self.mask = nn.Conv2d(config.mask_channels, width, 1, bias=False)
        self.refine = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 4, 3, padding=1)
        # Small, not zero: the net starts at the prior fusion yet every weight gets gradient.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, deep, skip, prior_logit, masks_quarter=None):
        upsampled = F.interpolate(self.deep(deep), size=skip.shape[-2:], mode='bilinear',
                                  align_corners=False)
        decoded = upsampled + self.skip(skip) + self.prior_weight * prior_logit
        if masks_quarter is not None:  # no bias: zero masks add exactly nothing
            decoded = decoded + self.mask(masks_quarter)
        decoded = F.gelu(decoded)
        return self.head(F.gelu(self.refine(decoded)))


def background_from_surroundings(background_weight, masks_quarter, radius=FILL_RADIUS):
    """Replace the background weight inside the masks by that of the pixels around them.

    ``background_weight`` ``(B, 1, h, w)`` and ``masks_quarter`` ``(B, M, h, w)`` at 1/4
    resolution -> ``(B, 1, h, w)``. Inside a mask the target weight is used, so the background
    weight there gets no training signal and follows the target's own saliency (high); bilinear
    upsampling then carries it up to 4 px past the mask edge: an infrared glow or dark rim beside
    every highlighted target. Each quarter pixel takes, in proportion to the union of the masks,
    the mean weight of the non-mask pixels of its (2 radius + 1)^2 neighbourhood; pixels with no
    such neighbour keep their own. Zero masks change nothing, bit for bit.
    """
    region = masks_quarter.amax(dim=1, keepdim=True)
    outside = 1.0 - region
    sums = band_box_mean(torch.cat([outside, background_weight * outside], dim=1), radius,
                         border_aware=False)
    total = sums[:, :1]
    mean = sums[:, 1:] / total.clamp_min(0.05)
    surroundings = torch.where(total > 0.05, mean, background_weight)
    return torch.lerp(background_weight, surroundings, region)


def _band(length, radius, border_aware, dtype, device):
    """``(length, length)`` matrix whose product with a row (or column) vector gives the means
    over windows of ``2 radius + 1`` (border-aware: the pixels inside only; otherwise the sums
    divided by the full window size, as a zero-padded average pool). Eager calls reuse the
    matrices of earlier frames; traced (exported) graphs build them from the input's size."""
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return _new_band(length, radius, border_aware, dtype, device)
    return _cached_band(int(length), radius, border_aware, dtype, device)


def _new_band(length, radius, border_aware, dtype, device):
    index = torch.arange(length, device=device)
    band = ((index[:, None] - index[None, :]).abs() <= radius).to(dtype)
    if border_aware:
        return band / band.sum(dim=0, keepdim=True)
    return band / (2 * radius + 1)


@functools.lru_cache(maxsize=64)
def _cached_band(length, radius, border_aware, dtype, device):
    # Outside inference mode, so that a matrix first built while serving can be used in
    # training too (inference tensors cannot take part in autograd).
    with torch.inference_mode(False), torch.no_grad():
        return _new_band(length, radius, border_aware, dtype, device)


def band_box_mean(image, radius, border_aware=True):
    """Mean over a (2 radius + 1)^2 window of a small map ``(B, C, h, w)`` -> same shape, as two
    banded matrix products; ``border_aware`` windows average only the pixels inside the image
    (``avg_pool2d(count_include_pad=False)``), otherwise zero padding counts
    (``count_include_pad=True``). Same values as the average pools to float rounding, 4-8x
    faster at the 1/4 grid, where torch's CPU pooling runs a scalar loop per window. Cost
    ``h w (h + w)``: meant for the 1/4-resolution maps, not for full-resolution images."""
    height, width = image.shape[-2:]
    rows = _band(width, radius, border_aware, image.dtype, image.device)
    columns = _band(height, radius, border_aware, image.dtype, image.device)
    return torch.matmul(columns.transpose(0, 1), torch.matmul(image, rows))


def _window_sums(image, radius, dim):
    """Sums over windows of ``2 radius + 1`` along ``dim`` (-1 or -2; borders: the pixels
    inside) and the number of pixels in each window, shaped to broadcast against the sums."""
    size, length = 2 * radius + 1, image.shape[dim]
    padding = (radius + 1, radius, 0, 0) if dim == -1 else (0, 0, radius + 1, radius)
    running = F.pad(image, padding).cumsum(dim)
    sums = running.narrow(dim, size, length) - running.narrow(dim, 0, length)
    index = torch.arange(length, dtype=image.dtype, device=image.device)
    counts = (index + radius).clamp(max=length - 1) - (index - radius).clamp(min=0) + 1
    return sums, counts.view(-1) if dim == -1 else counts.view(-1, 1)


def box_mean(image, radius):
    """Mean over a (2 radius + 1)^2 window, ``(B, C, h, w)`` -> same shape; border windows
    average only the pixels inside the image. Running sums (ONNX CumSum): the cost does not
    grow with the radius (a radius-8 average pool over 8 channels cost 8x more on the CPU).
    Summed in float32 whatever the input dtype: float16 running sums lose the window's digits."""
    rows, row_counts = _window_sums(image.float(), radius, -1)
    sums, column_counts = _window_sums(rows, radius, -2)
    return (sums / (row_counts * column_counts)).to(image.dtype)


def guided_coefficients(weight, guide, radius, eps):
    """Coefficients of a guided filter (He et al. 2013) with a two-channel guide.

    ``weight`` ``(B, 1, h, w)``, ``guide`` ``(B, 2, h, w)`` = [ir, vis] at the same (low)
    resolution -> ``(B, 3, h, w)`` = (a_ir, a_vis, b), smoothed over the window, such that
    ``a_ir ir + a_vis vis + b`` is the filtered weight. In a window where both guides are flat
    (variance well below ``eps``) the result is the window's mean weight: no mottling where
    neither source has structure. Where a source has an edge the weight follows that edge, so
    applying the coefficients to the full-resolution sources (:func:`apply_guided`) switches
    at the sources' edges, not on the low-resolution grid (no steps, no rims).
    The 2 x 2 system is solved in closed form (plain element-wise ops, exportable).
    """
    ir, vis = guide[:, :1], guide[:, 1:]
    means = box_mean(torch.cat([ir, vis, weight, ir * ir, vis * vis, ir * vis, ir * weight,
                                vis * weight], dim=1), radius)
    m_ir, m_vis, m_w, m_ii, m_vv, m_iv, m_iw, m_vw = means.split(1, dim=1)
    var_ir = m_ii - m_ir * m_ir + eps
    var_vis = m_vv - m_vis * m_vis + eps
    cov_iv = m_iv - m_ir * m_vis
    cov_iw = m_iw - m_ir * m_w
    cov_vw = m_vw - m_vis * m_w
    det = var_ir * var_vis - cov_iv * cov_iv   # >= eps^2: the covariance is PSD
    a_ir = (var_vis * cov_iw - cov_iv * cov_vw) / det
    a_vis = (var_ir * cov_vw - cov_iv * cov_iw) / det
    bias = m_w - a_ir * m_ir - a_vis * m_vis
    return box_mean(torch.cat([a_ir, a_vis, bias], dim=1), radius)


def apply_guided(coefficients, ir, vis):
    """``a_ir ir + a_vis vis + b`` clipped to [0, 1], coefficients ``(B, 3, H, W)`` already at
    the resolution of ``ir``/``vis`` ``(B, 1, H, W)``."""
    return torch.addcmul(torch.addcmul(coefficients[:, 2:3], coefficients[:, :1], ir),
                         coefficients[:, 1:2], vis).clamp_(0.0, 1.0)


def check_input_values(ir, vis_y, masks=None, text=None):
    """Raise NetworkInputError unless ir, vis_y, masks lie in [0, 1] and text is finite.

    Works on torch tensors and numpy arrays. On CUDA tensors each check is a host
    synchronisation: the engine checks its numpy inputs once per frame instead and turns
    the network's own check (``validate_inputs``) off.
    """
    named = [('ir', ir), ('vis_y', vis_y)] + ([('masks', masks)] if masks is not None else [])
    for name, values in named:
        if isinstance(values, torch.Tensor):
            low, high = (float(v) for v in torch.aminmax(values.detach()))
        else:
            low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if not (low >= -RANGE_TOLERANCE and high <= 1.0 + RANGE_TOLERANCE):
            raise NetworkInputError(f'{name} must lie in [0, 1], got values in [{low:.4g}, '
                                    f'{high:.4g}] (uint8 images need uint8_to_float())')
    if text is None:
        return
    finite = (bool(torch.isfinite(text.detach()).all()) if isinstance(text, torch.Tensor)
              else bool(np.isfinite(text).all()))
    if not finite:
        raise NetworkInputError('text embedding contains NaN or Inf')


class _Grid:
    """Sizes of one forward pass: the input, its padding to a multiple of ``reduction`` and
    the 1/reduction grid of the attention blocks."""

    def __init__(self, height, width, reduction):
        self.height, self.width = height, width
        self.pad_h, self.pad_w = -height % reduction, -width % reduction
        self.padded_h, self.padded_w = height + self.pad_h, width + self.pad_w
        self.low_h, self.low_w = self.padded_h // reduction, self.padded_w // reduction


def _pad_sources(ir, vis_y, grid):
    """(B, 2, H', W'): one replicate pad serves all: a 1-pixel border for the unpadded
    full-res 3x3 convs (so the zero-sum detail filter sees no artificial edge) and the
    multiple of ``reduction``."""
    return F.pad(torch.cat([ir, vis_y], dim=1), (1, 1 + grid.pad_w, 1, 1 + grid.pad_h),
                 mode='replicate')


def _full_resolution_maps(maps, weights, masks_full, grid):
    """Bilinear maps to full resolution: ``(weight, gains, background_weight, target_weight)``.

    With masks the two weights are blended at full resolution, so the target weight stops at
    the mask edge, not 4 px past it.
    """
    maps = F.interpolate(maps, size=(grid.padded_h, grid.padded_w), mode='bilinear',
                         align_corners=False)[:, :, :grid.height, :grid.width]
    weight, gains = maps[:, :1], maps[:, weights:]
    if masks_full is None:
        return weight, gains, None, None
    background_weight, target_weight = weight, maps[:, 1:2]
    union = masks_full if masks_full.shape[1] == 1 else masks_full.amax(1, keepdim=True)
    weight = torch.lerp(background_weight, target_weight, target_share(union))
    return weight, gains, background_weight, target_weight


def _compose(ir, vis_y, weight, gains, high_pass):
    """vis + w (ir - vis) + g_ir hp(ir) + g_vis hp(vis), clipped to [0, 1]; in-place
    multiply-adds: two fewer full-resolution temporaries per frame."""
    fused = torch.lerp(vis_y, ir, weight)
    fused = fused.addcmul_(gains[:, :1], high_pass[:, :1])
    return fused.addcmul_(gains[:, 1:], high_pass[:, 1:]).clamp_(0.0, 1.0)


class TesgFusionNet(nn.Module):
    """TeSG fusion: ``forward(ir, vis_y, masks=None, text=None) -> fused_y``.

    See the module docstring for the data flow and :class:`TesgConfig` for the parameters.
    """

    def __init__(self, config=None):
        super().__init__()
        config = TesgConfig() if config is None else config
        if not isinstance(config, TesgConfig):
            raise ConfigError(f'config must be a TesgConfig, got {type(config).__name__}')
        self.config = config
        self.validate_inputs = True
        self.encoder = DualEncoder(config)
        self.mgca = nn.ModuleList(
            MaskGuidedCrossAttention(config.channels, config.mask_channels, config.heads,
                                     config.window, shift=(index % 2) * (config.window // 2))
            for index in range(config.mgca_blocks))
        self.tdaf = TextDrivenAttentionalFusion(config.channels, config.text_dim,
                                                config.text_hidden)
        self.decoder = FusionDecoder(config)
        self.prior_scale = nn.Parameter(torch.tensor(float(config.prior_scale_init)))

    def parameter_count(self):
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_inputs(self, ir, vis_y, masks, text):
        """Types and shapes (cheap, no host sync): TypeError / ValueError, not ConfigError."""
        if not isinstance(ir, torch.Tensor) or not isinstance(vis_y, torch.Tensor):
            raise NetworkInputError('ir and vis_y must be torch tensors')
        if ir.dim() != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise NetworkInputError(f'ir and vis_y must both be (B, 1, H, W), got '
                                    f'{tuple(ir.shape)} and {tuple(vis_y.shape)}')
        if not ir.is_floating_point() or vis_y.dtype != ir.dtype:
            raise NetworkInputError(f'ir and vis_y must be float tensors of one dtype, got '
                                    f'{ir.dtype} and {vis_y.dtype}')
        batch, _, height, width = ir.shape
        for name, tensor in (('masks', masks), ('text', text)):
            if tensor is not None and (not isinstance(tensor, torch.Tensor)
                                       or not tensor.is_floating_point()):
                raise NetworkInputError(f'{name} must be a float tensor or None, got '
                                        f'{getattr(tensor, "dtype", type(tensor).__name__)}')
        if masks is not None and (masks.dim() != 4 or masks.shape != (
                batch, self.config.mask_channels, height, width)):
            raise NetworkInputError(f'masks must be (B, M, H, W) = '
                                    f'{(batch, self.config.mask_channels, height, width)} '
                                    f'(M = config.mask_channels), got {tuple(masks.shape)}')
        if text is not None and text.shape != (batch, self.config.text_dim):
            raise NetworkInputError(f'text must be (B, D) = {(batch, self.config.text_dim)} '
                                    f'(D = config.text_dim), got {tuple(text.shape)}')
        if self.validate_inputs:
            check_input_values(ir, vis_y, masks, text)

    def _guided_maps(self, maps, weights, masks_quarter, quarter, ir, vis_y, intermediates):
        """Edge-aware weight map: blend the 1/4-resolution weights by the masks there, guided
        filter with the 1/4-resolution sources, apply the coefficients at full resolution.
        Returns ``(weight, gains, background_weight, target_weight)`` (the last two only with
        ``intermediates`` and masks, else None)."""
        config = self.config
        height, width = ir.shape[-2:]
        size = (quarter.shape[-2] * SKIP_REDUCTION, quarter.shape[-1] * SKIP_REDUCTION)
        radius, eps = config.guided_radius, config.guided_eps
        low = maps[:, :1]
        if masks_quarter is not None:
            share = target_share(masks_quarter.amax(1, keepdim=True))
            low = torch.lerp(maps[:, :1], maps[:, 1:2], share)
        coefficients = guided_coefficients(low, quarter, radius, eps)
        upsampled = F.interpolate(torch.cat([coefficients, maps[:, weights:]], dim=1), size=size,
                                  mode='bilinear', align_corners=False)[:, :, :height, :width]
        weight = apply_guided(upsampled[:, :3], ir, vis_y)
        background_weight = target_weight = None
        if intermediates and masks_quarter is not None:
            parts = [F.interpolate(guided_coefficients(maps[:, index:index + 1], quarter, radius,
                                                       eps), size=size, mode='bilinear',
                                   align_corners=False)[:, :, :height, :width]
                     for index in (0, 1)]
            background_weight, target_weight = (apply_guided(p, ir, vis_y) for p in parts)
        return weight, upsampled[:, 3:], background_weight, target_weight

    def forward(self, ir, vis_y, masks=None, text=None, return_intermediates=False):
        """Fuse infrared and visible luminance under mask and text guidance.

        ir, vis_y: ``(B, 1, H, W)`` float in [0, 1], any H, W >= 1.
        masks: ``(B, M, H, W)`` soft masks in [0, 1], or None (= zeros).
        text: ``(B, D)`` sentence embeddings, or None (= zeros).
        Returns fused luminance ``(B, 1, H, W)`` in [0, 1], in the input dtype; with
        ``return_intermediates`` a tuple ``(fused, info)`` where info holds
        ``weight`` (B,1,H,W) infrared share, ``background_weight`` and ``target_weight``
        (B,1,H,W) the two weights it blends by the masks (equal to ``weight`` and None
        without masks), ``detail`` (B,1,H,W) detail residual,
        ``prior_weight`` (B,1,H/4,W/4) saliency-only weight (padded grid),
        ``mgca`` list of per-block attention dicts (see MaskGuidedCrossAttention.forward) and
        ``channel_gates`` (B,2,C), ``spatial_gate`` (B,1,h,w) from TDAF.
        """
        self._check_inputs(ir, vis_y, masks, text)
        grid = _Grid(*ir.shape[-2:], self.config.reduction)
        images = _pad_sources(ir, vis_y, grid)
        skip, deep, high_pass = self.encoder(images)
        masks_full, masks_quarter, masks_low = self._pooled_masks(masks, ir, grid)
        if text is None:
            text = ir.new_zeros((ir.shape[0], self.config.text_dim))
        fused_features, attention_info, gate_info = self._guide(
            deep, masks_low, text.to(ir.dtype), return_intermediates)
        quarter = F.avg_pool2d(images[:, :, 1:-1, 1:-1], SKIP_REDUCTION)
        prior_logit = self._prior_logit(quarter)
        maps, weights = self._decode_maps(fused_features, skip, prior_logit, masks_quarter)
        if self.config.guided_radius > 0:
            weight, gains, background_weight, target_weight = self._guided_maps(
                maps, weights, masks_quarter, quarter, ir, vis_y, return_intermediates)
        else:
            weight, gains, background_weight, target_weight = _full_resolution_maps(
                maps, weights, masks_full, grid)
        high_pass = high_pass[:, :, :grid.height, :grid.width]
        fused = _compose(ir, vis_y, weight, gains, high_pass)
        if not return_intermediates:
            return fused
        detail = (gains * high_pass).sum(dim=1, keepdim=True)
        info = {'weight': weight, 'detail': detail, 'prior_weight': torch.sigmoid(prior_logit),
                'background_weight': weight if background_weight is None else background_weight,
                'target_weight': target_weight,
                'mgca': attention_info, **gate_info}
        return fused, info

    # The steps of forward, in order.
    def _pooled_masks(self, masks, ir, grid):
        """Masks at full, 1/4 and 1/reduction resolution (None, None, zeros without masks)."""
        if masks is None:
            low = ir.new_zeros((ir.shape[0], self.config.mask_channels, grid.low_h, grid.low_w))
            return None, None, low
        full = quarter = masks.to(ir.dtype)
        if grid.pad_h or grid.pad_w:
            quarter = F.pad(quarter, (0, grid.pad_w, 0, grid.pad_h), mode='replicate')
        quarter = F.avg_pool2d(quarter, SKIP_REDUCTION)
        low = quarter
        if self.config.reduction > SKIP_REDUCTION:
            low = F.avg_pool2d(quarter, self.config.reduction // SKIP_REDUCTION)
        return full, quarter, low

    def _guide(self, deep, masks_low, text, intermediates):
        """MGCA blocks (mask guidance) then TDAF (text guidance) on the deep features."""
        feat_ir, feat_vis = deep.chunk(2, dim=1)
        attention_info = []
        for block in self.mgca:
            feat_ir, feat_vis, block_info = block(feat_ir, feat_vis, masks_low, intermediates)
            attention_info.append(block_info)
        fused_features, gate_info = self.tdaf(feat_ir, feat_vis, text, intermediates)
        return fused_features, attention_info, gate_info

    def _prior_logit(self, quarter):
        """The fixed-form saliency prior of the IR weight, as a logit, at 1/4 resolution."""
        saliency_ir, saliency_vis = saliency(quarter[:, :1]), saliency(quarter[:, 1:])
        return self.prior_scale * (saliency_ir - saliency_vis) / (
            saliency_ir + saliency_vis + 0.02)

    def _decode_maps(self, fused_features, skip, prior_logit, masks_quarter):
        """1/4-resolution maps [background weight, (target weight,) gain_ir, gain_vis] and the
        number of weight channels (1 without masks: the target weight is never used)."""
        config = self.config
        head = self.decoder(fused_features, skip, prior_logit, masks_quarter)
        # Bounded correction: the weight logit stays within prior +- max_logit_correction, so the
        # sigmoid cannot saturate to an exact 0/1 (dead gradient) early in training.
        weights = 1 if masks_quarter is None else 2
        correction = config.max_logit_correction * torch.tanh(
            head[:, :weights] / config.max_logit_correction)
        maps = torch.cat([torch.sigmoid(prior_logit + correction),
                          config.max_detail_gain * torch.tanh(head[:, 2:])], dim=1)
        if masks_quarter is not None:
            maps = torch.cat([background_from_surroundings(maps[:, :1], masks_quarter),
                              maps[:, 1:]], dim=1)
        return maps, weights
