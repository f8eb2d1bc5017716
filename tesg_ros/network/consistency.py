# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Resolution and shift checks of a fusion function: artefacts that come from a coarse grid.

A weight map computed on a coarse grid and upsampled (or switched by coarse blocks, or by
attention windows) changes when the grid moves relative to the scene: fusing the same pair at
half size, or shifted by a few pixels, then gives a different image. A fusion whose weights
follow the sources' own structure gives nearly the same one. Both checks take
``fuse(ir, vis) -> fused``, all (H, W) float32 in [0, 1], and return grey-level differences.
"""

import cv2
import numpy as np


def _low_pass(image, size):
    """Down to ``size`` (W, H) by area averaging and back up: what a half-size fusion keeps."""
    height, width = image.shape
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def resolution_gap(fuse, ir, vis):
    """Fuse at full size and at half size; compare both brought to the half-size detail level.

    Returns ``(mean, p99)`` of ``|lowpass(F_full) - up(F_half)|`` in grey levels (0..255),
    over the image without a 4-pixel border.
    """
    height, width = ir.shape
    half = (max(1, width // 2), max(1, height // 2))
    full = fuse(ir, vis)
    small = fuse(cv2.resize(ir, half, interpolation=cv2.INTER_AREA),
                 cv2.resize(vis, half, interpolation=cv2.INTER_AREA))
    upsampled = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    difference = np.abs(_low_pass(full, half) - upsampled)[4:-4, 4:-4] * 255.0
    return float(difference.mean()), float(np.percentile(difference, 99))


def shift_gap(fuse, ir, vis, shift=(3, 5)):
    """Fuse the pair and the pair cropped by ``shift`` = (dy, dx) pixels; compare the common
    region (without an 8-pixel border, where padding legitimately differs).

    Returns ``(mean, p99)`` of the absolute difference in grey levels.
    """
    dy, dx = shift
    full = fuse(ir, vis)
    moved = fuse(np.ascontiguousarray(ir[dy:, dx:]), np.ascontiguousarray(vis[dy:, dx:]))
    difference = np.abs(full[dy:, dx:] - moved)[8:-8, 8:-8] * 255.0
    return float(difference.mean()), float(np.percentile(difference, 99))


def network_fuser(net, masks_fn=None, text=None):
    """``fuse(ir, vis)`` of a :class:`TesgFusionNet` (float32, CPU, no grad); ``masks_fn(ir)``
    gives the (M, H, W) masks of an IR image (None: no masks), ``text`` a (D,) embedding."""
    import torch

    def fuse(ir, vis):
        masks = None if masks_fn is None else torch.from_numpy(
            np.ascontiguousarray(masks_fn(ir), np.float32))[None]
        embedding = None if text is None else torch.from_numpy(
            np.asarray(text, np.float32))[None]
        with torch.inference_mode():
            out = net(torch.from_numpy(np.ascontiguousarray(ir, np.float32))[None, None],
                      torch.from_numpy(np.ascontiguousarray(vis, np.float32))[None, None],
                      masks, embedding)
        return out[0, 0].numpy()

    return fuse


def blocky_fuser(block=16):
    """A deliberately coarse fusion for the checks' own tests: the brighter-source share
    averaged over ``block`` x ``block`` tiles, nearest-upsampled (a blocky weight map)."""

    def fuse(ir, vis):
        height, width = ir.shape
        share = (ir > vis).astype(np.float32)
        small = cv2.resize(share, (max(1, width // block), max(1, height // block)),
                           interpolation=cv2.INTER_AREA)
        weight = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
        return vis + weight * (ir - vis)

    return fuse
