# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training pipeline: losses on known inputs, aligned augmentation, cache, trainer, DDP, CLI."""

import json
import math
import os
from pathlib import Path
import shutil
import socket

import cv2
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
import torch

from tesg_ros.errors import ConfigError, ImageEncodingError, TesgError
from tesg_ros.cli import train as cli
from tesg_ros.training import dataset, losses, trainer

# ----------------------------------------------------------------------------- helpers

PAIR_SHAPE = (48, 64)


def _write_pair(root, stem, rng, warm_box, ir_ext='.png', vi_ext='.jpg'):
    """A textured colour visible image and an IR image with one warm person-shaped blob."""
    height, width = PAIR_SHAPE
    (root / 'ir').mkdir(parents=True, exist_ok=True)
    (root / 'vi').mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    ir = 70 + 10 * np.sin(xx / 5.0) + rng.normal(0, 2, (height, width))
    top, left, box_h, box_w = warm_box
    ir[top:top + box_h, left:left + box_w] = 230
    visible = np.stack([100 + 60 * np.sin(xx / 3.0 + rng.uniform(0, 3)),
                        120 + 50 * np.cos(yy / 4.0),
                        90 + 40 * np.sin((xx + yy) / 6.0)], axis=2)
    visible += rng.normal(0, 3, visible.shape)
    cv2.imwrite(str(root / 'ir' / f'{stem}{ir_ext}'), np.clip(ir, 0, 255).astype(np.uint8))
    cv2.imwrite(str(root / 'vi' / f'{stem}{vi_ext}'),
                np.clip(visible, 0, 255).astype(np.uint8))


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
    """Tiny train (5 pairs) and val (2 pairs) sets with a filled semantics cache.

    The cache is filled once with the real SIG (offline describer, MiniLM, thermal masks),
    so every training run below loads no model.
    """
    root = tmp_path_factory.mktemp('tesg_train_data')
    rng = np.random.default_rng(7)
    for index in range(5):
        _write_pair(root / 'train', f'pair{index}', rng, (10, 8 + 9 * index, 22, 8))
    for index in range(2):
        _write_pair(root / 'val', f'val{index}', rng, (12, 20 + 10 * index, 20, 8))
    (root / 'train' / 'pair0.txt').write_text('A warm person is standing on the left.\n')
    cache_dir = root / 'cache'
    cache = _cache(cache_dir)
    dataset.load_samples([root / 'train', root / 'val'], cache)
    assert cache.misses == 7
    return {'root': root, 'cache': cache_dir}


def _cache(cache_dir, factory=None):
    settings = dataset.SigComponents.settings('minilm', '', 384)
    return dataset.SemanticsCache(cache_dir, settings, factory or dataset.SigComponents)


def _config(data, run_dir, **overrides):
    tree = {
        'seed': 3, 'run_dir': str(run_dir), 'export_path': str(run_dir / 'best.safetensors'),
        'data.train': [str(data['root'] / 'train')], 'data.val': [str(data['root'] / 'val')],
        'data.crop_size': 32, 'data.batch_size': 2,
        'semantics.cache_dir': str(data['cache']),
        'train.max_steps': 5, 'train.log_every': 1, 'train.checkpoint_every': 1,
        'train.keep_checkpoints': 10, 'train.threads': 1,
        'validation.every': 2, 'validation.metrics': False,
    }
    tree.update({key.replace('__', '.'): value for key, value in overrides.items()})
    return trainer.load_config(None, list(tree.items()))


def _weights_equal(first, second):
    first, second = first.state_dict(), second.state_dict()
    return first.keys() == second.keys() and all(
        torch.equal(first[key], second[key]) for key in first)


# ----------------------------------------------------------------------------- losses


def _image(values):
    return torch.as_tensor(np.asarray(values, np.float32)).view(1, 1, *np.shape(values))


def test_intensity_loss_is_zero_at_the_target_and_pulls_toward_ir_inside_masks():
    rng = np.random.default_rng(0)
    ir = _image(rng.uniform(0.5, 1.0, (16, 16)))
    vis = _image(rng.uniform(0.0, 1.0, (16, 16)))
    target = torch.maximum(ir, vis)
    assert losses.intensity_loss(target, ir, vis).item() == 0.0
    # Masks where the IR is the brighter source: the target satisfies both terms.
    warm = (ir >= vis).float()
    assert losses.intensity_loss(target, ir, vis, warm, 1.0).item() == pytest.approx(0.0)

    # Visible brighter (0.6) than IR (0.2) inside a mask over the left half.
    ir, vis = torch.full((1, 1, 8, 8), 0.2), torch.full((1, 1, 8, 8), 0.6)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0
    fused = vis.clone()
    assert losses.intensity_loss(fused, ir, vis).item() == pytest.approx(0.0)
    assert losses.intensity_loss(fused, ir, vis, mask, 0.5).item() == pytest.approx(0.5 * 0.4)
    # The gradient pushes masked pixels down toward the IR and leaves the rest alone.
    fused.requires_grad_(True)
    losses.intensity_loss(fused, ir, vis, mask, 0.5).backward()
    inside, outside = fused.grad[..., :4], fused.grad[..., 4:]
    assert (inside > 0).all()
    assert (outside == 0).all()
    # Inside the mask only the IR term applies: the IR value is the optimum there.
    moved = vis.clone()
    moved[..., :4] = 0.2
    assert losses.intensity_loss(moved, ir, vis, mask, 1.0).item() == pytest.approx(0.0)
    assert losses.intensity_loss(vis, ir, vis, mask, 1.0).item() == pytest.approx(0.4)


def test_background_target_leans_to_visible_only_for_images_with_targets():
    ir = torch.full((2, 1, 8, 8), 0.8)
    vis = torch.full((2, 1, 8, 8), 0.3)
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :2, :2] = 1.0          # image 0 has a target, image 1 none
    brighter = torch.maximum(ir, vis)
    # b = 0: background target is max(I, V) = I, so the IR copy is optimal for both images.
    assert losses.intensity_loss(ir, ir, vis, masks, 1.0, 0.0).item() == pytest.approx(0.0)
    # b = 1: image 0's background should be the visible value; image 1 keeps max(I, V).
    fused = ir.clone()
    fused[0, :, 2:, :] = 0.3
    fused[0, :, :2, 2:] = 0.3
    assert losses.intensity_loss(fused, ir, vis, masks, 1.0, 1.0).item() == pytest.approx(0.0)
    assert losses.intensity_loss(brighter, ir, vis, masks, 1.0, 1.0).item() == pytest.approx(
        0.5 * 0.5 * (64 - 4) / 64)
    # b = 0.5: halfway between max(I, V) and V.
    half = ir.clone()
    half[0] = 0.55
    half[0, :, :2, :2] = 0.8
    assert losses.intensity_loss(half, ir, vis, masks, 1.0, 0.5).item() == pytest.approx(0.0)


def test_semantics_drop_zeroes_masks_and_text_for_some_items():
    rng = np.random.default_rng(1)
    sample = dataset.Sample(
        name='p', ir=rng.random((40, 40), dtype=np.float32),
        vis_ycbcr=rng.random((3, 40, 40), dtype=np.float32),
        masks=np.ones((1, 40, 40), np.float32), text=np.ones(384, np.float32),
        caption='c', is_colour=True)
    with pytest.raises(ConfigError, match='semantics_drop'):
        dataset.FusionDataset([sample], crop_size=16, semantics_drop=1.5)
    kept = dataset.FusionDataset([sample] * 200, crop_size=16, semantics_drop=0.0)
    assert all(float(kept[i]['masks'].min()) == 1.0 for i in range(20))
    dropped = dataset.FusionDataset([sample] * 200, crop_size=16, semantics_drop=0.3)
    items = [dropped[i] for i in range(200)]
    off = [float(item['masks'].max()) == 0.0 for item in items]
    assert all((float(item['text'].abs().max()) == 0.0) == is_off
               for item, is_off in zip(items, off))
    assert 30 <= sum(off) <= 90
    assert float(sample.masks.min()) == 1.0 and float(sample.text.min()) == 1.0  # not in place
    # Validation items (no crop) always keep their semantics.
    whole = dataset.FusionDataset([sample], crop_size=None, semantics_drop=1.0)
    assert float(whole[0]['masks'].min()) == 1.0


def test_sobel_magnitude_of_a_step_edge():
    step = _image(np.repeat([[0.0] * 4 + [1.0] * 4], 6, axis=0))
    magnitude = losses.sobel_magnitude(step)[0, 0]
    # Columns 3 and 4 straddle the edge: |Gx| = 1 + 2 + 1 = 4, Gy = 0; elsewhere 0.
    assert torch.allclose(magnitude[:, 3:5], torch.full((6, 2), 4.0))
    assert magnitude[:, :3].abs().max() == 0 and magnitude[:, 5:].abs().max() == 0
    assert losses.sobel_magnitude(torch.full((1, 1, 5, 5), 0.3)).abs().max() == 0


def test_gradient_loss_is_zero_for_the_sharper_source_and_detects_blur():
    rng = np.random.default_rng(1)
    texture = rng.uniform(0, 1, (32, 32)).astype(np.float32)
    vis = _image(texture)
    ir = torch.full_like(vis, 0.4)
    assert losses.gradient_loss(vis, ir, vis).item() == 0.0
    blurred = _image(cv2.GaussianBlur(texture, (5, 5), 1.5))
    assert losses.gradient_loss(blurred, ir, vis).item() > 0.3
    more_blurred = _image(cv2.GaussianBlur(texture, (9, 9), 3.0))
    assert losses.gradient_loss(more_blurred, ir, vis) > losses.gradient_loss(blurred, ir, vis)


def test_gradient_excess_weights_only_gradients_above_the_sources():
    rng = np.random.default_rng(5)
    texture = rng.uniform(0, 1, (32, 32)).astype(np.float32)
    vis = _image(cv2.GaussianBlur(texture, (5, 5), 1.0))
    ir = torch.full_like(vis, 0.4)
    # Twice the visible detail around its mean: gradients exactly 2x the target everywhere.
    over_sharp = 2.0 * vis - vis.mean()
    target = losses.sobel_magnitude(vis)
    excess_cost = target.mean().item()  # mean(S(F) - T) = mean(2T - T)
    assert excess_cost > 0.2
    assert losses.gradient_loss(over_sharp, ir, vis, excess=0.0).item() == 0.0
    assert losses.gradient_loss(over_sharp, ir, vis, excess=1.0).item() == \
        pytest.approx(excess_cost, rel=1e-5)
    assert losses.gradient_loss(over_sharp, ir, vis, excess=0.25).item() == \
        pytest.approx(0.25 * excess_cost, rel=1e-5)
    # Lost detail (half the contrast: S(F) = T / 2) costs the same whatever the excess weight.
    flat = 0.5 * vis + 0.25
    for excess in (0.0, 1.0, 3.0):
        assert losses.gradient_loss(flat, ir, vis, excess=excess).item() == \
            pytest.approx(0.5 * excess_cost, rel=1e-5)
    # Default 1.0 is the old symmetric loss bit for bit, value and gradient.
    fused = _image(rng.uniform(0, 1, (32, 32))).requires_grad_(True)
    other_ir = _image(rng.uniform(0, 1, (32, 32)))
    old = (losses.sobel_magnitude(fused) - torch.maximum(
        losses.sobel_magnitude(other_ir), losses.sobel_magnitude(vis))).abs().mean()
    new = losses.gradient_loss(fused, other_ir, vis)
    assert torch.equal(new, old)
    (old_grad,) = torch.autograd.grad(old, fused)
    (new_grad,) = torch.autograd.grad(new, fused)
    assert torch.equal(new_grad, old_grad)
    with pytest.raises(ConfigError, match='gradient_excess'):
        losses.gradient_loss(fused, other_ir, vis, excess=-0.5)


def test_gradient_excess_reaches_the_total_loss_and_is_validated(tmp_path):
    rng = np.random.default_rng(6)
    vis = _image(cv2.GaussianBlur(rng.uniform(0, 1, (24, 24)).astype(np.float32), (5, 5), 1.0))
    ir = torch.full_like(vis, 0.4)
    over_sharp = 2.0 * vis - vis.mean()
    _, symmetric = losses.fusion_loss(over_sharp, ir, vis, weights=losses.LossWeights())
    _, lenient = losses.fusion_loss(over_sharp, ir, vis,
                                    weights=losses.LossWeights(gradient_excess=0.0))
    assert symmetric['gradient'].item() > 0.2 and lenient['gradient'].item() == 0.0
    assert lenient['intensity'].item() == symmetric['intensity'].item()
    assert losses.LossWeights().gradient_excess == 1.0
    assert trainer.load_config(None, ['loss.gradient_excess=0.25']).loss.gradient_excess == 0.25
    for bad in ('-0.1', '.nan'):
        with pytest.raises(ConfigError, match='loss.gradient_excess must be >= 0'):
            trainer.load_config(None, [f'loss.gradient_excess={bad}'])


def test_edge_band_targets_the_composite_edge_not_the_ir_surround():
    """A warm square (IR 0.9) on a lighter IR surround (0.5) than the visible scene (0.2)."""
    ir = torch.full((1, 1, 40, 40), 0.5)
    ir[..., 12:28, 12:28] = 0.9
    vis = torch.full_like(ir, 0.2)
    masks = torch.zeros(1, 2, 40, 40)
    masks[:, 1, 12:28, 12:28] = 1.0
    clean = torch.where(masks[:, 1:] > 0, ir, vis)   # what the intensity loss asks for
    glow = clean.clone()                              # the IR surround carried 3 px out
    glow[..., 9:31, 9:31] = torch.where(masks[:, 1:] > 0, ir, 0.5)[..., 9:31, 9:31]

    def loss(fused, radius):
        guidance = losses.edge_guidance(ir, vis, masks, radius, background_visible=1.0)
        return losses.gradient_loss(fused, ir, vis, 1.0, *guidance)
    # The plain target is the IR's own edge (0.4 high): the clean composite's edge (0.7) is
    # penalised as excess, as if it were ringing.
    assert loss(clean, 0).item() > 0.01
    # With the band the clean composite is exact and the glow costs.
    assert loss(clean, 4).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(glow, 4).item() > 0.01
    # Band 0, or no masks, is the plain loss bit for bit.
    assert torch.equal(loss(glow, 0), losses.gradient_loss(glow, ir, vis, 1.0))
    assert losses.edge_guidance(ir, vis, None, 4) == (None, None)
    composite, _ = losses.edge_guidance(ir, vis, masks, 4, background_visible=1.0)
    torch.testing.assert_close(composite, clean)
    band = losses.edge_band_map(masks[:, 1:], 2)
    assert band[0, 0, 20, 20] == 0 and band[0, 0, 2, 2] == 0
    assert band[0, 0, 12, 20] == 1 and band[0, 0, 10, 20] == 1 and band[0, 0, 9, 20] == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match='edge_band'):
            losses.edge_guidance(ir, vis, masks, bad)
    # SSIM: in the band the window compares F with the composite, so the clean composite
    # scores better there than under the plain loss, and the glow worse.
    composite, band = losses.edge_guidance(ir, vis, masks, 4, background_visible=1.0)
    plain_clean = losses.ssim_loss(clean, ir, vis, 0.4).item()
    banded_clean = losses.ssim_loss(clean, ir, vis, 0.4, composite, band).item()
    banded_glow = losses.ssim_loss(glow, ir, vis, 0.4, composite, band).item()
    assert banded_clean < plain_clean and banded_clean < banded_glow
    _, parts = losses.fusion_loss(glow, ir, vis, masks=masks, weights=losses.LossWeights(
        edge_band=4, background_visible=1.0))
    assert parts['gradient'].item() == pytest.approx(loss(glow, 4).item())
    assert parts['ssim'].item() == pytest.approx(
        losses.ssim_loss(glow, ir, vis, 0.5, composite, band).item())
    assert trainer.load_config(None, ['loss.edge_band=4']).loss.edge_band == 4
    with pytest.raises(ConfigError, match='loss.edge_band must be >= 0'):
        trainer.load_config(None, ['loss.edge_band=-2'])


def test_ssim_known_values():
    rng = np.random.default_rng(2)
    image = _image(rng.uniform(0, 1, (24, 24)))
    assert losses.ssim(image, image).item() == pytest.approx(1.0, abs=1e-5)
    # Two constant images: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) (the contrast term is 1).
    c1 = 0.01 ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    value = losses.ssim(torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6))
    assert value.item() == pytest.approx(expected, rel=1e-4)  # float32 variances
    other = _image(rng.uniform(0, 1, (24, 24)))
    assert losses.ssim_loss(image, image, image).item() == pytest.approx(0.0, abs=1e-5)
    # ir_weight = 1 only looks at the IR.
    assert losses.ssim_loss(image, image, other, ir_weight=1.0).item() == \
        pytest.approx(0.0, abs=1e-5)
    mixed = losses.ssim_loss(image, image, other, ir_weight=0.5).item()
    assert mixed == pytest.approx(0.5 * (1 - losses.ssim(image, other).item()), rel=1e-4)
    with pytest.raises(ConfigError, match='ssim_ir_weight'):
        losses.ssim_loss(image, image, other, ir_weight=1.5)


def test_colour_loss_is_zero_in_gamut_and_penalises_clipped_chroma():
    from tesg_ros.network import colour
    rgb = torch.zeros(1, 3, 4, 4)
    rgb[:, 0] = 0.9  # saturated red
    rgb[:, 1:] = 0.1
    ycbcr = colour.rgb_to_ycbcr(rgb)
    vis_y, vis_cbcr = ycbcr[:, :1], ycbcr[:, 1:]
    assert losses.colour_consistency_loss(vis_y, vis_cbcr).item() == pytest.approx(0, abs=1e-6)
    # A white-hot fused value clips R: the restored colour loses its saturation.
    bright = torch.full_like(vis_y, 0.95, requires_grad=True)
    value = losses.colour_consistency_loss(bright, vis_cbcr)
    assert value.item() > 0.05
    value.backward()
    assert bright.grad.abs().sum() > 0
    # Grey visible (Cb = Cr = 0.5) never clips for Y in [0, 1].
    grey = torch.full((1, 2, 4, 4), 0.5)
    assert losses.colour_consistency_loss(torch.rand(1, 1, 4, 4), grey).item() < 1e-6


def test_fusion_loss_is_the_weighted_sum():
    rng = np.random.default_rng(3)
    fused, ir, vis = (_image(rng.uniform(0, 1, (20, 20))) for _ in range(3))
    cbcr = torch.full((1, 2, 20, 20), 0.5)
    cbcr[:, 1] = 0.8
    masks = (ir > 0.7).float()
    weights = losses.LossWeights(intensity=2.0, intensity_mask=0.3, gradient=0.7, ssim=1.5,
                                 ssim_ir_weight=0.25, colour=3.0)
    total, parts = losses.fusion_loss(fused, ir, vis, cbcr, masks, weights)
    expected = (2.0 * parts['intensity'] + 0.7 * parts['gradient'] + 1.5 * parts['ssim']
                + 3.0 * parts['colour'])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts['intensity'].item() == pytest.approx(
        losses.intensity_loss(fused, ir, vis, masks, 0.3).item())
    assert parts['colour'].item() > 0
    _, no_colour = losses.fusion_loss(fused, ir, vis, None, masks, weights)
    assert no_colour['colour'].item() == 0.0


def _load_halo_check():
    from bench_scripts import load_bench_script
    return load_bench_script('halo_check')


def test_halo_measure_counts_only_values_outside_both_sources():
    halo_check = _load_halo_check()
    fused = np.array([[0, 50, 100, 200, 255, 130]], np.uint8)
    ir = np.array([[10, 40, 100, 150, 250, 100]], np.uint8)
    visible = np.array([[20, 60, 90, 190, 240, 110]], np.uint8)
    undershoot, overshoot = halo_check.out_of_range(fused, ir, visible)
    # uint8 inputs must not wrap around: 0 - 10 is an undershoot of 10, not 246.
    np.testing.assert_array_equal(undershoot, [[10, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(overshoot, [[0, 0, 0, 10, 5, 20]])
    scores = halo_check.halo_scores(fused, ir, visible, threshold=10.0)
    assert scores['under'] == pytest.approx(10 / 6) and scores['over'] == pytest.approx(35 / 6)
    assert scores['out'] == pytest.approx(45 / 6)
    assert scores['share'] == pytest.approx(1 / 6)   # only the 20 exceeds 10
    with pytest.raises(ConfigError, match='one shape'):
        halo_check.out_of_range(fused, ir, visible[:, :3])


def test_edge_spill_measures_ir_share_just_outside_the_targets():
    halo_check = _load_halo_check()
    ir = np.full((60, 60), 200.0, np.float32)
    visible = np.full((60, 60), 100.0, np.float32)
    masks = np.zeros((2, 60, 60), np.float32)
    masks[1, 25:35, 25:35] = 1.0
    # Visible everywhere outside the target: no spill.
    fused = np.where(masks[1] > 0, ir, visible)
    assert halo_check.edge_spill(fused, ir, visible, masks) == pytest.approx(0.0)
    # IR leaking 3 px past the edge: the whole near band (1-4 px) is 3/4 IR, the far band 0.
    leaked = cv2.dilate((masks[1] > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    spill = halo_check.edge_spill(np.where(leaked, ir, visible), ir, visible, masks)
    assert 0.5 < spill < 1.0
    # A wide region of IR is not a spill at the edge (near and far bands agree).
    assert halo_check.edge_spill(np.full_like(ir, 150.0), ir, visible, masks) == pytest.approx(0)
    # Share undefined where the sources agree; no target -> NaN, not 0.
    share = halo_check.effective_ir_share(np.array([[150, 120]]), np.array([[200, 125]]),
                                          np.array([[100, 120]]))
    assert share[0, 0] == pytest.approx(0.5) and np.isnan(share[0, 1])
    assert np.isnan(halo_check.edge_spill(fused, ir, visible, np.zeros((1, 60, 60))))
    assert np.isnan(halo_check.edge_spill(fused, ir, visible, np.zeros((0, 60, 60))))
    with pytest.raises(ConfigError, match='do not match'):
        halo_check.edge_spill(fused, ir, visible, masks[:, :10])


def test_halo_check_script_prints_one_row_per_weights_file(test_data, capsys):
    halo_check = _load_halo_check()
    weights = Path(__file__).resolve().parent.parent / 'model' / 'tesg_fusion.safetensors'
    pairs = test_data / 'tno'
    assert halo_check.main([str(pairs), '--weights', str(weights)]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        if len(cells) == 6 and cells[1][:1].isdigit():
            rows[cells[0]] = [float(cell.rstrip(' %')) for cell in cells[1:]]
    assert set(rows) == {str(weights), 'Laplacian pyramid'}
    for out, under, over, share, spill in rows.values():
        assert out == pytest.approx(under + over, abs=2e-3) and 0 <= share <= 100
        assert -1 <= spill <= 1   # the test pairs have warm targets: a number, not nan
    # The reference row, recomputed here from the sources alone.
    expected = []
    for ir_path in sorted((pairs / 'ir').glob('*.png')):
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        visible = cv2.imread(str(pairs / 'vi' / ir_path.name), cv2.IMREAD_GRAYSCALE)
        fused = halo_check.laplacian_pyramid_fusion(ir, visible)
        expected.append(halo_check.halo_scores(fused, ir, visible)['out'])
    assert rows['Laplacian pyramid'][0] == pytest.approx(np.mean(expected), abs=1e-3)
    assert rows['Laplacian pyramid'][0] > 0.1   # the pyramid does ring past the sources


# ----------------------------------------------------------------------------- data


def test_find_pairs_matches_stems_and_names_problems(tmp_path):
    rng = np.random.default_rng(4)
    _write_pair(tmp_path / 'set', 'a', rng, (5, 5, 10, 4), ir_ext='.png', vi_ext='.jpg')
    _write_pair(tmp_path / 'set', 'b', rng, (5, 5, 10, 4), ir_ext='.jpg', vi_ext='.png')
    pairs = dataset.find_pairs(tmp_path / 'set')
    assert [(p.name, p.ir.suffix, p.vi.suffix) for p in pairs] == [
        ('a', '.png', '.jpg'), ('b', '.jpg', '.png')]
    missing = tmp_path / 'nowhere'
    with pytest.raises(ConfigError, match=str(missing)):
        dataset.find_pairs(missing)
    (tmp_path / 'set' / 'vi' / 'b.png').unlink()
    with pytest.raises(ConfigError, match=r"only in ir/: \['b'\]"):
        dataset.find_pairs(tmp_path / 'set')
    shutil.rmtree(tmp_path / 'set' / 'vi')
    with pytest.raises(ConfigError, match='no "vi/" subfolder'):
        dataset.find_pairs(tmp_path / 'set')


def test_single_pair_folder_with_description(tmp_path):
    rng = np.random.default_rng(5)
    _write_pair(tmp_path / 'tmp', 'x', rng, (5, 5, 10, 4))
    folder = tmp_path / 'night_walk'
    folder.mkdir()
    shutil.move(tmp_path / 'tmp' / 'ir' / 'x.png', folder / 'ir.png')
    shutil.move(tmp_path / 'tmp' / 'vi' / 'x.jpg', folder / 'vis.jpg')
    (folder / 'description.txt').write_text('A pedestrian is walking on the sidewalk.')
    [pair] = dataset.find_pairs(folder)
    assert (pair.name, pair.ir.name, pair.vi.name) == ('night_walk', 'ir.png', 'vis.jpg')
    assert dataset.read_caption(pair.caption) == 'A pedestrian is walking on the sidewalk.'


def test_ir_must_be_grey_and_pairs_registered(tmp_path):
    grey3 = np.repeat(np.arange(48, dtype=np.uint8).reshape(6, 8, 1), 3, axis=2)
    cv2.imwrite(str(tmp_path / 'grey3.png'), grey3)
    np.testing.assert_allclose(dataset.read_ir(tmp_path / 'grey3.png'),
                               grey3[..., 0] / 255.0, atol=1e-7)
    palette = cv2.applyColorMap(grey3[..., 0] * 5, cv2.COLORMAP_JET)
    cv2.imwrite(str(tmp_path / 'jet.png'), palette)
    with pytest.raises(ImageEncodingError, match='pseudo-colour'):
        dataset.read_ir(tmp_path / 'jet.png')
    cv2.imwrite(str(tmp_path / 'small.png'), grey3[:4])
    pair = dataset.PairPaths('x', tmp_path / 'grey3.png', tmp_path / 'small.png')
    with pytest.raises(ImageEncodingError, match='not registered'):
        dataset.load_pair(pair)


def test_fit_mask_channels():
    masks = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.7, 0.4)])
    assert dataset.fit_mask_channels(masks, 1)[0, 0, 0] == pytest.approx(0.7)
    two = dataset.fit_mask_channels(masks, 2)
    assert two[:, 0, 0].tolist() == pytest.approx([0.1, 0.7])
    five = dataset.fit_mask_channels(masks, 5)
    assert five.shape == (5, 2, 2) and five[3:].max() == 0


def _unique_sample(height, width, masks=2):
    """A sample whose IR, visible Y/Cb/Cr and masks all hold the same unique ramp."""
    ramp = (np.arange(height * width, dtype=np.float32) / (height * width)).reshape(height, width)
    return dataset.Sample('ramp', ramp, np.stack([ramp] * 3), np.stack([ramp] * masks),
                          np.zeros(4, np.float32), '', True)


def test_crops_and_flips_keep_ir_visible_and_masks_aligned():
    sample = _unique_sample(40, 50)
    data = dataset.FusionDataset([sample], crop_size=16, horizontal_flip=True,
                                 vertical_flip=True, seed=5)
    seen_flips = set()
    for epoch in range(32):
        data.set_epoch(epoch)
        item = data[0]
        planes = torch.cat([item['ir'], item['vis_y'], item['vis_cbcr'], item['masks']])
        assert planes.shape == (6, 16, 16)
        assert all(torch.equal(planes[0], plane) for plane in planes[1:])
        crop = planes[0].numpy()
        # Undo the flips: the crop must be an exact window of the original.
        flips = (bool(crop[0, 0] > crop[-1, 0]), bool(crop[0, 0] > crop[0, -1]))
        seen_flips.add(flips)
        unflipped = crop[::-1] if flips[0] else crop
        unflipped = unflipped[:, ::-1] if flips[1] else unflipped
        top, left = np.unravel_index(np.argmin(np.abs(sample.ir - unflipped[0, 0])),
                                     sample.ir.shape)
        np.testing.assert_array_equal(unflipped, sample.ir[top:top + 16, left:left + 16])
        # Same epoch, same item: the same augmentation (resume depends on it).
        assert torch.equal(data[0]['ir'], item['ir'])
    assert len(seen_flips) == 4


def test_small_images_are_padded_to_the_crop():
    sample = _unique_sample(10, 12, masks=1)
    data = dataset.FusionDataset([sample], crop_size=16, horizontal_flip=False)
    item = data[0]
    assert item['ir'].shape == (1, 16, 16) and item['masks'].shape == (1, 16, 16)
    assert torch.equal(item['ir'], item['masks'])
    # Reflect padding of 3 rows on top and 2 columns on the left: the original sits inside.
    np.testing.assert_array_equal(item['ir'][0, 3:13, 2:14].numpy(), sample.ir)


def test_semantics_cache_uses_real_sig_and_is_keyed_by_content(synthetic_data, tmp_path):
    root = synthetic_data['root'] / 'train'

    def no_model():
        raise AssertionError('a warm cache must not load the SIG models')

    cache = _cache(synthetic_data['cache'], no_model)
    samples = dataset.load_samples([root], cache, mask_channels=1)
    assert cache.hits == 5 and cache.misses == 0
    first = samples[0]
    assert first.caption == 'A warm person is standing on the left.'
    assert first.text.shape == (384,) and np.linalg.norm(first.text) == pytest.approx(1, abs=1e-4)
    # The thermal mask covers the warm person-shaped blob (rows 10-31, cols 8-15) only.
    mask = first.masks[0]
    assert mask[12:30, 9:15].mean() > 0.6
    assert mask[:, 30:].max() < 0.05
    # Described pairs get a sentence from the offline describer, embedded as well.
    assert samples[1].caption and samples[1].caption != first.caption
    assert not np.allclose(samples[1].text, first.text)
    # Editing the caption changes the key: recomputed, not silently reused.
    copy = tmp_path / 'copy'
    shutil.copytree(root, copy)
    (copy / 'pair0.txt').write_text('two warm vehicles')
    pair = dataset.find_pairs(copy)[0]
    assert cache.key(pair) != cache.key(dataset.find_pairs(root)[0])
    with pytest.raises(AssertionError, match='must not load'):
        cache.get(pair, *dataset.load_pair(pair))


def test_shared_datasets_pair_up(shared_data):
    counts = {name: len(dataset.find_pairs(shared_data / name))
              for name in ('roadscene50', 'vifb21', 'tno25')}
    assert counts == {'roadscene50': 50, 'vifb21': 21, 'tno25': 25}
    ir, visible = dataset.load_pair(dataset.find_pairs(shared_data / 'vifb21')[0])
    assert ir.ndim == 2 and visible.shape == ir.shape + (3,)


# ----------------------------------------------------------------------------- config


def test_config_overrides_and_errors(tmp_path):
    path = tmp_path / 'train.yaml'
    path.write_text('optim:\n  lr: 1e-3\ndata:\n  batch_size: 4\n')
    config = trainer.load_config(path, ['optim.lr=5e-4', 'model.channels=32'])
    assert config.optim.lr == 5e-4 and config.data.batch_size == 4
    assert config.model == {'channels': 32}
    with pytest.raises(ConfigError, match='optim.lrate'):
        trainer.load_config(path, ['optim.lrate=1'])
    with pytest.raises(ConfigError, match='data.batch_size must be an integer'):
        trainer.load_config(path, ['data.batch_size=two'])
    with pytest.raises(ConfigError, match='key=value'):
        trainer.load_config(path, ['optim.lr'])
    with pytest.raises(ConfigError, match='not found'):
        trainer.load_config(tmp_path / 'missing.yaml')
    # The shipped config is valid and uses the documented defaults.
    shipped = trainer.load_config(Path(__file__).parent.parent / 'config' / 'train.yaml')
    assert shipped.export_path == 'out/train/tesg_fusion.safetensors'
    assert shipped.validation.best_key == 'loss/total'


def test_learning_rate_schedule():
    factors = [trainer.learning_rate_factor(s, 4, 20, 0.1) for s in range(21)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


# ----------------------------------------------------------------------------- trainer


def test_seeded_runs_are_identical_and_the_seed_matters(synthetic_data, tmp_path):
    settings = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    first = trainer.train(_config(synthetic_data, tmp_path / 'a'), progress=False)
    # train.threads = 1 applies to the run only; the caller's settings come back.
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == settings
    # A DataLoader worker process must not change the data: augmentation is seeded per item.
    second = trainer.train(_config(synthetic_data, tmp_path / 'b', data__num_workers=1),
                           progress=False)
    other = trainer.train(_config(synthetic_data, tmp_path / 'c', seed=4, train__max_steps=2),
                          progress=False)
    assert first.step == 5
    assert _weights_equal(first.network, second.network)
    trainer.seed_everything(3)
    initial = trainer.build_network({})
    assert not _weights_equal(first.network, initial)
    assert not _weights_equal(other.network, first.network)
    # Logs: JSON lines with losses, validation and the wall time; a human-readable log.
    records = [json.loads(line) for line in
               (tmp_path / 'a' / 'train_log.jsonl').read_text().splitlines()]
    train_records = [r for r in records if r['event'] == 'train']
    assert [r['step'] for r in train_records] == [1, 2, 3, 4, 5]
    assert all(r['loss/total'] > 0 and r['wall_s'] > 0 for r in train_records)
    val_steps = [r['step'] for r in records if r['event'] == 'val']
    assert val_steps == [0, 2, 4, 5]
    assert records[-1]['event'] == 'end'
    assert 'validation at step 2' in (tmp_path / 'a' / 'train.log').read_text()
    # The best validation model is exported and loads through the network's loader.
    from tesg_ros.network import load_fusion_net
    best = [r for r in records if r['event'] == 'best'][-1]
    exported = load_fusion_net(tmp_path / 'a' / 'best.safetensors')
    assert exported.config == first.network.config
    assert best['value'] == pytest.approx(first.best_value)


def test_resume_equals_an_uninterrupted_run(synthetic_data, tmp_path):
    # 5 pairs, batch 2: 2 batches per epoch, so step 3 resumes in the middle of epoch 1.
    full = trainer.train(_config(synthetic_data, tmp_path / 'full'), progress=False)
    resumed_dir = tmp_path / 'resumed'
    (resumed_dir / 'checkpoints').mkdir(parents=True)
    shutil.copytree(tmp_path / 'full' / 'checkpoints' / 'step_00000003',
                    resumed_dir / 'checkpoints' / 'step_00000003')
    resumed = trainer.train(_config(synthetic_data, resumed_dir), progress=False,
                            resume='latest')
    assert resumed.step == 5
    assert _weights_equal(full.network, resumed.network)

    def losses_after_3(run_dir):
        lines = (run_dir / 'train_log.jsonl').read_text().splitlines()
        return [(r['step'], r['loss/total']) for r in map(json.loads, lines)
                if r['event'] == 'train' and r['step'] > 3]

    assert losses_after_3(tmp_path / 'full') == losses_after_3(resumed_dir)
    with pytest.raises(ConfigError, match='no checkpoint'):
        trainer.train(_config(synthetic_data, tmp_path / 'empty'), progress=False,
                      resume='latest')


def test_checkpoints_contain_no_pickle(synthetic_data, tmp_path):
    # Two mask channels: the cached per-phrase masks are fitted to the network's M.
    result = trainer.train(_config(synthetic_data, tmp_path, train__max_steps=2,
                                   train__keep_checkpoints=1, model__mask_channels=2),
                           progress=False)
    assert result.network.config.mask_channels == 2
    checkpoints = sorted((tmp_path / 'checkpoints').iterdir())
    assert [p.name for p in checkpoints] == ['step_00000002']
    files = sorted(p.name for p in checkpoints[0].iterdir())
    assert files == ['model.safetensors', 'optimizer.json', 'optimizer.safetensors',
                     'rng.safetensors', 'state.json']
    for path in checkpoints[0].iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b'\x80' and head != b'PK', f'{path} looks like pickle/torch.save'
        if path.suffix == '.json':
            json.loads(path.read_text())
        else:
            with safe_open(str(path), 'pt') as handle:
                assert list(handle.keys())
    state = json.loads((checkpoints[0] / 'state.json').read_text())
    assert state['step'] == 2 and state['config']['seed'] == 3
    optimizer = load_file(str(checkpoints[0] / 'optimizer.safetensors'))
    assert any(key.endswith('.exp_avg_sq') for key in optimizer)


def test_validation_metrics_from_tesg_ros_metrics(synthetic_data, test_data, tmp_path):
    pytest.importorskip('tesg_ros.metrics')
    tno = tmp_path / 'tno'
    for modality in ('ir', 'vi'):
        (tno / modality).mkdir(parents=True)
        shutil.copy(test_data / 'tno' / modality / '07.png', tno / modality / '07.png')
    result = trainer.train(_config(synthetic_data, tmp_path / 'run', train__max_steps=1,
                                   data__val=[str(tno)], validation__metrics=True,
                                   semantics__enabled=False), progress=False)
    val = [r for r in result.history if r['event'] == 'val'][0]
    assert val['metrics_available']
    for name in ('metric/EN', 'metric/MI', 'metric/Qabf', 'metric/SSIM'):
        assert math.isfinite(val[name])
    assert 0 < val['metric/Qabf'] < 1 and 4 < val['metric/EN'] < 8
    # Trivial baselines are scored once: an IR copy has far more MI than the average.
    baselines = {r['baseline']: r for r in result.history if r['event'] == 'val_baseline'}
    assert sorted(baselines) == ['average', 'ir_copy', 'visible_copy']
    assert baselines['ir_copy']['metric/MI'] > baselines['average']['metric/MI']
    assert baselines['visible_copy']['loss/colour'] == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- distributed


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world_size, port, data, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = trainer.train(_config(data, Path(out_dir) / 'run', train__max_steps=3,
                                   train__device='cpu'), progress=False)
    save_file({k: v.contiguous() for k, v in result.network.state_dict().items()},
              str(Path(out_dir) / f'rank{rank}.safetensors'))


def test_ddp_two_cpu_processes_end_with_identical_weights(synthetic_data, tmp_path):
    import torch.multiprocessing as multiprocessing
    multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), synthetic_data, str(tmp_path)),
                          nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / 'rank0.safetensors'))
    rank1 = load_file(str(tmp_path / 'rank1.safetensors'))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    trainer.seed_everything(3)
    initial = trainer.build_network({}).state_dict()
    assert any(not torch.equal(rank0[key], initial[key]) for key in rank0)
    # Only rank 0 logs and writes checkpoints.
    records = [json.loads(line) for line in
               (tmp_path / 'run' / 'train_log.jsonl').read_text().splitlines()]
    assert records[0]['world_size'] == 2
    assert [r['step'] for r in records if r['event'] == 'train'] == [1, 2, 3]


# ----------------------------------------------------------------------------- CLI


def test_cli_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / 'no_such_dataset'
    code = cli.main(['--config', str(Path(__file__).parent.parent / 'config' / 'train.yaml'),
                     '--set', f'data.train=[{missing}]', '--set', f'run_dir={tmp_path / "run"}',
                     '--set', 'semantics.enabled=false', '--no-progress',
                     '--ros-args', '-r', '__node:=trainer'])
    assert code == 2
    error = capsys.readouterr().err
    assert 'dataset folder does not exist' in error and str(missing) in error
    assert issubclass(ConfigError, TesgError)


# --- clean-fusion training targets and augmentation --------------------------------------

def _flat(value, size=64):
    return torch.full((1, 1, size, size), float(value))


def test_information_share_weighs_each_source_by_its_structure():
    rng = torch.Generator().manual_seed(0)
    textured = 0.5 + 0.2 * torch.rand(1, 1, 64, 64, generator=rng)
    dark = _flat(0.03)
    # A dark, flat visible image beside a textured IR: the IR carries the scene.
    assert float(losses.information_share(textured, dark).mean()) > 0.8
    assert float(losses.information_share(dark, textured).mean()) < 0.2
    # Two flat sources: the average, neither the brighter nor the visible one.
    share = losses.information_share(_flat(0.9), _flat(0.1))
    assert torch.allclose(share, torch.full_like(share, 0.5))


def test_information_target_does_not_lean_to_a_dark_visible_image():
    rng = torch.Generator().manual_seed(1)
    ir = 0.4 + 0.3 * torch.rand(1, 1, 64, 64, generator=rng)
    vis = _flat(0.02)
    old = losses.background_target(ir, vis, torch.ones(1, 1, 1, 1), 1.0)
    new = losses.background_target(ir, vis, torch.ones(1, 1, 1, 1), 0.0, information=1.0)
    assert torch.allclose(old, vis, atol=1e-6)
    assert float((new - vis).mean()) > 0.8 * float((ir - vis).mean())


def test_warm_part_keeps_the_warm_object_and_drops_the_pavement_inside_a_mask():
    ir = _flat(0.3, 96)
    ir[..., 30:60, 40:52] = 0.8                # a warm person
    union = torch.zeros_like(ir)
    union[..., 24:66, 32:72] = 1.0             # a coarse hull: the person and pavement
    warm = losses.warm_part(ir, union)
    assert float(warm[..., 35:55, 42:50].min()) == 1.0
    assert float(warm[..., 26:66, 60:72].max()) < 1e-4
    masks = losses.effective_masks(ir, union, 1.0)
    assert float(masks[..., 26:66, 60:72].max()) < 1e-4
    assert torch.equal(losses.effective_masks(ir, union, 0.0), union)


def test_gradient_and_ssim_compare_with_the_clean_visible_image():
    rng = torch.Generator().manual_seed(2)
    ir = _flat(0.4)
    clean = 0.3 + 0.4 * torch.rand(1, 1, 64, 64, generator=rng)
    noisy = (clean + 0.1 * torch.randn(1, 1, 64, 64, generator=rng)).clamp(0, 1)
    weights = losses.LossWeights(information_target=1.0)
    _, copy_noise = losses.fusion_loss(noisy, ir, noisy, weights=weights, vis_clean=clean)
    _, copy_clean = losses.fusion_loss(clean, ir, noisy, weights=weights, vis_clean=clean)
    assert copy_clean['ssim'] < copy_noise['ssim']
    _, plain = losses.fusion_loss(noisy, ir, noisy, weights=weights)
    _, same = losses.fusion_loss(noisy, ir, noisy, weights=weights, vis_clean=noisy)
    assert torch.equal(plain['total'], same['total'])


@pytest.mark.parametrize('kind', dataset.DEGRADATIONS)
def test_each_visible_degradation_changes_the_image_within_range(kind):
    rng = np.random.default_rng(0)
    luma = np.linspace(0.1, 0.9, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = dataset.degrade_visible(luma, rng, kind)
    assert out.shape == luma.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - luma).mean() > 0.02
    if kind == 'low_light':
        assert out.mean() < 0.5 * luma.mean()
    with pytest.raises(ConfigError):
        dataset.degrade_visible(luma, rng, 'rain')


def test_dataset_degrades_the_visible_input_and_keeps_the_clean_luma():
    rng = np.random.default_rng(3)
    ir = rng.random((90, 120), dtype=np.float32)
    ycbcr = np.stack([rng.random((90, 120), dtype=np.float32), np.full((90, 120), 0.5, np.float32),
                      np.full((90, 120), 0.5, np.float32)])
    sample = dataset.Sample('s', ir, ycbcr, np.zeros((1, 90, 120), np.float32),
                            np.ones(8, np.float32), 'x', True)
    data = dataset.FusionDataset([sample], crop_size=48, degrade=1.0, ir_stretch=1.0,
                                 text_drop=1.0, scale_range=(0.5, 2.0))
    item = data[0]
    assert item['vis_y'].shape == item['vis_y_clean'].shape == (1, 48, 48)
    assert not torch.equal(item['vis_y'], item['vis_y_clean'])
    assert float(item['text'].abs().max()) == 0.0          # text dropped, masks kept
    assert item['masks'].shape == (1, 48, 48)
    plain = dataset.FusionDataset([sample], crop_size=48)[0]
    assert torch.equal(plain['vis_y'], plain['vis_y_clean'])
    with pytest.raises(ConfigError):
        dataset.FusionDataset([sample], crop_size=48, degrade=1.5)
    with pytest.raises(ConfigError):
        dataset.FusionDataset([sample], crop_size=48, scale_range=(2.0, 1.0))


# ----------------------------------------------------------------------------- text targets


def _text_target_samples(count=3):
    """Samples whose per-class masks are known: person left half, vehicle right half."""
    from tesg_ros.training.text_targets import TextTargetSampler  # noqa: F401 (import check)
    samples = []
    for index in range(count):
        sample = _unique_sample(40, 40, masks=1)
        per_class = np.zeros((4, 40, 40), np.float32)
        per_class[0, :, :20] = 1.0          # person
        per_class[1, :, 20:] = 1.0          # vehicle
        per_class[3] = 1.0                  # warm: everything
        sample.class_masks = per_class
        sample.vis_ycbcr[0] = 0.02          # a dark visible image: a thermal intent shifts
        samples.append(sample)
    return samples


def _table():
    from tesg_ros.training.text_targets import all_requests
    rng = np.random.default_rng(0)
    return {request.canonical: (np.zeros(4, np.float32) if request.neutral
                                else rng.normal(size=4).astype(np.float32))
            for request in all_requests()}


def test_text_target_crops_carry_the_drawn_requests_masks_text_and_shift():
    from tesg_ros.sig.request import PERSON, THERMAL, VEHICLE, VISIBLE
    from tesg_ros.training.text_targets import TextTargetSampler
    table = _table()
    data = dataset.FusionDataset(_text_target_samples(), crop_size=40, horizontal_flip=False,
                                 text_targets=TextTargetSampler(strength=0.5), text_table=table)
    seen = set()
    for epoch in range(40):
        data.set_epoch(epoch)
        for index in range(len(data)):
            item = data[index]
            masks, text, shift = item['masks'][0], item['text'].numpy(), item['shift'][0]
            match = [key for key, value in table.items() if np.array_equal(value, text)]
            assert len(match) == 1
            from tesg_ros.sig.request import parse_request
            request = parse_request(match[0])
            names = set(request.classes)
            left, right = float(masks[:, :20].mean()), float(masks[:, 20:].mean())
            assert left == (1.0 if names & {PERSON, 'warm'} else 0.0)
            assert right == (1.0 if names & {VEHICLE, 'warm'} else 0.0)
            if request.intent == THERMAL:
                assert float(shift.min()) > 0.3   # dark visible: lean to the IR
            elif request.intent == VISIBLE:
                assert float(shift.max()) == pytest.approx(-0.5)
            else:
                assert not shift.any()
            assert float(item['intent_free']) == float(request.intent is None)
            seen.add((tuple(sorted(names)), request.intent))
    assert len(seen) > 8
    with pytest.raises(ConfigError):
        dataset.FusionDataset([_unique_sample(40, 40)], crop_size=40,
                              text_targets=TextTargetSampler(), text_table=table)


def test_intent_shift_moves_the_background_target():
    ir, vis = torch.full((1, 1, 8, 8), 0.8), torch.full((1, 1, 8, 8), 0.2)
    base = losses.background_target(ir, vis, None, 0.0)
    towards_ir = losses.background_target(ir, vis, None, 0.0, shift=torch.full_like(ir, 0.5))
    towards_vis = losses.background_target(ir, vis, None, 0.0, shift=torch.full_like(ir, -0.5))
    assert float(base.mean()) == pytest.approx(0.8)
    assert float(towards_vis.mean()) == pytest.approx(0.5)
    assert float(towards_ir.mean()) == pytest.approx(0.8)
    informed = losses.background_target(ir, vis, None, 0.0, information=1.0)
    more_ir = losses.background_target(ir, vis, None, 0.0, information=1.0,
                                       shift=torch.full_like(ir, 0.5))
    assert float(more_ir.mean()) > float(informed.mean()) + 0.1


def test_training_with_text_targets_runs_and_validates_on_parsed_captions(
        synthetic_data, tmp_path):
    config = _config(synthetic_data, tmp_path / 't', data__text_targets=True,
                     loss__text_consistency=1.0, train__max_steps=2)
    result = trainer.train(config, progress=False)
    assert result.step == 2
    records = [json.loads(line) for line in
               (tmp_path / 't' / 'train_log.jsonl').read_text().splitlines()]
    assert any('loss/text_consistency' in r for r in records if r['event'] == 'train')


def test_thermal_intent_crops_always_get_a_poor_visible_image():
    from tesg_ros.sig.request import THERMAL
    from tesg_ros.training.text_targets import TextTargetSampler
    table = _table()
    samples = _text_target_samples()
    for sample in samples:
        sample.vis_ycbcr[0] = np.linspace(0.2, 0.8, 40 * 40, dtype=np.float32).reshape(40, 40)
    data = dataset.FusionDataset(samples, crop_size=40, degrade=1e-6,
                                 text_targets=TextTargetSampler(p_intent=1.0), text_table=table)
    thermal = 0
    for epoch in range(20):
        data.set_epoch(epoch)
        for index in range(len(data)):
            item = data[index]
            request_text = [k for k, v in table.items() if np.array_equal(v, item['text'])][0]
            from tesg_ros.sig.request import parse_request
            degraded = not torch.equal(item['vis_y'], item['vis_y_clean'])
            if parse_request(request_text).intent == THERMAL:
                thermal += 1
                assert degraded
            else:
                assert not degraded   # degrade 1e-6: practically never otherwise
    assert thermal > 5


def test_shift_consistency_is_logged_and_zero_for_a_shift_equivariant_model(
        synthetic_data, tmp_path):
    config = _config(synthetic_data, tmp_path / 's', loss__shift_consistency=1.0,
                     train__max_steps=1)
    trainer.train(config, progress=False)
    records = [json.loads(line) for line in
               (tmp_path / 's' / 'train_log.jsonl').read_text().splitlines()]
    assert any(r.get('loss/shift_consistency', 0) > 0 for r in records if r['event'] == 'train')

    class Identity(torch.nn.Module):   # a per-pixel map: equivariant by construction
        training = True

        def forward(self, ir, vis, masks, text):
            return 0.5 * (ir + vis)

    batch = {'ir': torch.rand(2, 1, 32, 32), 'vis_y': torch.rand(2, 1, 32, 32),
             'masks': torch.zeros(2, 1, 32, 32), 'text': torch.zeros(2, 4)}
    model = Identity()
    fused = model(batch['ir'], batch['vis_y'], None, None)
    _, parts = trainer.Trainer._add_shift_consistency(
        model, batch, fused, torch.zeros(()), {}, 1.0)
    assert float(parts['shift_consistency']) == 0.0


def test_scale_consistency_is_zero_for_a_per_pixel_model():
    class Mix(torch.nn.Module):
        training = True

        def forward(self, ir, vis, masks, text):
            return 0.25 * ir + 0.75 * vis

    batch = {'ir': torch.rand(2, 1, 32, 32), 'vis_y': torch.rand(2, 1, 32, 32),
             'masks': torch.zeros(2, 1, 32, 32), 'text': torch.zeros(2, 4)}
    model = Mix()
    fused = model(batch['ir'], batch['vis_y'], None, None)
    _, parts = trainer.Trainer._add_scale_consistency(model, batch, fused, torch.zeros(()), {},
                                                      1.0)
    assert float(parts['scale_consistency']) < 1e-6
    # A model that sees the pixel grid (an 8-px checker) is not.

    class Grid(Mix):
        def forward(self, ir, vis, masks, text):
            rows = torch.arange(ir.shape[-2]).view(-1, 1) // 8 % 2
            return super().forward(ir, vis, masks, text) + 0.1 * rows
    fused = Grid()(batch['ir'], batch['vis_y'], None, None)
    _, parts = trainer.Trainer._add_scale_consistency(Grid(), batch, fused, torch.zeros(()),
                                                      {}, 1.0)
    assert float(parts['scale_consistency']) > 0.01


# ----------------------------------------------------------------------------- distillation

SMALL_NET = {'stem_channels': 2, 'skip_channels': 4, 'channels': 8, 'decoder_channels': 4,
             'mgca_blocks': 1, 'text_hidden': 8}


def _teacher_file(path, **config):
    from tesg_ros.network import save_fusion_net
    torch.manual_seed(11)
    teacher = trainer.build_network(dict(SMALL_NET, **config))
    with torch.no_grad():   # a teacher unlike a fresh student: strong detail, shifted weights
        teacher.decoder.head.weight.normal_(0.0, 0.3)
    save_fusion_net(teacher, path)
    return teacher


def _distill_config(data, run_dir, teacher, **overrides):
    # Only the teacher's term: every usual fusion term off.
    settings = {f'loss__{name}': 0.0 for name in ('intensity', 'gradient', 'ssim', 'colour')}
    settings.update(distill__teacher=str(teacher), loss__distill=1.0,
                    model=dict(SMALL_NET, channels=4, heads=2), optim__lr=1e-2,
                    optim__warmup_steps=0, train__max_steps=12, validation__every=6,
                    validation__best_key='loss/distill')
    return _config(data, run_dir, **dict(settings, **overrides))


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / 'train_log.jsonl').read_text().splitlines()]


def test_distillation_config_errors(synthetic_data, tmp_path):
    teacher = tmp_path / 'teacher.safetensors'
    with pytest.raises(ConfigError, match='need distill.teacher'):
        _config(synthetic_data, tmp_path, loss__distill=1.0)
    with pytest.raises(ConfigError, match='for nothing'):
        _config(synthetic_data, tmp_path, distill__teacher=str(teacher))
    with pytest.raises(ConfigError, match='loss.distill must be >= 0'):
        _config(synthetic_data, tmp_path, distill__teacher=str(teacher), loss__distill=-1.0)
    with pytest.raises(ConfigError, match='set one'):
        _config(synthetic_data, tmp_path, distill__teacher=str(teacher), loss__distill=1.0,
                distill__init_matching=True, init_weights=str(teacher))
    # A teacher whose inputs differ from the student's (text_dim) is refused at the start.
    _teacher_file(teacher, text_dim=16)
    with pytest.raises(ConfigError, match='text_dim'):
        trainer.train(_distill_config(synthetic_data, tmp_path / 'run', teacher),
                      progress=False)


def test_distillation_alone_pulls_the_student_to_a_frozen_teacher(synthetic_data, tmp_path):
    teacher_path = tmp_path / 'teacher.safetensors'
    teacher = _teacher_file(teacher_path)
    result = trainer.train(_distill_config(synthetic_data, tmp_path / 'run', teacher_path),
                           progress=False)
    records = _records(tmp_path / 'run')
    val = {r['step']: r['loss/distill'] for r in records if r['event'] == 'val'}
    assert sorted(val) == [0, 6, 12]
    # Nothing but the teacher's term trains it, and the student moves toward the teacher.
    train_records = [r for r in records if r['event'] == 'train']
    assert all(r['loss/total'] == pytest.approx(r['loss/distill']) for r in train_records)
    assert val[12] < 0.7 * val[0]
    # The teacher stays frozen and is not part of the student or its exported file.
    from tesg_ros.network import load_fusion_net
    assert _weights_equal(load_fusion_net(teacher_path), teacher)
    assert result.network.config.channels == 4
    assert load_fusion_net(tmp_path / 'run' / 'best.safetensors').config.channels == 4


def test_distillation_teacher_sees_the_students_inputs(synthetic_data, tmp_path):
    # A student initialised with all of a same-config teacher's tensors fuses exactly like it
    # on every training batch (masks, text targets, degradations included): a teacher fed
    # anything else (no masks, zero text, the clean visible image) would differ.
    teacher_path = tmp_path / 'teacher.safetensors'
    _teacher_file(teacher_path)
    config = _distill_config(synthetic_data, tmp_path / 'run', teacher_path,
                             model=dict(SMALL_NET), distill__init_matching=True,
                             loss__distill_weight_map=1.0, optim__lr=1e-9,
                             train__max_steps=2, data__text_targets=True,
                             data__degrade=0.5, data__ir_stretch=0.5)
    trainer.train(config, progress=False)
    train_records = [r for r in _records(tmp_path / 'run') if r['event'] == 'train']
    assert len(train_records) == 2
    for record in train_records:
        assert record['loss/distill'] < 1e-6
        assert record['loss/distill_weight_map'] < 1e-6
    # The same start without the teacher's tensors is far from it.
    config = _distill_config(synthetic_data, tmp_path / 'scratch', teacher_path,
                             model=dict(SMALL_NET), loss__distill_weight_map=1.0,
                             optim__lr=1e-9, train__max_steps=1)
    trainer.train(config, progress=False)
    first = [r for r in _records(tmp_path / 'scratch') if r['event'] == 'train'][0]
    assert first['loss/distill'] > 1e-3 and first['loss/distill_weight_map'] > 1e-3
