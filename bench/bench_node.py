# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark the fusion node over real DDS: latency, where it goes, drops and memory.

A second process plays the cameras and the consumer: it sends thermal (mono16) + RGB (bgr8)
pairs built from a real TNO pair, resized to the requested size, at ``--rate`` Hz with
best-effort QoS, and records when each fused frame arrives (as a detector in its own process
would). The node runs alone in this process, as on a robot.

Reported: the network's own time; the node's pair-arrival → publish time (pair emitted by the
synchroniser, i.e. the later input's arrival, to fused/image published) and its stages (wait
in the mailbox, decode, the engine's stages, message building, publishing); camera publish →
fused received; the fraction of pairs that produced no output (the worker keeps only the
newest pair); CPU seconds per thread of both processes; the process RSS over the run.

    . scripts/env.sh && python bench/bench_node.py --frames 600 --rate 30
"""

import argparse
from collections import Counter
import glob
import multiprocessing
import os
from pathlib import Path
import platform
import sys
import threading
import time

import numpy as np

from cameras import sample_pair

ROOT = Path(__file__).resolve().parent.parent
# TNO pair 10, bilinear: the input of every figure this bench produced in docs/benchmarks.md.
SAMPLE = {'pair': '10', 'linear': True}


def rss_mb():
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def thread_cpu_seconds(pid, names):
    """User + system CPU seconds per thread of ``pid``, keyed by ``names[tid]`` or the comm."""
    seconds = Counter()
    tick = os.sysconf('SC_CLK_TCK')
    for path in glob.glob(f'/proc/{pid}/task/*'):
        tid = int(path.rsplit('/', 1)[1])
        try:
            with open(f'{path}/comm', encoding='utf-8') as comm_file:
                comm = comm_file.read().strip()
            with open(f'{path}/stat', encoding='ascii') as stat_file:
                fields = stat_file.read().rsplit(')', 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        seconds[names.get(tid, comm)] += (int(fields[11]) + int(fields[12])) / tick
    return seconds


def cameras_and_consumer(args, ready, start, results):
    """Child process: publish ``args.frames`` pairs at ``args.rate`` Hz, record fused frames.

    Sends ``(received [(arrival_ns, stamp_ns)], cpu seconds of this process)`` on
    ``results`` when done.
    """
    from cameras import Cameras

    if args.publisher_nice:
        os.nice(args.publisher_nice)
    received = []
    cameras = Cameras('tesg_bench_cameras', args.width, args.height, lambda msg: received.append(
        (time.time_ns(), msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)),
        frame_ids=('thermal', 'rgb'), **SAMPLE)
    cameras.spin()
    while not cameras.discovered():
        time.sleep(0.05)
    ready.set()
    start.wait()
    period = 1.0 / args.rate
    begin = time.monotonic()
    for index in range(args.frames):
        target = begin + index * period
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cameras.publish_pair(time.time_ns())
    time.sleep(1.5)  # the last fused frames
    cpu = thread_cpu_seconds(os.getpid(), {threading.main_thread().native_id: 'cameras',
                                           cameras.spinner.native_id: 'consumer executor'})
    cameras.close()
    results.send((list(received), dict(cpu)))


def percentiles_of(summary):
    if not summary.get('count'):
        return 'n/a'
    return f'{summary["p50"]:.1f} / {summary["p99"]:.1f}'


def python_thread_names(node, spinner):
    """native thread id -> a name for the report, for every thread Python knows about."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    names[threading.main_thread().native_id] = 'main (idle)'
    names[spinner.native_id] = 'executor'
    worker = node._worker  # noqa: SLF001 - the benchmark names the node's threads
    if worker is not None:
        names[worker.native_id] = 'fusion worker'
    return names


def engine_baseline(engine, args):
    """Network ms of ``args.baseline_runs`` engine.process calls on the benchmark's pair."""
    thermal, rgb = sample_pair(args.width, args.height, **SAMPLE)
    times = []
    for _ in range(args.baseline_runs):
        times.append(engine.process(thermal, rgb).timings_ms['network'])
    return times


def main(argv=None):
    from tesg_ros.node_params import PARAMETERS_BY_NAME
    from tesg_ros.stats import counted_percentiles

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=600, help='pairs to publish')
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate, Hz')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--weights', default='', help='safetensors (default: shipped model)')
    parser.add_argument('--semantics', default='live', choices=('live', 'disabled'))
    parser.add_argument('--semantics-period', type=float,
                        default=PARAMETERS_BY_NAME['semantics.period'].default,
                        help='seconds between background descriptions (semantics.period)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=None,
                        help='model.threads (default: the node parameter default)')
    parser.add_argument('--max-wait', type=float, default=None,
                        help='worker.max_wait in s (default: the node parameter default; '
                             '0 = fuse every pair the worker takes, rate first)')
    parser.add_argument('--set', dest='set_values', action='append', default=[],
                        metavar='NAME=VALUE', help='any node parameter, e.g. '
                        'model.backend=onnxruntime, model.max_pixels=230400 (repeatable)')
    parser.add_argument('--publisher-nice', type=int, default=0,
                        help='nice increment of the cameras/consumer process (e.g. 10)')
    parser.add_argument('--baseline-runs', type=int, default=20,
                        help='engine.process calls timed in this process before the cameras '
                             'start: the network alone, same threads, same machine load')
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from tesg_ros.ros.fusion_node import FusionNode, STAGES

    rclpy.init()
    overrides = {'model.device': args.device, 'semantics.mode': args.semantics,
                 'semantics.period': args.semantics_period, 'sync.slop': 0.005}
    if args.weights:
        overrides['model.weights'] = args.weights
    if args.threads is not None:
        overrides['model.threads'] = args.threads
    if args.max_wait is not None:
        overrides['worker.max_wait'] = args.max_wait
    from tesg_ros.replay import parse_set_values
    overrides.update(parse_set_values(args.set_values))
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    max_wait_used = node.get_parameter('worker.max_wait').value
    baseline = engine_baseline(node.engine, args)
    executor = SingleThreadedExecutor()  # as fusion_node's main()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    context = multiprocessing.get_context('spawn')
    ready, start = context.Event(), context.Event()
    results_out, results_in = context.Pipe(duplex=False)
    child = context.Process(target=cameras_and_consumer, args=(args, ready, start, results_in))
    child.start()
    if not ready.wait(60.0):
        raise SystemExit('the cameras process did not discover the node within 60 s')
    cpu_before = thread_cpu_seconds(os.getpid(), python_thread_names(node, spinner))
    memory = [(0, rss_mb())]  # (pairs so far, RSS MB)
    start.set()
    begin = time.monotonic()
    expected_end = begin + args.frames / args.rate + 2.0
    while time.monotonic() < expected_end:
        time.sleep(1.0)
        memory.append((node.diagnostics_snapshot()['pairs'], rss_mb()))
    received, child_cpu = results_out.recv() if results_out.poll(60.0) else ([], {})
    child.join(timeout=30.0)
    cpu = thread_cpu_seconds(os.getpid(), python_thread_names(node, spinner))
    for thread_name, seconds in cpu_before.items():
        if thread_name in cpu:  # model loading / warm-up happened before the run
            cpu[thread_name] -= seconds
    snapshot = node.diagnostics_snapshot()
    node.shutdown()
    executor.shutdown()
    # A spin thread still inside rclpy when the interpreter exits aborts the process
    # ("terminate called without an active exception").
    spinner.join(timeout=10.0)
    node.destroy_node()
    rclpy.shutdown()

    end_to_end = [(arrived - stamp) / 1e6 for arrived, stamp in received]
    pairs = snapshot['pairs']
    published = snapshot['published']
    drop_rate = 1.0 - published / pairs if pairs else float('nan')
    rss = np.array([m for _, m in memory])
    half = len(rss) // 2
    load = os.getloadavg()
    print(f'# bench_node: {args.width}x{args.height} at {args.rate:g} Hz, {args.frames} pairs')
    print(f'- machine: {platform.machine()}, {os.cpu_count()} CPUs, load average '
          f'{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the end; torch '
          f'threads {snapshot.get("torch_threads")}; device {snapshot.get("device")} '
          f'({snapshot.get("dtype")}); semantics {args.semantics} every '
          f'{args.semantics_period:g} s; cameras nice '
          f'{args.publisher_nice}; weights {snapshot.get("weights")}; backend '
          f'{snapshot.get("backend", "torch")}; max_pixels {snapshot.get("max_pixels", 0)}; '
          f'worker.max_wait {max_wait_used}')
    print(f'- GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "(unset)")}')
    print(f'- command: python bench/bench_node.py {" ".join(sys.argv[1:])}')
    print()
    print('| measure | p50 / p99 (ms) |')
    print('|---|---|')
    if baseline:
        print(f'| network alone: same engine, no traffic, just before the run | '
              f'{percentiles_of(counted_percentiles(baseline))} |')
    print(f'| network (luma + forward) in the node | {percentiles_of(snapshot["network_ms"])} |')
    arrival = percentiles_of(snapshot['arrival_to_publish_ms'])
    print(f'| node: pair arrival → publish | {arrival} |')
    print(f'| node: decode → publish (worker) | {percentiles_of(snapshot["processing_ms"])} |')
    end_to_end_ms = percentiles_of(counted_percentiles(end_to_end))
    print(f'| camera publish → fused received | {end_to_end_ms} |')
    print()
    print('| stage | p50 (ms) | p99 (ms) |')
    print('|---|---:|---:|')
    for stage in STAGES:
        summary = snapshot['stage_ms'][stage]
        if summary.get('count'):
            print(f'| {stage} | {summary["p50"]:.2f} | {summary["p99"]:.2f} |')
    print()
    run_seconds = args.frames / args.rate
    print(f'CPU seconds during the {run_seconds:.0f} s run (100 % of one core = '
          f'{run_seconds:.0f} s):')
    for process, seconds in (('node', cpu), ('cameras + consumer', child_cpu)):
        busiest = sorted(seconds.items(), key=lambda item: -item[1])
        shown = ', '.join(f'{name} {value:.1f}' for name, value in busiest if value >= 0.05)
        print(f'- {process}: total {sum(seconds.values()):.1f} ({shown})')
    if published:
        wall = snapshot['processing_ms']['p50']
        # Threads Python did not start keep the comm 'python': torch's OpenMP helpers (with
        # more than one torch thread), tokenizer threads (live semantics), ...
        print(f'- fusion worker CPU per fused frame: '
              f'{cpu.get("fusion worker", 0.0) / published * 1e3:.1f} ms (plus '
              f'{cpu.get("python", 0.0) / published * 1e3:.1f} ms in threads Python did not '
              f'start), against {wall:.1f} ms wall (p50) from decode to publish')
    print()
    print(f'- received thermal {snapshot["thermal_received"]}, rgb {snapshot["rgb_received"]} '
          f'of {args.frames} each (best-effort: DDS may drop under load); fused received by '
          f'the consumer {len(received)}')
    if len(received) > 1:
        arrivals = np.array(sorted(received), dtype=np.float64) / 1e6  # (arrived, stamp) ms
        span = arrivals[-1, 0] - arrivals[0, 0]
        intervals = np.diff(arrivals[:, 0])
        # Age of the newest fused frame the consumer holds, averaged over time: what a
        # detector sees between updates (rate and latency together).
        ages = (arrivals[:-1, 0] - arrivals[:-1, 1]) * intervals + intervals ** 2 / 2
        print(f'- fused frames at the consumer: {(len(received) - 1) / span * 1e3:.1f} per s; '
              f'mean age of the newest fused frame held there: {ages.sum() / span:.1f} ms')
    print(f'- pairs {pairs}, published {published}, no-output rate {drop_rate:.1%} '
          f'(busy worker replaced {snapshot["dropped_busy"]}, waited longer than '
          f'worker.max_wait {snapshot["dropped_late"]}, errors '
          f'{snapshot["dropped_bad_input"] + snapshot["dropped_error"]})')
    print(f'- RSS MB: start {rss[0]:.0f}, first-half mean {rss[:half].mean():.0f}, '
          f'second-half mean {rss[half:].mean():.0f}, max {rss.max():.0f}')
    marks = [(count, value) for count, value in memory if count]
    per_thousand, next_mark = [], 1000
    for count, value in marks:
        if count >= next_mark:
            per_thousand.append(f'{next_mark // 1000}k: {value:.0f}')
            next_mark = (count // 1000 + 1) * 1000
    if per_thousand:
        print(f'- RSS MB at every 1000 pairs: {", ".join(per_thousand)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
