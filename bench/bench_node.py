# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark the fusion node over real DDS: latency, drop rate and memory at a camera rate.

A publisher process sends thermal (mono16) + RGB (bgr8) pairs built from a real TNO pair,
resized to the requested size, at ``--rate`` Hz with best-effort QoS; the node runs in this
process (as it would on a robot, in its own process) and a subscriber records the fused frames.

Reported: the network's own time, the node's pair-arrival → publish time (pair emitted by the
synchroniser, i.e. the later input's arrival, to fused/image published), end-to-end from the
camera's publish to the fused frame's receipt, the fraction of pairs that produced no output
(the worker keeps only the newest pair), and the process RSS over the run.

    . scripts/env.sh && python bench/bench_node.py --frames 600 --rate 30
"""

import argparse
import multiprocessing
import os
from pathlib import Path
import platform
import sys
import threading
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mb():
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def sample_pair(width, height):
    import cv2

    data = ROOT / 'test' / 'data' / 'tno'
    ir = cv2.imread(str(data / 'ir' / '10.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(data / 'vi' / '10.png'), cv2.IMREAD_GRAYSCALE)
    ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_LINEAR)
    vi = cv2.cvtColor(cv2.resize(vi, (width, height), interpolation=cv2.INTER_LINEAR),
                      cv2.COLOR_GRAY2BGR)
    return ir.astype(np.uint16) * 64 + 1000, vi


def publisher(args, ready, start):
    """Child process: publish ``args.frames`` pairs at ``args.rate`` Hz."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from tesg_ros.image_codec import numpy_to_image

    rclpy.init()
    node = rclpy.create_node('tesg_bench_cameras')
    thermal_pub = node.create_publisher(Image, 'thermal/image', qos_profile_sensor_data)
    rgb_pub = node.create_publisher(Image, 'rgb/image', qos_profile_sensor_data)
    thermal, rgb = sample_pair(args.width, args.height)
    thermal_msg = numpy_to_image(thermal, 'mono16', header=Header(frame_id='thermal'))
    rgb_msg = numpy_to_image(rgb, 'bgr8', header=Header(frame_id='rgb'))
    while thermal_pub.get_subscription_count() == 0 or rgb_pub.get_subscription_count() == 0:
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
        stamp_ns = time.time_ns()
        for msg in (thermal_msg, rgb_msg):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        thermal_pub.publish(thermal_msg)
        rgb_pub.publish(rgb_msg)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


def percentiles(values):
    if not values:
        return 'n/a'
    p50, p99 = np.percentile(values, [50, 99])
    return f'{p50:.1f} / {p99:.1f}'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=600, help='pairs to publish')
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate, Hz')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--weights', default='', help='safetensors (default: shipped model)')
    parser.add_argument('--semantics', default='live', choices=('live', 'disabled'))
    parser.add_argument('--semantics-period', type=float, default=5.0,
                        help='seconds between background descriptions (semantics.period)')
    parser.add_argument('--device', default='auto')
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from tesg_ros.fusion_node import FusionNode

    rclpy.init()
    overrides = {'model.device': args.device, 'semantics.mode': args.semantics,
                 'semantics.period': args.semantics_period, 'sync.slop': 0.005}
    if args.weights:
        overrides['model.weights'] = args.weights
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    received = []
    listener = rclpy.create_node('tesg_bench_listener')
    listener.create_subscription(
        Image, 'fused/image',
        lambda msg: received.append((time.time_ns(), msg.header.stamp.sec * 10**9
                                     + msg.header.stamp.nanosec)), QoSProfile(depth=10))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    context = multiprocessing.get_context('spawn')
    ready, start = context.Event(), context.Event()
    child = context.Process(target=publisher, args=(args, ready, start))
    child.start()
    if not ready.wait(60.0):
        raise SystemExit('publisher did not discover the node within 60 s')
    memory = [(0.0, rss_mb())]
    start.set()
    begin = time.monotonic()
    expected_end = begin + args.frames / args.rate + 3.0
    while time.monotonic() < expected_end:
        time.sleep(1.0)
        memory.append((time.monotonic() - begin, rss_mb()))
    child.join(timeout=30.0)
    snapshot = node.diagnostics_snapshot()
    node.shutdown()
    executor.shutdown()
    node.destroy_node()
    listener.destroy_node()
    rclpy.shutdown()

    end_to_end = [(arrived - stamp) / 1e6 for arrived, stamp in received]
    pairs = snapshot['pairs']
    published = snapshot['published']
    drop_rate = 1.0 - published / pairs if pairs else float('nan')
    rss = np.array([m for _, m in memory])
    half = len(rss) // 2
    print(f'# bench_node: {args.width}x{args.height} at {args.rate:g} Hz, {args.frames} pairs')
    print(f'- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads '
          f'{__import__("torch").get_num_threads()}; device {snapshot["device"]} '
          f'({snapshot["dtype"]}); semantics {args.semantics} every {args.semantics_period:g} s; '
          f'weights {snapshot["weights"]}')
    print(f'- GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "(unset)")}')
    print(f'- command: python bench/bench_node.py {" ".join(sys.argv[1:])}')
    print()
    print('| measure | p50 / p99 (ms) |')
    print('|---|---|')
    print(f'| network forward | {percentiles_of(snapshot["network_ms"])} |')
    arrival = percentiles_of(snapshot['arrival_to_publish_ms'])
    print(f'| node: pair arrival → publish | {arrival} |')
    print(f'| node: decode → publish (worker) | {percentiles_of(snapshot["processing_ms"])} |')
    print(f'| camera publish → fused received | {percentiles(end_to_end)} |')
    print()
    print(f'- received thermal {snapshot["thermal_received"]}, rgb {snapshot["rgb_received"]} '
          f'of {args.frames} each (best-effort: DDS may drop under load)')
    if 'pairing' in snapshot:
        print(f'- pairing counters: {snapshot["pairing"]}')
    print(f'- pairs {pairs}, published {published}, no-output rate {drop_rate:.1%} '
          f'(busy worker replaced {snapshot["dropped_busy"]}, errors '
          f'{snapshot["dropped_bad_input"] + snapshot["dropped_error"]})')
    print(f'- RSS MB: start {rss[0]:.0f}, first-half mean {rss[:half].mean():.0f}, '
          f'second-half mean {rss[half:].mean():.0f}, max {rss.max():.0f}')
    return 0


def percentiles_of(summary):
    if not summary.get('count'):
        return 'n/a'
    return f'{summary["p50"]:.1f} / {summary["p99"]:.1f}'


if __name__ == '__main__':
    sys.exit(main())
