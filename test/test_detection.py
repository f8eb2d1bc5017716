# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Detection scoring: AP on hand-made cases, COCO/YOLO labels, HOG on TNO, tiny transformers
models of eight families checked against transformers' own processor + model path."""

import importlib.util
import json
import math

import cv2
import numpy as np
import pytest

from tesg_ros.detection import (
    average_precision, box_iou, Detection, format_table, ground_truth_for_images,
    GroundTruthBox, HogPeopleDetector, load_coco_labels, load_yolo_labels, match_frame,
    normalise_label, read_class_names, read_yolo_label_file, run_detector, score_frames,
    score_variants, TransformersDetector)
from tesg_ros.errors import ConfigError, ImageEncodingError


def det(box, score, label='person'):
    return Detection(tuple(float(v) for v in box), score, label)


def gt(box, label='person', ignore=False):
    return GroundTruthBox(tuple(float(v) for v in box), label, ignore)


def person_ap(detections_per_frame, truths_per_frame, iou_threshold=0.5):
    result = score_frames(detections_per_frame, truths_per_frame, classes=('person',),
                          iou_threshold=iou_threshold)
    return result['classes']['person']


# --- IoU, matching and AP -------------------------------------------------------------------

def test_box_iou_known_values():
    ious = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30],
                                      [0, 0, 10, 5], [3, 3, 3, 3]])
    np.testing.assert_allclose(ious, [[1.0, 50 / 150, 0.0, 0.5, 0.0]])
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou([[2, 2, 2, 2]], [[2, 2, 2, 2]])[0, 0] == 0.0  # empty union, not NaN


def test_perfect_detections_give_ap_one():
    truths = [[gt([0, 0, 10, 20]), gt([30, 0, 40, 20])], [gt([5, 5, 25, 45])]]
    detections = [[det([0, 0, 10, 20], 0.9), det([30, 0, 40, 20], 0.4)],
                  [det([5, 5, 25, 45], 0.7)]]
    row = person_ap(detections, truths)
    assert row['ap'] == 1.0
    assert (row['precision'], row['recall']) == (1.0, 1.0)
    assert (row['true_positives'], row['false_positives'], row['num_ground_truth']) == (3, 0, 3)


def test_false_positive_at_top_score():
    truth = [[gt([0, 0, 10, 10])]]
    # FP first: precision 1/2 at recall 1 -> AP 0.5.
    row = person_ap([[det([50, 50, 60, 60], 0.9), det([0, 0, 10, 10], 0.8)]], truth)
    assert row['ap'] == pytest.approx(0.5)
    # Two objects: P = 0, 1/2, 2/3 at R = 0, 1/2, 1; envelope 2/3 everywhere -> AP 2/3.
    truths = [[gt([0, 0, 10, 10]), gt([20, 0, 30, 10])]]
    row = person_ap([[det([50, 50, 60, 60], 0.9), det([0, 0, 10, 10], 0.8),
                      det([20, 0, 30, 10], 0.7)]], truths)
    assert row['ap'] == pytest.approx(2 / 3)
    assert row['precision'] == pytest.approx(2 / 3)
    # The same FP at the bottom does not cost AP (all-point envelope), only precision.
    row = person_ap([[det([0, 0, 10, 10], 0.8), det([20, 0, 30, 10], 0.7),
                      det([50, 50, 60, 60], 0.1)]], truths)
    assert row['ap'] == 1.0 and row['precision'] == pytest.approx(2 / 3)


def test_missed_box_halves_ap():
    truths = [[gt([0, 0, 10, 10]), gt([20, 0, 30, 10])]]
    row = person_ap([[det([0, 0, 10, 10], 0.8)]], truths)
    assert row['ap'] == pytest.approx(0.5)
    assert (row['precision'], row['recall']) == (1.0, 0.5)
    assert person_ap([[]], truths)['ap'] == 0.0


def test_iou_threshold_edge_is_inclusive():
    truth = [[gt([0, 0, 10, 10])]]
    assert person_ap([[det([0, 0, 10, 5], 0.9)]], truth)['ap'] == 1.0  # IoU exactly 0.5
    assert person_ap([[det([0, 0, 10, 4.99], 0.9)]], truth)['ap'] == 0.0
    assert person_ap([[det([0, 0, 10, 5], 0.9)]], truth, iou_threshold=0.6)['ap'] == 0.0


def test_duplicate_detection_is_a_false_positive():
    row = person_ap([[det([0, 0, 10, 10], 0.9), det([0, 0, 10, 10.5], 0.8)]],
                    [[gt([0, 0, 10, 10])]])
    assert (row['true_positives'], row['false_positives']) == (1, 1)
    assert row['ap'] == 1.0 and row['precision'] == 0.5


def test_greedy_matching_takes_best_iou_in_score_order():
    truths = [[gt([0, 0, 10, 10]), gt([4, 0, 14, 10])]]
    # The top detection overlaps A (0.54) and B (0.82): it takes B. The second one only
    # overlaps B enough, which is taken, so it is a false positive and A stays missed.
    scores, hits, positives = match_frame(
        [det([5, 0, 15, 10], 0.8), det([3, 0, 13, 10], 0.9)], truths[0], 'person')
    np.testing.assert_array_equal(scores, [0.9, 0.8])
    np.testing.assert_array_equal(hits, [True, False])
    assert positives == 2
    assert person_ap([[det([5, 0, 15, 10], 0.8), det([3, 0, 13, 10], 0.9)]],
                     truths)['ap'] == pytest.approx(0.5)


def test_ignore_boxes_count_neither_way():
    truths = [[gt([0, 0, 10, 10]), gt([100, 0, 200, 100], ignore=True)]]
    # Detections inside a crowd region (IoU 0.32, intersection over own area 1.0).
    detections = [[det([120, 10, 160, 90], 0.95), det([130, 10, 170, 90], 0.93),
                   det([0, 0, 10, 10], 0.9)]]
    row = person_ap(detections, truths)
    assert row['ap'] == 1.0
    assert (row['num_ground_truth'], row['true_positives'], row['false_positives']) == (1, 1, 0)
    # Mostly outside it (intersection over own area 0.4): a false positive.
    row = person_ap([[det([180, 10, 230, 90], 0.95), det([0, 0, 10, 10], 0.9)]], truths)
    assert (row['true_positives'], row['false_positives']) == (1, 1)
    # A real object (IoU 0.83) is matched before an ignore region around it (1.0).
    truths = [[gt([0, 0, 100, 100], ignore=True), gt([0, 0, 10, 12])]]
    assert person_ap([[det([0, 0, 10, 10], 0.9)]], truths)['true_positives'] == 1


def test_classes_are_scored_separately():
    truths = [[gt([0, 0, 10, 10], 'person'), gt([20, 0, 40, 10], 'vehicle')]]
    detections = [[det([0, 0, 10, 10], 0.9, 'vehicle'), det([20, 0, 40, 10], 0.8, 'vehicle')]]
    result = score_frames(detections, truths)
    assert result['classes']['person']['ap'] == 0.0
    assert result['classes']['vehicle']['ap'] == pytest.approx(0.5)  # FP on the person first
    assert result['mean_ap'] == pytest.approx(0.25)


def test_pooled_ap_differs_from_per_frame_ap():
    truths = [[gt([0, 0, 10, 10])], [gt([0, 0, 10, 10])]]
    detections = [[det([0, 0, 10, 10], 0.6)], [det([50, 50, 60, 60], 0.9)]]
    result = score_frames(detections, truths, classes=('person',))
    # Pooled ranking: FP (0.9), TP (0.6) of 2 objects -> P 1/2 at R 1/2 -> AP 0.25.
    assert result['classes']['person']['ap'] == pytest.approx(0.25)
    assert [frame['person']['ap'] for frame in result['frames']] == [1.0, 0.0]
    assert [frame['person']['num_ground_truth'] for frame in result['frames']] == [1, 1]


def test_class_without_ground_truth_has_no_ap():
    result = score_frames([[det([0, 0, 10, 10], 0.9)]], [[gt([0, 0, 10, 10])]])
    assert result['classes']['vehicle']['ap'] is None
    assert result['classes']['vehicle']['num_ground_truth'] == 0
    assert result['mean_ap'] == 1.0
    assert result['frames'][0]['vehicle']['ap'] is None


def test_average_precision_degenerate_inputs():
    assert math.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0)[0])
    ap, precision, recall = average_precision(np.zeros(0), np.zeros(0, bool), 3)
    assert (ap, recall) == (0.0, 0.0) and math.isnan(precision)
    ap, precision, recall = average_precision(np.array([0.5]), np.array([False]), 0)
    assert math.isnan(ap) and precision == 0.0 and math.isnan(recall)
    ap, precision, recall = average_precision(np.array([0.2, 0.9]), np.array([True, False]), 1)
    assert (ap, precision, recall) == (0.5, 0.5, 1.0)  # sorted by score before integrating


def test_unlabelled_frames_give_counts_and_confidence():
    detections = [[det([0, 0, 1, 1], 0.8), det([0, 0, 1, 1], 0.4),
                   det([0, 0, 1, 1], 0.5, 'vehicle')], [], [det([0, 0, 1, 1], 0.9)]]
    result = score_frames(detections)
    assert result['labelled'] is False and result['mean_ap'] is None
    person = result['classes']['person']
    assert person['num_detections'] == 3 and person['ap'] is None
    assert person['mean_confidence'] == pytest.approx(0.7)
    assert person['detections_per_frame'] == pytest.approx(1.0)
    assert [f['person']['count'] for f in result['frames']] == [2, 0, 1]
    assert result['frames'][0]['person']['mean_confidence'] == pytest.approx(0.6)
    assert result['frames'][1]['person']['mean_confidence'] is None
    assert result['frames'][0]['vehicle'] == {'count': 1, 'mean_confidence': 0.5, 'ap': None,
                                              'num_ground_truth': None}


def test_score_variants_table():
    truths = [[gt([0, 0, 10, 10])], [gt([20, 20, 40, 60], 'vehicle')]]
    variants = {
        'fused': [[det([0, 0, 10, 10], 0.9)], [det([20, 20, 40, 60], 0.8, 'vehicle')]],
        'ir': [[det([0, 0, 10, 10], 0.7)], []],
        'visible': [[], [det([0, 0, 5, 5], 0.6, 'vehicle')]],
    }
    table = score_variants(variants, truths)
    assert table['num_frames'] == 2 and table['labelled'] and table['iou_threshold'] == 0.5
    assert 'VOC' in table['interpolation']
    aps = {name: (v['classes']['person']['ap'], v['classes']['vehicle']['ap'], v['mean_ap'])
           for name, v in table['variants'].items()}
    assert aps == {'fused': (1.0, 1.0, 1.0), 'ir': (1.0, 0.0, 0.5), 'visible': (0.0, 0.0, 0.0)}
    json.dumps(table, allow_nan=False)  # JSON-ready: no NaN
    text = format_table(table)
    assert '| ir | 1.000 | 0.000 | 0.500 |' in text
    unlabelled = format_table(score_variants(variants))
    assert '| fused | 0.500 | 0.500 | 0.900 | 0.800 |' in unlabelled


def test_scoring_rejects_inconsistent_input():
    with pytest.raises(ConfigError, match='same frames'):
        score_variants({'fused': [[], []], 'ir': [[]]})
    with pytest.raises(ConfigError, match='ground_truth has 1 frames'):
        score_frames([[], []], [[]])
    with pytest.raises(ConfigError, match='iou_threshold'):
        score_frames([[]], iou_threshold=0.0)
    with pytest.raises(ConfigError, match='empty'):
        score_variants({})
    with pytest.raises(ConfigError, match=r'variants\[.ir.\]\[0\]'):
        score_variants({'ir': ['person']})


def test_label_normalisation():
    assert [normalise_label(n) for n in ('Person', ' car ', 'Truck', 'motorcycle', 'bicycle',
                                         'dog', 'People')] == \
        ['person', 'vehicle', 'vehicle', 'vehicle', 'vehicle', 'dog', 'person']
    assert normalise_label('Car', {'car': 'auto'}) == 'auto'
    assert normalise_label('truck', {'car': 'auto'}) == 'truck'


# --- ground-truth files ---------------------------------------------------------------------

def write_coco(path, annotations, images=None):
    data = {'images': images or [{'id': 1, 'file_name': 'seq/0001.png'},
                                 {'id': 2, 'file_name': 'seq/0002.png'}],
            'categories': [{'id': 1, 'name': 'person'}, {'id': 3, 'name': 'car'},
                           {'id': 18, 'name': 'dog'}],
            'annotations': annotations}
    path.write_text(json.dumps(data))
    return path


def test_coco_labels(tmp_path):
    path = write_coco(tmp_path / 'labels.json', [
        {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 20, 30, 40]},
        {'id': 2, 'image_id': 1, 'category_id': 3, 'bbox': [0.5, 1.5, 2, 3], 'iscrowd': 0},
        {'id': 3, 'image_id': 1, 'category_id': 18, 'bbox': [1, 1, 1, 1]},
        {'id': 4, 'image_id': 1, 'category_id': 1, 'bbox': [50, 50, 100, 10], 'iscrowd': 1},
    ])
    labels = load_coco_labels(path)
    assert labels['seq/0002.png'] == []
    assert labels['seq/0001.png'] == [
        gt([10, 20, 40, 60], 'person'), gt([0.5, 1.5, 2.5, 4.5], 'vehicle'),
        gt([1, 1, 2, 2], 'dog'), gt([50, 50, 150, 60], 'person', ignore=True)]
    assert load_coco_labels(path, {'dog': 'animal'})['seq/0001.png'][2].label == 'animal'
    # Matching by file name: exact, then by base name; unknown names are errors.
    ordered = ground_truth_for_images(labels, ['seq/0002.png', '/data/run/0001.png'])
    assert ordered == [labels['seq/0002.png'], labels['seq/0001.png']]
    with pytest.raises(ConfigError, match='0003.png'):
        ground_truth_for_images(labels, ['0003.png'])


def test_coco_label_errors(tmp_path):
    bad_category = write_coco(tmp_path / 'a.json', [
        {'image_id': 1, 'category_id': 7, 'bbox': [0, 0, 1, 1]}])
    with pytest.raises(ConfigError, match='unknown category_id 7'):
        load_coco_labels(bad_category)
    bad_image = write_coco(tmp_path / 'b.json', [
        {'image_id': 9, 'category_id': 1, 'bbox': [0, 0, 1, 1]}])
    with pytest.raises(ConfigError, match='unknown image_id 9'):
        load_coco_labels(bad_image)
    negative = write_coco(tmp_path / 'c.json', [
        {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, -1, 1]}])
    with pytest.raises(ConfigError, match=r'annotations\[0\].*w, h >= 0'):
        load_coco_labels(negative)
    twice = write_coco(tmp_path / 'd.json', [], images=[{'id': 1, 'file_name': 'x.png'},
                                                        {'id': 2, 'file_name': 'x.png'}])
    with pytest.raises(ConfigError, match='listed twice'):
        load_coco_labels(twice)
    (tmp_path / 'e.json').write_text('{"images": []}')
    with pytest.raises(ConfigError, match='"annotations"'):
        load_coco_labels(tmp_path / 'e.json')
    (tmp_path / 'f.json').write_text('{not json')
    with pytest.raises(ConfigError, match='f.json'):
        load_coco_labels(tmp_path / 'f.json')
    with pytest.raises(ConfigError, match='cannot read'):
        load_coco_labels(tmp_path / 'missing.json')


def test_yolo_labels(tmp_path):
    labels_dir = tmp_path / 'labels'
    labels_dir.mkdir()
    (labels_dir / '0001.txt').write_text('0 0.5 0.5 0.2 0.4\n\n2 0.1 0.2 0.1 0.1\n1 0 0 0 0\n')
    (tmp_path / 'classes.txt').write_text('person\nbus\ndog\n\n')
    (tmp_path / 'data.yaml').write_text('path: x\nnames:\n  0: person\n  1: bus\n  2: dog\n')
    sizes = {'0001.png': (100, 200), '0002.png': (100, 200)}
    for names in (['person', 'bus', 'dog'], tmp_path / 'classes.txt', tmp_path / 'data.yaml'):
        labels = load_yolo_labels(labels_dir, sizes, names)
        assert labels['0002.png'] == []  # no label file: a background image
        boxes = labels['0001.png']
        assert [b.label for b in boxes] == ['person', 'dog', 'vehicle']
        np.testing.assert_allclose([b.box_xyxy for b in boxes],
                                   [[80, 30, 120, 70], [10, 15, 30, 25], [0, 0, 0, 0]])
    assert read_class_names(tmp_path / 'data.yaml') == ['person', 'bus', 'dog']


def test_yolo_label_errors(tmp_path):
    path = tmp_path / 'x.txt'
    for content, message in (('0 0.5 0.5 0.2\n', 'x.txt:1.*class cx cy w h'),
                             ('0 0.5 0.5 0.2 0.2 0.9\n', 'class cx cy w h'),
                             ('3 0.5 0.5 0.2 0.2\n', 'class 3 outside'),
                             ('0 0.5 0.5 20 40\n', 'normalised'),
                             ('a 0.5 0.5 0.2 0.2\n', 'not numbers')):
        path.write_text(content)
        with pytest.raises(ConfigError, match=message):
            read_yolo_label_file(path, 100, 200, ['person', 'car'])
    with pytest.raises(ConfigError, match='not a directory'):
        load_yolo_labels(tmp_path / 'nope', {}, ['person'])
    (tmp_path / 'bad.yaml').write_text('names: 3\n')
    with pytest.raises(ConfigError, match='no "names" list'):
        read_class_names(tmp_path / 'bad.yaml')


# --- HOG people detector --------------------------------------------------------------------

# Hand label of the one person in TNO pair 19 (visible in the infrared image only): the
# bounding box of the hot silhouette (pixels > 180) at columns 260..273, rows 124..165.
TNO19_PERSON = (260.0, 124.0, 274.0, 166.0)


def test_hog_finds_the_person_in_tno_19_infrared(test_data):
    grey = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_GRAYSCALE)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    detector = HogPeopleDetector(win_stride=(8, 8), min_image_height=512)
    detections = detector.detect(image)
    assert detections and all(d.label == 'person' for d in detections)
    best = detections[0]
    assert best.score == max(d.score for d in detections) > 0.0
    assert box_iou([best.box_xyxy], [TNO19_PERSON])[0, 0] >= 0.5
    result = score_frames([detections], [[gt(TNO19_PERSON)]], classes=('person',))
    assert result['classes']['person']['ap'] == 1.0
    # Without the upscale the 42-pixel-tall person is below the 64 x 128 window's reach.
    assert HogPeopleDetector(min_image_height=0).detect(image) == []
    # Untrimmed boxes are the full window: the trimmed box is its central 50 % x 75 %.
    full = HogPeopleDetector(win_stride=(8, 8), min_image_height=512,
                             trim_window_margin=False).detect(image)[0]
    assert full.score == best.score
    x0, y0, x1, y1 = full.box_xyxy
    np.testing.assert_allclose(best.box_xyxy, [x0 + 0.25 * (x1 - x0), y0 + 0.125 * (y1 - y0),
                                               x1 - 0.25 * (x1 - x0), y1 - 0.125 * (y1 - y0)])


def test_hog_scores_infrared_above_visible_on_tno(tno_pair_paths):
    # The evaluator's workflow on the three shipped pairs: only 19 has a person, and it is
    # hidden in the visible image (TNO's camouflage scene); 07 and 10 have nobody.
    truths = {'07': [], '10': [], '19': [gt(TNO19_PERSON)]}
    detector = HogPeopleDetector()
    variants = {'ir': [], 'visible': []}
    for ir_path, vi_path in tno_pair_paths:
        for name, path in (('ir', ir_path), ('visible', vi_path)):
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            variants[name].append(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    stems = [ir_path.stem for ir_path, _ in tno_pair_paths]
    assert stems == ['07', '10', '19']
    detections = {name: run_detector(detector, images) for name, images in variants.items()}
    table = score_variants(detections, [truths[stem] for stem in stems], classes=('person',))
    person = {name: v['classes']['person'] for name, v in table['variants'].items()}
    assert person['ir']['ap'] == 1.0 and person['ir']['false_positives'] == 0
    assert person['visible']['ap'] == 0.0 and person['visible']['true_positives'] == 0


def test_hog_settings_and_input_checks():
    detector = HogPeopleDetector(min_image_height=512)
    assert detector.upscale_factor(256) == 2.0 and detector.upscale_factor(600) == 1.0
    assert 'hog_people' in detector.name
    assert detector.detect(np.zeros((200, 100, 3), np.uint8)) == []
    assert run_detector(detector, [np.zeros((130, 70, 3), np.uint8)] * 2) == [[], []]
    # Narrower or lower than the 64 x 128 window even after the upscale: nothing to find.
    assert detector.detect(np.full((600, 30, 3), 128, np.uint8)) == []
    assert HogPeopleDetector(min_image_height=0).detect(np.zeros((127, 640, 3), np.uint8)) == []
    assert HogPeopleDetector(min_image_height=0).detect(np.zeros((128, 64, 3), np.uint8)) == []
    for bad in (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32),
                np.zeros((64, 64, 4), np.uint8), np.zeros((0, 64, 3), np.uint8), [[0]]):
        with pytest.raises(ImageEncodingError):
            detector.detect(bad)
    for kwargs, name in (({'scale': 1.0}, 'scale'), ({'win_stride': (8,)}, 'win_stride'),
                         ({'padding': (-1, 0)}, 'padding'),
                         ({'nms_iou_threshold': 0}, 'nms_iou_threshold'),
                         ({'min_image_height': -1}, 'min_image_height'),
                         ({'group_threshold': -2}, 'group_threshold'),
                         ({'scale': 'big'}, 'scale'), ({'hit_threshold': math.nan}, 'hit')):
        with pytest.raises(ConfigError, match=name):
            HogPeopleDetector(**kwargs)


# --- transformers detectors -----------------------------------------------------------------

ID2LABEL = {0: 'person', 1: 'car', 2: 'dog'}
# A fixed box (cx, cy, w, h) that the doctored DETR below always predicts.
FIXED_BOX = (0.5, 0.25, 0.2, 0.3)
# Every family is saved with the image processor its hub checkpoints name.
FAMILIES = ('detr', 'conditional_detr', 'deformable_detr', 'dab-detr', 'yolos', 'rt_detr',
            'rt_detr_v2', 'd_fine')
# Detections at threshold 0 of a 90 x 160 frame: one per query (softmax families), all
# (query, class) pairs up to the processor's top_k 100 (Conditional / Deformable / DAB-DETR),
# or one per query after a top-k over the pairs (RT-DETR-style processors).
EXPECTED_COUNTS = {'detr': 5, 'conditional_detr': 15, 'deformable_detr': 15, 'dab-detr': 15,
                   'yolos': 4, 'rt_detr': 6, 'rt_detr_v2': 6, 'd_fine': 6}


def logit(values):
    values = np.asarray(values, np.float64)
    return np.log(values / (1.0 - values))


def fix_head(last_layer, bias):
    """Zero the head's last layer weights so its output is ``bias`` for every query."""
    import torch

    with torch.no_grad():
        last_layer.weight.zero_()
        last_layer.bias.copy_(torch.as_tensor(bias, dtype=last_layer.bias.dtype))


def tiny_detection_models(transformers):
    """{family: (model, image processor)}: random tiny models with their own processors."""
    common = {'id2label': ID2LABEL, 'label2id': {v: k for k, v in ID2LABEL.items()}}

    def resnet(stages=2):
        return transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 32][:stages], depths=[1] * stages,
            layer_type='basic', out_features=[f'stage{i}' for i in range(1, stages + 1)][-3:])

    detr_sizes = {'d_model': 16, 'encoder_layers': 1, 'decoder_layers': 1,
                  'encoder_attention_heads': 2, 'decoder_attention_heads': 2,
                  'encoder_ffn_dim': 16, 'decoder_ffn_dim': 16, 'num_queries': 5,
                  'use_pretrained_backbone': False}
    # Shortest edge 64, longest 96: a 90 x 160 frame becomes 54 x 96 (not a square).
    detr_size = {'size': {'shortest_edge': 64, 'longest_edge': 96}}
    models = {
        'detr': (transformers.DetrForObjectDetection(transformers.DetrConfig(
            use_timm_backbone=False, backbone_config=resnet(), **detr_sizes, **common)),
            transformers.DetrImageProcessor(**detr_size)),
        'conditional_detr': (transformers.ConditionalDetrForObjectDetection(
            transformers.ConditionalDetrConfig(
                use_timm_backbone=False, backbone_config=resnet(), **detr_sizes, **common)),
            transformers.ConditionalDetrImageProcessor(**detr_size)),
        # GroupNorm(32, d_model) needs d_model 32; one decoder layer breaks weight tying.
        'deformable_detr': (transformers.DeformableDetrForObjectDetection(
            transformers.DeformableDetrConfig(
                use_timm_backbone=False, backbone_config=resnet(3), num_feature_levels=3,
                encoder_n_points=2, decoder_n_points=2,
                **dict(detr_sizes, d_model=32, decoder_layers=2), **common)),
            transformers.DeformableDetrImageProcessor(**detr_size)),
        'dab-detr': (transformers.DabDetrForObjectDetection(transformers.DabDetrConfig(
            backbone_config=resnet(), hidden_size=16, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
            decoder_ffn_dim=16, num_queries=5, **common)),
            transformers.ConditionalDetrImageProcessor(**detr_size)),
        'yolos': (transformers.YolosForObjectDetection(transformers.YolosConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            image_size=[64, 96], patch_size=16, num_detection_tokens=4, **common)),
            transformers.YolosImageProcessor(**detr_size)),
    }
    rt_sizes = {'encoder_in_channels': [16, 32, 64], 'encoder_hidden_dim': 16,
                'encoder_ffn_dim': 16, 'encoder_attention_heads': 2, 'encoder_layers': 1,
                'd_model': 16, 'decoder_in_channels': [16, 16, 16], 'decoder_ffn_dim': 16,
                'decoder_attention_heads': 2, 'decoder_layers': 2, 'num_queries': 6}
    for family, config_class in (('rt_detr', transformers.RTDetrConfig),
                                 ('rt_detr_v2', transformers.RTDetrV2Config)):
        backbone = transformers.RTDetrResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
            layer_type='basic', out_features=['stage2', 'stage3', 'stage4'])
        models[family] = (
            transformers.AutoModelForObjectDetection.from_config(config_class(
                backbone_config=backbone, use_pretrained_backbone=False, **rt_sizes,
                **common)),
            # RT-DETR's processor: fixed square size, no normalisation.
            transformers.RTDetrImageProcessor(size={'height': 64, 'width': 64}))
    hgnet = transformers.HGNetV2Config(
        stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 32, 64],
        stage_mid_channels=[8, 8, 16, 16], stage_out_channels=[16, 32, 64, 128],
        stage_num_blocks=[1] * 4, stage_numb_of_layers=[1] * 4, hidden_sizes=[16, 32, 64, 128],
        depths=[1] * 4, out_features=['stage2', 'stage3', 'stage4'])
    models['d_fine'] = (
        transformers.DFineForObjectDetection(transformers.DFineConfig(
            backbone_config=hgnet, **dict(rt_sizes, encoder_in_channels=[32, 64, 128]),
            decoder_n_points=2, num_denoising=0, lqe_hidden_dim=8, **common)),
        transformers.RTDetrImageProcessor(size={'height': 64, 'width': 64}))
    return models


@pytest.fixture(scope='module')
def model_dirs(tmp_path_factory):
    """Tiny random detectors of every family, saved with save_pretrained + their processor."""
    transformers = pytest.importorskip('transformers')
    pytest.importorskip('PIL')
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp('detectors')
    dirs = {}
    for family, (model, processor) in tiny_detection_models(transformers).items():
        if family == 'conditional_detr':
            # Spread the class scores: the initial head gives near-equal (even tied) ones.
            with torch.no_grad():
                model.class_labels_classifier.weight.normal_(std=1.0)
        dirs[family] = root / family
        model.save_pretrained(dirs[family])
        processor.save_pretrained(dirs[family])
    # A DETR whose head always says 'car' (logit 4 against 0 for the others and no-object)
    # at FIXED_BOX: its detections are known without running transformers' post-processing.
    fixed, processor = tiny_detection_models(transformers)['detr']
    fix_head(fixed.class_labels_classifier, [0.0, 4.0, 0.0, 0.0])
    fix_head(fixed.bbox_predictor.layers[-1], logit(FIXED_BOX))
    dirs['fixed_detr'] = root / 'fixed_detr'
    fixed.save_pretrained(dirs['fixed_detr'])
    processor.save_pretrained(dirs['fixed_detr'])
    return dirs


def frame_bgr(height=90, width=160):
    """Noise with a saturated blue left half and a dark red right half (in BGR order)."""
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, :width // 2, 0] = 255
    image[:, width // 2:, 2] = 20
    return image


def direct_detections(model_dir, image_rgb, threshold):
    """transformers' own path on one RGB image: processor, model, post_process, best first."""
    import torch
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(model_dir,
                                                                local_files_only=True)
    model = transformers.AutoModelForObjectDetection.from_pretrained(
        model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        outputs = model(**processor(images=image_rgb, return_tensors='pt'))
    result = processor.post_process_object_detection(
        outputs, threshold=threshold, target_sizes=[image_rgb.shape[:2]])[0]
    order = np.argsort(-result['scores'].numpy(), kind='stable')
    height, width = image_rgb.shape[:2]
    boxes = result['boxes'].numpy()[order].astype(np.float64)
    boxes = np.clip(boxes, 0.0, [width, height, width, height])
    names = [model.config.id2label[int(i)] for i in result['labels'].numpy()[order]]
    return result['scores'].numpy()[order].astype(np.float64), names, boxes


def unpack(detections):
    return (np.array([d.score for d in detections]), [d.label for d in detections],
            np.array([d.box_xyxy for d in detections]).reshape(-1, 4))


@pytest.mark.parametrize('family', FAMILIES)
def test_detector_matches_transformers_pipeline(model_dirs, family):
    detector = TransformersDetector(model_dirs[family], threshold=0.0)
    assert detector.model_type == family and f'transformers:{family}:' in detector.name
    image = frame_bgr()
    scores, labels, boxes = unpack(detector.detect(image))
    assert len(scores) == EXPECTED_COUNTS[family]
    assert np.all(np.diff(scores) <= 0) and np.all((scores >= 0) & (scores <= 1))
    expected_scores, names, expected_boxes = direct_detections(
        model_dirs[family], cv2.cvtColor(image, cv2.COLOR_BGR2RGB), threshold=0.0)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(boxes, expected_boxes, rtol=1e-5, atol=1e-4)
    assert labels == [normalise_label(name) for name in names]
    assert set(labels) <= {'person', 'vehicle', 'dog'}
    # Boxes are in the 90 x 160 input's pixels, not the processor's resized / padded tensor.
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 160) and \
        np.all(boxes[:, [1, 3]] <= 90)
    assert boxes[:, 2].max() > 96 or boxes[:, 3].max() > 64  # beyond the model input size
    # Feeding the BGR frame as if it were RGB gives other results: the conversion matters.
    swapped_scores, _, swapped_boxes = direct_detections(model_dirs[family], image, 0.0)
    assert not (np.allclose(swapped_scores, scores, rtol=1e-5, atol=1e-7)
                and np.allclose(swapped_boxes, boxes, rtol=1e-5, atol=1e-4))


def test_fixed_head_gives_known_pixel_boxes(model_dirs):
    detector = TransformersDetector(model_dirs['fixed_detr'], threshold=0.5)
    for height, width in ((100, 200), (90, 160), (300, 120)):
        detections = detector.detect(frame_bgr(height, width))
        assert len(detections) == 5  # one per query, no NMS
        cx, cy, w, h = FIXED_BOX
        expected = [(cx - w / 2) * width, (cy - h / 2) * height,
                    (cx + w / 2) * width, (cy + h / 2) * height]
        for detection in detections:
            assert detection.label == 'vehicle'  # 'car' in id2label
            # Softmax over 3 classes + no-object, the no-object class dropped.
            assert detection.score == pytest.approx(math.exp(4) / (math.exp(4) + 3), rel=1e-5)
            np.testing.assert_allclose(detection.box_xyxy, expected, rtol=1e-5)
    # The threshold is on that probability (0.948).
    assert TransformersDetector(model_dirs['fixed_detr'],
                                threshold=0.95).detect(frame_bgr()) == []
    assert len(TransformersDetector(model_dirs['fixed_detr'], threshold=0.94,
                                    top_k=2).detect(frame_bgr())) == 2


@pytest.mark.parametrize('family', ['conditional_detr', 'rt_detr'])
def test_threshold_and_top_k_filter(model_dirs, family):
    every = TransformersDetector(model_dirs[family], threshold=0.0).detect(frame_bgr())
    scores = [d.score for d in every]
    assert len(set(scores)) == len(scores) > 4
    # top_k keeps the best ones (passed on as the processor's top_k for Conditional DETR,
    # applied after post-processing for RT-DETR, whose processor has none).
    assert TransformersDetector(model_dirs[family], threshold=0.0,
                                top_k=4).detect(frame_bgr()) == every[:4]
    cut = float(np.median(scores))
    above = TransformersDetector(model_dirs[family], threshold=cut).detect(frame_bgr())
    assert above == [d for d in every if d.score > cut] and 0 < len(above) < len(every)
    assert TransformersDetector(model_dirs[family], threshold=cut,
                                top_k=2).detect(frame_bgr()) == above[:2]


def test_labels_come_from_id2label_through_the_label_map(model_dirs):
    detector = TransformersDetector(model_dirs['detr'])
    assert detector.id2label == ID2LABEL
    assert [detector.label_name(i) for i in (0, 1, 2)] == ['person', 'vehicle', 'dog']
    assert detector.label_name(7) == '7'  # an id the config does not name
    mapped = TransformersDetector(model_dirs['detr'], threshold=0.0,
                                  label_map={'DOG': 'animal', 'person': 'pedestrian'})
    assert [mapped.label_name(i) for i in (0, 1, 2)] == ['pedestrian', 'car', 'animal']
    plain = TransformersDetector(model_dirs['detr'], threshold=0.0).detect(frame_bgr())
    renamed = mapped.detect(frame_bgr())
    rename = {'person': 'pedestrian', 'vehicle': 'car', 'dog': 'animal'}
    assert [d.label for d in renamed] == [rename[d.label] for d in plain]


def test_transformers_detector_errors(tmp_path, model_dirs):
    import transformers

    with pytest.raises(ConfigError, match='detector.model_dir.*not a directory'):
        TransformersDetector(tmp_path / 'missing', parameter='detector.model_dir')
    with pytest.raises(ConfigError, match='detector.model_dir.*config.json'):
        TransformersDetector(tmp_path, parameter='detector.model_dir')
    # An image classifier's config: not an object detector.
    transformers.ResNetConfig(hidden_sizes=[8], depths=[1]).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="--detector.*'resnet' model.*not a transformers "
                                          'object detector.*rt_detr'):
        TransformersDetector(tmp_path, parameter='--detector')
    # ... also when it names remote detector code, which is only run when trusted.
    config = json.loads((tmp_path / 'config.json').read_text())
    config['auto_map'] = {'AutoModelForObjectDetection': 'modeling_x.XForObjectDetection'}
    (tmp_path / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ConfigError, match='not a transformers object detector.*'
                                          'trust_remote_code=True'):
        TransformersDetector(tmp_path)
    (tmp_path / 'config.json').write_text('{not json')
    with pytest.raises(ConfigError, match='--detector: cannot read the model config'):
        TransformersDetector(tmp_path, parameter='--detector')
    detr_config = transformers.DetrConfig(use_timm_backbone=True, backbone='resnet50')
    if importlib.util.find_spec('timm') is None:
        detr_config.save_pretrained(tmp_path)
        with pytest.raises(ConfigError, match='timm'):
            TransformersDetector(tmp_path)
    # A detector config without a processor, then with a classifier's processor.
    (tmp_path / 'config.json').write_bytes((model_dirs['detr'] / 'config.json').read_bytes())
    with pytest.raises(ConfigError, match='eval.detector: cannot build the image processor'):
        TransformersDetector(tmp_path, parameter='eval.detector')
    transformers.ViTImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match='ViTImageProcessor.*post_process_object_detection'):
        TransformersDetector(tmp_path, parameter='eval.detector')
    # Config and processor but no weights.
    transformers.DetrImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match='eval.detector: cannot load the model'):
        TransformersDetector(tmp_path, parameter='eval.detector')
    for kwargs, name in (({'threshold': 1.0}, 'threshold'), ({'threshold': 'x'}, 'threshold'),
                         ({'top_k': 0}, 'top_k'), ({'device': 'no-such-device'}, 'device')):
        with pytest.raises(ConfigError, match=name):
            TransformersDetector(model_dirs['detr'], **kwargs)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' is not usable"):
            TransformersDetector(model_dirs['detr'], device='cuda')
    detector = TransformersDetector(model_dirs['detr'])
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ImageEncodingError):
            detector.detect(bad)


REMOTE_CONFIG_CODE = """from transformers import DetrConfig


class RemoteDetrConfig(DetrConfig):
    model_type = 'remote_detr'
"""
REMOTE_MODEL_CODE = """from transformers import DetrForObjectDetection

from .configuration_remote_detr import RemoteDetrConfig


class RemoteDetrForObjectDetection(DetrForObjectDetection):
    config_class = RemoteDetrConfig
"""


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Send transformers' copies of remote code to tmp_path, not ~/.cache/huggingface."""
    import sys

    import transformers.dynamic_module_utils as dynamic

    cache = tmp_path / 'modules'
    monkeypatch.setattr(dynamic, 'HF_MODULES_CACHE', str(cache))
    monkeypatch.syspath_prepend(str(cache))
    before = set(sys.modules)
    yield cache
    for name in set(sys.modules) - before:
        if name.startswith('transformers_modules'):
            del sys.modules[name]


def test_remote_code_model_needs_trust_remote_code(tmp_path, model_dirs, modules_cache):
    import shutil

    directory = tmp_path / 'remote_detr'
    shutil.copytree(model_dirs['detr'], directory)
    (directory / 'configuration_remote_detr.py').write_text(REMOTE_CONFIG_CODE)
    (directory / 'modeling_remote_detr.py').write_text(REMOTE_MODEL_CODE)
    config = json.loads((directory / 'config.json').read_text())
    config.update(model_type='remote_detr', architectures=['RemoteDetrForObjectDetection'],
                  auto_map={'AutoConfig': 'configuration_remote_detr.RemoteDetrConfig',
                            'AutoModelForObjectDetection':
                                'modeling_remote_detr.RemoteDetrForObjectDetection'})
    (directory / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ConfigError, match='--detector: .*remote_detr ships its own model '
                                          'code.*trust_remote_code=True'):
        TransformersDetector(directory, parameter='--detector')
    assert not modules_cache.exists() or not any(modules_cache.rglob('*.py'))
    detector = TransformersDetector(directory, threshold=0.0, trust_remote_code=True)
    assert type(detector.model).__name__ == 'RemoteDetrForObjectDetection'
    assert detector.name == 'transformers:remote_detr:remote_detr'
    assert any(modules_cache.rglob('modeling_remote_detr.py'))
    # Same weights as the plain DETR: the same detections.
    assert detector.detect(frame_bgr()) == TransformersDetector(
        model_dirs['detr'], threshold=0.0).detect(frame_bgr())


def test_evaluator_passes_detector_settings(model_dirs):
    from tesg_ros.evaluation.detections import make_detector

    # The fixed DETR scores 'car' at e^4 / (e^4 + 3) = 0.948 for every query.
    low = make_detector(str(model_dirs['fixed_detr']), threshold=0.9, device='cpu')
    high = make_detector(str(model_dirs['fixed_detr']), threshold=0.95, device='cpu')
    assert low.detect(frame_bgr()) and not high.detect(frame_bgr())
    with pytest.raises(ConfigError, match="device 'no-such-device'"):
        make_detector(str(model_dirs['fixed_detr']), device='no-such-device')
