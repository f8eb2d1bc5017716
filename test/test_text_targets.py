# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training text targets (tesg_ros.training.text_targets): drawn texts mean their target."""

from collections import Counter
import random

import numpy as np
import pytest
import torch

from tesg_ros.sig.request import CLASSES, make_request, parse_request, Request
from tesg_ros.training.text_targets import (
    all_requests, background_shift, canonical_embeddings, class_masks, request_masks,
    shifted_background, TextTarget, TextTargetSampler, visible_information)


class HashEncoder:
    dim = 6
    model_id = 'hash'

    def encode(self, texts):
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


def test_every_drawn_text_parses_back_to_its_request():
    sampler = TextTargetSampler(seed=3)
    seen = Counter()
    for _ in range(3000):
        target = sampler.draw()
        assert parse_request(target.text) == target.request, target.text
        seen[target.canonical] += 1
    # Every canonical request occurs, neutral included, with several paraphrases each.
    assert set(seen) == {request.canonical for request in all_requests()}
    assert seen[''] > 300


def test_draws_are_reproducible_and_take_an_external_rng():
    first = [TextTargetSampler(seed=7).draw() for _ in range(1)]
    assert first == [TextTargetSampler(seed=7).draw()]
    a, b = random.Random(1), random.Random(1)
    sampler = TextTargetSampler(seed=0)
    assert [sampler.draw(a) for _ in range(20)] == [sampler.draw(b) for _ in range(20)]
    with pytest.raises(ValueError, match='p_neutral'):
        TextTargetSampler(p_neutral=1.5)


def test_request_masks_are_the_union_of_the_named_classes():
    per_class = np.zeros((4, 4, 5), np.float32)
    for index in range(4):
        per_class[index, index, :] = 1.0
    people = request_masks(make_request(['person']), per_class)
    assert people.shape == (1, 4, 5) and people[0, 0].all() and not people[0, 1:].any()
    both = request_masks(TextTarget('cars and people', make_request(['person', 'vehicle'])),
                         per_class)
    assert both[0, :2].all() and not both[0, 2:].any()
    assert not request_masks(Request(), per_class).any()          # neutral: no masks
    assert request_masks(make_request(['warm']), per_class)[0, 3].all()


def test_background_shift_follows_the_intent():
    vis = np.zeros((40, 40), np.float32)
    vis[:, 20:] = np.tile([0.2, 0.8], (40, 10))                   # textured, lit right half
    visible = background_shift(TextTarget('daylight detail', make_request((), 'visible')), vis)
    assert np.allclose(visible, -0.5)
    dark = background_shift(TextTarget('it is dark', make_request((), 'thermal')), vis)
    assert dark[:, :10].min() > 0.45 and dark[:, 30:].max() < 0.05  # only where vis is poor
    assert not background_shift(TextTarget('people', make_request(['person'])), vis).any()
    info = visible_information(vis)
    assert info.dtype == np.float32 and 0 <= info.min() and info.max() <= 1


def test_shifted_background_moves_towards_the_named_source_in_numpy_and_torch():
    ir, vis = np.full((2, 2), 0.8, np.float32), np.full((2, 2), 0.2, np.float32)
    base = np.maximum(ir, vis)
    shift = np.array([[0.0, -0.5], [0.5, -1.0]], np.float32)
    out = shifted_background(base, ir, vis, shift)
    np.testing.assert_allclose(out, [[0.8, 0.5], [0.8, 0.2]], atol=1e-6)
    tensor = shifted_background(torch.from_numpy(base), torch.from_numpy(ir),
                                torch.from_numpy(vis), torch.from_numpy(shift))
    np.testing.assert_allclose(tensor.numpy(), out, atol=1e-6)


def test_canonical_embeddings_cover_every_request_and_neutral_is_zero():
    table = canonical_embeddings(HashEncoder())
    assert len(table) == len(all_requests()) == 27
    assert not table[''].any()
    assert all(np.isclose(np.linalg.norm(v), 1.0) for k, v in table.items() if k)


def test_class_masks_of_a_synthetic_frame():
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(0.3, 0.01, (240, 320)), 0, 1).astype(np.float32)
    frame[100:160, 60:78] = 0.85     # person-shaped
    frame[150:180, 200:280] = 0.8    # vehicle-shaped
    masks = class_masks(None, frame)
    assert masks.shape == (len(CLASSES), 240, 320)
    person, vehicle, animal, warm = masks
    assert person[120, 70] > 0.9 and person[165, 240] == 0
    assert vehicle[165, 240] > 0.9 and vehicle[120, 70] == 0
    assert warm[120, 70] > 0.9 and warm[165, 240] > 0.9 and not animal.any()
