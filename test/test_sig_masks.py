# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Mask backends: thermal warm-object masks on a real TNO pair, HOG boxes, tiny CLIPSeg."""

import cv2
import numpy as np
import pytest

from dataclasses import replace

from tesg_ros.errors import ConfigError, ImageEncodingError
from tesg_ros.sig.describer import OfflineDescriber
from tesg_ros.sig.masks import (
    boxes_soft_mask, ClipSegMaskBackend, complete_upright_objects, grow_objects, HogMaskBackend,
    HogPeopleDetector, PERSON, phrase_classes, segment_warm_objects, ThermalMaskBackend,
    ThermalSegmentationParams, to_unit_thermal, WARM_CORES_ONLY)

CORES_ONLY = WARM_CORES_ONLY

# The warm person of TNO 19 (thermal 360 x 270): its pixels above 80 % of its peak span
# x 261-272, y 124-165. (The box used before, x 264-278, y 127-171, sat 3 px right of and below
# the person, where the masks landed before they were centred.)
PERSON_19 = (260, 123, 14, 44)


def load_pair(test_data, name):
    thermal = cv2.imread(str(test_data / 'tno' / 'ir' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR), thermal


def box_mean(mask, box):
    x, y, w, h = box
    return float(mask[y:y + h, x:x + w].mean())


def synthetic_thermal():
    """Cool noisy background with an upright warm blob (left) and a wide one (right)."""
    rng = np.random.default_rng(1)
    frame = np.clip(rng.normal(0.3, 0.01, (240, 320)), 0, 1).astype(np.float32)
    frame[100:160, 60:78] = 0.85     # person-shaped: 18 x 60
    frame[150:180, 200:280] = 0.8    # vehicle-shaped: 80 x 30
    return frame


def test_phrase_classes_match_whole_words():
    assert phrase_classes('two pedestrians on the left') == {'person'}
    # Beside an object class, warm words are adjectives; alone they name every warm object.
    assert phrase_classes('one warm person-shaped object') == {'person'}
    assert phrase_classes('a warm Car') == {'vehicle'}
    assert phrase_classes('small hot spots') == {'warm'}
    assert phrase_classes('a carpet in a night scene') == set()
    assert phrase_classes('no cars') == set()


def test_to_unit_thermal_accepts_uint8_and_unit_float_only():
    np.testing.assert_allclose(to_unit_thermal(np.array([[0, 255]], np.uint8)), [[0.0, 1.0]])
    assert to_unit_thermal(np.zeros((2, 3, 1), np.float64)).shape == (2, 3)
    with pytest.raises(ImageEncodingError, match='uint16'):
        to_unit_thermal(np.zeros((4, 4), np.uint16))
    with pytest.raises(ImageEncodingError, match=r'\[0, 1\]'):
        to_unit_thermal(np.full((4, 4), 2.0, np.float32))
    with pytest.raises(ImageEncodingError, match='single channel'):
        to_unit_thermal(np.zeros((4, 4, 3), np.uint8))


def test_segmentation_classifies_blob_shapes():
    objects = segment_warm_objects(synthetic_thermal()).objects
    labels = sorted((obj.label, obj.position) for obj in objects)
    assert labels == [('person', 'left'), ('vehicle', 'right')]
    person = next(obj for obj in objects if obj.label == 'person')
    x, y, w, h = person.box
    assert abs(x - 60) <= 3 and abs(y - 100) <= 3 and abs(w - 18) <= 4 and abs(h - 60) <= 4


def test_thermal_masks_follow_the_phrases_on_synthetic_blobs():
    frame = synthetic_thermal()
    masks = ThermalMaskBackend()(None, frame, ['a person', 'a car', 'hot things', 'a scene'])
    assert masks.shape == (4, 240, 320) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    person_box, vehicle_box = (62, 105, 14, 50), (205, 153, 70, 24)
    assert box_mean(masks[0], person_box) > 0.95 and box_mean(masks[0], vehicle_box) == 0
    assert box_mean(masks[1], vehicle_box) > 0.95 and box_mean(masks[1], person_box) == 0
    assert box_mean(masks[2], person_box) > 0.95 and box_mean(masks[2], vehicle_box) > 0.95
    assert not masks[3].any()
    # Soft edges: values strictly between 0 and 1 exist along the border.
    assert np.count_nonzero((masks[0] > 0.05) & (masks[0] < 0.95)) > 20


def test_thermal_mask_covers_the_warm_person_in_tno_19(test_data):
    visible, thermal = load_pair(test_data, '19')
    masks = ThermalMaskBackend()(visible, thermal, ['a warm person on the right', 'a car'])
    person = masks[0]
    assert person.shape == thermal.shape
    assert box_mean(person, PERSON_19) > 0.7
    outside = person.copy()
    x, y, w, h = PERSON_19
    outside[y - 6:y + h + 6, x - 6:x + w + 6] = 0
    assert outside.max() < 0.05  # nothing else in the frame is person-shaped and warm
    assert box_mean(masks[1], PERSON_19) == 0


@pytest.mark.parametrize('shape, radius', [((576, 768), 17.0), ((240, 320), 8.0)])
def test_thermal_mask_is_centred_on_its_object(shape, radius):
    """The working-resolution opening/closing must not move the mask (it used to land 2
    working pixels down-right of the object: 8.6 px at 768 x 576, 3.4 px at 320 x 240)."""
    rng = np.random.default_rng(2)
    frame = np.clip(rng.normal(0.3, 0.01, shape), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    centre_y, centre_x = shape[0] / 2 + 0.3, shape[1] / 2 + 0.7
    frame[np.hypot(yy - centre_y, xx - centre_x) <= radius] = 0.85
    mask = ThermalMaskBackend()(None, frame, ['something warm'])[0]
    centroid = ((mask * xx).sum() / mask.sum(), (mask * yy).sum() / mask.sum())
    assert np.hypot(centroid[0] - centre_x, centroid[1] - centre_y) < 1.0


def clothed_person(shape=(576, 768), torso=0.55, right_arm=0.85):
    """A person whose warm head, shoulders, arms, hips and legs (0.85) frame a cooler clothed
    torso; ``right_arm`` at the torso's value leaves the torso open on that side."""
    rng = np.random.default_rng(3)
    frame = np.clip(rng.normal(0.3, 0.01, shape), 0, 1).astype(np.float32)
    frame[150:190, 370:400] = 0.85   # head
    frame[186:200, 330:440] = 0.85   # shoulders
    frame[200:292, 342:428] = torso  # torso
    frame[200:300, 330:342] = 0.85   # arms
    frame[200:300, 428:440] = right_arm
    frame[292:312, 330:440] = 0.85   # hips
    frame[312:420, 340:375] = 0.85   # legs, 24 px (6 working pixels) apart
    frame[312:420, 399:430] = 0.85
    return frame


def test_thermal_mask_grows_over_the_cooler_clothing_of_a_person():
    frame = clothed_person()
    torso = (350, 205, 70, 80)
    grown = ThermalMaskBackend()(None, frame, ['a person'])[0]
    cores = ThermalMaskBackend(CORES_ONLY)(None, frame, ['a person'])[0]
    assert box_mean(cores, torso) < 0.3
    assert box_mean(grown, torso) > 0.95
    # The background around the person stays out (the gap between the legs too).
    assert box_mean(grown, (380, 330, 14, 80)) < 0.05
    assert box_mean(grown, (250, 200, 60, 200)) == 0.0


def test_a_cold_region_enclosed_by_a_warm_object_is_not_filled():
    frame = clothed_person(torso=0.25)   # colder than the background
    grown = ThermalMaskBackend()(None, frame, ['a person'])[0]
    assert box_mean(grown, (350, 205, 70, 80)) < 0.1


def test_an_open_torso_is_completed_from_the_upright_parts_around_it():
    # A lukewarm torso (0.45 over a 0.3 background) whose clothed right arm leaves it open on
    # one side: no hole to fill, and too little excess over the plain local background (which
    # the warm parts around it raise) to grow into.
    frame = clothed_person(torso=0.45, right_arm=0.45)
    torso = (350, 205, 86, 85)
    completed = ThermalMaskBackend()(None, frame, ['a person'])[0]
    open_side = ThermalMaskBackend(replace(ThermalSegmentationParams(),
                                           complete_upright=False))(None, frame, ['a person'])[0]
    assert box_mean(open_side, torso) < 0.3
    assert box_mean(completed, torso) > 0.95
    # Neither the ground between the legs nor the background beside the person.
    assert box_mean(completed, (380, 330, 14, 80)) < 0.05
    assert box_mean(completed, (250, 200, 60, 200)) == 0.0
    assert box_mean(completed, (450, 200, 60, 200)) == 0.0


def test_upright_completion_takes_only_clearly_warm_regions_of_upright_groups():
    labels = np.zeros((60, 40), np.int32)
    labels[5:15, 15:25] = 4     # head
    labels[35:55, 12:18] = 6    # legs
    labels[35:55, 22:28] = 6
    work = np.where(labels > 0, 1.0, 0.0).astype(np.float32)
    work[15:35, 12:28] = 0.2    # a torso, not grown into (no part touches it)
    work[40:55, 18:22] = -0.1   # the ground between the legs, colder than the background
    args = dict(min_aspect=1.4, min_height=10, gap=25, min_excess=0.05)

    def complete(image, **changes):
        return complete_upright_objects(labels, image, labels > 0, 8.0,
                                        **{**args, **changes})[0]

    completed, groups = complete_upright_objects(labels, work, labels > 0, 8.0, **args)
    assert groups == [(6, 4)]   # the parts' labels, largest first
    # The torso, against the background without the person (0), not the plain blur (which
    # the warm head and legs raise above 0.2 beside them).
    assert cv2.GaussianBlur(work, (0, 0), 8.0)[25, 20] > 0.2
    assert (completed[16:34, 14:26] == 6).all()   # the label of the largest part
    assert not completed[40:55, 19:21].any()
    np.testing.assert_array_equal(completed[labels > 0], labels[labels > 0])
    # Parts farther apart than the gap are separate groups, each convex already.
    np.testing.assert_array_equal(complete(work, gap=15), labels)
    # Lukewarm: below min_excess.
    lukewarm = work.copy()
    lukewarm[15:35, 12:28] = 0.04
    np.testing.assert_array_equal(complete(lukewarm), labels)
    # A wide group is not upright.
    np.testing.assert_array_equal(complete(work, min_aspect=3.5), labels)
    # Nor where the pixels may not be added (registration padding).
    valid = np.ones(labels.shape, bool)
    valid[:, 20:] = False
    completed = complete(work, valid=valid)
    assert (completed[16:34, 14:19] == 6).all() and not completed[16:34, 20:26].any()


def split_person(shape=(576, 768)):
    """A person in two warm cores with a lukewarm torso between them: the head (a hot spot)
    and the hips with the legs (person-shaped), farther apart than the growth reaches."""
    rng = np.random.default_rng(5)
    frame = np.clip(rng.normal(0.3, 0.01, shape), 0, 1).astype(np.float32)
    frame[150:190, 370:400] = 0.85   # head
    frame[190:290, 345:425] = 0.45   # clothed torso
    frame[290:306, 345:425] = 0.85   # hips
    frame[306:420, 350:380] = 0.85   # legs
    frame[306:420, 392:422] = 0.85
    return frame


def test_the_parts_of_an_upright_person_are_one_person():
    frame = split_person()
    parts = segment_warm_objects(frame, replace(ThermalSegmentationParams(),
                                                complete_upright=False))
    assert len(parts.objects) == 2
    whole = segment_warm_objects(frame)
    assert [obj.label for obj in whole.objects] == ['person']
    person = whole.objects[0]
    x, y, w, h = person.box
    assert abs(x - 345) <= 4 and abs(y - 150) <= 4 and abs(x + w - 425) <= 4 \
        and abs(y + h - 420) <= 4
    assert person.area_fraction == pytest.approx(sum(o.area_fraction for o in parts.objects))
    mask = whole.soft_mask([person])
    assert box_mean(mask, (355, 200, 60, 80)) > 0.95   # the torso
    assert box_mean(mask, (375, 155, 20, 30)) > 0.95   # the head
    # The describer counts one person.
    assert OfflineDescriber()(np.full(frame.shape + (3,), 90, np.uint8),
                              frame).sentence.count('person') == 1


def test_an_upright_group_without_a_person_shaped_part_is_not_merged():
    rng = np.random.default_rng(6)
    frame = np.clip(rng.normal(0.3, 0.01, (576, 768)), 0, 1).astype(np.float32)
    frame[100:140, 300:340] = 0.85   # a round lamp
    frame[160:200, 300:340] = 0.85   # above a lit window: two squares, upright together
    segmentation = segment_warm_objects(frame)
    assert len(segmentation.objects) == 2
    assert PERSON not in [obj.label for obj in segmentation.objects]
    for obj in segmentation.objects:   # each still has its own mask
        x, y, w, h = obj.box
        assert box_mean(segmentation.soft_mask([obj]), (x + 5, y + 5, w - 10, h - 10)) > 0.95


def test_growth_stops_after_grow_steps_working_pixels():
    # A warm core beside a long lukewarm strip that is just above the growth level.
    excess = np.zeros((40, 100), np.float32)
    excess[10:20, 10:20] = 1.0
    excess[12:18, 20:90] = 0.5
    cores = (excess == 1.0).astype(np.int32) * 7
    grown = grow_objects(cores, excess, level=0.4, steps=5, fill_holes=False)
    assert set(np.unique(grown)) == {0, 7}
    assert grown[15, 24] == 7 and grown[15, 25] == 0   # 5 pixels into the strip
    assert not grown[5].any()                           # never into pixels below the level
    np.testing.assert_array_equal(grow_objects(cores, excess, 0.4, 0, False), cores)


def test_grown_pixels_take_the_label_of_the_nearest_core():
    excess = np.full((10, 30), 0.5, np.float32)
    cores = np.zeros((10, 30), np.int32)
    cores[4:6, 2:4], cores[4:6, 25:27] = 3, 9
    grown = grow_objects(cores, excess, level=0.4, steps=30, fill_holes=False)
    assert (grown[:, :14] == 3).all() and (grown[:, 16:] == 9).all()


@pytest.mark.parametrize('offset', [0, 1, 2, 3])
def test_full_resolution_edges_sit_on_the_object_edge(offset):
    """At 768 x 576 a working pixel spans 4 frame pixels; the re-found edge is within a pixel
    of the object's edge wherever the object starts within a working pixel."""
    rng = np.random.default_rng(4)
    frame = np.clip(rng.normal(0.3, 0.01, (576, 768)), 0, 1).astype(np.float32)
    top, left = 200 + offset, 300 + offset
    frame[top:top + 120, left:left + 50] = 0.85
    mask = ThermalMaskBackend()(None, frame, ['something warm'])[0] >= 0.5
    rows, cols = np.nonzero(mask)
    assert abs(rows.min() - top) <= 1 and abs(rows.max() - (top + 119)) <= 1
    assert abs(cols.min() - left) <= 1 and abs(cols.max() - (left + 49)) <= 1
    coarse = ThermalMaskBackend(CORES_ONLY)(None, frame, ['something warm'])[0] >= 0.5
    outside = np.count_nonzero(coarse & (frame < 0.5)) + np.count_nonzero(~coarse & (frame > 0.5))
    assert np.count_nonzero(mask != (frame > 0.5)) < outside


def test_phrases_naming_the_same_objects_share_one_full_resolution_pass():
    segmentation = segment_warm_objects(clothed_person())
    first = segmentation.soft_mask(segmentation.objects)
    first[:] = 0.0   # the caller owns what it gets back
    second = segmentation.soft_mask(list(reversed(segmentation.objects)))
    assert second.max() == 1.0 and len(segmentation._full_resolution_cache) == 1
    segmentation.soft_mask(segmentation.objects, edge_sigma=2.0)
    assert len(segmentation._full_resolution_cache) == 2


def test_growth_parameters_are_checked():
    for bad in ({'grow_ratio': 0.0}, {'grow_ratio': 1.5}, {'grow_steps': -1},
                {'grow_steps': 2.5}):
        with pytest.raises(ConfigError, match='grow_'):
            ThermalSegmentationParams(**bad)
    for gap in (0.0, 1.0):
        with pytest.raises(ConfigError, match='upright_gap'):
            ThermalSegmentationParams(upright_gap=gap)


def test_thermal_mask_accepts_float_thermal(test_data):
    _, thermal = load_pair(test_data, '19')
    from_uint8 = ThermalMaskBackend()(None, thermal, ['person'])
    from_float = ThermalMaskBackend()(None, thermal.astype(np.float32) / 255.0, ['person'])
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)


def test_boxes_soft_mask_ramps_to_the_box_edge():
    mask = boxes_soft_mask([(10, 20, 20, 40)], (80, 60), edge_fraction=0.25)
    assert mask[40, 20] == 1.0                      # core
    assert 0 < mask[21, 20] < 0.5                   # near the top edge
    assert mask[19, 20] == 0 and mask[40, 31] == 0  # outside
    assert mask.dtype == np.float32


def test_hog_finds_the_person_of_tno_19_when_large_enough(test_data):
    # HOG needs people about 128 px tall: upscale the thermal crop around the TNO 19 person
    # and show it as a visible frame (HOG's gradients also work on thermal).
    _, thermal = load_pair(test_data, '19')
    crop = cv2.resize(thermal[100:200, 230:300], None, fx=4, fy=4,
                      interpolation=cv2.INTER_CUBIC)
    detector = HogPeopleDetector(scale=1.0)
    detections = detector.detect(crop)
    assert len(detections) == 1
    person = ((PERSON_19[0] - 230) * 4, (PERSON_19[1] - 100) * 4, PERSON_19[2] * 4,
              PERSON_19[3] * 4)
    masks = HogMaskBackend(detector)(crop, None, ['one pedestrian', 'a car'])
    assert box_mean(masks[0], person) > 0.8
    assert not masks[1].any()
    # Nothing person-like in an empty frame.
    assert detector.detect(np.full((256, 256), 90, np.uint8)) == []


def test_hog_backend_finds_a_person_on_the_thermal_frame_when_the_visible_is_dark(test_data):
    _, thermal = load_pair(test_data, '19')
    crop = cv2.resize(thermal[100:200, 230:300], None, fx=4, fy=4,
                      interpolation=cv2.INTER_CUBIC)
    dark = np.full(crop.shape + (3,), 3, np.uint8)     # a night visible frame: nothing in it
    detector = HogPeopleDetector(scale=1.0)
    person = ((PERSON_19[0] - 230) * 4, (PERSON_19[1] - 100) * 4, PERSON_19[2] * 4,
              PERSON_19[3] * 4)
    both = HogMaskBackend(detector)(dark, crop, ['people'])
    assert box_mean(both[0], person) > 0.8
    assert not HogMaskBackend(detector, images=('visible',))(dark, crop, ['people']).any()
    with pytest.raises(ConfigError, match='semantics.hog.images'):
        HogMaskBackend(images=('radar',))


def test_hog_backend_skips_detection_without_person_phrases():
    class Exploding:
        def detect(self, image):
            raise AssertionError('HOG must not run')
    masks = HogMaskBackend(Exploding())(np.zeros((64, 48, 3), np.uint8), None, ['a car'])
    assert masks.shape == (1, 64, 48) and not masks.any()


def build_tiny_clipseg(directory):
    import torch
    from transformers import (CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor,
                              CLIPTokenizer, ViTImageProcessorPil)
    from test_sig_text_encoder import write_tiny_clip_tokenizer
    vocab_size = write_tiny_clip_tokenizer(directory)
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8)
    torch.manual_seed(0)
    config = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=16,
                           reduce_dim=16, extract_layers=[0, 1], decoder_num_attention_heads=2,
                           decoder_intermediate_size=37)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(directory)
    image_processor = ViTImageProcessorPil(
        size={'height': 32, 'width': 32}, resample=2, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    CLIPSegProcessor(image_processor=image_processor,
                     tokenizer=CLIPTokenizer.from_pretrained(directory)).save_pretrained(directory)
    return directory


@pytest.fixture(scope='module')
def clipseg_dir(tmp_path_factory):
    return build_tiny_clipseg(tmp_path_factory.mktemp('clipseg'))


def test_clipseg_gives_one_mask_per_phrase(clipseg_dir, test_data):
    backend = ClipSegMaskBackend(clipseg_dir)
    visible, thermal = load_pair(test_data, '19')
    masks = backend(visible, thermal, ['a person', 'a car on the road'])
    assert masks.shape == (2,) + thermal.shape and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert not np.allclose(masks[0], masks[1], atol=1e-4)  # the text changes the mask
    assert np.ptp(masks[0]) > 1e-4                          # and the image matters
    # Same as running the model by hand on the same preprocessed input.
    import torch
    inputs = backend.processor(images=[cv2.cvtColor(visible, cv2.COLOR_BGR2RGB)],
                               text=['a person'], return_tensors='pt')
    from transformers import CLIPSegProcessor
    assert isinstance(backend.processor, CLIPSegProcessor)
    with torch.no_grad():
        logits = backend.model(**inputs).logits
    expected = cv2.resize(torch.sigmoid(logits).reshape(32, 32).numpy(),
                          (thermal.shape[1], thermal.shape[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(masks[0], expected, atol=1e-5)
    both = ClipSegMaskBackend(clipseg_dir, image='both')
    assert both(visible, thermal, ['a person']).shape == (1,) + thermal.shape
    assert backend(visible, thermal, []).shape == (0,) + thermal.shape


def test_clipseg_errors_name_the_parameter(tmp_path, clipseg_dir):
    import shutil
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.path'):
        ClipSegMaskBackend(tmp_path / 'missing')
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.image'):
        ClipSegMaskBackend(tmp_path, image='thermal')
    # A model of another type in the directory.
    from test_sig_text_encoder import build_tiny_clip_text
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.path.*CLIPSeg'):
        ClipSegMaskBackend(build_tiny_clip_text(tmp_path / 'clip'))
    # The model without its processor files.
    stripped = tmp_path / 'no-processor'
    shutil.copytree(clipseg_dir, stripped)
    for name in ('preprocessor_config.json', 'processor_config.json'):
        (stripped / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.path.*processor'):
        ClipSegMaskBackend(stripped)


def test_registration_padding_is_the_warp_border_only(test_data):
    from tesg_ros.sig.masks import registration_padding
    from test_sig_describer import warped_with_border
    _, thermal = load_pair(test_data, '19')
    for name in ('07', '10', '19'):  # unpadded frames
        assert registration_padding(to_unit_thermal(load_pair(test_data, name)[1])) is None
    for border in (255, 0):
        warped, warp = warped_with_border(thermal, border)
        padding = registration_padding(to_unit_thermal(warped))
        outside = cv2.warpAffine(np.ones_like(thermal), warp, thermal.shape[::-1],
                                 flags=cv2.INTER_NEAREST, borderValue=0) == 0
        overlap = np.count_nonzero(padding & outside) / np.count_nonzero(padding | outside)
        assert overlap > 0.95
    # A ragged cold region at the corner (like clipped sky) is not padding.
    rng = np.random.default_rng(0)
    sky = thermal.copy()
    for x in range(0, 120):
        sky[:max(0, 60 - x // 2 + int(rng.integers(-8, 8))), x] = 0
    assert registration_padding(to_unit_thermal(sky)) is None


def test_thermal_mask_of_a_padded_frame_follows_the_warped_person(test_data):
    from test_sig_describer import warped_with_border
    _, thermal = load_pair(test_data, '19')
    warped, warp = warped_with_border(thermal, 255)
    mask = ThermalMaskBackend()(None, warped, ['a person'])[0]
    x, y = (warp @ np.array([264 + 7, 127 + 22, 1.0])).round().astype(int)
    assert mask[y - 10:y + 10, x - 3:x + 3].mean() > 0.7
    assert mask.sum() < 2 * 14 * 44  # the white border itself is not warm


@pytest.mark.parametrize('shape', [(1, 1), (2, 50), (50, 2), (31, 17), (240, 320)])
def test_thermal_masks_of_degenerate_frames_are_valid(shape):
    rng = np.random.default_rng(7)
    blobs = np.full(shape, 60, np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        blobs[y:y + max(1, shape[0] // 3), x:x + max(1, shape[1] // 8)] = rng.integers(100, 256)
    frames = [np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8),
              rng.integers(0, 256, shape).astype(np.uint8), blobs]
    phrases = ['a person', 'a warm car', 'something hot', 'a scene']
    for frame in frames:
        masks = ThermalMaskBackend()(None, frame, phrases)
        assert masks.shape == (4,) + shape and masks.dtype == np.float32
        assert np.isfinite(masks).all() and masks.min() >= 0.0 and masks.max() <= 1.0
