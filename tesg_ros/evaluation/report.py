# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tables, plots and the Markdown / self-contained HTML report of an evaluation run.

:func:`write_outputs` writes, into the result's output directory:

* ``metrics.csv``: one row per frame and method (``frame, time_s, rgb_stamp_ns,
  thermal_stamp_ns, pair_dt_ms, method`` and every metric of
  :data:`tesg_ros.metrics.METRIC_NAMES`; ``time_s`` from the bag's first message);
* ``timings.csv``: one row per frame, engine stage times in ms;
* ``summary.json`` (everything of the run except pixels) and ``summary.csv`` (``method,
  metric, mean, std, count``);
* ``report.md`` with its images in ``report_files/`` and ``report.html``, the same content with
  every image embedded as a base64 PNG (one file to mail or attach to a ticket).

The report opens with its verdict (:func:`verdict`: on how many metrics the model beats each
baseline), names frames by index and time from the bag start (:func:`frame_name`), shows
detector boxes and semantic masks on the sampled frames (:func:`montage`) and notes
descriptions in force across a scene change (:func:`scene_notes`). Both reports are rendered
from one list of blocks, so they never disagree. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np

from tesg_ros import metrics
from tesg_ros.evaluation.common import (LOWER_IS_BETTER, METHOD_TITLES, METHODS,
                                        SCENE_CHANGE_LEVELS, STAGES)

REPORT_FILES = 'report_files'
# Metrics drawn per frame in the report: every one the metrics module computes.
PLOTTED_METRICS = tuple(metrics.METRIC_NAMES)
# Semantic mask colours (RGB), one per mask channel, cycled.
MASK_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                (145, 30, 180), (70, 240, 240), (240, 50, 230))
_BOX_COLOUR = (255, 255, 0)
_METHOD_COLOURS = {'model': '#d62728', 'ir': '#7f7f7f', 'visible': '#1f77b4',
                   'average': '#2ca02c'}
_TILE_LABELS = (('ir', 'IR (registered)'), ('visible', 'visible'), ('fused', 'fused (model)'),
                ('average', 'pixel average'))


# ---------------------------------------------------------------------------- tables


def _number(value, digits=4):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return 'n/a'
    return f'{value:.{digits}g}'


def frame_name(frame):
    """``frame 12 (3.40 s)``: index and receive time from the bag start."""
    if frame.time_s is None:
        return f'frame {frame.index}'
    return f'frame {frame.index} ({frame.time_s:.2f} s)'


def beats(model, baseline, name):
    """True when the model's mean is better than the baseline's (lower wins for
    :data:`LOWER_IS_BETTER`); None when either is not a finite number."""
    if not (math.isfinite(model) and math.isfinite(baseline)):
        return None
    return model < baseline if name in LOWER_IS_BETTER else model > baseline


def verdict_counts(summary):
    """``{baseline: (metrics the model beats, metrics compared)}`` from the mean per metric;
    a metric undefined (NaN) for either side is not compared."""
    counts = {}
    for baseline in METHODS[1:]:
        won = compared = 0
        for name in metrics.METRIC_NAMES:
            outcome = beats(summary['model'][name]['mean'], summary[baseline][name]['mean'],
                            name)
            if outcome is not None:
                compared += 1
                won += int(outcome)
        counts[baseline] = (won, compared)
    return counts


def verdict(result):
    """The report's first line: on how many metrics the model beats each baseline."""
    scored = sum(1 for frame in result.frames if frame.metrics)
    if not scored:
        return 'Verdict: none, no frame was scored.'
    parts = [f'{METHOD_TITLES[baseline]} on {won} of {compared} metrics'
             for baseline, (won, compared) in verdict_counts(result.summary).items()]
    lower = ', '.join(name for name in metrics.METRIC_NAMES if name in LOWER_IS_BETTER)
    return (f'Verdict over {scored} scored frame{"s" if scored != 1 else ""}: the TeSG model '
            f'beats the {", the ".join(parts[:-1])} and the {parts[-1]} (means per metric; '
            f'lower wins for {lower}; a metric undefined for either side is not compared).')


def scene_notes(result):
    """Sentences on descriptions in force across a scene change (the semantics refresh is
    slower than the scenes change), one per description."""
    descriptions = (result.semantics or {}).get('descriptions') or []
    if not descriptions:
        return []
    firsts = [d['first_frame'] for d in descriptions]
    changes = {}
    for frame in result.frames:
        if not frame.scene_change or frame.description is None:
            continue
        span = max((i for i, first in enumerate(firsts) if first <= frame.index), default=None)
        if span is not None and firsts[span] < frame.index:
            changes.setdefault(span, []).append(frame)
    schedule = (result.semantics or {}).get('schedule')
    refresh = f' ({schedule})' if schedule else ''
    notes = []
    for span, frames in changes.items():
        first = descriptions[span]
        names = ', '.join(frame_name(frame) for frame in frames[:5])
        more = f' and {len(frames) - 5} more' if len(frames) > 5 else ''
        notes.append(f'The description "{first["description"]}" (in force from frame '
                     f'{first["first_frame"]}) spans a scene change at {names}{more} (visible '
                     f'image differs from the previous frame by more than '
                     f'{SCENE_CHANGE_LEVELS:g} grey levels on average): the '
                     f'semantics refresh{refresh} is slower than the scenes change, so those '
                     'frames are fused with the semantics of an earlier scene.')
    return notes


def write_metrics_csv(result, path):
    """One row per frame and method; returns ``path``."""
    names = list(metrics.METRIC_NAMES)
    with open(path, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['frame', 'time_s', 'rgb_stamp_ns', 'thermal_stamp_ns', 'pair_dt_ms',
                         'method'] + names)
        for frame in result.frames:
            if not frame.metrics:
                continue  # skipped by score_every
            for method in METHODS:
                values = frame.metrics[method]
                writer.writerow([frame.index, _time_text(frame), frame.rgb_stamp_ns,
                                 frame.thermal_stamp_ns,
                                 repr(frame.pair_dt_ns / 1e6), method]
                                + [repr(float(values[name])) for name in names])
    return path


def _time_text(frame):
    return '' if frame.time_s is None else f'{frame.time_s:.6f}'


def _timing_stages(result):
    return list(result.timings) or list(STAGES)


def write_timings_csv(result, path):
    """One row per frame: ``frame, rgb_stamp_ns`` and each stage in ms; returns ``path``."""
    stages = _timing_stages(result)
    with open(path, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['frame', 'time_s', 'rgb_stamp_ns']
                        + [f'{stage}_ms' for stage in stages])
        for frame in result.frames:
            writer.writerow([frame.index, _time_text(frame), frame.rgb_stamp_ns]
                            + [repr(float(frame.timings_ms.get(stage, 0.0)))
                               for stage in stages])
    return path


def write_summary_csv(result, path):
    """``method, metric, mean, std, count`` rows; returns ``path``."""
    with open(path, 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['method', 'metric', 'mean', 'std', 'count'])
        for method, per_metric in result.summary.items():
            for name, stats in per_metric.items():
                writer.writerow([method, name, repr(stats['mean']), repr(stats['std']),
                                 stats['count']])
    return path


def _json_ready(value):
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def summary_dict(result):
    """Everything about the run except pixels, JSON-ready (NaN becomes null)."""
    options = {name: getattr(result.options, name) for name in (
        'thermal_topic', 'rgb_topic', 'semantics', 'semantics_topic', 'semantics_every',
        'params_file', 'overrides', 'weights', 'out_storage', 'write_registered',
        'copy_inputs', 'max_frames', 'convention', 'score_every', 'montage_frames', 'detector',
        'detector_threshold', 'detector_device', 'detector_trust_remote_code', 'labels')}
    return _json_ready({
        'status': result.status, 'error': result.error, 'problems': result.problems,
        'verdict': verdict(result) if result.summary else None,
        'verdict_counts': ({b: {'beats': won, 'compared': compared} for b, (won, compared)
                            in verdict_counts(result.summary).items()}
                           if result.summary else None),
        'scene_notes': scene_notes(result),
        'notes': result.notes, 'bag': result.bag_path, 'bag_storage': result.bag_storage,
        'bag_start_ns': result.bag_start_ns,
        'out_dir': result.out_dir, 'command_line': result.options.command_line,
        'options': options, 'frames': len(result.frames), 'image_topics': result.image_topics,
        'topics': result.topics, 'semantics': result.semantics, 'weights': result.weights,
        'engine': result.engine, 'params': result.params, 'pairing': result.pairing,
        'detection': result.detection,
        'timings_ms': result.timings, 'metrics': result.summary,
        'metric_units': metrics.metric_units(result.options.convention),
        'versions': result.versions, 'elapsed_s': result.elapsed_s,
        'files': {name: path for name, path in result.files.items()}})


# ---------------------------------------------------------------------------- images


def png_bytes(rgb):
    """PNG file bytes of an (H, W, 3) RGB or (H, W) grey uint8 image."""
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode('.png', image)
    if not ok:
        raise ValueError('PNG encoding failed')
    return encoded.tobytes()


def mask_overlay(visible, masks, alpha=0.5):
    """The visible (h, w, 3) uint8 RGB image with each (h, w) uint8 mask of ``masks``
    blended in its :data:`MASK_COLOURS` colour."""
    out = visible.astype(np.float32)
    for channel, mask in enumerate(masks):
        weight = (mask.astype(np.float32) / 255.0 * alpha)[..., None]
        colour = np.array(MASK_COLOURS[channel % len(MASK_COLOURS)], np.float32)
        out = out * (1.0 - weight) + colour * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_boxes(tile, found):
    """A copy of the (h, w, 3) RGB ``tile`` with each detection's box and label drawn."""
    tile = tile.copy()
    for detected in found:
        x0, y0, x1, y1 = (int(round(v)) for v in detected.box_xyxy)
        cv2.rectangle(tile, (x0, y0), (x1, y1), _BOX_COLOUR, 1)
        cv2.putText(tile, f'{detected.label} {detected.score:.2f}', (x0 + 1, max(9, y0 - 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, _BOX_COLOUR, 1, cv2.LINE_AA)
    return tile


def _mask_legend(phrases, channels, width, height=18):
    """A white band naming the colour of each mask channel."""
    band = np.full((height * channels, width, 3), 255, np.uint8)
    for channel in range(channels):
        if channels == 1:
            text = 'any phrase of the description'
        elif channel < len(phrases):
            text = phrases[channel]
        else:
            text = '(unused channel)'
        y = channel * height
        colour = MASK_COLOURS[channel % len(MASK_COLOURS)]
        cv2.rectangle(band, (4, y + 4), (16, y + height - 4), colour, -1)
        cv2.putText(band, text[:90], (22, y + height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return band


def _readable(tiles, min_width=200):
    """Small tiles enlarged by an integer factor (nearest neighbour) so that labels, boxes
    and masks stay legible; boxes scaled with them."""
    from dataclasses import replace

    width = tiles['fused'].shape[1]
    factor = -(-min_width // width)
    if factor <= 1:
        return tiles
    grown = dict(tiles)
    for key, _ in _TILE_LABELS:
        grown[key] = cv2.resize(tiles[key], None, fx=factor, fy=factor,
                                interpolation=cv2.INTER_NEAREST)
    if tiles.get('masks') is not None:
        grown['masks'] = np.stack([cv2.resize(m, None, fx=factor, fy=factor,
                                              interpolation=cv2.INTER_NEAREST)
                                   for m in tiles['masks']])
    if tiles.get('boxes') is not None:
        grown['boxes'] = {method: [replace(d, box_xyxy=tuple(v * factor for v in d.box_xyxy))
                                   for d in found]
                          for method, found in tiles['boxes'].items()}
    return grown


def montage(tiles, label_height=22):
    """IR | visible | fused | average side by side with a caption band; (H, W, 3) uint8 RGB.

    ``tiles``: ``{'ir': (h, w) uint8, 'visible', 'fused', 'average': (h, w, 3) uint8}`` and
    optionally ``'boxes': {method: [Detection]}`` (drawn on each tile, 'fused' showing the
    model's) and ``'masks': (C, h, w) uint8`` with ``'phrases'`` (a fifth tile: the masks
    over the visible image, with a colour legend below).
    """
    tiles = _readable(tiles)
    boxes = tiles.get('boxes')
    masks = tiles.get('masks')
    labels = list(_TILE_LABELS)
    if masks is not None:
        labels.append(('semantics', 'semantic masks'))
    columns = []
    for key, label in labels:
        if key == 'semantics':
            tile = mask_overlay(tiles['visible'], masks)
        else:
            tile = tiles[key]
        if tile.ndim == 2:
            tile = np.repeat(tile[..., None], 3, axis=2)
        method = 'model' if key == 'fused' else key
        if boxes is not None and method in boxes:
            tile = draw_boxes(tile, boxes[method])
            label = f'{label}: {len(boxes[method])} box(es)'
        band = np.full((label_height, tile.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (4, label_height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(np.vstack([band, tile]))
        columns.append(np.full((columns[-1].shape[0], 4, 3), 255, np.uint8))
    image = np.hstack(columns[:-1])
    if masks is not None:
        image = np.vstack([image, _mask_legend(tiles.get('phrases') or [], len(masks),
                                               image.shape[1])])
    return image


def _figure_png(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def _frame_axis(frames):
    """x values (time from the bag start, s) and the axis label; frame indices when a frame
    has no time."""
    if frames and all(frame.time_s is not None for frame in frames):
        return [frame.time_s for frame in frames], 'time from the bag start (s)'
    return [frame.index for frame in frames], 'frame'


def _index_axis(axis, frames, xs):
    """A top axis with the frame index over the time axis (linear between frames)."""
    indices = [frame.index for frame in frames]
    if len(set(xs)) < 2 or xs != sorted(xs):
        return
    secondary = axis.secondary_xaxis('top', functions=(
        lambda x: np.interp(x, xs, indices), lambda i: np.interp(i, indices, xs)))
    secondary.set_xlabel('frame', fontsize=8)
    secondary.tick_params(labelsize=7)


def plot_metrics(result):
    """PNG bytes: every metric per frame, one line per method, a legend on each plot."""
    from matplotlib.figure import Figure

    scored = [frame for frame in result.frames if frame.metrics]
    xs, xlabel = _frame_axis(scored)
    rows = math.ceil(len(PLOTTED_METRICS) / 2)
    figure = Figure(figsize=(11, 2.4 * rows), layout='constrained')
    axes = figure.subplots(rows, 2, squeeze=False).ravel()
    marker = 'o' if len(xs) < 30 else None
    lower = set(LOWER_IS_BETTER)
    for axis, name in zip(axes, PLOTTED_METRICS):
        for method in METHODS:
            values = [frame.metrics[method][name] for frame in scored]
            axis.plot(xs, values, marker=marker, markersize=3, linewidth=1.2,
                      color=_METHOD_COLOURS[method], label=METHOD_TITLES[method])
        axis.set_title(f'{name} ({"lower" if name in lower else "higher"} is better)',
                       fontsize=9)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=2)
    for axis in axes[len(PLOTTED_METRICS):]:
        axis.set_visible(False)
    for axis in axes[:2]:
        _index_axis(axis, scored, xs)
    figure.supxlabel(xlabel, fontsize=9)
    return _figure_png(figure)


def plot_timings(result):
    """PNG bytes: engine stage times per frame (ms)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    xs, xlabel = _frame_axis(result.frames)
    figure = Figure(figsize=(11, 3.4), layout='constrained')
    axis = figure.subplots()
    marker = 'o' if len(xs) < 30 else None
    for stage in _timing_stages(result):
        values = [frame.timings_ms.get(stage, 0.0) for frame in result.frames]
        axis.plot(xs, values, marker=marker, markersize=3, linewidth=1.2, label=stage)
    if xlabel == 'frame':
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _index_axis(axis, result.frames, xs)
    axis.set_xlabel(xlabel, fontsize=9)
    axis.set_ylabel('ms', fontsize=9)
    axis.set_yscale('symlog', linthresh=1.0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=4)
    return _figure_png(figure)


# ---------------------------------------------------------------------------- content


def _best_methods(result, name):
    means = {method: result.summary[method][name]['mean'] for method in METHODS}
    finite = {method: value for method, value in means.items() if math.isfinite(value)}
    if not finite:
        return set()
    target = (min if name in LOWER_IS_BETTER else max)(finite.values())
    return {method for method, value in finite.items() if value == target}


def _metric_rows(result):
    units = metrics.metric_units(result.options.convention)
    rows = []
    for name in metrics.METRIC_NAMES:
        best = _best_methods(result, name)
        cells = [f'{name} {"↓" if name in LOWER_IS_BETTER else "↑"}']
        for method in METHODS:
            stats = result.summary[method][name]
            text = (f'{_number(stats["mean"])} ± {_number(stats["std"], 2)}'
                    if stats['count'] else 'n/a')
            cells.append(('strong', text) if method in best else text)
        cells.append(units[name])
        rows.append(cells)
    return rows


def _run_rows(result):
    rows = [['bag', f'{result.bag_path} ({result.bag_storage or "unreadable"})']]
    topics = result.image_topics
    if topics:
        rows.append(['thermal topic', f'{topics["thermal"]} ({topics["thermal_encoding"]})'])
        rows.append(['RGB topic', f'{topics["rgb"]} ({topics["rgb_encoding"]})'])
    rows.append(['command line', ('code', result.options.command_line or '(API call)')])
    if result.weights:
        rows.append(['weights', f'{result.weights["path"]} (sha256 '
                                f'{result.weights["sha256"][:16]}…)'])
    if result.engine:
        rows.append(['device', f'{result.engine["device"]} ({result.engine["dtype"]})'])
    semantics = result.semantics
    if semantics:
        text = semantics['mode']
        if semantics.get('topic'):
            text += f' from {semantics["topic"]} ({semantics.get("messages", 0)} messages)'
        if semantics.get('schedule'):
            text += f', described synchronously {semantics["schedule"]}'
        rows.append(['semantics', text])
    rows.append(['metric convention', result.options.convention])
    rows.append(['frames evaluated', str(len(result.frames))])
    rows.append(['elapsed', f'{result.elapsed_s:.1f} s'])
    if result.params:
        rows.append(['pairing', f'queue_size {result.params["sync.queue_size"]}, slop '
                                f'{result.params["sync.slop"]:g} s, thermal.time_offset '
                                f'{result.params["thermal.time_offset"]:g} s'])
        rows.append(['thermal / registration',
                     f'{result.params["thermal.normalization"]} / '
                     f'{result.params["registration.mode"]} (crop to overlap: '
                     f'{result.params["registration.crop_to_overlap"]})'])
    return rows


def _detection_blocks(detection):
    table = detection['table']
    classes = table['classes']
    if table['labelled']:
        text = (f'{detection["detector"]} on {detection["labelled_frames"]} labelled frame(s) '
                f'of {detection["labels"]}; AP at IoU >= {table["iou_threshold"]:g}, '
                f'{table["interpolation"]}.')
        header = ['method'] + [f'AP50 {c}' for c in classes] + ['mAP50']
    else:
        text = (f'{detection["detector"]} on {table["num_frames"]} frame(s), no ground truth: '
                'detections per frame and their mean score (not a quality measure by itself).')
        header = ['method'] + [f'{c} per frame' for c in classes] + \
            [f'{c} mean score' for c in classes]
    rows = []
    for method, scored in table['variants'].items():
        per_class = scored['classes']
        if table['labelled']:
            cells = [_number(per_class[c]['ap'], 3) for c in classes] + \
                [_number(scored['mean_ap'], 3)]
        else:
            cells = [_number(per_class[c]['detections_per_frame'], 3) for c in classes] + \
                [_number(per_class[c]['mean_confidence'], 3) for c in classes]
        rows.append([METHOD_TITLES.get(method, method)] + cells)
    return [('h2', 'Detection'), ('p', text), ('table', header, rows)]


def _name_of(by_index, index):
    frame = by_index.get(index)
    return frame_name(frame) if frame is not None else f'frame {index}'


def _montage_blocks(result):
    """The sampled frames: tiles, boxes when a detector ran, semantic masks when in use."""
    with_masks = any(tiles.get('masks') is not None for _, tiles in result.montage)
    with_boxes = any(tiles.get('boxes') is not None for _, tiles in result.montage)
    title = 'Frames: IR | visible | fused | pixel average'
    if with_masks:
        title += ' | semantic masks'
    text = ['Sampled frames, named by index and time from the bag start.']
    if with_boxes:
        text.append(f'Boxes: {result.detection.get("detector", result.options.detector)} '
                    'detections on each image (label and score).')
    if with_masks:
        text.append('The last tile shows the semantic masks the network received, each in '
                    'the colour of its phrase (legend under the frame).')
    blocks = [('h2', title), ('p', ' '.join(text))]
    for position, (index, tiles) in enumerate(result.montage):
        frame = result.frames[index]
        caption = frame_name(frame)
        if frame.description is not None:
            caption += f'; description in force: "{frame.description}"'
        blocks.append(('image', caption, f'montage_{position:02d}.png',
                       png_bytes(montage(tiles))))
    return blocks


def report_blocks(result, images=True):
    """The report as a list of blocks: ``('h1'|'h2'|'p', text)`` (a paragraph may be
    ``('strong', text)``), ``('list', items)``,
    ``('table', header, rows)`` (a cell may be ``('strong'|'code', text)``),
    ``('image', caption, file name, png bytes)`` (left out when ``images`` is False)."""
    blocks = [('h1', f'tesg-eval report: {result.bag_path.name}')]
    blocks.append(('p', ('strong', verdict(result))))
    status = {'complete': 'complete: every pair was evaluated',
              'partial': 'partial: some of the bag was evaluated, see the problems',
              'failed': 'failed: nothing could be evaluated'}[result.status]
    blocks.append(('p', f'Status: {status}.'))
    if result.error:
        blocks.append(('p', f'Error: {result.error}'))
    if result.problems:
        blocks += [('h2', 'Problems'), ('list', list(result.problems))]
    blocks += [('h2', 'Run'), ('table', ['', ''], _run_rows(result))]
    if result.notes:
        blocks.append(('list', list(result.notes)))
    if result.topics:
        blocks += [('h2', 'Bag topics'),
                   ('table', ['topic', 'type', 'messages'],
                    [[name, info['type'], str(info['count'])]
                     for name, info in result.topics.items()])]
    if result.frames:
        header = ['metric'] + [METHOD_TITLES[m] for m in METHODS] + ['unit']
        scored = sum(1 for frame in result.frames if frame.metrics)
        counted = f'{scored} frames'
        if scored != len(result.frames):
            counted = (f'{scored} of {len(result.frames)} frames (score every '
                       f'{result.options.score_every})')
        blocks += [
            ('h2', f'Metrics: mean ± std over {counted}'),
            ('p', 'Every method is scored on the same registered, cropped grid against the '
                  'registered IR and visible images; ↑ higher is better, ↓ lower is better; '
                  'the best mean per row is bold; SCD is undefined (n/a) for a copy of one '
                  'input. Per-frame values: metrics.csv.'),
            ('table', header, _metric_rows(result))]
        if images:
            if result.montage:
                blocks += _montage_blocks(result)
            blocks += [('h2', 'Metrics per frame'),
                       ('p', 'Every metric of the table, per scored frame, against the time '
                             'from the bag start (frame index on the top axis).'),
                       ('image', 'metrics per frame', 'metrics.png', plot_metrics(result))]
        timing_rows = [[stage] + [_number(stats[key], 3) for key in ('p50', 'p90', 'max')]
                       for stage, stats in result.timings.items()]
        blocks += [('h2', 'Timings (ms per frame)'),
                   ('p', f'Device: {result.engine.get("device", "?")}. Wall-clock times of '
                         'this run; the first frame includes lazy set-up.'),
                   ('table', ['stage', 'p50', 'p90', 'max'], timing_rows)]
        if images:
            blocks.append(('image', 'stage timings per frame', 'timings.png',
                           plot_timings(result)))
    if result.detection:
        blocks += _detection_blocks(result.detection)
    if result.pairing:
        blocks += [('h2', 'Pairing'),
                   ('table', ['counter', 'value'],
                    [[name, _number(value) if isinstance(value, float) else str(value)]
                     for name, value in result.pairing.items()])]
    descriptions = result.semantics.get('descriptions') if result.semantics else None
    if descriptions:
        by_index = {frame.index: frame for frame in result.frames}
        blocks += [('h2', 'Semantics used'),
                   ('list', [f'from {_name_of(by_index, d["first_frame"])} ({d["source"]}): '
                             f'"{d["description"]}"' for d in descriptions])]
        notes = scene_notes(result)
        if notes:
            blocks.append(('list', notes))
    blocks += [('h2', 'Versions'),
               ('table', ['package', 'version'], [[k, v] for k, v in result.versions.items()])]
    files = [f'{name}: {path}' for name, path in sorted(result.files.items())]
    if files:
        blocks += [('h2', 'Files'), ('list', files)]
    return blocks


# ---------------------------------------------------------------------------- rendering


def _markdown_cell(cell):
    if isinstance(cell, tuple):
        kind, text = cell
        text = text.replace('|', '\\|')
        return f'**{text}**' if kind == 'strong' else f'`{text}`'
    return str(cell).replace('|', '\\|').replace('\n', ' ')


def render_markdown(blocks, image_dir):
    """Markdown text; images are referenced as ``<image_dir>/<file name>``."""
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == 'h1':
            lines += [f'# {block[1]}', '']
        elif kind == 'h2':
            lines += [f'## {block[1]}', '']
        elif kind == 'p':
            text = block[1]
            lines += [f'**{text[1]}**' if isinstance(text, tuple) else text, '']
        elif kind == 'list':
            lines += [f'- {item}' for item in block[1]] + ['']
        elif kind == 'table':
            header, rows = block[1], block[2]
            lines.append('| ' + ' | '.join(_markdown_cell(c) for c in header) + ' |')
            lines.append('|' + '---|' * len(header))
            lines += ['| ' + ' | '.join(_markdown_cell(c) for c in row) + ' |' for row in rows]
            lines.append('')
        elif kind == 'image':
            lines += [f'![{block[1]}]({image_dir}/{block[2]})', '', f'*{block[1]}*', '']
    return '\n'.join(lines)


def _html_cell(cell, tag='td'):
    if isinstance(cell, tuple):
        kind, text = cell
        inner = f'<{kind}>{html.escape(text)}</{kind}>'
    else:
        inner = html.escape(str(cell))
    return f'<{tag}>{inner}</{tag}>'


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def render_html(blocks, title):
    """A self-contained HTML page: inline CSS, images as base64 data URIs."""
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             f'<title>{html.escape(title)}</title>', f'<style>{_STYLE}</style>',
             '</head><body>']
    for block in blocks:
        kind = block[0]
        if kind in ('h1', 'h2'):
            parts.append(f'<{kind}>{html.escape(block[1])}</{kind}>')
        elif kind == 'p':
            text = block[1]
            inner = (f'<strong>{html.escape(text[1])}</strong>' if isinstance(text, tuple)
                     else html.escape(text))
            parts.append(f'<p>{inner}</p>')
        elif kind == 'list':
            items = ''.join(f'<li>{html.escape(str(item))}</li>' for item in block[1])
            parts.append(f'<ul>{items}</ul>')
        elif kind == 'table':
            header, rows = block[1], block[2]
            head = ''
            if any(header):
                head = '<tr>' + ''.join(_html_cell(c, 'th') for c in header) + '</tr>'
            body = ''.join('<tr>' + ''.join(_html_cell(c) for c in row) + '</tr>'
                           for row in rows)
            parts.append(f'<table>{head}{body}</table>')
        elif kind == 'image':
            data = base64.b64encode(block[3]).decode('ascii')
            caption = html.escape(block[1])
            parts.append(f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                         f'<figcaption>{caption}</figcaption></figure>')
    parts.append('</body></html>')
    return '\n'.join(parts)


def write_outputs(result):
    """Write the tables and both reports into ``result.out_dir``; fills ``result.files``.

    A failure to draw the plots is recorded as a problem and the rest is still written.
    """
    out_dir = result.out_dir
    files = result.files
    if result.frames:
        files['metrics_csv'] = write_metrics_csv(result, out_dir / 'metrics.csv')
        files['timings_csv'] = write_timings_csv(result, out_dir / 'timings.csv')
        files['summary_csv'] = write_summary_csv(result, out_dir / 'summary.csv')
    files['summary_json'] = out_dir / 'summary.json'
    files['report_md'] = out_dir / 'report.md'
    files['report_html'] = out_dir / 'report.html'
    try:
        blocks = report_blocks(result)
    except (ImportError, ValueError, RuntimeError) as error:
        result.problems.append(f'the report images could not be drawn: '
                               f'{type(error).__name__}: {error}')
        blocks = report_blocks(result, images=False)
    image_dir = out_dir / REPORT_FILES
    for block in blocks:
        if block[0] == 'image':
            image_dir.mkdir(exist_ok=True)
            (image_dir / block[2]).write_bytes(block[3])
    (out_dir / 'report.md').write_text(render_markdown(blocks, REPORT_FILES), encoding='utf-8')
    (out_dir / 'report.html').write_text(
        render_html(blocks, f'tesg-eval: {result.bag_path.name}'), encoding='utf-8')
    with open(files['summary_json'], 'w', encoding='utf-8') as stream:
        json.dump(summary_dict(result), stream, indent=2, sort_keys=False)
    return files
