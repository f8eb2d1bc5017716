# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Fusion training losses (TeSG): intensity, gradient, SSIM and colour consistency.

Every tensor is float32 B x C x H x W in [0, 1]; ``fused``, ``ir`` and ``vis_y`` have one
channel (luminance), ``masks`` has M soft masks in [0, 1], ``vis_cbcr`` holds the visible
Cb and Cr planes (2 channels, BT.601 full range, offset 0.5). Each loss returns a scalar
tensor averaged over the batch. The formulas and default weights are in docs/training.md.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as functional

from tesg_ros.errors import ConfigError
from tesg_ros.network.tesg_net import box_mean

INFORMATION_RADIUS = 15   # px: window of the information share (smooth, not mottled)
INFORMATION_FLOOR = 0.05  # Sobel-magnitude units: two flat sources -> share 0.5
WARM_RADIUS = 15          # px: surroundings of a mask pixel
WARM_RAMP = 0.04          # ~10 grey levels warmer than the surroundings = fully warm
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(image):
    """Return the L1 Sobel gradient magnitude ``|Gx * I| + |Gy * I|``.

    ``image``: B x 1 x H x W float. Borders are replicated so a constant image has zero
    gradient everywhere. Returns B x 1 x H x W float, in [0, 8] for inputs in [0, 1].
    The L1 form (as in SeAFusion) avoids the infinite derivative of sqrt at zero.
    """
    kernel_x = _SOBEL_X.to(image.device, image.dtype).view(1, 1, 3, 3)
    kernel_y = kernel_x.transpose(2, 3)
    padded = functional.pad(image, (1, 1, 1, 1), mode='replicate')
    return (functional.conv2d(padded, kernel_x).abs()
            + functional.conv2d(padded, kernel_y).abs())


def target_union(masks):
    """``(union, has_targets)``: the max over the M masks (B x 1 x H x W) and, per image,
    1.0 where any mask is non-zero (B x 1 x 1 x 1); ``(None, None)`` for no masks."""
    if masks is None or masks.shape[1] == 0:
        return None, None
    union = masks.amax(dim=1, keepdim=True)
    return union, (union.amax(dim=(1, 2, 3), keepdim=True) > 0).to(union.dtype)


def information_share(ir, vis_y, radius=INFORMATION_RADIUS):
    """Per-pixel infrared share of an information-based target, ``(B, 1, H, W)`` in (0, 1).

    ``s = (E_I + c) / (E_I + E_V + 2 c)`` with ``E`` the Sobel magnitude averaged over a
    (2 radius + 1)^2 window and ``c`` = 0.05: each source weighs by how much structure it
    carries around the pixel. A dark, flat, hazy or saturated visible image gives the IR the
    larger share; two equally flat sources give 0.5 (the average), not the brighter one and
    not the visible one. The window keeps the share smooth, so it does not ask for mottled
    switching between the sources.
    """
    energy = box_mean(torch.cat([sobel_magnitude(ir), sobel_magnitude(vis_y)], dim=1), radius)
    energy = energy + INFORMATION_FLOOR
    return energy[:, :1] / energy.sum(dim=1, keepdim=True)


def warm_part(ir, union, radius=WARM_RADIUS, ramp=WARM_RAMP):
    """How much each mask pixel is warmer than the IR around the masks, ``(B, 1, H, W)``.

    The surroundings are the mean IR of the non-mask pixels of a (2 radius + 1)^2 window
    (the image's mean non-mask IR where the window has none); the result ramps from 0 at the
    surroundings' level to 1 at ``ramp`` above it. The thermal masks' region shapes (working
    resolution, hull completion) include pavement or wall beside an object; asking for the IR
    there taught the network blocky patches.
    """
    outside = 1.0 - union
    total = box_mean(outside, radius)
    local = box_mean(ir * outside, radius) / total.clamp_min(1e-3)
    overall = (ir * outside).sum(dim=(2, 3), keepdim=True) / outside.sum(
        dim=(2, 3), keepdim=True).clamp_min(1.0)
    surroundings = torch.where(total > 0.02, local, overall)
    return ((ir - surroundings) / ramp).clamp(0.0, 1.0)


def background_target(ir, vis_y, has_targets, background_visible, information=0.0,
                      shift=None):
    """Intensity target outside the masks: ``max(I, V)``, leaning toward V by
    ``background_visible`` in images that have targets (see :func:`intensity_loss`), and
    toward the information-based target ``V + s (I - V)`` (:func:`information_share`) by
    ``information``; then moved by a text intent's ``shift`` (B x 1 x H x W in [-1, 1]):
    ``T + relu(shift) (I - T) + relu(-shift) (V - T)``
    (:func:`~tesg_ros.training.text_targets.shifted_background`)."""
    target = torch.maximum(ir, vis_y)
    if has_targets is not None and background_visible != 0.0:
        target = target + background_visible * has_targets * (vis_y - target)
    if information != 0.0:
        informed = torch.lerp(vis_y, ir, information_share(ir, vis_y))
        target = torch.lerp(target, informed, information)
    if shift is not None:
        target = target + shift.clamp_min(0.0) * (ir - target) \
            + (-shift).clamp_min(0.0) * (vis_y - target)
    return target


def intensity_loss(fused, ir, vis_y, masks=None, mask_weight=1.0, background_visible=0.0,
                   information=0.0, shift=None):
    """Mask-aware (target-aware) intensity loss.

    With ``m = max_k masks_k`` (the union of the SIG masks, B x 1 x H x W) and the background
    target ``T = (1 - b) max(I, V) + b V`` where ``b = background_visible``::

        L_int = mean((1 - m) |F - T|) + mask_weight * sum(m |F - I|) / (sum(m) + eps)

    Inside warm-target masks the fused image follows the IR, so targets keep their thermal
    contrast even where the visible image is brighter (headlights, sky); outside them it keeps
    the brighter source (b = 0) or leans toward the visible scene (b > 0), which keeps the
    visible image's contrast around the highlighted targets instead of lifting the whole
    background to the warmer of the two. An image whose masks are all zero (no semantics, or
    nothing found) has the generic target ``max(I, V)`` everywhere whatever ``b``: a network
    given no semantics must still fuse well. Returns a scalar >= 0.
    """
    union, has_targets = target_union(masks)
    if union is None:
        return (fused - background_target(ir, vis_y, None, 0.0, information, shift)
                ).abs().mean()
    background = background_target(ir, vis_y, has_targets, background_visible, information,
                                   shift)
    loss = ((1.0 - union) * (fused - background).abs()).mean()
    if mask_weight != 0.0:
        inside = (union * (fused - ir).abs()).sum(dim=(1, 2, 3))
        # Per-image mean inside the mask; eps keeps mask-free images at exactly zero.
        loss = loss + mask_weight * (inside / (union.sum(dim=(1, 2, 3)) + 1e-6)).mean()
    return loss


def edge_band_map(union, radius):
    """Soft band of ``radius`` px on both sides of the mask edges: dilation minus erosion of
    the union ``(B, 1, H, W)`` over a (2 radius + 1) square; 0 far from any edge."""
    size = 2 * radius + 1
    dilated = functional.max_pool2d(union, size, 1, radius)
    eroded = -functional.max_pool2d(-union, size, 1, radius)
    return dilated - eroded


def edge_guidance(ir, vis_y, masks, edge_band, background_visible=0.0, information=0.0,
                  shift=None):
    """``(composite, band)`` for the edge-aware gradient and SSIM terms, or ``(None, None)``.

    ``composite`` C = m I + (1 - m) B (B x 1 x H x W): the image the intensity loss asks for
    (m the mask union, B :func:`background_target`); ``band`` e: :func:`edge_band_map` of m
    with radius ``edge_band`` px. None when ``edge_band`` is 0 or there are no masks.
    """
    if isinstance(edge_band, bool) or not isinstance(edge_band, int) or edge_band < 0:
        raise ConfigError(f'loss.edge_band must be an int >= 0 (pixels), got {edge_band!r}')
    union, has_targets = target_union(masks)
    if not edge_band or union is None:
        return None, None
    composite = torch.lerp(background_target(ir, vis_y, has_targets, background_visible,
                                             information, shift), ir, union)
    return composite, edge_band_map(union, edge_band)


def gradient_loss(fused, ir, vis_y, excess=1.0, composite=None, band=None):
    """Texture loss with a separate weight on gradients above the sources', mask-aware at
    target edges.

    With ``S`` = :func:`sobel_magnitude` and the target ``T = max(S(I), S(V))``::

        L_grad = mean( relu(T - S(F)) + excess * relu(S(F) - T) )

    The first term penalises lost detail (a blurred fused image); the second penalises
    gradients stronger than both sources (over-sharpening, ringing, halos). ``excess`` 1.0 is
    the symmetric ``mean|S(F) - T|``, bit for bit; ``excess`` 0 lets the fused image be
    sharper than both sources at no cost.

    With ``composite`` C and ``band`` e from :func:`edge_guidance`, the target near mask edges
    becomes ``T = (1 - e) max(S(I), S(V)) + e max(S(C), S(V))``. There the IR's own edge (the
    target against *its* surround) can only be matched by carrying the IR surround across the
    mask edge, which shows as a glow or a dark rim beside the target; the composite's edge is
    the target against the surround the fused image actually has. Without them (None) this is
    the plain loss, bit for bit. Returns a scalar >= 0.
    """
    if not excess >= 0.0:  # also rejects NaN
        raise ConfigError(f'loss.gradient_excess must be >= 0, got {excess}')
    visible_gradient = sobel_magnitude(vis_y)
    target = torch.maximum(sobel_magnitude(ir), visible_gradient)
    if band is not None:
        composite_target = torch.maximum(sobel_magnitude(composite), visible_gradient)
        target = torch.lerp(target, composite_target, band)
    fused_gradient = sobel_magnitude(fused)
    return (functional.relu(target - fused_gradient)
            + excess * functional.relu(fused_gradient - target)).mean()


def _gaussian_window(size, sigma, device, dtype):
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    window = torch.exp(-coords ** 2 / (2.0 * sigma ** 2))
    return window / window.sum()


def ssim(image_a, image_b, window_size=11, sigma=1.5):
    """Mean structural similarity of two B x 1 x H x W images in [0, 1] (Wang et al. 2004).

    Gaussian window (``window_size``, ``sigma``) evaluated on the valid region (no padding),
    ``C1 = (0.01)^2``, ``C2 = (0.03)^2`` for a data range of 1. The window shrinks (odd size)
    for images smaller than it. Returns a B-vector, 1 for identical images.
    """
    return ssim_map(image_a, image_b, window_size, sigma).mean(dim=(1, 2, 3))


def ssim_map(image_a, image_b, window_size=11, sigma=1.5):
    """Per-window SSIM of :func:`ssim`: ``(B, 1, H - k + 1, W - k + 1)`` for the window side k
    actually used (the valid region: one value per window centre)."""
    size = min(window_size, image_a.shape[-1], image_a.shape[-2])
    size = size if size % 2 == 1 else size - 1
    window = _gaussian_window(size, sigma, image_a.device, image_a.dtype)
    channels = image_a.shape[1]
    kernel_h = window.view(1, 1, 1, size).repeat(channels, 1, 1, 1)
    kernel_v = window.view(1, 1, size, 1).repeat(channels, 1, 1, 1)

    def blur(x):
        return functional.conv2d(functional.conv2d(x, kernel_h, groups=channels),
                                 kernel_v, groups=channels)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(image_a), blur(image_b)
    var_a = blur(image_a * image_a) - mu_a ** 2
    var_b = blur(image_b * image_b) - mu_b ** 2
    cov = blur(image_a * image_b) - mu_a * mu_b
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2))
            / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))


def _centre_crop(image, height, width):
    top = (image.shape[-2] - height) // 2
    left = (image.shape[-1] - width) // 2
    return image[..., top:top + height, left:left + width]


def ssim_loss(fused, ir, vis_y, ir_weight=0.5, composite=None, band=None):
    """``L_ssim = w (1 - SSIM(F, I)) + (1 - w)(1 - SSIM(F, V))`` with ``w = ir_weight``.

    With ``composite`` C and ``band`` e (both B x 1 x H x W, see :func:`gradient_loss`) the
    windows centred in the band compare F with C instead:
    ``mean((1 - e)(w (1 - s(F, I)) + (1 - w)(1 - s(F, V))) + e (1 - s(F, C)))`` over the window
    centres, s the SSIM map. Returns a scalar in [0, 2]; zero only if the fused image matches
    both weighted sources (and C in the band).
    """
    if not 0.0 <= ir_weight <= 1.0:
        raise ConfigError(f'loss.ssim_ir_weight must be in [0, 1], got {ir_weight}')
    if band is None:
        return (ir_weight * (1.0 - ssim(fused, ir))
                + (1.0 - ir_weight) * (1.0 - ssim(fused, vis_y))).mean()
    plain = (ir_weight * (1.0 - ssim_map(fused, ir))
             + (1.0 - ir_weight) * (1.0 - ssim_map(fused, vis_y)))
    band = _centre_crop(band, *plain.shape[-2:])
    return torch.lerp(plain, 1.0 - ssim_map(fused, composite), band).mean()


def colour_consistency_loss(fused, vis_cbcr):
    """Chroma error of the colour-restored fused image.

    ``L_col = mean| CbCr(clip(RGB(F, Cb_V, Cr_V))) - (Cb_V, Cr_V) |``.

    The network outputs luminance only; colour is restored by pairing F with the visible
    Cb/Cr (BT.601) and converting to RGB, which the deployed node then clips to [0, 1].
    Before clipping the chroma equals the visible chroma by construction, so what this loss
    actually constrains is the hue/saturation shift caused by gamut clipping: it is zero
    when every restored pixel is inside the RGB cube and grows when F is pushed so far from
    the visible luminance that saturated colours clip (e.g. a red car rendered white).
    Gradients flow through the channels that did not clip. Returns a scalar >= 0.
    """
    from tesg_ros.network import colour
    restored_rgb = colour.ycbcr_to_rgb(torch.cat([fused, vis_cbcr], dim=1)).clamp(0.0, 1.0)
    restored_cbcr = colour.rgb_to_ycbcr(restored_rgb)[:, 1:3]
    return (restored_cbcr - vis_cbcr).abs().mean()


@dataclass
class LossWeights:
    """Weights of the total loss; see :func:`fusion_loss` and docs/training.md."""

    intensity: float = 1.0
    intensity_mask: float = 0.5
    background_visible: float = 0.0
    gradient: float = 1.0
    gradient_excess: float = 1.0
    edge_band: int = 0
    ssim: float = 0.5
    ssim_ir_weight: float = 0.5
    colour: float = 1.0
    information_target: float = 0.0
    mask_warm_only: float = 0.0
    text_consistency: float = 0.0
    shift_consistency: float = 0.0
    scale_consistency: float = 0.0

    def to_dict(self):
        """Return the weights as a plain dict (for logs and checkpoint metadata)."""
        return asdict(self)


def effective_masks(ir, masks, warm_only):
    """The masks the losses use: ``masks`` times ``lerp(1, warm_part, warm_only)``
    (:func:`warm_part`), so with ``warm_only`` 1 only the mask pixels warmer than the
    surroundings ask for the IR."""
    union, _ = target_union(masks)
    if union is None or warm_only == 0.0:
        return masks
    return masks * torch.lerp(torch.ones_like(union), warm_part(ir, union), warm_only)


def fusion_loss(fused, ir, vis_y, vis_cbcr=None, masks=None, weights=None, vis_clean=None,
                shift=None):
    """Weighted total ``L = a L_int + b L_grad + c L_ssim + d L_colour``.

    ``vis_cbcr`` None (grey visible) skips the colour term. ``vis_clean`` is the visible
    image before a synthesised degradation (low light, noise, glare, haze; ``vis_y`` is what
    the network saw): the gradient and SSIM terms compare with it, so copying noise or a
    glare edge costs, while the intensity target stays one the network can reach from its
    inputs. ``shift`` (B x 1 x H x W, or None) moves the background target as a text's intent
    asks (:func:`background_target`). Returns ``(total, parts)`` where ``parts`` maps
    'intensity', 'gradient', 'ssim', 'colour' and 'total' to detached scalar tensors
    (unweighted components, weighted total).
    """
    weights = weights or LossWeights()
    masks = effective_masks(ir, masks, weights.mask_warm_only)
    reference = vis_y if vis_clean is None else vis_clean
    composite, band = edge_guidance(ir, vis_y, masks, weights.edge_band,
                                    weights.background_visible, weights.information_target,
                                    shift)
    parts = {
        'intensity': intensity_loss(fused, ir, vis_y, masks, weights.intensity_mask,
                                    weights.background_visible, weights.information_target,
                                    shift),
        'gradient': gradient_loss(fused, ir, reference, weights.gradient_excess, composite,
                                  band),
        'ssim': ssim_loss(fused, ir, reference, weights.ssim_ir_weight, composite, band),
    }
    total = (weights.intensity * parts['intensity'] + weights.gradient * parts['gradient']
             + weights.ssim * parts['ssim'])
    if vis_cbcr is not None and weights.colour != 0.0:
        parts['colour'] = colour_consistency_loss(fused, vis_cbcr)
        total = total + weights.colour * parts['colour']
    else:
        parts['colour'] = torch.zeros((), device=fused.device)
    parts = {name: value.detach() for name, value in parts.items()}
    parts['total'] = total.detach()
    return total, parts
