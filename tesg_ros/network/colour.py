# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Colour handling around the fusion network: BT.601 YCbCr <-> RGB/BGR and uint8 <-> float.

The network fuses luminance only (Y); colour comes back from the visible image's chroma (Cb, Cr).
All conversions use full-range BT.601 (JPEG/JFIF, the convention of OpenCV's
``COLOR_BGR2YCrCb``) on floats in [0, 1] with the chroma offset 0.5:

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.5 + (B - Y) / 1.772
    Cr = 0.5 + (R - Y) / 1.402

Torch functions take channel-first tensors ``(..., 3, H, W)`` (channel axis -3); numpy functions
take channel-last arrays ``(H, W, 3)`` as OpenCV does. Float outputs are float32 (or the input's
float dtype for torch) and are not clipped except where a function says so.
"""

import numpy as np
import torch

from tesg_ros.errors import ConfigError

KR = 0.299
KG = 0.587
KB = 0.114
CB_SCALE = 2.0 * (1.0 - KB)  # 1.772
CR_SCALE = 2.0 * (1.0 - KR)  # 1.402


def _check_torch(image, name):
    if not isinstance(image, torch.Tensor):
        raise ConfigError(f'{name} must be a torch.Tensor, got {type(image).__name__}')
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ConfigError(f'{name} must have shape (..., 3, H, W), got {tuple(image.shape)}')
    if not image.is_floating_point():
        raise ConfigError(f'{name} must be a float tensor in [0, 1], got {image.dtype}; '
                          'convert with uint8_to_float() first')


def _check_numpy(image, name):
    if not isinstance(image, np.ndarray):
        raise ConfigError(f'{name} must be a numpy array, got {type(image).__name__}')
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ConfigError(f'{name} must have shape (H, W, 3), got {image.shape}')
    if not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(f'{name} must be a float array in [0, 1], got {image.dtype}; '
                          'convert with uint8_to_float() first')


def rgb_to_ycbcr(rgb):
    """RGB ``(..., 3, H, W)`` float in [0, 1] -> YCbCr ``(..., 3, H, W)`` (Y, Cb, Cr) in [0, 1]."""
    _check_torch(rgb, 'rgb')
    red, green, blue = rgb.unbind(-3)
    luma = KR * red + KG * green + KB * blue
    return torch.stack([luma, 0.5 + (blue - luma) / CB_SCALE, 0.5 + (red - luma) / CR_SCALE],
                       dim=-3)


def ycbcr_to_rgb(ycbcr):
    """YCbCr ``(..., 3, H, W)`` float -> RGB ``(..., 3, H, W)``; not clipped (use clamp(0, 1))."""
    _check_torch(ycbcr, 'ycbcr')
    luma, chroma_b, chroma_r = ycbcr.unbind(-3)
    red = luma + CR_SCALE * (chroma_r - 0.5)
    blue = luma + CB_SCALE * (chroma_b - 0.5)
    green = (luma - KR * red - KB * blue) / KG
    return torch.stack([red, green, blue], dim=-3)


def bgr_to_ycbcr(bgr):
    """BGR ``(..., 3, H, W)`` float in [0, 1] -> YCbCr ``(..., 3, H, W)``."""
    _check_torch(bgr, 'bgr')
    return rgb_to_ycbcr(bgr.flip(-3))


def ycbcr_to_bgr(ycbcr):
    """YCbCr ``(..., 3, H, W)`` float -> BGR ``(..., 3, H, W)``; not clipped."""
    return ycbcr_to_rgb(ycbcr).flip(-3)


def restore_colour(fused_y, visible_rgb):
    """Fused luminance + the visible image's chroma -> RGB in [0, 1].

    fused_y: ``(B, 1, H, W)`` float in [0, 1] (the network output).
    visible_rgb: ``(B, 3, H, W)`` float RGB in [0, 1], same B, H, W.
    Returns ``(B, 3, H, W)`` RGB, clipped to [0, 1].
    """
    _check_torch(visible_rgb, 'visible_rgb')
    if not isinstance(fused_y, torch.Tensor):
        raise ConfigError(f'fused_y must be a torch.Tensor, got {type(fused_y).__name__}')
    if fused_y.dim() != 4 or fused_y.shape[1] != 1 or (
            fused_y.shape[0], *fused_y.shape[2:]) != (visible_rgb.shape[0],
                                                      *visible_rgb.shape[2:]):
        raise ConfigError(f'fused_y must be (B, 1, H, W) matching visible_rgb '
                          f'{tuple(visible_rgb.shape)}, got {tuple(fused_y.shape)}')
    ycbcr = rgb_to_ycbcr(visible_rgb)
    return ycbcr_to_rgb(torch.cat([fused_y, ycbcr[:, 1:]], dim=1)).clamp(0.0, 1.0)


def rgb_to_ycbcr_np(rgb):
    """RGB ``(H, W, 3)`` float in [0, 1] -> YCbCr ``(H, W, 3)`` float32 (Y, Cb, Cr)."""
    _check_numpy(rgb, 'rgb')
    rgb = rgb.astype(np.float32, copy=False)
    luma = rgb @ np.array([KR, KG, KB], dtype=np.float32)
    return np.stack([luma, 0.5 + (rgb[..., 2] - luma) / CB_SCALE,
                     0.5 + (rgb[..., 0] - luma) / CR_SCALE], axis=-1).astype(np.float32)


def ycbcr_to_rgb_np(ycbcr):
    """YCbCr ``(H, W, 3)`` float -> RGB ``(H, W, 3)`` float32; not clipped."""
    _check_numpy(ycbcr, 'ycbcr')
    ycbcr = ycbcr.astype(np.float32, copy=False)
    luma, chroma_b, chroma_r = ycbcr[..., 0], ycbcr[..., 1], ycbcr[..., 2]
    red = luma + CR_SCALE * (chroma_r - 0.5)
    blue = luma + CB_SCALE * (chroma_b - 0.5)
    green = (luma - KR * red - KB * blue) / KG
    return np.stack([red, green, blue], axis=-1).astype(np.float32)


def bgr_to_ycbcr_np(bgr):
    """BGR ``(H, W, 3)`` float in [0, 1] (OpenCV order) -> YCbCr ``(H, W, 3)`` float32."""
    _check_numpy(bgr, 'bgr')
    return rgb_to_ycbcr_np(bgr[..., ::-1])


def ycbcr_to_bgr_np(ycbcr):
    """YCbCr ``(H, W, 3)`` float -> BGR ``(H, W, 3)`` float32 (OpenCV order); not clipped."""
    return np.ascontiguousarray(ycbcr_to_rgb_np(ycbcr)[..., ::-1])


def restore_colour_np(fused_y, visible_bgr):
    """Fused luminance + visible chroma -> BGR image, numpy/OpenCV side.

    fused_y: ``(H, W)`` float in [0, 1]. visible_bgr: ``(H, W, 3)`` uint8 or float in [0, 1],
    same H, W. Returns ``(H, W, 3)`` in the dtype family of ``visible_bgr``: uint8 for uint8
    input, otherwise float32 clipped to [0, 1].
    """
    if not isinstance(visible_bgr, np.ndarray) or visible_bgr.ndim != 3 \
            or visible_bgr.shape[-1] != 3:
        raise ConfigError('visible_bgr must be an (H, W, 3) numpy array, got '
                          f'{getattr(visible_bgr, "shape", type(visible_bgr).__name__)}')
    fused_y = np.asarray(fused_y)
    if fused_y.shape != visible_bgr.shape[:2]:
        raise ConfigError(f'fused_y must have shape {visible_bgr.shape[:2]} (H, W of '
                          f'visible_bgr), got {fused_y.shape}')
    was_uint8 = visible_bgr.dtype == np.uint8
    visible = uint8_to_float(visible_bgr) if was_uint8 else visible_bgr
    ycbcr = bgr_to_ycbcr_np(visible)
    ycbcr[..., 0] = fused_y
    bgr = np.clip(ycbcr_to_bgr_np(ycbcr), 0.0, 1.0)
    return float_to_uint8(bgr) if was_uint8 else bgr


# BGR uint8 values (as float32) -> luma in [0, 1]: one cv2.transform row.
_BGR_UINT8_TO_LUMA = np.array([[KB, KG, KR]], np.float32) / np.float32(255.0)


def luma_from_bgr_uint8(visible_bgr):
    """BGR ``(H, W, 3)`` uint8 -> Y ``(H, W)`` float32 in [0, 1], as :func:`bgr_to_ycbcr_np`.

    The per-frame path of the node: one OpenCV pass instead of the full YCbCr conversion.
    """
    import cv2

    return cv2.transform(visible_bgr.astype(np.float32), _BGR_UINT8_TO_LUMA)


def restore_colour_uint8(fused_y, visible_y, visible_bgr):
    """Fused luma + the visible frame's chroma -> ``(H, W, 3)`` uint8 BGR, the fast way.

    ``visible_y`` is the visible frame's luma (:func:`luma_from_bgr_uint8`). Keeping Cb and Cr
    while replacing Y adds the same ``fused_y - visible_y`` to each of B, G and R (the
    YCbCr <-> RGB maps are linear with unit luma weight in every channel), so this equals
    :func:`restore_colour_np` up to float rounding (at most 1 level, on about 1e-5 of the
    pixels) at several times less cost. Saturating, rounding as OpenCV casts.

    The luma change is split into its rounded positive and negative parts as uint8 (at most one
    is non-zero per pixel), added and subtracted with saturating uint8 arithmetic: the result
    of one saturating float add, with the three-channel work in uint8, except where the change
    is exactly half a level (rounding the change instead of the sum can then differ by one).
    """
    import cv2

    delta = cv2.subtract(fused_y, visible_y)
    delta *= np.float32(255.0)
    brighter = cv2.cvtColor(cv2.convertScaleAbs(cv2.max(delta, 0.0)), cv2.COLOR_GRAY2BGR)
    darker = cv2.cvtColor(cv2.convertScaleAbs(cv2.min(delta, 0.0)), cv2.COLOR_GRAY2BGR)
    return cv2.subtract(cv2.add(visible_bgr, brighter), darker)


def uint8_to_float(image):
    """uint8 image (numpy array or torch tensor, any shape) -> float32 in [0, 1] (x / 255)."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ConfigError(f'expected a uint8 tensor, got {image.dtype}')
        return image.to(torch.float32).div_(255.0)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ConfigError(f'expected a uint8 array, got {image.dtype}')
    return image.astype(np.float32) / np.float32(255.0)


def float_to_uint8(image):
    """Float image in [0, 1] (numpy or torch, any shape) -> uint8, clipped, rounded to nearest."""
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise ConfigError(f'expected a float tensor, got {image.dtype}')
        return (image.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(f'expected a float array, got {image.dtype}')
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
