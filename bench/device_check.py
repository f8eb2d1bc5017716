# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The checks a lent GPU machine is for, as one short run: CUDA timings and float16 numerics.

1. ``bench_network.py`` with the node's default weights (``--weights`` for others, e.g. the
   larger ``model/tesg_fusion.safetensors``) on ``--device``: float16 (the node's CUDA
   default, ``model.half``) at 320x240 to 1920x1080, then float32 at 640x480 and 1920x1080.
2. The same weights on the repository's TNO 19 pair (``test/data``, thermal masks, a fixed
   text vector) in float16 against float32 on the same device: the largest and mean difference
   of the fused luma in grey levels.
3. ONNX Runtime (``model.backend: onnxruntime``): the network exported by ``tesg-export`` (or
   ``--onnx FILE``) on every execution provider present (TensorRT with float16, CUDA, CPU),
   timed beside torch at 640x480 and 1920x1080, with the largest difference to torch float32
   on the TNO pair. Providers that are absent are reported as such, not skipped silently;
   ``--skip-ort`` leaves this part out.
4. The finishing stages that stay on the CPU whatever the network's device (the node's
   finishing thread: the low-light tone and the colour restoration) at 640x480 and 1920x1080:
   with the network on a GPU they bound the node's frame rate.

Needs only torch, numpy, OpenCV and safetensors (no ROS, no ``../shared``), so it runs with a
GPU machine's own python3 from the repository root::

    PYTHONPATH=. python3 bench/device_check.py --device cuda [--onnx tesg_fusion.onnx]
    . scripts/env.sh && python bench/device_check.py --device cpu   # a dry run here

On a CPU the timings are float32 only and the float16 comparison uses torch's CPU kernels.
"""

import argparse
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from tesg_ros.network.onnx_export import default_weights  # noqa: E402 (the repository first)

WEIGHTS = default_weights()
PAIR = ROOT / 'test' / 'data' / 'tno'


def float16_difference(device, weights=WEIGHTS, name='19'):
    """(max, mean) |float16 - float32| of the fused luma on one TNO pair, in grey levels."""
    import cv2
    import numpy as np
    import torch

    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig.masks import ThermalMaskBackend

    ir = cv2.imread(str(PAIR / 'ir' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(PAIR / 'vi' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
    if ir is None or vi is None:
        raise SystemExit(f'cannot read TNO pair {name} under {PAIR}')
    net = load_fusion_net(str(weights), device='cpu').eval().to(device)
    masks = ThermalMaskBackend()(None, ir, ['a warm person-shaped object', 'a hot spot'])
    text = np.random.default_rng(0).normal(size=net.config.text_dim).astype(np.float32)
    inputs = [torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device) for a in (
        ir[None, None] / 255.0, vi[None, None] / 255.0,
        fit_masks(masks, net.config.mask_channels)[None],
        (text / np.linalg.norm(text))[None])]
    with torch.inference_mode():
        single = net(*inputs)[0, 0].float().cpu().numpy()
        half = net.half()(*[t.half() for t in inputs])[0, 0].float().cpu().numpy()
    if not np.isfinite(half).all():
        return float('inf'), float('inf')
    difference = np.abs(half - single) * 255
    return float(difference.max()), float(difference.mean())


def ort_check(device, onnx_path='', runs=50, sizes=((640, 480), (1920, 1080)),
              weights=WEIGHTS):
    """Time ONNX Runtime per execution provider beside torch; print a Markdown table."""
    import copy
    import statistics
    import time

    import numpy as np
    import torch

    try:
        import onnxruntime
    except ImportError:
        print('## ONNX Runtime: not installed (pip install onnxruntime-gpu==1.32.0 matching '
              'your CUDA, see docs/benchmarks.md)', flush=True)
        return
    from tesg_ros.network.ort_backend import CPU, CUDA, OrtFusionNet, TENSORRT
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.network.onnx_export import ensure_onnx

    available = onnxruntime.get_available_providers()
    print(f'## ONNX Runtime {onnxruntime.__version__}: providers available '
          f'{", ".join(available)}', flush=True)
    path = ensure_onnx(str(weights), onnx_path)
    net = load_fusion_net(str(weights), device='cpu').eval().to(device)
    on_gpu = torch.device(device).type == 'cuda'
    index = torch.device(device).index or 0
    candidates = [('cpu', CPU)]
    if on_gpu:
        candidates = [(f'cuda:{index}', TENSORRT), (f'cuda:{index}', CUDA)] + candidates
    print('| runtime | size | median ms | p90 ms | max diff vs torch float32 (grey levels) |')
    print('|---|---|---|---|---|')
    for width, height in sizes:
        generator = np.random.default_rng(0)
        arrays = (generator.random((height, width), np.float32),
                  generator.random((height, width), np.float32),
                  (generator.random((net.config.mask_channels, height, width)) > 0.8).astype(
                      np.float32),
                  generator.normal(size=net.config.text_dim).astype(np.float32) / 20)
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(device) for a in (
                arrays[0][None, None], arrays[1][None, None], arrays[2][None], arrays[3][None])]
            reference = net(*tensors)[0, 0].float().cpu().numpy()
            for label, model, inputs in (
                    [('torch float32', net, tensors)]
                    + ([('torch float16', copy.deepcopy(net).half(), [t.half() for t in tensors])]
                       if on_gpu else [])):
                times = []
                for run in range(runs + 5):
                    start = time.perf_counter()
                    with torch.inference_mode():
                        fused = model(*inputs)[0, 0].float().cpu().numpy()
                    if run >= 5:
                        times.append((time.perf_counter() - start) * 1e3)
                times.sort()
                print(f'| {label} | {width}x{height} | {statistics.median(times):.2f} | '
                      f'{times[int(0.9 * (len(times) - 1))]:.2f} | '
                      f'{np.abs(fused - reference).max() * 255:.2f} |', flush=True)
        for provider_device, provider in candidates:
            if provider not in available:
                print(f'| {provider} | {width}x{height} | absent | | |', flush=True)
                continue
            try:
                runner = OrtFusionNet(path, device=provider_device, half=True, only=provider)
            except Exception as error:  # noqa: BLE001 - report, go on with the next one
                print(f'| {provider} | {width}x{height} | failed: {error} | | |', flush=True)
                continue
            if runner.provider != provider:
                print(f'| {provider} | {width}x{height} | not used (session on '
                      f'{runner.provider}) | | |', flush=True)
                continue
            for _ in range(5 if provider != TENSORRT else 3):  # TensorRT builds its engine
                runner(*arrays)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fused = runner(*arrays)
                times.append((time.perf_counter() - start) * 1e3)
            times.sort()
            label = provider + (' fp16' if runner.half else '')
            print(f'| {label} | {width}x{height} | {statistics.median(times):.2f} | '
                  f'{times[int(0.9 * (len(times) - 1))]:.2f} | '
                  f'{np.abs(fused - reference).max() * 255:.2f} |', flush=True)


def finishing_check(runs=30, sizes=((640, 480), (1920, 1080)), name='19'):
    """Time the CPU finishing stages (tone, colour) on the TNO pair resized; a Markdown table."""
    import statistics
    import time

    import cv2
    import numpy as np

    from tesg_ros.network.colour import luma_from_bgr_uint8, restore_colour_uint8
    from tesg_ros.network.tone import lowlight_tone

    ir = cv2.imread(str(PAIR / 'ir' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(PAIR / 'vi' / f'{name}.png'), cv2.IMREAD_COLOR)
    if ir is None or vi is None:
        raise SystemExit(f'cannot read TNO pair {name} under {PAIR}')
    print('## CPU finishing stages (the finishing thread of the node), cv2 threads '
          f'{cv2.getNumThreads()}', flush=True)
    print('| size | low-light tone median ms | colour median ms |')
    print('|---|---:|---:|')
    for width, height in sizes:
        visible = cv2.resize(vi, (width, height), interpolation=cv2.INTER_LINEAR)
        ir_grid = cv2.resize(ir, (width, height)).astype(np.float32) / 255
        vis_y = luma_from_bgr_uint8(visible)
        fused_y = (0.5 * ir_grid + 0.5 * vis_y).astype(np.float32)
        times = {'tone': [], 'colour': []}
        for run in range(runs + 3):
            start = time.perf_counter()
            toned = lowlight_tone(fused_y, ir_grid, vis_y)
            middle = time.perf_counter()
            restore_colour_uint8(toned, vis_y, visible)
            if run >= 3:
                times['tone'].append((middle - start) * 1e3)
                times['colour'].append((time.perf_counter() - middle) * 1e3)
        print(f'| {width}x{height} | {statistics.median(times["tone"]):.1f} | '
              f'{statistics.median(times["colour"]):.1f} |', flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', help='cuda[:N] or cpu (dry run)')
    parser.add_argument('--runs', type=int, default=200, help='timed runs per size')
    parser.add_argument('--onnx', default='', help='tesg-export output (default: exported '
                        'into the cache on first use, a minute or two)')
    parser.add_argument('--skip-ort', action='store_true', help='leave out ONNX Runtime')
    parser.add_argument('--weights', default=str(WEIGHTS),
                        help="the network (default: the node's default weights)")
    args = parser.parse_args(argv)

    import torch

    import bench_network

    on_gpu = torch.device(args.device).type == 'cuda'
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: CUDA is not available here')
    common = ['--device', args.device, '--weights', args.weights, '--runs', str(args.runs),
              '--warmup', '20']
    if on_gpu:
        print('## float16 (model.half, the node default on CUDA)', flush=True)
        bench_network.main(common + ['--half', '--sizes', '320x240', '640x480', '1280x720',
                                     '1920x1080'])
    print('## float32', flush=True)
    bench_network.main(common + ['--sizes', '640x480', '1920x1080'])
    largest, mean = float16_difference(args.device, args.weights)
    print(f'## float16 vs float32 on {args.device}, TNO 19 (test/data), fused luma: max '
          f'{largest:.2f}, mean {mean:.3f} grey levels', flush=True)
    if not args.skip_ort:
        ort_check(args.device, args.onnx, runs=max(10, args.runs // 4), weights=args.weights)
    finishing_check(runs=max(10, args.runs // 4))


if __name__ == '__main__':
    main()
