# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training texts whose meaning decides the target (docs/semantics.md, "the contract").

Per crop, :class:`TextTargetSampler` draws a request (which classes are named, which intent)
and an operator-style paraphrase of it; the target of the intensity loss follows what the
request means, so TDAF learns the words instead of passing them through as noise.

API::

    from tesg_ros.training.text_targets import (
        class_masks, TextTargetSampler, request_masks, background_shift, shifted_background,
        canonical_embeddings)

    # once per pair (cache it): one soft mask per class, (4, H, W) in CLASSES order
    # (person, vehicle, animal, warm = every warm object), from the SIG thermal backend
    per_class = class_masks(visible_bgr, ir)

    # once per run: the embedding of every canonical sentence ('' -> zeros), so a crop's
    # text vector is a dict lookup; it is what the node feeds the network for that request
    table = canonical_embeddings(text_encoder)

    sampler = TextTargetSampler(seed=0)
    target = sampler.draw()              # a TextTarget, drawn with the sampler's own RNG
    target.text                          # e.g. 'pedestrians please, it is foggy' (for logs)
    target.request                       # Request(classes=('person',), intent='thermal')
    target.canonical                     # 'highlight people, it is dark'
    text_vector = table[target.canonical]  # (D,) float32: the network's text input
    masks = request_masks(target, per_class)   # (1, H, W): the union of the named classes'
                                                # masks = the network's mask input AND the
                                                # region the intensity loss weights to IR
    shift = background_shift(target, vis_y)     # (H, W) float32 in [-1, 1]

The intensity target outside the masks is then :func:`shifted_background`::

    T = max(I, V)                       (the usual background target, or the trainer's own)
    T' = T + relu(s) (I - T) + relu(-s) (V - T)     with s = background_shift(...)

* intent ``visible`` ("show the visible scene", "daylight detail"): s = -strength everywhere:
  the background leans towards the visible image (lower infrared share outside the objects);
* intent ``thermal`` ("dark", "night", "smoke", "fog", "glare"): s = +strength * (1 - v),
  v in [0, 1] the visible image's local information (local contrast and brightness,
  :func:`visible_information`): the background leans towards the infrared where the visible
  image carries little;
* no intent: s = 0.

Inside the masks the target is the infrared (the existing mask term). A neutral request (no
classes, no intent) has no masks, zero text and s = 0: the generic fusion. Classes named but
absent in the crop give empty masks: nothing is boosted, which is also what the node does.
Warm objects of classes not named are outside the masks, so they get the background target.
Every drawn text parses back to its request (:func:`tesg_ros.sig.request.parse_request`,
tested), so the node's parser and the training vocabulary agree.
"""

from dataclasses import dataclass
import itertools
import random

import cv2
import numpy as np

from tesg_ros.sig.request import (
    ANIMAL, CLASSES, make_request, PERSON, Request, THERMAL, VEHICLE, VISIBLE, WARM)

# Operator-style nouns per class (all parse back to the class).
CLASS_NOUNS = {
    PERSON: ('people', 'persons', 'a person', 'pedestrians', 'a pedestrian', 'walkers',
             'a man', 'a woman', 'the people', 'humans', 'someone', 'figures', 'children'),
    VEHICLE: ('vehicles', 'a vehicle', 'cars', 'a car', 'trucks', 'a truck', 'a bus',
              'vans', 'bikes', 'motorbikes', 'traffic'),
    ANIMAL: ('animals', 'an animal', 'dogs', 'a dog', 'deer', 'wildlife', 'horses'),
    WARM: ('hot spots', 'warm objects', 'heat sources', 'anything warm', 'hot objects',
           'the warmest things', 'fires'),
}
CLASS_TEMPLATES = ('{}', 'show {}', 'highlight {}', 'find {}', 'look for {}',
                   'where are the {}', '{} please', 'I want to see {}', 'focus on {}',
                   'make {} stand out', 'track {}', 'watch {}')
INTENT_PHRASES = {
    VISIBLE: ('show the visible scene', 'daylight detail', 'keep the visible image',
              'the visible picture please', 'natural colours', 'mostly visible',
              'keep the daylight look', 'visible detail'),
    THERMAL: ('it is dark', 'at night', 'night time', 'there is smoke', 'smoke', 'fog',
              'it is foggy', 'heavy fog', 'glare from headlights', 'dazzling glare',
              'a dark street', 'in the dark', 'hazy', 'misty conditions'),
}
# Class-free texts: neutral (no masks, zero text).
NEUTRAL_TEXTS = ('', 'nothing', 'none', 'just fuse', 'default', 'the scene', 'ok',
                 'the usual', 'no preference', 'whatever', 'a picture', 'hello')


@dataclass(frozen=True)
class TextTarget:
    """One drawn request: ``text`` (what an operator might type), ``request`` (what it means:
    classes and intent), ``canonical`` (the sentence the network's text input embeds; '' =
    neutral, zero vector), ``strength`` (the size of the background shift)."""

    text: str
    request: Request
    strength: float = 0.5

    @property
    def canonical(self):
        return self.request.canonical

    @property
    def ir_classes(self):
        """The classes whose masks the intensity term weights towards the infrared."""
        return self.request.classes

    @property
    def intent(self):
        return self.request.intent


def all_requests():
    """Every canonical request: class subsets (warm alone, as it covers the rest) x intents."""
    subsets = [()]
    objects = (PERSON, VEHICLE, ANIMAL)
    for size in range(1, len(objects) + 1):
        subsets += list(itertools.combinations(objects, size))
    subsets.append((WARM,))
    return [make_request(classes, intent) for classes in subsets
            for intent in (None, VISIBLE, THERMAL)]


class TextTargetSampler:
    """Draw a :class:`TextTarget` per crop.

    p_neutral: share of neutral requests (class-free text, no intent); p_intent: share of the
    others that carry an intent; p_second_class: chance of naming one more object class
    (repeated);
    p_warm: chance the named class is 'warm objects'; strength: the background shift of an
    intent (see the module docstring). ``seed`` seeds the sampler's own RNG; ``draw(rng)``
    takes a ``random.Random`` instead (e.g. per dataloader worker).
    """

    def __init__(self, seed=None, p_neutral=0.15, p_intent=0.5, p_second_class=0.25,
                 p_warm=0.15, strength=0.5):
        for name, value in (('p_neutral', p_neutral), ('p_intent', p_intent),
                            ('p_second_class', p_second_class), ('p_warm', p_warm)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f'strength must be in [0, 1], got {strength}')
        self.rng = random.Random(seed)
        self.p_neutral = p_neutral
        self.p_intent = p_intent
        self.p_second_class = p_second_class
        self.p_warm = p_warm
        self.strength = float(strength)

    def draw(self, rng=None):
        rng = self.rng if rng is None else rng
        if rng.random() < self.p_neutral:
            return TextTarget(rng.choice(NEUTRAL_TEXTS), Request(), self.strength)
        intent = rng.choice((VISIBLE, THERMAL)) if rng.random() < self.p_intent else None
        classes = []
        if intent is None or rng.random() < 0.75:   # some requests are intent only
            if rng.random() < self.p_warm:
                classes = [WARM]
            else:
                objects = [PERSON, VEHICLE, ANIMAL]
                weights = [0.55, 0.35, 0.10]
                classes = [rng.choices(objects, weights)[0]]
                while len(classes) < len(objects) and rng.random() < self.p_second_class:
                    others = [c for c in objects if c not in classes]
                    classes.append(rng.choice(others))
        return TextTarget(self._text(rng, classes, intent), make_request(classes, intent),
                          self.strength)

    @staticmethod
    def _text(rng, classes, intent):
        nouns = [rng.choice(CLASS_NOUNS[name]) for name in classes]
        pieces = []
        if nouns:
            pieces.append(rng.choice(CLASS_TEMPLATES).format(' and '.join(nouns)))
        if intent is not None:
            pieces.append(rng.choice(INTENT_PHRASES[intent]))
        rng.shuffle(pieces)
        return ', '.join(pieces)


def class_masks(visible_bgr, ir, backend=None):
    """(4, H, W) float32 in [0, 1]: the SIG mask of each class in :data:`CLASSES` order
    (person, vehicle, animal, warm = every warm object), from ``backend`` (default the SIG
    :class:`~tesg_ros.sig.masks.ThermalMaskBackend`, the node's)."""
    if backend is None:
        from tesg_ros.sig.masks import ThermalMaskBackend
        backend = ThermalMaskBackend()
    phrases = make_request(CLASSES[:3]).mask_phrases + make_request([WARM]).mask_phrases
    return np.asarray(backend(visible_bgr, ir, phrases), np.float32)


def request_masks(target, per_class):
    """(1, H, W) float32: union of the masks of the classes ``target`` names (zeros if none).

    ``target``: a :class:`TextTarget` or :class:`~tesg_ros.sig.request.Request`;
    ``per_class``: (4, H, W) from :func:`class_masks` (or a crop of it).
    """
    request = target.request if isinstance(target, TextTarget) else target
    per_class = np.asarray(per_class, np.float32)
    union = np.zeros((1,) + per_class.shape[1:], np.float32)
    for name in request.classes:
        np.maximum(union[0], per_class[CLASSES.index(name)], out=union[0])
    return union


def visible_information(vis_y, radius=7, contrast_scale=0.06, dark_level=0.12):
    """(H, W) float32 in [0, 1]: how much the visible image carries at each pixel.

    The larger of its local contrast (standard deviation over a (2 radius + 1) box, relative to
    ``contrast_scale``) and its brightness (relative to ``dark_level``), both clipped to 1: a
    dark or flat region (night, smoke, fog) is near 0, a lit textured one 1.
    """
    vis = np.asarray(vis_y, np.float32)
    size = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.blur(vis, size)
    spread = np.sqrt(np.maximum(cv2.blur(vis * vis, size) - mean * mean, 0.0))
    info = np.maximum(spread / contrast_scale, mean / dark_level)
    return np.clip(info, 0.0, 1.0).astype(np.float32)


def background_shift(target, vis_y):
    """(H, W) float32 in [-1, 1]: the signed shift of the background target towards the
    infrared (> 0) or the visible image (< 0); see the module docstring."""
    vis = np.asarray(vis_y, np.float32)
    intent = target.intent
    if intent == VISIBLE:
        return np.full(vis.shape, -target.strength, np.float32)
    if intent == THERMAL:
        return (target.strength * (1.0 - visible_information(vis))).astype(np.float32)
    return np.zeros(vis.shape, np.float32)


def shifted_background(background, ir, vis_y, shift):
    """``T + relu(s) (I - T) + relu(-s) (V - T)``; numpy arrays or torch tensors alike."""
    towards_ir = (shift + abs(shift)) * 0.5
    towards_vis = (abs(shift) - shift) * 0.5
    return background + towards_ir * (ir - background) + towards_vis * (vis_y - background)


def canonical_embeddings(encoder):
    """{canonical sentence: (D,) float32} for every canonical request; '' -> zeros."""
    from tesg_ros.sig.refresher import request_embedding
    return {request.canonical: request_embedding(request, encoder)
            for request in all_requests()}
