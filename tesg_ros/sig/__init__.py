# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Semantic Information Generator (SIG) of TeSG: text semantics and mask semantics.

:class:`SemanticInformationGenerator` ties the parts together for the fusion loop:

* a describer (the built-in :class:`~tesg_ros.sig.describer.OfflineDescriber` or a
  :class:`~tesg_ros.sig.vlm.VlmDescriber`) runs in the background
  (:class:`~tesg_ros.sig.refresher.SemanticsRefresher`) on the latest frame pair;
* its description is split into phrases and embedded once per description
  (:class:`~tesg_ros.sig.text_encoder.CachedTextEncoder`): the text semantics, (D,) float32;
* each frame, a mask backend (:mod:`tesg_ros.sig.masks`) turns the current phrases into soft
  masks for that frame: the mask semantics, (M, H, W) float32 in [0, 1]. Cheap backends
  (thermal, hog) run per frame; a heavy one (CLIPSeg) is wrapped in a
  :class:`~tesg_ros.sig.mask_refresher.MaskRefresher` that runs it at its own rate in the
  background and serves its latest masks (resized to the frame), with their age.

``sig(visible, thermal) -> (masks, text_embedding)`` never waits for the describer.
"""

import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.describer import OfflineDescriber, SceneDescription, split_phrases
from tesg_ros.sig.mask_refresher import MaskRefresher, MaskSnapshot
from tesg_ros.sig.masks import (
    ClipSegMaskBackend, fit_masks, HogMaskBackend, phrase_classes, segment_warm_objects,
    ThermalMaskBackend)
from tesg_ros.sig.refresher import (
    make_semantics, request_embedding, Semantics, SemanticsRefresher)
from tesg_ros.sig.request import canonical_sentence, make_request, parse_request, Request
from tesg_ros.sig.text_encoder import (
    CachedTextEncoder, check_dim, ClipTextEncoder, make_text_encoder, MiniLmTextEncoder)

__all__ = [
    'CachedTextEncoder', 'check_dim', 'ClipSegMaskBackend', 'ClipTextEncoder',
    'HogMaskBackend', 'make_request', 'make_text_encoder', 'MaskRefresher', 'MaskSnapshot',
    'MiniLmTextEncoder', 'OfflineDescriber', 'canonical_sentence', 'parse_request',
    'phrase_classes', 'Request', 'request_embedding', 'SceneDescription',
    'segment_warm_objects', 'Semantics',
    'SemanticInformationGenerator', 'SemanticsRefresher', 'split_phrases',
    'ThermalMaskBackend']

INITIAL_DESCRIPTION = 'a scene with warm objects'


class SemanticInformationGenerator:
    """Text + mask semantics for each frame pair, with the description refreshed in background.

    encoder: text encoder (wrapped in a :class:`CachedTextEncoder` unless it is one).
    mask_backend: callable (visible, thermal, phrases) -> (M, H, W); default thermal. A
    :class:`MaskRefresher` is started and stopped with the describer.
    describer: callable (visible, thermal) -> str | SceneDescription; default offline.
    period_s / timeout_s: refresher timing. num_masks: None returns one mask per phrase
    (M varies with the description); an int fits them to exactly that many
    (:func:`~tesg_ros.sig.masks.fit_masks`), as a network with a fixed number of mask
    channels needs.
    initial_description: served (and embedded now) until the first description arrives.
    source: recorded in :class:`Semantics` ('offline', 'vlm', ...).
    """

    def __init__(self, encoder, mask_backend=None, describer=None, period_s=5.0,
                 timeout_s=30.0, num_masks=None, initial_description=INITIAL_DESCRIPTION,
                 source=None, logger=None):
        if num_masks is not None and int(num_masks) < 0:
            raise ConfigError(f'semantics.num_masks must be >= 0, got {num_masks}')
        self.encoder = encoder if isinstance(encoder, CachedTextEncoder) \
            else CachedTextEncoder(encoder)
        self.mask_backend = mask_backend if mask_backend is not None else ThermalMaskBackend()
        self.describer = describer if describer is not None else OfflineDescriber()
        self.num_masks = None if num_masks is None else int(num_masks)
        if source is None:
            source = 'offline' if isinstance(self.describer, OfflineDescriber) else 'describer'
        initial = make_semantics(initial_description, self.encoder, 'initial', 'none')
        self.refresher = SemanticsRefresher(
            self.describer, self.encoder, initial, period_s=period_s, timeout_s=timeout_s,
            source=source, logger=logger)
        self.applied = None  # the Semantics the last frame used

    @property
    def dim(self):
        """Length D of the text embedding."""
        return self.encoder.dim

    @property
    def mask_refresher(self):
        """The :class:`MaskRefresher` running the mask backend, or None (per frame)."""
        return self.mask_backend if isinstance(self.mask_backend, MaskRefresher) else None

    def start(self):
        """Start the background describer (and the mask refresher, if any)."""
        self.refresher.start()
        if self.mask_refresher is not None:
            self.mask_refresher.start()

    def stop(self, timeout=None):
        """Stop the background threads and join them; True when all ended in ``timeout``."""
        stopped = self.refresher.stop(timeout)
        if self.mask_refresher is not None:
            stopped = self.mask_refresher.stop(timeout) and stopped
        return stopped

    def mask_status(self):
        """{'backend', 'age_s', 'error'} of the masks: age 0 for a per-frame backend."""
        if self.mask_refresher is not None:
            return self.mask_refresher.status()
        name = getattr(self.mask_backend, 'name', type(self.mask_backend).__name__)
        return {'backend': name, 'age_s': 0.0, 'error': ''}

    def semantics(self):
        """The current :class:`Semantics` snapshot."""
        return self.refresher.latest()

    def __call__(self, visible, thermal):
        """Per frame: hand the pair to the describer, return (masks, text_embedding).

        masks: (M, H, W) float32 in [0, 1], one per class the current description or prompt
        names (its request's ``mask_phrases``; M = ``num_masks`` when set); text_embedding:
        (D,) float32, the canonical sentence's (unit norm) or zeros when neutral, read-only.
        :attr:`applied` is then the :class:`Semantics` this frame used.
        """
        self.refresher.submit_frame(visible, thermal)
        current = self.refresher.latest()
        masks = self.mask_backend(visible, thermal, current.mask_phrases)
        self.applied = current
        masks = np.asarray(masks, np.float32)
        if self.num_masks is not None:
            masks = fit_masks(masks, self.num_masks)
        return masks, current.text_embedding

    def describe_now(self, visible, thermal):
        """Refresh synchronously from this pair; returns Semantics.

        For offline tools and tests: do not call it while the background thread runs.
        """
        self.refresher.submit_frame(visible, thermal)
        self.refresher.refresh_once()
        return self.refresher.latest()
