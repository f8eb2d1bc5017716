# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Soak and lifecycle churn of the fusion node over real DDS: memory, threads, accounting.

The node runs alone in a child process (``python -m tesg_ros.ros.fusion_node``, the shipped
weights, live semantics, one torch thread), as on a robot; this process plays the cameras
(thermal mono16 + RGB bgr8 built from a TNO pair, best-effort QoS, loopback), reads
``/diagnostics`` and drives the lifecycle services. The node's resident size (VmRSS) and
thread count are read from ``/proc/<pid>/status``.

``soak``: ``--pairs`` pairs at ``--rate`` Hz; RSS and threads sampled every second. When the
stream has drained, the node's own counters must balance exactly: ``published`` + every
``dropped_*`` = ``pairs`` (the pairs the synchroniser emitted); the pairing counters say what
became of the messages sent. Then SIGINT: the exit code and any abort or error line.

``churn``: ``--cycles`` deactivate -> activate cycles with pairs flowing at ``--rate`` Hz;
after each activation the bench waits for a fused frame, then samples RSS and threads.
Reported: after cycle 1 and after the last, and the largest. Then SIGINT as above.

    . scripts/env.sh && python bench/soak.py soak --pairs 10000 --rate 20
    . scripts/env.sh && python bench/soak.py churn --cycles 100 --rate 10
"""

import argparse
import json
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from cameras import Cameras

ROOT = Path(__file__).resolve().parent.parent
BAD_OUTPUT = ('terminate called', 'RCLError', 'fusion failed', 'Traceback')


def proc_status(pid):
    """(VmRSS in MB, thread count) of ``pid``."""
    rss = threads = float('nan')
    with open(f'/proc/{pid}/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith('Threads:'):
                threads = int(line.split()[1])
    return rss, threads


def start_node(args, extra):
    params = {'model.threads': 1, 'semantics.mode': 'live', 'diagnostics.period': 0.5,
              'worker.max_wait': 0.0}
    params.update(extra)
    command = [sys.executable, '-m', 'tesg_ros.ros.fusion_node', '--ros-args']
    for name, value in params.items():
        command += ['-p', f'{name}:={json.dumps(value) if isinstance(value, bool) else value}']
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)


class Driver(Cameras):
    """Cameras, a fused-image counter, /diagnostics and lifecycle clients in one rclpy node."""

    def __init__(self, width, height):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState

        super().__init__('tesg_soak_driver', width, height, self._on_fused)
        self.fused = 0
        self.diagnostics = None
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.change = self.node.create_client(ChangeState, '/tesg_fusion/change_state')
        self.ChangeState = ChangeState
        self.spin()

    def _on_fused(self, msg):
        self.fused += 1

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith('fusion'):
                values = {kv.key: kv.value for kv in status.values}
                values['_level'] = int.from_bytes(status.level, 'little')
                values['_message'] = status.message
                self.diagnostics = values

    def transition(self, label, timeout=120.0):
        assert self.change.wait_for_service(timeout_sec=30.0), 'no change_state service'
        request = self.ChangeState.Request()
        request.transition.label = label
        future = self.change.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f'{label}: no answer in {timeout} s')
            time.sleep(0.01)
        if not future.result().success:
            raise RuntimeError(f'{label} failed')

    def wait_for(self, predicate, what, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f'timed out waiting for {what}')
            time.sleep(0.05)


class Streamer:
    """Publish pairs at ``rate`` Hz from a thread (stamps: wall clock, strictly increasing)."""

    def __init__(self, driver, rate, count=None):
        self.driver, self.period, self.count = driver, 1.0 / rate, count
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        next_time = time.monotonic()
        sent = 0
        last_stamp = 0
        while not self.stop.is_set() and (self.count is None or sent < self.count):
            stamp = max(time.time_ns(), last_stamp + 1000)
            self.driver.publish_pair(stamp)
            last_stamp = stamp
            sent += 1
            next_time += self.period
            delay = next_time - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)

    def join(self):
        self.stop.set()
        self.thread.join()


def counters(values):
    """The node's pair accounting from one /diagnostics status."""
    drops = {key: int(value) for key, value in values.items()
             if key.startswith('dropped_')}
    return int(values['pairs']), int(values['published']), drops


def stop_node(process, timeout=60.0):
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    lines = output.splitlines()
    bad = [line for line in lines if any(word in line for word in BAD_OUTPUT)]
    if bad:  # the whole story of the first one
        first = next(i for i, line in enumerate(lines) if line in bad)
        print('\n'.join(['node output around the first bad line:'] + lines[first - 3:first + 30]))
    return process.returncode, bad


def wait_balanced(driver, timeout=60.0):
    """The last /diagnostics once the counters stop changing and balance (or the timeout)."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        values = driver.diagnostics
        if values is None:
            continue
        pairs, published, drops = counters(values)
        state = (pairs, published, tuple(sorted(drops.items())))
        if state == previous and published + sum(drops.values()) == pairs:
            return values
        previous = state
    return driver.diagnostics


def run_soak(args):
    width, height = args.size
    process = start_node(args, {})
    driver = Driver(width, height)
    samples = []
    try:
        driver.wait_for(lambda: driver.thermal_pub.get_subscription_count() > 0
                        and driver.diagnostics is not None, 'the node', 180.0)
        start = time.monotonic()
        streamer = Streamer(driver, args.rate, args.pairs)
        next_sample = start
        while streamer.thread.is_alive():
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - start,) + proc_status(process.pid))
                next_sample += 1.0
            time.sleep(0.05)
        streamer.join()
        values = wait_balanced(driver)
        samples.append((time.monotonic() - start,) + proc_status(process.pid))
    finally:
        returncode, bad = stop_node(process)
        driver.close()
    pairs, published, drops = counters(values)
    pairing = json.loads(values.get('pairing', '{}'))
    report_samples(samples)
    print(f'sent {driver.sent} pairs at {args.rate:g} Hz, {width}x{height}; fused frames '
          f'received by the driver: {driver.fused}')
    print(f'node: pairs {pairs}, published {published}, '
          + ', '.join(f'{key} {value}' for key, value in sorted(drops.items())))
    print(f'published + dropped = {published + sum(drops.values())} '
          f'({"balanced" if published + sum(drops.values()) == pairs else "NOT balanced"})')
    if pairing:
        print('pairing: ' + ', '.join(f'{key} {value}' for key, value in sorted(pairing.items())))
    print(f'SIGINT: exit code {returncode}; bad output lines: {bad or "none"}')


def report_samples(samples):
    rss = np.array([s[1] for s in samples])
    threads = np.array([s[2] for s in samples])
    first = next((i for i, s in enumerate(samples) if s[0] >= 30.0), 0)
    print(f'{len(samples)} samples over {samples[-1][0]:.0f} s')
    print(f'RSS MB: first {rss[0]:.0f}, at 30 s {rss[first]:.0f}, last {rss[-1]:.0f}, '
          f'max {rss.max():.0f}; last vs 30 s: {100 * (rss[-1] / rss[first] - 1):+.1f} %')
    print(f'threads: first {threads[0]}, at 30 s {threads[first]}, last {threads[-1]}, '
          f'max {threads.max()}')


def run_churn(args):
    width, height = args.size
    process = start_node(args, {})
    driver = Driver(width, height)
    rows = []
    try:
        driver.wait_for(lambda: driver.thermal_pub.get_subscription_count() > 0
                        and driver.diagnostics is not None, 'the node', 180.0)
        streamer = Streamer(driver, args.rate)
        driver.wait_for(lambda: driver.fused > 0, 'a first fused frame', 120.0)
        start = time.monotonic()
        for cycle in range(1, args.cycles + 1):
            driver.transition('deactivate')
            driver.transition('activate')
            fused = driver.fused
            driver.wait_for(lambda: driver.fused > fused, f'a fused frame in cycle {cycle}',
                            120.0)
            rss, threads = proc_status(process.pid)
            rows.append((cycle, rss, threads))
            if cycle == 1 or cycle % 10 == 0:
                print(f'cycle {cycle}: RSS {rss:.0f} MB, {threads} threads '
                      f'({time.monotonic() - start:.0f} s)', flush=True)
        streamer.join()
        values = wait_balanced(driver)
    finally:
        returncode, bad = stop_node(process)
        driver.close()
    rss = np.array([r[1] for r in rows])
    threads = np.array([r[2] for r in rows])
    pairs, published, drops = counters(values)
    print(f'{args.cycles} cycles, pairs at {args.rate:g} Hz, {width}x{height}')
    print(f'RSS MB after cycle 1: {rss[0]:.0f}, after {args.cycles}: {rss[-1]:.0f} '
          f'({100 * (rss[-1] / rss[0] - 1):+.1f} %), max {rss.max():.0f}')
    print(f'threads after cycle 1: {threads[0]}, after {args.cycles}: {threads[-1]}, '
          f'max {threads.max()}')
    print(f'node: pairs {pairs}, published {published}, '
          + ', '.join(f'{key} {value}' for key, value in sorted(drops.items()))
          + f'; balanced: {published + sum(drops.values()) == pairs}')
    print(f'SIGINT: exit code {returncode}; bad output lines: {bad or "none"}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('mode', choices=('soak', 'churn'))
    parser.add_argument('--pairs', type=int, default=10000)
    parser.add_argument('--cycles', type=int, default=100)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--size', default='320x240',
                        type=lambda text: tuple(int(v) for v in text.split('x')))
    args = parser.parse_args(argv)
    if args.mode == 'soak':
        run_soak(args)
    else:
        run_churn(args)


if __name__ == '__main__':
    main()
