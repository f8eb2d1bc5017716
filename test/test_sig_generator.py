# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""SemanticInformationGenerator end to end: real MiniLM, offline describer, thermal masks."""

import time

import cv2
import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig import HogMaskBackend, OfflineDescriber, SemanticInformationGenerator
from test_sig_text_encoder import load_minilm

PERSON_19 = (260, 123, 14, 44)  # x, y, w, h of the warm person in TNO 19 (see test_sig_masks.py)


@pytest.fixture(scope='module')
def encoder():
    return load_minilm()


@pytest.fixture(scope='module')
def describer():
    # HOG at the frame's own height keeps the test quick (the TNO 19 person is thermal-only).
    return OfflineDescriber(hog_height=270)


@pytest.fixture(scope='module')
def pair_19(test_data):
    thermal = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_UNCHANGED)
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR), thermal


def test_masks_and_text_for_tno_19(encoder, describer, pair_19):
    sig = SemanticInformationGenerator(encoder, describer=describer)
    visible, thermal = pair_19
    masks, text = sig(visible, thermal)  # before any description: the initial semantics
    assert sig.semantics().source == 'initial'
    assert masks.shape == (len(sig.semantics().mask_phrases),) + thermal.shape
    semantics = sig.describe_now(visible, thermal)
    assert semantics.source == 'offline' and semantics.error is None
    assert 'warm person-shaped object on the right' in semantics.description
    masks, text = sig(visible, thermal)
    # One mask per class the description names; the text is its canonical sentence's.
    assert semantics.mask_phrases == ('people', 'vehicles')
    assert masks.dtype == np.float32 and masks.shape == (2,) + thermal.shape
    assert text.shape == (384,) and text.dtype == np.float32
    np.testing.assert_allclose(text, encoder.encode(['highlight people and vehicles'])[0],
                               atol=1e-5)
    x, y, w, h = PERSON_19
    assert masks[0, y:y + h, x:x + w].mean() > 0.7
    assert not masks[1, y:y + h, x:x + w].any()  # the person is not a vehicle


def test_text_embedding_is_cached_per_description(encoder, describer, pair_19):
    sig = SemanticInformationGenerator(encoder, describer=describer, num_masks=5)
    sig.describe_now(*pair_19)
    misses = sig.encoder.misses
    for _ in range(3):
        masks, text = sig(*pair_19)
    assert sig.encoder.misses == misses  # per-frame calls never re-encode
    assert masks.shape == (5,) + pair_19[1].shape  # padded with zero masks
    assert not masks[len(sig.semantics().mask_phrases):].any()
    sig.describe_now(*pair_19)              # the same description again: a cache hit
    assert sig.encoder.misses == misses
    one = SemanticInformationGenerator(encoder, describer=describer, num_masks=1)
    assert one(*pair_19)[0].shape[0] == 1
    with pytest.raises(ConfigError, match='num_masks'):
        SemanticInformationGenerator(encoder, describer=describer, num_masks=-1)


@pytest.mark.timeout(30)
def test_background_thread_refreshes_without_blocking_frames(encoder, pair_19):
    describer_calls = []

    def slow_describer(visible, thermal):
        describer_calls.append(visible.shape)
        time.sleep(0.2)
        return 'two pedestrians on the left, a car'

    sig = SemanticInformationGenerator(encoder, mask_backend=HogMaskBackend(),
                                       describer=slow_describer, period_s=0.05, timeout_s=5)
    sig.start()
    try:
        deadline = time.monotonic() + 10
        while sig.semantics().source == 'initial':
            masks, text = sig(*pair_19)  # frames keep flowing meanwhile
            assert masks.shape[1:] == pair_19[1].shape
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert sig.semantics().phrases == ('two pedestrians on the left', 'a car')
        assert sig.semantics().source == 'describer'
        masks, text = sig(*pair_19)
        assert masks.shape == (2,) + pair_19[1].shape
    finally:
        assert sig.stop(timeout=5)
    assert describer_calls
