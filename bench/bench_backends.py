# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""torch against ONNX Runtime (float32, and int8 dynamic quantisation) in one process.

The shipped network on the same inputs, the candidates interleaved run by run (so a load
spike from another process hits all of them alike), with the same CPU thread count. Also
times the engine's reduced inference size (``model.max_pixels``: network at the working size
plus the guided upsampling back to full size) and reports the quality cost of int8 and of the
reduced size on real pairs: the fused luma against torch float32 at full size, in grey levels.

    . scripts/env.sh && python bench/bench_backends.py --threads 1 --runs 40
    python bench/bench_backends.py --onnx tesg_fusion.onnx --sizes 640x480 1280x720

Prints the environment (CPU, load average, threads) and Markdown tables.
"""

import argparse
import os
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_size(text):
    width, height = (int(part) for part in text.lower().split('x'))
    return width, height


def inputs_for(pair, width, height, mask_channels, text_dim):
    import cv2

    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.sig.masks import ThermalMaskBackend

    _, ir8, vis8 = pair
    ir = cv2.resize(ir8, (width, height), interpolation=cv2.INTER_LINEAR)
    vis = cv2.resize(vis8, (width, height), interpolation=cv2.INTER_LINEAR)
    masks = fit_masks(np.asarray(ThermalMaskBackend()(None, ir, ['a warm person']), np.float32),
                      mask_channels)
    text = np.random.default_rng(0).normal(size=text_dim).astype(np.float32)
    return (ir / np.float32(255.0)).astype(np.float32), (vis / np.float32(255.0)).astype(
        np.float32), masks, text / np.linalg.norm(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['640x480', '1280x720'])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--onnx', default='', help='exported model (default: the cache, '
                        'exported once)')
    parser.add_argument('--no-int8', action='store_true')
    parser.add_argument('--max-pixels', type=int, default=640 * 360,
                        help='reduced inference size timed beside the full size (0: skip)')
    parser.add_argument('--spinning', action='store_true', help='ORT spinning threads')
    args = parser.parse_args(argv)

    import cv2
    import torch

    from tesg_ros.engine import guided_upsample, working_size
    from tesg_ros.network.ort_backend import OrtFusionNet, quantize_dynamic_int8
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.network.onnx_export import default_weights, ensure_onnx, test_data_pairs

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    weights = default_weights()
    net = load_fusion_net(weights)
    onnx_path = ensure_onnx(weights, args.onnx)
    runners = {}

    def torch_run(ir, vis, masks, text):
        with torch.inference_mode():
            arrays = (ir[None, None], vis[None, None], masks[None], text[None])
            tensors = [torch.from_numpy(a) for a in arrays]
            return net(*tensors)[0, 0].clamp_(0, 1).numpy()

    runners['torch float32'] = torch_run
    runners['onnxruntime float32'] = OrtFusionNet(onnx_path, device='cpu', threads=args.threads,
                                                  spinning=args.spinning)
    if not args.no_int8:
        int8_path = Path(tempfile.mkdtemp()) / 'tesg_int8.onnx'
        quantize_dynamic_int8(onnx_path, int8_path)
        runners['onnxruntime int8 dynamic'] = OrtFusionNet(
            int8_path, device='cpu', threads=args.threads, spinning=args.spinning,
            quantized=True)

    pairs = test_data_pairs()
    load = os.getloadavg()
    print(f'# bench_backends: {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs, threads {args.threads}, torch {torch.__version__}, '
          f'load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    print(f'onnx: {onnx_path}; runs {args.runs} interleaved, warm-up {args.warmup}\n')
    for size in args.sizes:
        width, height = parse_size(size)
        ir, vis, masks, text = inputs_for(pairs[-1], width, height, net.config.mask_channels,
                                          net.config.text_dim)
        candidates = dict(runners)
        if args.max_pixels and width * height > args.max_pixels:
            work = working_size((height, width), args.max_pixels)
            small = [cv2.resize(a, work[::-1], interpolation=cv2.INTER_AREA)
                     for a in (ir, vis)]
            small_masks = np.stack([cv2.resize(m, work[::-1], interpolation=cv2.INTER_AREA)
                                    for m in masks])
            for name in list(runners):
                if 'int8' in name:
                    continue

                def reduced(ir_, vis_, masks_, text_, run=runners[name]):
                    low = run(small[0], small[1], small_masks, text_)
                    return guided_upsample(low, small, (ir_, vis_))

                candidates[f'{name}, max_pixels {args.max_pixels} ({work[1]}x{work[0]})'] = \
                    reduced
        times = {name: [] for name in candidates}
        cpu = {name: [] for name in candidates}
        outputs = {}
        for index in range(args.warmup + args.runs):
            for name, run in candidates.items():
                wall, process = time.perf_counter(), time.process_time()
                outputs[name] = run(ir, vis, masks, text)
                if index >= args.warmup:
                    times[name].append((time.perf_counter() - wall) * 1e3)
                    cpu[name].append((time.process_time() - process) * 1e3)
        reference = outputs['torch float32']
        print(f'## {width}x{height} (TNO {pairs[-1][0]}, thermal masks)\n')
        print('| runtime | median ms | p90 ms | CPU ms (median) | fps | max / mean diff vs '
              'torch (grey levels) |')
        print('|---|---|---|---|---|---|')
        for name in candidates:
            values = sorted(times[name])
            p90 = values[int(0.9 * (len(values) - 1))]
            median = statistics.median(values)
            difference = np.abs(outputs[name] - reference) * 255
            print(f'| {name} | {median:.1f} | {p90:.1f} | {statistics.median(cpu[name]):.1f} '
                  f'| {1e3 / median:.1f} | {difference.max():.2f} / {difference.mean():.3f} |')
        print(flush=True)
    load = os.getloadavg()
    print(f'load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')


if __name__ == '__main__':
    main()
