# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame cost of the node's optional outputs, paid only while they have a subscriber.

    python bench/bench_debug_outputs.py                  # 640x512, shipped weights, CPU
    python bench/bench_debug_outputs.py --size 1280x720 --runs 30 --threads 1

Times (median and p90, ms, process wall clock) of: the engine's forward pass without and with
the infrared-share map (``~/debug/weights``), the mask overlay of two phrases
(``~/debug/masks``) and the JPEG of ``fused/image/compressed`` at ``output.jpeg_quality``.
Inputs are a smooth random scene (JPEG size and speed depend on content). CPU time is shared
with whatever else runs: compare rows of one run, not runs on different machines.
"""

import argparse
import statistics
import time

import numpy as np


def _times(function, runs):
    function()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.9 * len(samples)))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='640x512', help='WIDTHxHEIGHT (default 640x512)')
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1, help='torch/OpenCV threads')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality')
    parser.add_argument('--weights', default='', help='safetensors (default: shipped)')
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split('x'))

    import cv2

    from tesg_ros import debug_images
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.sensor.image_codec import numpy_to_compressed
    from tesg_ros.network.colour import luma_from_bgr_uint8
    from tesg_ros.node_params import defaults

    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32),
                             (0, 0), 6)
    bgr = np.clip((scene - scene.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    ir = cv2.GaussianBlur(rng.uniform(0, 1, (height, width)).astype(np.float32), (0, 0), 8)
    ir = (ir - ir.min()) / (ir.max() - ir.min())
    masks = np.stack([(ir > 0.7), (ir < 0.2)]).astype(np.float32)
    params = dict(defaults(), **{'semantics.mode': 'disabled', 'model.device': 'cpu',
                                 'model.threads': args.threads, 'model.weights': args.weights})
    engine = FusionEngine(EngineSettings.from_params(params))
    vis_y = luma_from_bgr_uint8(bgr)
    net_masks = np.zeros((engine.mask_channels, height, width), np.float32)
    text = np.zeros(engine.text_dim, np.float32)
    rows = [
        ('forward (fused only)', lambda: engine._forward(ir, vis_y, net_masks, text)),
        ('forward + infrared share', lambda: engine._forward_with_weights(ir, vis_y, net_masks,
                                                                          text)),
        ('mask overlay, 2 masks', lambda: debug_images.mask_overlay(bgr, masks)),
        (f'JPEG quality {args.quality}', lambda: numpy_to_compressed(
            bgr, 'bgr8; jpeg compressed bgr8', message_class=_Message,
            jpeg_quality=args.quality)),
    ]
    print(f'{width}x{height}, {args.runs} runs, {args.threads} thread(s), weights '
          f'{engine.weights_path}')
    print('| step | p50 ms | p90 ms |\n|---|---|---|')
    for name, function in rows:
        p50, p90 = _times(function, args.runs)
        print(f'| {name} | {p50:.1f} | {p90:.1f} |')


class _Message:
    """Plain message object for numpy_to_compressed (keeps the bench free of rclpy)."""

    def __init__(self):
        self.header, self.format, self.data = None, '', b''


if __name__ == '__main__':
    main()
