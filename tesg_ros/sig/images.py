# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Frames as the semantics backends take them: thermal in [0, 1], visible as BGR, and the RGB
picture a vision-language model or CLIPSeg is shown (visible, infrared or both side by side).

Shared by the mask backends (:mod:`tesg_ros.sig.masks`) and the describer
(:mod:`tesg_ros.sig.vlm`), so that the describer does not import the mask backends.
"""

import cv2
import numpy as np

from tesg_ros.errors import ConfigError, ImageEncodingError

IMAGE_SOURCES = ('visible', 'infrared', 'both')


def to_unit_thermal(thermal):
    """Return the thermal frame as H x W float32 in [0, 1].

    Accepts H x W (or H x W x 1) uint8 (divided by 255) or floating point already in [0, 1].
    Anything else (uint16 raw counts, colour-mapped H x W x 3, values outside [0, 1]) raises
    :class:`ImageEncodingError`: the caller must normalise it (thermal normalisation module).
    """
    array = np.asarray(thermal)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or array.size == 0:
        raise ImageEncodingError(
            f'thermal image must be H x W (single channel), got shape {array.shape}')
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1.0 / 255.0)
    if np.issubdtype(array.dtype, np.floating):
        unit = array.astype(np.float32, copy=False)
        low, high = float(np.nanmin(unit)), float(np.nanmax(unit))
        if not (0.0 <= low and high <= 1.0):
            raise ImageEncodingError(
                f'float thermal image must lie in [0, 1], got range [{low:.4g}, {high:.4g}]')
        return unit
    raise ImageEncodingError(
        f'thermal image must be uint8 or float in [0, 1], got dtype {array.dtype}')


def to_bgr(visible):
    """Return the visible frame as H x W x 3 uint8 BGR (a grey H x W uint8 frame is replicated)."""
    array = np.asarray(visible)
    if array.dtype != np.uint8:
        raise ImageEncodingError(f'visible image must be uint8, got dtype {array.dtype}')
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    raise ImageEncodingError(
        f'visible image must be H x W x 3 (BGR) or H x W (grey), got shape {array.shape}')


def check_image_source(image, parameter):
    """Return ``image`` if it is 'visible', 'infrared' or 'both', else raise ConfigError."""
    if image not in IMAGE_SOURCES:
        raise ConfigError(f'{parameter} must be one of {IMAGE_SOURCES}, got {image!r}')
    return image


def compose_rgb(visible, thermal, source):
    """The model's input picture: H x W x 3 RGB uint8 ('both': H x 2W x 3, visible left).

    visible: H x W x 3 BGR uint8 (or grey); thermal: H x W uint8 or float in [0, 1] (may be
    None when ``source`` is 'visible'), shown as grey.
    """
    if source in ('visible', 'both'):
        visible_rgb = cv2.cvtColor(to_bgr(visible), cv2.COLOR_BGR2RGB)
        if source == 'visible':
            return visible_rgb
    if thermal is None:
        raise ConfigError(f'image source {source!r} needs the thermal frame, got None')
    grey = np.round(to_unit_thermal(thermal) * 255.0).astype(np.uint8)
    thermal_rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if source == 'infrared':
        return thermal_rgb
    if thermal_rgb.shape != visible_rgb.shape:
        thermal_rgb = cv2.resize(thermal_rgb, visible_rgb.shape[1::-1],
                                 interpolation=cv2.INTER_LINEAR)
    return np.hstack([visible_rgb, thermal_rgb])
