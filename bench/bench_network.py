# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Latency benchmark of TesgFusionNet: median/p90 per frame at common camera sizes.

Run inside the project environment (``. scripts/env.sh``, which sets GLIBC_TUNABLES so freed
buffers are reused instead of page-faulted in again every frame)::

    python bench/bench_network.py                       # CPU, float32, 4 sizes
    python bench/bench_network.py --device cuda --half  # GPU, float16
    python bench/bench_network.py --sizes 640x480 --runs 50 --threads 2 --breakdown

Prints the environment and a Markdown table per frame: wall-clock median and p90, FPS, the
median process CPU time (all threads together; with ``--threads 1`` on a busy machine it is the
better estimate of the unloaded latency, with several threads it includes OpenMP spin-waiting)
and GMAC (convolutions, linear layers and attention matmuls, not element-wise operations).
"""

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tesg_ros.network import load_fusion_net, TesgConfig, TesgFusionNet

DEFAULT_SIZES = ['320x240', '640x480', '1280x720', '1920x1080']


def parse_size(text):
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must be WIDTHxHEIGHT, got {text!r}')
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f'size must be positive, got {text!r}')
    return width, height


def build_inputs(config, batch, width, height, device, dtype, guided):
    generator = torch.Generator().manual_seed(0)
    ir = torch.rand(batch, 1, height, width, generator=generator)
    vis = torch.rand(batch, 1, height, width, generator=generator)
    masks = text = None
    if guided:
        masks = torch.zeros(batch, config.mask_channels, height, width)
        masks[..., height // 4:height // 2, width // 4:width // 2] = 1.0
        text = torch.randn(batch, config.text_dim, generator=generator)
    return [None if t is None else t.to(device=device, dtype=dtype)
            for t in (ir, vis, masks, text)]


def count_macs(net, inputs, breakdown=False):
    """MACs of one forward (conv, linear, attention matmuls); optionally per top-level module."""
    with FlopCounterMode(display=False) as counter:
        # The explicit attention path (same MACs as SDPA) is what the counter understands.
        net(*inputs, return_intermediates=True)
    total = counter.get_total_flops() / 2
    parts = {}
    if breakdown:
        root = type(net).__name__ + '.'
        counts = {name[len(root):]: sum(ops.values()) / 2
                  for name, ops in counter.get_flop_counts().items() if name.startswith(root)}
        for name, value in counts.items():
            top = name.split('.')[0]
            if name == top:
                parts[top] = value
            elif name.count('.') == 1 and top not in counts:  # ModuleList members
                parts[top] = parts.get(top, 0.0) + value
        rest = total - sum(parts.values())
        if rest > 0:
            parts['(top-level ops)'] = rest
    return total, parts


def time_forward(net, inputs, runs, warmup, synchronize):
    for _ in range(warmup):
        net(*inputs)
    synchronize()
    times = []
    cpu_times = []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        net(*inputs)
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    times.sort()
    return (statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))],
            statistics.median(cpu_times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[parse_size(s) for s in DEFAULT_SIZES],
                        help='frame sizes WIDTHxHEIGHT (default: %(default)s)')
    parser.add_argument('--runs', type=int, default=30, help='timed runs per size')
    parser.add_argument('--warmup', type=int, default=5, help='untimed runs per size')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch default)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--half', action='store_true', help='float16 (GPU only)')
    parser.add_argument('--channels-last', action='store_true',
                        help='convert the weights to channels_last memory format')
    parser.add_argument('--no-guidance', action='store_true',
                        help='masks=None and text=None instead of a mask and a text embedding')
    parser.add_argument('--weights', default=None, help='checkpoint (.safetensors) to load')
    parser.add_argument('--breakdown', action='store_true', help='MACs per top-level module')
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.half and device.type != 'cuda':
        parser.error('--half needs --device cuda (CPU float16 convolutions are slow)')
    dtype = torch.float16 if args.half else torch.float32
    net = (load_fusion_net(args.weights, device='cpu') if args.weights
           else TesgFusionNet(TesgConfig()).eval())
    net.validate_inputs = False  # measure the network, not the range checks
    net = net.to(device=device, dtype=dtype)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    device_name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                   else platform.processor() or platform.machine())
    print(f'- torch {torch.__version__}, python {platform.python_version()}, '
          f'device {device} ({device_name}), dtype {dtype}, batch {args.batch}')
    print(f'- threads {torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()}), '
          f'channels_last {args.channels_last}, guidance {not args.no_guidance}')
    print(f'- GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "(unset)")}')
    print(f'- parameters {net.parameter_count():,}; config {net.config.to_dict()}')
    print(f'- load average at start {os.getloadavg()[0]:.2f} '
          f'(other processes share the CPU when > 0)')
    print(f'- command: {" ".join([os.path.basename(sys.executable)] + sys.argv)}')
    print()
    print('| size | median ms | p90 ms | FPS (median) | CPU ms (median) | GMAC |')
    print('|---|---:|---:|---:|---:|---:|')
    breakdowns = {}
    with torch.inference_mode():
        for width, height in args.sizes:
            inputs = build_inputs(net.config, args.batch, width, height, device, dtype,
                                  not args.no_guidance)
            macs, parts = count_macs(net, inputs, args.breakdown)
            median, p90, cpu = time_forward(net, inputs, args.runs, args.warmup, synchronize)
            print(f'| {width}x{height} | {median:.1f} | {p90:.1f} | {1e3 / median:.1f} | '
                  f'{cpu:.1f} | {macs / 1e9:.3f} |', flush=True)
            breakdowns[f'{width}x{height}'] = (macs, parts)
    if args.breakdown:
        for size, (macs, parts) in breakdowns.items():
            print(f'\nMACs per module at {size}:\n\n| module | GMAC | share |\n|---|---:|---:|')
            for name, value in sorted(parts.items(), key=lambda item: -item[1]):
                print(f'| {name} | {value / 1e9:.3f} | {100 * value / macs:.0f} % |')
    print(f'- load average at end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
