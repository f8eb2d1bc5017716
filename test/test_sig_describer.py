# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Offline describer: lighting, warm objects and people named on real TNO pairs."""

import cv2
import numpy as np
import pytest

from tesg_ros.errors import ImageEncodingError
from tesg_ros.sig.describer import (
    classify_lighting, description_phrases, description_text, OfflineDescriber, split_phrases)


def load_pair(test_data, name):
    thermal = cv2.imread(str(test_data / 'tno' / 'ir' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR), thermal


@pytest.fixture(scope='module')
def describer():
    return OfflineDescriber()


def test_tno_19_names_the_warm_person_on_the_right(test_data, describer):
    description = describer(*load_pair(test_data, '19'))
    assert 'one warm person-shaped object on the right' in description.phrases
    assert description.sentence.startswith(f'a {description.lighting} scene with ')
    assert 'one warm person-shaped object on the right' in description.sentence
    people = [obj for obj in description.warm_objects if obj.label == 'person']
    assert len(people) == 1
    x, y, w, h = people[0].box
    assert 254 <= x <= 266 and 116 <= y <= 129 and 40 <= h <= 52  # warm pixels: 261, 124, 42
    assert description.people == ()  # the person is too small for HOG at this resolution


def test_tno_night_scenes(test_data, describer):
    # TNO 07 (foliage with a target board and tripod) and 10 (a house fire) are dark.
    for name in ('07', '10'):
        description = describer(*load_pair(test_data, name))
        assert description.lighting == 'night', (name, description.mean_luma)
        assert description.phrases[0] == 'a night scene'
    fire = describer(*load_pair(test_data, '10'))
    assert any('large hot area' in phrase for phrase in fire.phrases)
    left_fire = [obj for obj in fire.warm_objects if obj.label == 'hot area']
    assert left_fire and left_fire[0].position == 'left'  # the burning roof is top left


def test_lighting_thresholds():
    assert classify_lighting(np.full((8, 8, 3), 30, np.uint8)) == ('night', 30.0)
    assert classify_lighting(np.full((8, 8, 3), 85, np.uint8)) == ('dusk', 85.0)
    assert classify_lighting(np.full((8, 8), 180, np.uint8)) == ('day', 180.0)


def test_synthetic_scene_sentence_counts_and_positions(describer):
    rng = np.random.default_rng(2)
    thermal = np.clip(rng.normal(0.3, 0.01, (240, 320)), 0, 1).astype(np.float32)
    for left in (20, 50):
        thermal[100:160, left:left + 16] = 0.9     # two upright warm blobs, left third
    thermal[150:180, 200:280] = 0.85               # one wide warm blob, right third
    visible = np.full((240, 320, 3), 160, np.uint8)
    description = describer(visible, thermal)
    assert description.sentence == ('a day scene with two warm person-shaped objects on the '
                                    'left and one warm vehicle-shaped object on the right')
    assert description.phrases == ('a day scene', 'two warm person-shaped objects on the left',
                                   'one warm vehicle-shaped object on the right')


def test_empty_scene_says_so(describer):
    description = describer(np.full((120, 160, 3), 20, np.uint8),
                            np.full((120, 160), 0.4, np.float32))
    assert description.sentence == 'a night scene with no warm objects or people detected'
    assert description.phrases == ('a night scene',)


def test_mismatched_frame_sizes_are_rejected(describer):
    with pytest.raises(ImageEncodingError, match='same size'):
        describer(np.zeros((120, 160, 3), np.uint8), np.zeros((60, 80), np.uint8))


def test_split_phrases_of_free_text():
    text = 'A man walking a dog, and a red car. Night time; with street lights'
    assert split_phrases(text) == ('a man walking a dog', 'a red car', 'night time',
                                   'street lights')
    assert description_phrases('a car and a car') == ('a car',)
    assert description_text('  a   car \n') == 'a car'
    with pytest.raises(TypeError):
        description_phrases(42)


def warped_with_border(image, border):
    """Rotate by 4 degrees and shrink to 85 % about the centre, padding with ``border``: what a
    registration warp leaves around a thermal frame (VIFB's labMan has such a white border)."""
    height, width = image.shape[:2]
    warp = cv2.getRotationMatrix2D((width / 2, height / 2), 4, 0.85)
    return cv2.warpAffine(image, warp, (width, height), flags=cv2.INTER_LINEAR,
                          borderValue=border), warp


@pytest.mark.parametrize('border', [255, 0])
def test_registration_border_does_not_hide_the_warm_person(test_data, border):
    visible, thermal = load_pair(test_data, '19')
    warped, warp = warped_with_border(thermal, border)
    description = OfflineDescriber(hog_height=270)(visible, warped)
    people = [obj for obj in description.warm_objects if obj.label == 'person']
    assert len(people) == 1, description.sentence
    assert 'one warm person-shaped object on the right' in description.phrases
    # The blob sits where the warp moved the person (centre of its box 260, 123, 14, 44).
    expected = warp @ np.array([260 + 7, 123 + 22, 1.0])
    assert abs(people[0].centre[0] - expected[0]) < 6
    assert abs(people[0].centre[1] - expected[1]) < 8
