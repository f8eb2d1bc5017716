# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Debug images of a fused frame: the masks as a colour overlay, the infrared share (ROS-free).

The node publishes them on ``~/debug/masks`` and ``~/debug/weights`` only while someone
subscribes (docs/node.md).
"""

import numpy as np

from tesg_ros.errors import ImageEncodingError

# BGR colour of mask i (i modulo the length): phrase i of the semantics message. Distinct,
# saturated hues (Tableau 10 order), so neighbouring classes differ.
PALETTE_BGR = np.array([
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
], np.float32)
OVERLAY_ALPHA = 0.5


def mask_overlay(bgr, masks, alpha=OVERLAY_ALPHA):
    """``bgr`` (H, W, 3) uint8 with each soft mask of ``masks`` (P, H, W) in [0, 1] painted in
    its palette colour: ``out = bgr + alpha * m_i * (colour_i - bgr)``, masks in order (a later
    mask paints over an earlier one). Returns a new uint8 array; no masks: a copy of ``bgr``."""
    bgr = np.asarray(bgr)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageEncodingError(f'overlay needs (H, W, 3) uint8, got {bgr.shape} {bgr.dtype}')
    if masks is None or len(masks) == 0:
        return bgr.copy()
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3 or masks.shape[1:] != bgr.shape[:2]:
        raise ImageEncodingError(f'masks {masks.shape} do not match the image {bgr.shape}')
    out = bgr.copy()
    painted = masks.max(axis=0) > 0.0
    if not painted.any():
        return out
    # Only the painted pixels are converted and blended: masks usually cover a small part.
    pixels = bgr[painted].astype(np.float32)
    for index, mask in enumerate(masks):
        weight = (alpha * np.clip(mask[painted], 0.0, 1.0))[:, None]
        pixels += weight * (PALETTE_BGR[index % len(PALETTE_BGR)] - pixels)
    out[painted] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return out


def weights_image(weights):
    """The infrared-share map (H, W) as a C-contiguous float32 image in [0, 1] (``32FC1``):
    0 takes the visible luma, 1 the infrared."""
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 2:
        raise ImageEncodingError(f'weights must be (H, W), got {weights.shape}')
    return np.ascontiguousarray(np.clip(weights, 0.0, 1.0))
