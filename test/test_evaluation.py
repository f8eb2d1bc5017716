# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Offline bag evaluation (tesg_ros.evaluation): numbers, bag output, determinism, failures.

Bags are written in tmp_path from the TNO pairs in test/data, shrunk to 64 x 80 pixels, and
fused with a seeded random TesgFusionNet (trained weights are not needed to check the
plumbing). Semantics are off except in the replay test, so no text encoder is loaded twice.
"""

import ast
import base64
import csv
import json
import os
from pathlib import Path
import re

import cv2
import numpy as np
import pytest

from tesg_ros import bags, detection, metrics
from tesg_ros.cli import eval as cli
from tesg_ros.engine import FusionEngine
from tesg_ros.errors import ConfigError
from tesg_ros.evaluation import (evaluate_bag, FUSED_INFO_TOPIC, FUSED_TOPIC, METHODS,
                                 REGISTERED_TOPIC, SEMANTICS_MODES)
from tesg_ros.evaluation import report
from tesg_ros.evaluation.detections import FrameLabels
from tesg_ros.evaluation.evaluate import (_FrameSampler, baseline_images, EvaluationOptions,
                                          EvaluationResult, FrameRecord, resolve_params,
                                          summarise_metrics)
from tesg_ros.evaluation.semantics import recorded_semantics_record
from tesg_ros.sensor.image_codec import image_to_numpy
from tesg_ros.sensor.pairing import stamp_to_ns

STAMP0 = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000
SIZE = (80, 64)  # width, height
THERMAL_TOPIC = '/thermal/image'
RGB_TOPIC = '/rgb/image'


def _tno_frames(tno_pair_paths, count):
    """``count`` (thermal mono16, bgr8) frames cycling over the TNO pairs, 64 x 80."""
    frames = []
    for index in range(count):
        ir_path, vi_path = tno_pair_paths[index % len(tno_pair_paths)]
        ir = cv2.resize(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), SIZE,
                        interpolation=cv2.INTER_AREA)
        vi = cv2.resize(cv2.imread(str(vi_path), cv2.IMREAD_GRAYSCALE), SIZE,
                        interpolation=cv2.INTER_AREA)
        # TNO visible images are grey; tint them so channel order matters.
        bgr = np.clip(vi[..., None] * np.array([0.8, 1.0, 1.2]), 0, 255).astype(np.uint8)
        frames.append((ir.astype(np.uint16) * 60 + 1000, bgr))
    return frames


def write_bag(path, frames, storage='mcap', thermal_offset_ns=0, thermal=True, rgb=True,
              semantics=None, padding_after=None, rgb_frame_id='rgb_optical_frame',
              rgb_k=None):
    """A bag of thermal (mono16) + RGB (bgr8) frames every 100 ms; returns the RGB stamps.

    ``padding_after``: after these frame counts write a 1.1 MB String (closes an mcap chunk).
    """
    stamps = []
    with bags.BagWriter(path, storage) as writer:
        if semantics is not None:
            writer.add_topic('/tesg/semantics', bags.STRING, 'latched')
            writer.write('/tesg/semantics', bags.string_message(semantics), STAMP0 - 1)
        for index, (ir16, bgr) in enumerate(frames):
            stamp = STAMP0 + index * PERIOD_NS
            stamps.append(stamp)
            if thermal:
                thermal_stamp = stamp + thermal_offset_ns
                writer.write(THERMAL_TOPIC, bags.image_message(
                    ir16, 'mono16', thermal_stamp, 'thermal_optical_frame'), stamp + 1000)
            if rgb_k is not None:
                writer.write('/rgb/camera_info', bags.camera_info_message(
                    SIZE[0], SIZE[1], rgb_k, stamp, rgb_frame_id, d=np.zeros(5)), stamp + 1500)
            if rgb:
                writer.write(RGB_TOPIC, bags.image_message(bgr, 'bgr8', stamp, rgb_frame_id),
                             stamp + 2000)
            if padding_after and index + 1 in padding_after:
                writer.write('/padding', bags.string_message('x' * 1_100_000), stamp + 3000)
    return stamps


@pytest.fixture(scope='module', autouse=True)
def skip_engine_warm_up():
    """The engine's 480 x 640 warm-up pass only lowers first-frame latency (the network is
    stateless in eval mode); skipping it keeps this file fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FusionEngine, 'warm_up', lambda self, height=480, width=640: None)
        yield


@pytest.fixture(scope='module')
def weights(random_weights):
    return Path(random_weights)


@pytest.fixture(scope='module')
def frames(tno_pair_paths):
    return _tno_frames(tno_pair_paths, 4)


LABELLED_BOX = [10.0, 8.0, 20.0, 40.0]  # x, y, w, h of one 'person' in frame 1
RGB_K = [70.0, 0.0, 40.0, 0.0, 70.0, 32.0, 0.0, 0.0, 1.0]


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory, frames, weights):
    """One evaluation of a 4-pair mcap bag: semantics off, registered topic, HOG detector
    with COCO labels for frame 1 only."""
    root = tmp_path_factory.mktemp('eval')
    stamps = write_bag(root / 'bag', frames, rgb_k=RGB_K)
    coco = {'images': [{'id': 7, 'file_name': f'frames/{stamps[1]}.png'}],
            'annotations': [{'id': 1, 'image_id': 7, 'category_id': 1,
                             'bbox': LABELLED_BOX}],
            'categories': [{'id': 1, 'name': 'pedestrian'}]}
    (root / 'labels.json').write_text(json.dumps(coco))
    result = evaluate_bag(root / 'bag', root / 'out', weights=str(weights), semantics='disabled',
                          write_registered=True, montage_frames=2, detector='hog',
                          labels=str(root / 'labels.json'))
    return root, stamps, result


def _read_csv(path):
    with open(path, newline='') as stream:
        return list(csv.DictReader(stream))


def _topic_messages(path, topic):
    with bags.open_bag(path) as bag:
        return [(receive_ns, msg) for _, receive_ns, msg in bag.messages(topic)]


def test_every_pair_is_fused_and_written_with_the_rgb_header(evaluated, frames):
    root, stamps, result = evaluated
    assert result.status == 'complete', result.problems
    assert result.exit_code == 0
    # Semantics off: the engine has no Semantic Information Generator at all.
    assert result.engine['semantics_generator'] is False
    assert [f.description for f in result.frames] == [None] * len(frames)
    assert [f.rgb_stamp_ns for f in result.frames] == stamps
    assert result.pairing['paired'] == result.pairing['fused'] == len(frames)
    assert result.pairing['evicted_thermal'] == result.pairing['evicted_rgb'] == 0
    assert result.pairing['rejected_thermal'] == result.pairing['rejected_rgb'] == 0
    fused = _topic_messages(result.files['bag'], FUSED_TOPIC)
    registered = _topic_messages(result.files['bag'], REGISTERED_TOPIC)
    inputs = _topic_messages(root / 'bag', RGB_TOPIC)
    assert len(fused) == len(registered) == len(inputs) == len(frames)
    for (_, out), (_, debug), (_, rgb) in zip(fused, registered, inputs):
        assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (
            rgb.header.stamp.sec, rgb.header.stamp.nanosec, rgb.header.frame_id)
        assert debug.header.frame_id == 'rgb_optical_frame'
        assert out.encoding == 'bgr8' and (out.height, out.width) == (SIZE[1], SIZE[0])
        assert debug.encoding == 'mono8'
    # Full overlap: the fused CameraInfo is the RGB one, with the RGB header.
    infos = _topic_messages(result.files['bag'], FUSED_INFO_TOPIC)
    assert len(infos) == len(frames)
    for (_, info), (_, out) in zip(infos, fused):
        assert info.header.stamp == out.header.stamp
        assert info.header.frame_id == out.header.frame_id
        assert (info.width, info.height) == SIZE
        np.testing.assert_array_equal(info.k, RGB_K)
    # The inputs are copied unchanged (headers and pixels).
    copied = _topic_messages(result.files['bag'], THERMAL_TOPIC)
    original = _topic_messages(root / 'bag', THERMAL_TOPIC)
    assert [r for r, _ in copied] == [r for r, _ in original]
    for (_, a), (_, b) in zip(copied, original):
        assert a.header.frame_id == b.header.frame_id == 'thermal_optical_frame'
        np.testing.assert_array_equal(image_to_numpy(a), image_to_numpy(b))


def test_metrics_csv_matches_a_direct_computation(evaluated):
    _, _, result = evaluated
    rows = _read_csv(result.files['metrics_csv'])
    assert [row['method'] for row in rows[:4]] == list(METHODS)
    assert len(rows) == 4 * len(result.frames)
    fused = _topic_messages(result.files['bag'], FUSED_TOPIC)
    registered = _topic_messages(result.files['bag'], REGISTERED_TOPIC)
    rgb = _topic_messages(result.bag_path, RGB_TOPIC)
    for index, ((_, out), (_, debug), (_, visible)) in enumerate(zip(fused, registered, rgb)):
        ir8 = image_to_numpy(debug)
        # Identity registration of equal-size cameras: the visible grid is the RGB image.
        visible_rgb = image_to_numpy(visible)[:, :, ::-1]
        fused_rgb = image_to_numpy(out)[:, :, ::-1]
        average = np.rint((ir8[..., None].astype(np.float64) + visible_rgb) / 2)
        expected = {
            'model': metrics.evaluate(ir8, visible_rgb, fused_rgb, convention='common'),
            'ir': metrics.evaluate(ir8, visible_rgb, ir8, convention='common'),
            'visible': metrics.evaluate(ir8, visible_rgb, visible_rgb, convention='common'),
            'average': metrics.evaluate(ir8, visible_rgb, average.astype(np.uint8),
                                        convention='common')}
        for row in rows[4 * index:4 * index + 4]:
            assert int(row['frame']) == index
            for name in metrics.METRIC_NAMES:
                got, want = float(row[name]), expected[row['method']][name]
                if np.isnan(want):
                    assert np.isnan(got), (row['method'], name)
                else:
                    assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (
                        row['method'], name)
    # The model differs from every baseline (it is not a copy of an input).
    model = rows[0]
    assert any(float(model['EN']) != float(row['EN']) for row in rows[1:4])


def test_summary_is_the_mean_and_std_of_the_frames(evaluated):
    _, _, result = evaluated
    rows = _read_csv(result.files['metrics_csv'])
    summary_rows = _read_csv(result.files['summary_csv'])
    with open(result.files['summary_json']) as stream:
        summary = json.load(stream)
    assert summary['status'] == 'complete'
    assert summary['frames'] == 4
    assert summary['pairing']['paired'] == 4
    assert set(summary['timings_ms']) >= {'normalise', 'register', 'semantics', 'network',
                                          'colour'}
    for stage in summary['timings_ms'].values():
        assert stage['p50'] <= stage['p90'] <= stage['max']
    for row in summary_rows:
        values = np.array([float(r[row['metric']]) for r in rows
                           if r['method'] == row['method']])
        values = values[np.isfinite(values)]
        if not values.size:
            assert row['mean'] == 'nan'
            continue
        assert float(row['mean']) == pytest.approx(values.mean(), rel=1e-12)
        assert float(row['std']) == pytest.approx(values.std(), rel=1e-9, abs=1e-12)
        assert int(row['count']) == values.size
        entry = summary['metrics'][row['method']][row['metric']]
        assert entry['mean'] == pytest.approx(values.mean(), rel=1e-12)
    assert {row['method'] for row in summary_rows} == set(METHODS)


def test_detection_table_matches_the_detector_on_the_written_frames(evaluated):
    _, stamps, result = evaluated
    detector = detection.HogPeopleDetector()
    fused = _topic_messages(result.files['bag'], FUSED_TOPIC)
    registered = _topic_messages(result.files['bag'], REGISTERED_TOPIC)
    rgb = _topic_messages(result.bag_path, RGB_TOPIC)
    # Only frame 1 is labelled, so only frame 1 is scored.
    ir8 = image_to_numpy(registered[1][1])
    visible = image_to_numpy(rgb[1][1])
    images = {'model': image_to_numpy(fused[1][1]),
              'ir': cv2.cvtColor(ir8, cv2.COLOR_GRAY2BGR), 'visible': visible,
              'average': np.rint((ir8[..., None].astype(np.float64) + visible) / 2
                                 ).astype(np.uint8)}
    x, y, w, h = LABELLED_BOX
    truth = [[detection.GroundTruthBox((x, y, x + w, y + h), 'person')]]
    expected = detection.score_variants(
        {method: [detector.detect(images[method])] for method in METHODS}, truth)
    for scored in expected['variants'].values():
        del scored['frames']
    assert result.detection['labelled_frames'] == 1
    assert result.detection['detector'] == detector.name
    assert result.detection['table'] == expected
    assert expected['labelled'] and expected['variants']['model']['classes']['person'][
        'num_ground_truth'] == 1
    summary = json.loads(result.files['summary_json'].read_text())
    assert summary['detection']['labelled_frames'] == 1
    assert 'AP50 person' in result.files['report_md'].read_text()


def test_html_report_is_self_contained(evaluated):
    _, _, result = evaluated
    page = result.files['report_html'].read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith('data:image/png;base64,') for s in sources)
    assert '<link' not in page and '<script' not in page
    # Two montages (montage_frames=2) and two plots, each a real PNG.
    assert len(sources) == 4
    for source in sources:
        png = base64.b64decode(source.split(',', 1)[1])
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 20
    for text in ('TeSG model', 'IR copy', 'visible copy', 'pixel average', 'Pairing',
                 'received_thermal', str(result.weights['path']), 'disabled', 'torch'):
        assert text in page
    markdown = result.files['report_md'].read_text()
    linked = re.findall(r'\]\((report_files/[^)]+)\)', markdown)
    assert len(linked) == 4
    assert all((result.out_dir / name).is_file() for name in linked)


def test_report_opens_with_its_verdict_and_names_frames_by_time(evaluated):
    root, stamps, result = evaluated
    markdown = result.files['report_md'].read_text()
    lines = [line for line in markdown.splitlines() if line]
    assert lines[1] == f'**{report.verdict(result)}**'
    assert lines[1].startswith('**Verdict over 4 scored frames: the TeSG model beats the IR '
                               'copy on ')
    page = result.files['report_html'].read_text()
    assert page.index('Verdict over 4') < page.index('Status:')
    # Times count from the bag's first message (the thermal image, 1 us before the RGB one).
    with bags.open_bag(root / 'bag') as bag:
        start = bag.start_ns
    assert result.bag_start_ns == start
    for frame, stamp in zip(result.frames, stamps):
        assert frame.time_s == pytest.approx((stamp + 2000 - start) / 1e9)
    rows = _read_csv(result.files['metrics_csv'])
    assert [float(r['time_s']) for r in rows if r['method'] == 'model'] == pytest.approx(
        [f.time_s for f in result.frames], abs=1e-6)
    # The montages are named by index and time, never by the raw stamp.
    assert 'frame 3 (0.30 s)' in markdown
    assert ' ns)' not in markdown
    summary = json.loads(result.files['summary_json'].read_text())
    assert summary['verdict'] == report.verdict(result)
    assert set(summary['verdict_counts']) == {'ir', 'visible', 'average'}


def test_detector_boxes_are_drawn_on_the_sampled_frames(evaluated):
    _, _, result = evaluated
    assert result.montage
    for index, tiles in result.montage:
        assert set(tiles['boxes']) == set(METHODS)
        assert tiles['masks'] is None  # semantics off: no mask tile
        height, width = tiles['fused'].shape[:2]
        for found in tiles['boxes'].values():
            for box in found:
                x0, y0, x1, y1 = box.box_xyxy
                assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    assert 'Boxes: hog' in result.files['report_md'].read_text()


def _constructed_result(tmp_path, rows, descriptions=None, scene_changes=()):
    """An EvaluationResult of frames with the given ``{method: {metric: value}}`` rows."""
    result = EvaluationResult(tmp_path / 'bag', tmp_path, EvaluationOptions())
    for index, row in enumerate(rows):
        result.frames.append(FrameRecord(
            index=index, rgb_stamp_ns=STAMP0 + index * PERIOD_NS, thermal_stamp_ns=STAMP0,
            pair_dt_ns=0, metrics=row, timings_ms={}, time_s=0.5 * index,
            description=None if descriptions is None else descriptions[index],
            scene_change=index in scene_changes))
    result.summary = summarise_metrics(result.frames)
    return result


def test_verdict_counts_wins_with_lower_is_better_metrics(tmp_path):
    names = metrics.METRIC_NAMES
    lower = [name for name in names if name in report.LOWER_IS_BETTER]
    assert {'Nabf', 'Blotch'} <= set(lower)
    # IR above the model everywhere: the model wins only where lower is better. Visible at 0
    # everywhere but undefined for SCD: the model wins every other higher-is-better metric.
    # The average equals the model: no win.
    row = {'model': dict.fromkeys(names, 1.0), 'ir': dict.fromkeys(names, 2.0),
           'visible': {**dict.fromkeys(names, 0.0), 'SCD': float('nan')},
           'average': dict.fromkeys(names, 1.0)}
    result = _constructed_result(tmp_path, [row, row])
    counts = report.verdict_counts(result.summary)
    assert counts == {'ir': (len(lower), len(names)),
                      'visible': (len(names) - len(lower) - 1, len(names) - 1),
                      'average': (0, len(names))}
    text = report.verdict(result)
    assert text.startswith(f'Verdict over 2 scored frames: the TeSG model beats the IR copy '
                           f'on {len(lower)} of {len(names)} metrics, the visible copy on '
                           f'{len(names) - len(lower) - 1} of {len(names) - 1} metrics and '
                           f'the pixel average on 0 of {len(names)} metrics')
    assert report.beats(1.0, 2.0, 'Nabf') is True and report.beats(1.0, 2.0, 'EN') is False
    assert report.beats(float('nan'), 2.0, 'EN') is None
    empty = EvaluationResult(tmp_path / 'bag', tmp_path, EvaluationOptions())
    assert report.verdict(empty) == 'Verdict: none, no frame was scored.'


def test_scene_notes_flag_a_description_that_spans_a_scene_change(tmp_path):
    names = metrics.METRIC_NAMES
    row = {method: dict.fromkeys(names, 1.0) for method in METHODS}
    texts = ['a', 'a', 'a', 'b', 'b']
    result = _constructed_result(tmp_path, [row] * 5, texts, scene_changes={2, 3})
    result.semantics = {'mode': 'live', 'schedule': 'every 3 pairs', 'descriptions': [
        {'first_frame': 0, 'description': 'a', 'source': 'initial'},
        {'first_frame': 3, 'description': 'b', 'source': 'describer'}]}
    notes = report.scene_notes(result)
    # Frame 3 starts a new scene and a new description: only frame 2 is fused with 'a' from
    # the earlier scene.
    assert len(notes) == 1
    assert notes[0].startswith('The description "a" (in force from frame 0) spans a scene '
                               'change at frame 2 (1.00 s)')
    assert '(every 3 pairs)' in notes[0]
    result.semantics['descriptions'] = []
    assert report.scene_notes(result) == []


def test_montage_draws_masks_in_colour_and_boxes(tmp_path):
    tiles = {'ir': np.full((40, 50), 100, np.uint8),
             'visible': np.full((40, 50, 3), 100, np.uint8)}
    tiles['fused'] = tiles['average'] = tiles['visible']
    plain = report.montage(tiles)
    masks = np.zeros((2, 40, 50), np.uint8)
    masks[0, :10, :10] = 255
    masks[1, 30:, 40:] = 255
    boxes = {m: [detection.Detection((5.0, 5.0, 20.0, 30.0), 0.9, 'person')]
             for m in METHODS}
    drawn = report.montage({**tiles, 'masks': masks, 'phrases': ['a person', 'a car'],
                            'boxes': boxes})
    # A fifth tile and a two-line legend; tiles enlarged to stay legible.
    assert drawn.shape[1] > plain.shape[1] * 5 / 4 * 0.99
    assert drawn.shape[0] > plain.shape[0]
    overlay = report.mask_overlay(tiles['visible'], masks)
    red, green = report.MASK_COLOURS[:2]
    assert tuple(overlay[0, 0]) == tuple(round((100 + c) / 2) for c in red)
    assert tuple(overlay[39, 49]) == tuple(round((100 + c) / 2) for c in green)
    assert tuple(overlay[20, 20]) == (100, 100, 100)
    boxed = report.draw_boxes(tiles['visible'], boxes['model'])
    assert tuple(boxed[20, 5]) == (255, 255, 0) and tuple(boxed[20, 12]) == (100, 100, 100)


def _imports(path):
    """Absolute module names imported anywhere in ``path`` (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def test_the_report_does_not_import_the_evaluation_run():
    package = Path(report.__file__).parent
    imported = _imports(package / 'report.py') | _imports(package / 'common.py')
    assert not {'tesg_ros.evaluation.evaluate', 'tesg_ros.cli.eval'} & imported
    # The package itself imports the run: the report may only import submodules below it.
    assert 'tesg_ros.evaluation' not in {n for n in imported if n.count('.') == 1}
    assert 'tesg_ros.evaluation.common' in _imports(package / 'evaluate.py')


def test_two_runs_give_identical_pixels_and_metrics(evaluated, tmp_path, weights):
    root, _, first = evaluated
    second = evaluate_bag(root / 'bag', tmp_path / 'again', weights=str(weights),
                          semantics='disabled', out_storage='sqlite3', copy_inputs=False)
    assert second.status == 'complete'
    with bags.open_bag(second.files['bag']) as bag:
        assert bag.storage == 'sqlite3'
        assert set(bag.topics) == {FUSED_TOPIC, FUSED_INFO_TOPIC}
    a = [image_to_numpy(m) for _, m in _topic_messages(first.files['bag'], FUSED_TOPIC)]
    b = [image_to_numpy(m) for _, m in _topic_messages(second.files['bag'], FUSED_TOPIC)]
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    rows_a = _read_csv(first.files['metrics_csv'])
    rows_b = _read_csv(second.files['metrics_csv'])
    assert rows_a == rows_b


def test_missing_topic_fails_with_a_clear_message_and_a_report(tmp_path, frames, weights,
                                                               capsys):
    write_bag(tmp_path / 'bag', frames[:2], thermal=False)
    code = cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'), '--weights',
                     str(weights), '--no-progress', '--ros-args', '-r', '__node:=x'])
    assert code == 1
    captured = capsys.readouterr()
    assert 'no thermal image topic found' in captured.err
    assert '/rgb/image (bgr8)' in captured.err
    assert 'Traceback' not in captured.err
    report = tmp_path / 'out' / 'report.html'
    assert f'report: {report}' in captured.out
    assert 'no thermal image topic found' in report.read_text()
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['status'] == 'failed' and summary['frames'] == 0


def test_unpaired_streams_say_how_far_apart_they_are(tmp_path, frames, weights):
    write_bag(tmp_path / 'bag', frames, thermal_offset_ns=1_000_000_000)
    result = evaluate_bag(tmp_path / 'bag', tmp_path / 'out', weights=str(weights),
                          semantics='disabled')
    assert result.status == 'failed' and result.exit_code == 1
    assert 'never paired' in result.error
    assert 'closest stamps are 0.700 s apart' in result.error
    assert result.pairing['received_thermal'] == result.pairing['received_rgb'] == 4
    assert result.pairing['paired'] == 0
    assert 'never paired' in result.files['report_html'].read_text()
    assert not (tmp_path / 'out' / 'metrics.csv').exists()


def test_parameter_overrides_reach_the_pairing_and_the_headers(tmp_path, frames, weights,
                                                               capsys):
    # Thermal stamped 0.3 s late: no pair with the defaults, every pair once compensated.
    write_bag(tmp_path / 'bag', frames[:3], thermal_offset_ns=300_000_000, rgb_frame_id='')
    assert cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'plain'), '--weights',
                     str(weights), '--semantics', 'disabled', '--no-progress']) == 1
    assert 'closest stamps are 0.100 s apart' in capsys.readouterr().err
    code = cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'shifted'), '--weights',
                     str(weights), '--semantics', 'disabled', '--no-progress', '--max-frames', '2',
                     '--set', 'thermal.time_offset=-0.3', '--set', 'rgb.frame_id=camera_rgb',
                     '--set', 'output.encoding=rgb8', '--no-copy-inputs'])
    assert code == 0
    summary = json.loads((tmp_path / 'shifted' / 'summary.json').read_text())
    assert summary['frames'] == 2
    assert summary['params']['thermal.time_offset'] == -0.3
    assert 'stopped after --max-frames 2 frames' in summary['notes']
    fused = _topic_messages(tmp_path / 'shifted' / 'fused_bag', FUSED_TOPIC)
    assert [m.header.frame_id for _, m in fused] == ['camera_rgb'] * 2
    assert [m.encoding for _, m in fused] == ['rgb8'] * 2
    infos = _topic_messages(tmp_path / 'shifted' / 'fused_bag', FUSED_INFO_TOPIC)
    # No RGB CameraInfo in the bag: size only, as the node publishes for an uncalibrated camera.
    assert [(i.width, i.height, i.header.frame_id) for _, i in infos] == [
        SIZE + ('camera_rgb',)] * 2
    assert not np.any(infos[0][1].k)
    assert [stamp_to_ns(m.header.stamp) for _, m in fused] == [
        STAMP0, STAMP0 + PERIOD_NS]
    # The metrics were computed on the same pixels that were written (RGB order).
    rows = [r for r in _read_csv(tmp_path / 'shifted' / 'metrics.csv') if r['method'] == 'model']
    first = image_to_numpy(fused[0][1])
    assert float(rows[0]['EN']) == pytest.approx(metrics.entropy(metrics.rgb2gray(first)))


def test_live_semantics_are_described_synchronously(tmp_path, frames, weights):
    from tesg_ros.sig import INITIAL_DESCRIPTION

    write_bag(tmp_path / 'bag', frames[:3])
    result = evaluate_bag(tmp_path / 'bag', tmp_path / 'out', weights=str(weights),
                          semantics_every=2, montage_frames=3)
    assert result.status == 'complete', result.problems
    assert result.semantics['mode'] == 'live'
    # Three different TNO scenes: the description made from frame 0 (used from frame 1) is
    # still in force at frame 2, a new scene; the report says so.
    assert [f.scene_change for f in result.frames] == [False, True, True]
    markdown = result.files['report_md'].read_text()
    assert 'spans a scene change at frame 2 (0.20 s)' in markdown
    # Sampled frames carry the masks in force and the report shows them with the description.
    assert [index for index, _ in result.montage] == [0, 1, 2]
    for _, tiles in result.montage:
        masks = tiles['masks']
        assert masks.dtype == np.uint8 and masks.shape[1:] == tiles['fused'].shape[:2]
        assert masks.any()
    assert '| semantic masks' in markdown
    assert 'frame 1 (0.10 s); description in force: "' in markdown
    descriptions = result.semantics['descriptions']
    # Frame 0 is described after it is fused (used from frame 1); frame 2 is the next one.
    assert [d['first_frame'] for d in descriptions][:2] == [0, 1]
    assert descriptions[0] == {'first_frame': 0, 'description': INITIAL_DESCRIPTION,
                               'source': 'initial'}
    assert descriptions[1]['source'] == 'describer'
    assert re.match(r'an? (night|dusk|day) scene', descriptions[1]['description'])
    assert [f.description for f in result.frames][:2] == [
        INITIAL_DESCRIPTION, descriptions[1]['description']]
    described = [f.timings_ms['describe'] > 0 for f in result.frames]
    assert described == [True, False, True]


def test_truncated_bag_gives_a_partial_report(tmp_path, tno_pair_paths, weights, capsys):
    frames = _tno_frames(tno_pair_paths, 6)
    write_bag(tmp_path / 'bag', frames, padding_after=(3, 6))
    storage = tmp_path / 'bag' / 'bag.mcap'
    # Two chunks of about 1.2 MB; cut inside the second: only frames 0-2 survive.
    assert storage.stat().st_size > 2_300_000
    os.truncate(storage, 1_700_000)
    code = cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'), '--weights',
                     str(weights), '--semantics', 'disabled', '--no-progress',
                     '--montage-frames', '1', '--score-every', '2'])
    assert code == 0
    captured = capsys.readouterr()
    assert 'tesg-eval: partial: 3 frame(s) evaluated' in captured.out
    assert 'the bag is damaged' in captured.err
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['status'] == 'partial' and summary['frames'] == 3
    # --score-every 2: frames 0 and 2 are scored, all three fused.
    rows = _read_csv(tmp_path / 'out' / 'metrics.csv')
    assert sorted({int(r['frame']) for r in rows}) == [0, 2]
    assert summary['metrics']['model']['EN']['count'] == 2
    assert len(_topic_messages(tmp_path / 'out' / 'fused_bag', FUSED_TOPIC)) == 3
    assert 'over 2 of 3 frames (score every 2)' in (tmp_path / 'out' / 'report.md').read_text()
    assert 'the bag is damaged' in (tmp_path / 'out' / 'report.md').read_text()


def test_an_unexpected_error_still_gives_a_partial_report(
        tmp_path, frames, weights, monkeypatch, capsys):
    from tesg_ros.evaluation import evaluate as evaluation_module

    real_score = evaluation_module.score_frame
    calls = []

    def failing_score(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError('simulated failure in frame 1')
        return real_score(*args, **kwargs)

    monkeypatch.setattr(evaluation_module, 'score_frame', failing_score)
    write_bag(tmp_path / 'bag', frames[:3])
    code = cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'), '--weights',
                     str(weights), '--semantics', 'disabled', '--no-progress'])
    captured = capsys.readouterr()
    assert code == 0
    assert 'Traceback' not in captured.err
    assert 'unexpected RuntimeError after 1 frames: simulated failure in frame 1' in captured.err
    trace = (tmp_path / 'out' / 'traceback.txt').read_text()
    assert 'simulated failure in frame 1' in trace and 'Traceback' in trace
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['status'] == 'partial' and summary['frames'] == 1
    # The output bag was closed properly and holds the frame evaluated before the failure.
    assert len(_topic_messages(tmp_path / 'out' / 'fused_bag', FUSED_TOPIC)) == 1


def test_labels_name_frames_by_rgb_stamp(tmp_path):
    (tmp_path / 'yolo').mkdir()
    (tmp_path / 'classes.txt').write_text('car\npedestrian\n')
    (tmp_path / 'yolo' / f'{STAMP0}.txt').write_text('1 0.5 0.5 0.25 0.5\n')
    labels = FrameLabels(tmp_path / 'yolo')
    boxes = labels.for_frame(STAMP0, 64, 80)
    assert [(b.label, b.box_xyxy) for b in boxes] == [('person', (30.0, 16.0, 50.0, 48.0))]
    assert labels.for_frame(STAMP0 + 1, 64, 80) is None
    coco = {'images': [{'id': 1, 'file_name': f'a/{STAMP0}.png'},
                       {'id': 2, 'file_name': f'b/{STAMP0}.jpg'}],
            'annotations': [], 'categories': []}
    (tmp_path / 'coco.json').write_text(json.dumps(coco))
    with pytest.raises(ConfigError, match='several images'):
        FrameLabels(tmp_path / 'coco.json')
    with pytest.raises(ConfigError, match='do not exist'):
        FrameLabels(tmp_path / 'missing.json')
    with pytest.raises(ConfigError, match='labels need a detector'):
        evaluate_bag(tmp_path / 'bag', tmp_path / 'out', labels=str(tmp_path / 'coco.json'))


def test_recorded_semantics_are_replayed(tmp_path, frames, weights):
    write_bag(tmp_path / 'bag', frames[:2], semantics='a night scene, one person on the left')
    result = evaluate_bag(tmp_path / 'bag', tmp_path / 'out', weights=str(weights),
                          montage_frames=0)
    assert result.status == 'complete', result.problems
    assert result.semantics['mode'] == 'replay'
    assert result.engine['semantics_generator'] is True
    assert result.semantics['topic'] == '/tesg/semantics'
    assert result.semantics['descriptions'] == [{
        'first_frame': 0, 'description': 'a night scene, one person on the left',
        'source': 'recorded'}]
    assert [f.description for f in result.frames] == [
        'a night scene, one person on the left'] * 2
    assert 'one person on the left' in result.files['report_html'].read_text()


def test_recorded_semantics_record_accepts_node_json_and_plain_text():
    node = json.dumps({'description': 'a day scene with a car', 'phrases': ['a day scene',
                                                                            'a car'],
                       'source': 'offline'})
    assert recorded_semantics_record(node) == {'description': 'a day scene with a car',
                                               'phrases': ['a day scene', 'a car']}
    plain = recorded_semantics_record('  a night scene,  two people ')
    assert plain['description'] == 'a night scene, two people'
    assert plain['phrases'] and all(p in plain['description'] for p in plain['phrases'])
    with pytest.raises(ConfigError, match='description'):
        recorded_semantics_record('{"phrases": []}')


def test_parameters_come_from_defaults_file_and_overrides(tmp_path):
    params_file = tmp_path / 'fusion.yaml'
    params_file.write_text('tesg_fusion:\n  ros__parameters:\n    sync:\n      slop: 0.02\n'
                           '      queue_size: 4\n')
    params, explicit = resolve_params(params_file, {'sync.queue_size': 7})
    assert params['sync.slop'] == 0.02 and params['sync.queue_size'] == 7
    assert explicit == {'sync.slop': 0.02, 'sync.queue_size': 7}
    assert params['thermal.normalization'] == 'percentile'  # a default
    with pytest.raises(ConfigError, match='no_such'):
        resolve_params(None, {'no_such.parameter': 1})
    with pytest.raises(ConfigError, match='sync.slop'):
        resolve_params(None, {'sync.slop': 'wide'})
    assert cli.parse_assignment('sync.slop=0.03') == ('sync.slop', 0.03)
    assert cli.parse_assignment('thermal.clahe=true') == ('thermal.clahe', True)
    assert cli.parse_assignment('semantics.prompt=') == ('semantics.prompt', '')
    assert cli.parse_assignment('registration.homography=[1, 0, 0]') == (
        'registration.homography', [1, 0, 0])


def test_baselines_are_copies_and_the_rounded_average():
    ir = np.array([[0, 255], [10, 11]], np.uint8)
    visible = np.zeros((2, 2, 3), np.uint8)
    visible[..., 1] = 1
    baselines = baseline_images(ir, visible)
    assert baselines['ir'] is ir and baselines['visible'] is visible
    np.testing.assert_array_equal(baselines['average'][..., 0], [[0, 128], [5, 6]])
    np.testing.assert_array_equal(baselines['average'][..., 1], [[0, 128], [6, 6]])


def test_frame_sampler_keeps_evenly_spaced_frames():
    sampler = _FrameSampler(4)
    for index in range(100):
        if sampler.wants(index):
            sampler.add(index, None)
    chosen = [index for index, _ in sampler.selection()]
    assert len(chosen) == 4 and chosen[0] == 0
    assert len(sampler.kept) <= 8
    steps = np.diff(chosen)
    assert steps.min() >= 16
    assert _FrameSampler(0).wants(0) is False


def test_bad_options_and_a_used_output_directory_raise(tmp_path, capsys):
    with pytest.raises(ConfigError, match='unknown evaluation option'):
        evaluate_bag(tmp_path / 'bag', tmp_path / 'out', colour='red')
    with pytest.raises(ConfigError, match='semantics must be one of'):
        evaluate_bag(tmp_path / 'bag', tmp_path / 'out', semantics='sometimes')
    with pytest.raises(ConfigError, match='semantics_every'):
        evaluate_bag(tmp_path / 'bag', tmp_path / 'out', semantics_every=0)
    (tmp_path / 'used').mkdir()
    (tmp_path / 'used' / 'file').write_text('keep me')
    assert cli.main([str(tmp_path / 'bag'), '--out', str(tmp_path / 'used')]) == 2
    assert 'not empty' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(tmp_path / 'bag'), '--semantics', 'sometimes'])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / 'bag'), '--set', 'no_equals_sign'])
    result = evaluate_bag(tmp_path / 'missing', tmp_path / 'out2')
    assert result.status == 'failed' and 'does not exist' in result.error


def test_semantics_modes_are_the_node_parameter_values_and_off_is_deprecated():
    from tesg_ros.node_params import PARAMETERS_BY_NAME

    assert PARAMETERS_BY_NAME['semantics.mode'].choices == SEMANTICS_MODES
    with pytest.warns(FutureWarning, match="'off' is deprecated"):
        assert EvaluationOptions(semantics='off').semantics == 'disabled'
    assert EvaluationOptions(semantics='disabled').semantics == 'disabled'
