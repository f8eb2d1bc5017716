# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Built-in offline scene describer: a sentence and phrases from image statistics, no model.

It is a stand-in for the VLM when none is configured, and it is deliberately modest: every
statement comes from one measurable cue, and the words say what the cue is.

* Lighting (day / dusk / night) from the mean luma of the visible frame. Cameras with
  auto-exposure brighten night scenes, so this is a coarse cue: a well-exposed street at night
  can read as dusk.
* Warm objects from the registered thermal frame (:func:`tesg_ros.sig.masks.segment_warm_objects`):
  count, shape class and position (left / centre / right third). Shape is the only class cue
  - upright blobs are called "person-shaped", wide ones "vehicle-shaped" - because a thermal
  frame gives no range.
* People from OpenCV's HOG people detector on the visible frame, resized so that its height
  is ``hog_height`` pixels (HOG's window is 64 x 128, so people down to about
  128 * H / hog_height pixels tall are found; the cost is set by ``hog_height``, about
  0.5 s per frame at 920 on a shared 2-core VM - fine for a describer that runs every few
  seconds in the background).

The sentence reads e.g. "a night scene with two pedestrians on the left and one warm
vehicle-shaped object in the centre"; each clause is also a phrase for the mask backends.
"""

from collections import Counter
from dataclasses import dataclass
import re

import cv2

from tesg_ros.errors import ConfigError, ImageEncodingError
from tesg_ros.sig.masks import (
    HOT_AREA, HOT_SPOT, HogPeopleDetector, PERSON, segment_warm_objects,
    ThermalSegmentationParams, to_bgr, horizontal_position, VEHICLE)

NUMBER_WORDS = ('no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine',
                'ten')
POSITIONS = ('left', 'centre', 'right')
NIGHT = 'night'
DUSK = 'dusk'
DAY = 'day'

# Singular / plural nouns of each warm-object class as the sentence names it.
_WARM_NOUNS = {
    PERSON: ('warm person-shaped object', 'warm person-shaped objects'),
    VEHICLE: ('warm vehicle-shaped object', 'warm vehicle-shaped objects'),
    HOT_AREA: ('large hot area', 'large hot areas'),
    HOT_SPOT: ('small hot spot', 'small hot spots'),
}
_PEDESTRIAN_NOUNS = ('pedestrian', 'pedestrians')


def number_word(count):
    """'one', 'two', ... up to ten, then digits."""
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def classify_lighting(visible, night_below=70.0, day_from=100.0):
    """Return ('night' | 'dusk' | 'day', mean luma in [0, 255]) of the visible frame.

    night when the mean luma is below ``night_below``, day from ``day_from``, dusk between.
    """
    grey = cv2.cvtColor(to_bgr(visible), cv2.COLOR_BGR2GRAY)
    mean_luma = float(cv2.mean(grey)[0])
    if mean_luma < night_below:
        return NIGHT, mean_luma
    if mean_luma < day_from:
        return DUSK, mean_luma
    return DAY, mean_luma


def split_phrases(text):
    """Split free text (e.g. a VLM caption) into phrases: sentences, then ',', ';', ' and '.

    Returns a tuple of stripped, non-empty lower-case phrases, in order, without duplicates.
    """
    pieces = re.split(r'[.;,!?\n]+|\band\b|\bwith\b', text.lower())
    phrases = []
    for piece in pieces:
        phrase = ' '.join(piece.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    return tuple(phrases)


@dataclass(frozen=True)
class SceneDescription:
    """What the offline describer saw.

    sentence: the full description; phrases: its clauses (the first is the lighting clause);
    lighting: 'night' / 'dusk' / 'day'; mean_luma: of the visible frame, [0, 255];
    people: HOG person boxes ((x, y, w, h), score) in visible pixels;
    warm_objects: :class:`tesg_ros.sig.masks.WarmObject` s of the thermal frame.
    """

    sentence: str
    phrases: tuple
    lighting: str
    mean_luma: float
    people: tuple
    warm_objects: tuple

    def __str__(self):
        return self.sentence


def _counted_clause(count_by_position, nouns):
    """'two pedestrians on the left and one pedestrian in the centre' style clauses."""
    clauses = []
    for position in POSITIONS:
        count = count_by_position.get(position, 0)
        if count:
            noun = nouns[0] if count == 1 else nouns[1]
            where = 'in the centre' if position == 'centre' else f'on the {position}'
            clauses.append(f'{number_word(count)} {noun} {where}')
    return clauses


def _overlaps(box, other, min_overlap=0.3):
    """True when the intersection covers ``min_overlap`` of the smaller box."""
    x0, y0 = max(box[0], other[0]), max(box[1], other[1])
    x1 = min(box[0] + box[2], other[0] + other[2])
    y1 = min(box[1] + box[3], other[1] + other[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    smaller = min(box[2] * box[3], other[2] * other[3])
    return smaller > 0 and inter >= min_overlap * smaller


class OfflineDescriber:
    """Describe a visible + registered thermal pair without any model directory.

    ``describer(visible, thermal) -> SceneDescription``; ``visible``: H x W x 3 BGR uint8 (or
    H x W grey uint8); ``thermal``: H x W uint8 or float in [0, 1], registered to ``visible``.
    ``max_spots`` caps how many hot spots are mentioned (clutter is not a description).
    A warm person-shaped blob that a HOG person box already covers is not counted twice.
    """

    model_id = 'offline-heuristic'

    def __init__(self, thermal_params=ThermalSegmentationParams(), hog_height=920,
                 hog_min_weight=1.0, night_below=70.0, day_from=100.0, max_spots=3):
        if hog_height < 128 and hog_height != 0:  # 0: the frame's own height
            raise ConfigError(f'semantics.offline.hog_height must be 0 or >= 128, got '
                              f'{hog_height}')
        self.thermal_params = thermal_params
        self.hog_height = int(hog_height)
        self.hog = HogPeopleDetector(min_weight=hog_min_weight)
        self.night_below = float(night_below)
        self.day_from = float(day_from)
        self.max_spots = int(max_spots)

    def __call__(self, visible, thermal):
        bgr = to_bgr(visible)
        lighting, mean_luma = classify_lighting(bgr, self.night_below, self.day_from)
        segmentation = segment_warm_objects(thermal, self.thermal_params)
        if segmentation.frame_shape != bgr.shape[:2]:
            raise ImageEncodingError(
                f'visible {bgr.shape[:2]} and thermal {segmentation.frame_shape} frames must '
                'have the same size (register the thermal frame first)')
        rows = self.hog_height or bgr.shape[0]
        people = tuple(self.hog.detect(bgr, scale=rows / bgr.shape[0]))
        width = bgr.shape[1]
        person_boxes = [box for box, _ in people]
        warm = [obj for obj in segmentation.objects
                if not (obj.label == PERSON
                        and any(_overlaps(obj.box, box) for box in person_boxes))]

        clauses = _counted_clause(
            Counter(horizontal_position(x + w / 2.0, width) for x, y, w, h in person_boxes),
            _PEDESTRIAN_NOUNS)
        for label in (PERSON, VEHICLE, HOT_AREA, HOT_SPOT):
            of_label = [obj for obj in warm if obj.label == label]
            if label == HOT_SPOT:
                of_label = of_label[:self.max_spots]
            clauses += _counted_clause(Counter(obj.position for obj in of_label),
                                       _WARM_NOUNS[label])
        lighting_clause = f'a {lighting} scene'
        if not clauses:
            sentence = f'{lighting_clause} with no warm objects or people detected'
        elif len(clauses) == 1:
            sentence = f'{lighting_clause} with {clauses[0]}'
        else:
            sentence = f'{lighting_clause} with {", ".join(clauses[:-1])} and {clauses[-1]}'
        return SceneDescription(
            sentence=sentence, phrases=(lighting_clause, *clauses), lighting=lighting,
            mean_luma=mean_luma, people=people, warm_objects=tuple(warm))


def description_phrases(description):
    """Phrases of a describer result: a :class:`SceneDescription`'s own, or split free text."""
    if isinstance(description, SceneDescription):
        return description.phrases
    if isinstance(description, str):
        return split_phrases(description)
    raise TypeError(f'a description must be a str or SceneDescription, '
                    f'got {type(description).__name__}')


def description_text(description):
    """The sentence of a describer result (a str or :class:`SceneDescription`)."""
    if isinstance(description, SceneDescription):
        return description.sentence
    if isinstance(description, str):
        return ' '.join(description.split())
    raise TypeError(f'a description must be a str or SceneDescription, '
                    f'got {type(description).__name__}')
