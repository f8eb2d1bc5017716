# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The shipped weights and the embedded sample bag: what the README's main job relies on."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from tesg_ros import bags, metrics
from tesg_ros.evaluation import evaluate_bag
from tesg_ros.image_codec import image_to_numpy
from tesg_ros.network.colour import (bgr_to_ycbcr_np, float_to_uint8, restore_colour_np,
                                     uint8_to_float)
from tesg_ros.paths import share_path

torch = pytest.importorskip('torch')

WEIGHTS = share_path('model', 'tesg_fusion.safetensors')
SAMPLE = Path(__file__).resolve().parent.parent / 'sample' / 'tno_sample'


def test_shipped_weights_load_as_safetensors_and_beat_the_pixel_average(test_data):
    from tesg_ros.network.weights import load_fusion_net

    net = load_fusion_net(WEIGHTS)
    assert net.parameter_count() < 1_000_000
    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.cvtColor(cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'),
                                 cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    vis_y = bgr_to_ycbcr_np(uint8_to_float(vi))[..., 0]
    with torch.inference_mode():
        fused_y = net(torch.from_numpy(uint8_to_float(ir))[None, None],
                      torch.from_numpy(np.ascontiguousarray(vis_y))[None, None])[0, 0].numpy()
    fused = restore_colour_np(fused_y, vi)
    average = ((ir[..., None].astype(np.float32) + vi) / 2).round().astype(np.uint8)
    model_scores = metrics.evaluate(ir, vi, fused, convention='common')
    average_scores = metrics.evaluate(ir, vi, average, convention='common')
    # A clear margin, not a tie: the shipped model keeps contrast, detail and edges.
    assert model_scores['SD'] > 1.2 * average_scores['SD']
    assert model_scores['SF'] > 1.2 * average_scores['SF']
    assert model_scores['Qabf'] > 1.2 * average_scores['Qabf']
    assert float_to_uint8(fused_y).std() > 0


@pytest.mark.timeout(300)
def test_evaluating_the_sample_bag_matches_a_direct_computation(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip('no sample bag in this install')
    result = evaluate_bag(SAMPLE, tmp_path / 'eval', semantics='off', write_registered=True,
                          montage_frames=2)
    assert result.status == 'complete' and result.exit_code == 0, result.problems
    assert len(result.frames) == 8
    fused = [m for _, _, m in bags.open_bag(result.files['bag']).messages(['/fused/image'])]
    registered = [m for _, _, m in bags.open_bag(result.files['bag']).messages(
        ['/fused/thermal_registered'])]
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m
                for _, _, m in bags.open_bag(SAMPLE).messages(['/rgb/image'])}
    direct = {'model': [], 'average': []}
    for out, debug in zip(fused, registered):
        visible = image_to_numpy(by_stamp[(out.header.stamp.sec, out.header.stamp.nanosec)])
        visible_rgb = np.repeat(visible[..., None], 3, axis=2)  # the sample camera is mono8
        ir8 = image_to_numpy(debug)
        average = np.rint((ir8[..., None].astype(np.float64) + visible_rgb) / 2)
        direct['model'].append(metrics.evaluate(ir8, visible_rgb, image_to_numpy(out)[:, :, ::-1],
                                                convention='common'))
        direct['average'].append(metrics.evaluate(ir8, visible_rgb, average.astype(np.uint8),
                                                  convention='common'))
    report = result.summary
    for method, frames in direct.items():
        for name in ('EN', 'SD', 'SF', 'AG', 'MI', 'Qabf', 'SSIM', 'VIF'):
            want = np.mean([frame[name] for frame in frames])
            assert report[method][name]['mean'] == pytest.approx(want, rel=1e-9), (method, name)


def test_shipped_weights_in_float16_stay_within_a_grey_level_of_float32(test_data):
    """The node runs the network in float16 on CUDA (``model.half``). No GPU here: torch's CPU
    float16 kernels check the format (range and precision of the attention logits, gates and
    detail gain), not CUDA's kernels."""
    from tesg_ros.engine import fit_masks
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig.masks import ThermalMaskBackend

    net = load_fusion_net(WEIGHTS).eval()
    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_GRAYSCALE)
    masks = ThermalMaskBackend()(None, ir, ['a warm person-shaped object', 'a hot spot'])
    text = np.random.default_rng(0).normal(size=net.config.text_dim).astype(np.float32)
    inputs = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (
        uint8_to_float(ir)[None, None], uint8_to_float(vi)[None, None],
        fit_masks(masks, net.config.mask_channels)[None], (text / np.linalg.norm(text))[None])]
    assert inputs[2].max() == 1.0   # the person is masked
    with torch.inference_mode():
        single = net(*inputs)[0, 0].numpy()
        half = net.half()(*[t.half() for t in inputs])[0, 0].float().numpy()
    assert np.isfinite(half).all()
    difference = np.abs(half - single) * 255
    assert difference.max() < 2.0 and difference.mean() < 0.2
