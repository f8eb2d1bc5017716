# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The ``tesg-replay`` report: verdict, Markdown and JSON, latency and fused-share plots,
the node's own figures and the platform."""

import contextlib
import json
from pathlib import Path

import numpy as np

from tesg_ros.replay import NODE_COUNTERS, NODE_SUMMARIES, REPORT_JSON, REPORT_MARKDOWN


# ---------------------------------------------------------------------------- report
def _fmt(value, digits=1):
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _summary_row(name, summary):
    if not summary or not summary.get('count'):
        return f'| {name} | 0 | n/a | n/a | n/a | n/a |'
    p90 = summary.get('p90')
    return (f'| {name} | {summary["count"]} | {_fmt(summary.get("p50"))} | {_fmt(p90)} | '
            f'{_fmt(summary.get("p99"))} | {_fmt(summary.get("max"))} |')


def replay_verdict(result, node, planned_wall_seconds, rate, min_share=0.8):
    """The report's first line: did the node keep up with the frame period?

    It keeps up when it fused at least ``min_share`` of the input pairs and its fusion time
    (the node's processing p50, else the end-to-end latency p50) is within the frame period
    (planned wall time per input pair at this ``rate``).
    """
    pairs = result.get('input_pairs') or 0
    fused = result.get('fused_matched') or 0
    if not pairs:
        return 'Verdict: none, no input pair was published.'
    period_ms = planned_wall_seconds / pairs * 1e3
    processing = ((node or {}).get('processing_ms') or {}).get('p50')
    latency = result.get('latency_ms') or {}
    if processing is not None:
        cost, what = processing, 'node fusion time p50'
    elif latency.get('count'):
        cost, what = latency['p50'], 'latency p50'
    else:
        cost, what = None, 'fusion time unknown'
    share = fused / pairs
    keeps_up = share >= min_share and (cost is None or cost <= period_ms)
    timing = f'{what} {cost:.0f} ms' if cost is not None else what
    if latency.get('count'):
        timing += f', latency p90 {latency["p90"]:.0f} ms'
    return (f'Verdict: {"keeps up" if keeps_up else "falls behind"}: fused {fused} of {pairs} '
            f'input pairs ({share:.0%}; at least {min_share:.0%} wanted); {timing} against '
            f'a frame period of {period_ms:.0f} ms at rate x{rate:g}.')


def format_markdown(report):
    """The report as Markdown (what ``replay_report.md`` holds): the verdict first."""
    result = report['result']
    drop = result['drop_rate']
    lines = [
        f'# tesg-replay: {report["bag"]}',
        '',
    ]
    if report.get('verdict'):
        lines += [f'**{report["verdict"]}**', '']
    lines += [
        f'- command: `{report["command"]}`',
        f'- mode: {report["mode"]}; rate x{report["rate"]:g}; loops {report["loops"]}; '
        f'storage of the output: {report["storage"]}',
        f'- output bag: `{report["output_bag"]}`',
        f'- bag time replayed: {report["bag_seconds"]:.3f} s, published in '
        f'{report["publish_wall_seconds"]:.3f} s wall (planned '
        f'{report["planned_wall_seconds"]:.3f} s; {report["wall_seconds"]:.3f} s with the '
        'wait for the last outputs)'
        + ('; **interrupted**' if report['interrupted'] else ''),
        '- published: ' + ', '.join(f'{k} {v}' for k, v in report['published'].items()),
        f'- input pairs {result["input_pairs"]}, fused frames received '
        f'{result["fused_received"]} (matched {result["fused_matched"]}, unexpected '
        f'{result["unexpected_fused"]}, duplicates {result["duplicate_fused"]}), '
        f'pairs without output {result["pairs_without_output"]}'
        f', drop rate {"n/a" if drop is None else f"{drop:.1%}"}',
        '',
        '| measure (ms) | count | p50 | p90 | p99 | max |',
        '|---|---|---|---|---|---|',
        _summary_row('input published → fused received', result['latency_ms']),
        _summary_row('publish lag behind schedule', report['publish_lag_ms']),
    ]
    node = report.get('node') or {}
    for key in ('network_ms', 'processing_ms', 'arrival_to_publish_ms'):
        if isinstance(node.get(key), dict):
            # The node's own window (RunningStats, its last 1000 frames), warm-up included:
            # an external node's earlier replays too.
            lines.append(_summary_row(f'node {key[:-3]} (its last frames, warm-up included)',
                                      node[key]))
    counters = node.get('counters') or {}
    if counters:
        lines += ['', 'Node counters over the replay: '
                  + ', '.join(f'{k} {v}' for k, v in counters.items())]
    if node.get('pairing'):
        lines += ['', 'Node pairing counters: '
                  + ', '.join(f'{k} {v}' for k, v in node['pairing'].items())]
    platform_info = report.get('platform') or {}
    if platform_info:
        lines += ['', 'Platform: ' + ', '.join(f'{k} {v}' for k, v in platform_info.items())]
    cpu = report.get('process_cpu') or {}
    if cpu:
        lines += ['', f'CPU of the process ({cpu.get("covers")}): {cpu.get("seconds")} s over '
                  f'{cpu.get("wall_seconds")} s wall = {cpu.get("cores")} cores']
    if report.get('fused_share_plot'):
        lines += ['', f'![fused share over time]({Path(report["fused_share_plot"]).name})']
    if report.get('latency_plot'):
        lines += ['', f'![latency histogram and CDF]({Path(report["latency_plot"]).name})']
    if report.get('warnings'):
        lines += ['', 'Warnings:', ''] + [f'- {w}' for w in report['warnings']]
    return '\n'.join(lines) + '\n'


def write_report(report, out_dir):
    """Write ``replay_report.json`` and ``replay_report.md`` into ``out_dir``; return paths."""
    out_dir = Path(out_dir)
    json_path = out_dir / REPORT_JSON
    markdown_path = out_dir / REPORT_MARKDOWN
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + '\n',
                         encoding='utf-8')
    markdown_path.write_text(format_markdown(report), encoding='utf-8')
    return json_path, markdown_path


def node_report(snapshot, baseline=None):
    """The node's numbers for the report from a diagnostics snapshot (dict).

    Counters are the change since ``baseline`` (the snapshot after the warm-up); the timing
    summaries (RunningStats: count, mean, p50, p99, ...) cover the node's whole life.
    """
    baseline = baseline or {}
    counters = {}
    for key in NODE_COUNTERS:
        value = snapshot.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            counters[key] = value - baseline.get(key, 0)
    result = {'counters': counters}
    for key in NODE_SUMMARIES:
        if isinstance(snapshot.get(key), dict):
            result[key] = snapshot[key]
    pairing = snapshot.get('pairing')
    if isinstance(pairing, dict):
        base_pairing = baseline.get('pairing') or {}
        result['pairing'] = {
            key: value - base_pairing.get(key, 0)
            if isinstance(value, int) and key.split('_')[0] != 'pending' else value
            for key, value in pairing.items()}
    for key in ('device', 'dtype', 'weights', 'sync_backend', 'last_error', 'error_kinds',
                'backend', 'torch_threads', 'max_pixels', 'ort_providers', 'backend_fallback'):
        if key in snapshot:
            result[key] = snapshot[key]
    return result


def overload_warning(result, node, planned_wall_seconds, min_share=0.8):
    """A warning when the node fused fewer than ``min_share`` of the input pairs, with its
    fusion time against the frame period (wall time per input pair); else ''."""
    pairs = result.get('input_pairs') or 0
    fused = result.get('fused_matched') or 0
    if min_share <= 0.0 or pairs < 3 or fused >= min_share * pairs:
        return ''
    processing = ((node or {}).get('processing_ms') or {}).get('p50')
    period_ms = planned_wall_seconds / pairs * 1e3
    fusion = f'{processing:.0f} ms' if processing else 'an unknown time'
    return (f'node overloaded: fused {fused} of {pairs} pairs ({fused / pairs:.0%}, below '
            f'{min_share:.0%}); its fusion takes {fusion} per pair (p50) against a frame '
            f'period of {period_ms:.0f} ms: lower --rate, or set model.max_pixels / '
            'model.backend / a GPU')


def platform_info(node=None):
    """CPU, threads, device and backend of this run (as rosbag benchmark tools report)."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {'cpu': cpu, 'cpus': os.cpu_count(), 'usable_cpus': usable,
            'machine': platform.machine(), 'python': platform.python_version()}
    try:
        info['load_average'] = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        pass
    node = node or {}
    for key in ('device', 'backend', 'torch_threads', 'max_pixels', 'ort_providers'):
        if key in node:
            info[key] = node[key]
    return info


def process_cpu_seconds():
    """User + system CPU seconds of this process so far (all threads)."""
    import os

    times = os.times()
    return times.user + times.system


def write_latency_plot(latencies_ms, path, title='', period_ms=None):
    """Histogram and CDF of the latencies (ms) as a PNG, with p50 / p90 / p99 and the frame
    period ``period_ms`` (when given) marked and a legend on each; returns the path or
    None."""
    if not latencies_ms:
        return None
    values = np.sort(np.asarray(latencies_ms, np.float64))
    with _png_figure(path, title or 'input published -> fused received', ncols=2,
                     figsize=(10, 3.6)) as (histogram, cdf):
        _latency_axes(histogram, cdf, values, period_ms)
    return str(path)


def _latency_axes(histogram, cdf, values, period_ms):
    """Histogram and CDF of the sorted ``values``, percentiles and frame period marked."""
    low, high = float(values[0]), float(values[-1])
    if high - low < 1e-3:  # all equal: numpy cannot split a zero range into bins
        low, high = low - 0.5, high + 0.5
    histogram.hist(values, bins=min(50, max(5, values.size // 4)), range=(low, high),
                   color='tab:blue', label='fused frames per bin')
    histogram.set_xlabel('latency (ms)')
    histogram.set_ylabel('fused frames')
    cdf.plot(values, np.arange(1, values.size + 1) / values.size, color='tab:orange',
             label='CDF')
    for q, style in ((50, '--'), (90, '-.'), (99, ':')):
        cdf.axvline(np.percentile(values, q), color='grey', lw=0.9, ls=style, label=f'p{q}')
    if period_ms:
        for axis in (histogram, cdf):
            axis.axvline(period_ms, color='tab:red', lw=1.2, label='frame period')
    cdf.set_xlabel('latency (ms)')
    cdf.set_ylabel('share of fused frames')
    cdf.set_ylim(0, 1.01)
    histogram.legend(fontsize=8)
    cdf.legend(fontsize=8, loc='lower right')


def write_fused_share_plot(series, path, min_share=None, title=''):
    """The share of input pairs fused per window (:meth:`PairTracker.fused_share_over_time`)
    as a PNG with a legend, the ``min_share`` threshold marked; returns the path or None."""
    if not series:
        return None
    times = [t for t, s in zip(series['t_s'], series['share']) if s is not None]
    shares = [s for s in series['share'] if s is not None]
    with _png_figure(path, title or 'fused share over time', figsize=(10, 3.2)) as axis:
        axis.bar(times, shares, width=series['window_s'] * 0.9, align='edge', color='tab:blue',
                 label=f'fused share per {series["window_s"]:g} s window')
        if min_share:
            axis.axhline(min_share, color='tab:red', lw=1.0, ls='--',
                         label=f'diagnostics.min_fused_share {min_share:g}')
        axis.set_ylim(-0.02, 1.05)
        axis.set_xlabel('RGB stamp time from the first input pair (s)')
        axis.set_ylabel('share of input pairs fused')
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc='lower left')
    return str(path)


@contextlib.contextmanager
def _png_figure(path, title, **subplots):
    """The axes of a new matplotlib (Agg) figure; on exit it is titled, saved to ``path`` as a
    PNG and closed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(**subplots)
    try:
        yield axes
        figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def parse_diagnostic_values(key_values):
    """``[(key, value string), ...]`` of a DiagnosticStatus -> dict with numbers and dicts
    decoded (the node writes dicts as JSON and numbers as text)."""
    values = {}
    for key, text in key_values:
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values
