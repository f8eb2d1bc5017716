# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Tests of the TeSG fusion network: shapes, guidance, gradients, checkpoints, colour."""

import json

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file
import torch
import torch.nn.functional as F

from tesg_ros.errors import ConfigError, NetworkInputError, TesgError
from tesg_ros.network import colour
from tesg_ros.network import (
    load_fusion_net, MaskGuidedCrossAttention, save_fusion_net, TesgConfig, TesgFusionNet,
    TextDrivenAttentionalFusion)
from tesg_ros.network.mgca import window_merge, window_partition
from tesg_ros.network.tesg_net import background_from_surroundings, block_diagonal, FILL_RADIUS
from tesg_ros.network.weights import read_config

SMALL = TesgConfig(text_dim=16, mask_channels=2)


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """Tiny tensors: one thread is as fast and does not suffer when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def default_net():
    torch.manual_seed(0)
    return TesgFusionNet().eval()


@pytest.fixture(scope='module')
def small_net():
    torch.manual_seed(1)
    return TesgFusionNet(SMALL).eval()


def random_inputs(batch, height, width, config, seed=0):
    """ir, vis (B,1,H,W) uniform in [0, 1]; masks (B,M,H,W) one box of ones; text (B,D) normal."""
    generator = torch.Generator().manual_seed(seed)
    ir = torch.rand(batch, 1, height, width, generator=generator)
    vis = torch.rand(batch, 1, height, width, generator=generator)
    mask = torch.zeros(batch, config.mask_channels, height, width)
    mask[..., height // 4:height // 2 + 1, width // 3:width // 2 + 1] = 1.0
    embedding = torch.randn(batch, config.text_dim, generator=generator)
    return ir, vis, mask, embedding


def load_tno(path):
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]


# --- whole network -----------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(1, 1, 37, 53), (2, 1, 64, 96), (1, 1, 1, 1),
                                   (1, 1, 9, 130), (3, 1, 24, 24)])
def test_output_shape_dtype_and_range(small_net, shape):
    ir, vis, masks, text = random_inputs(shape[0], shape[2], shape[3], SMALL)
    with torch.inference_mode():
        fused = small_net(ir, vis, masks, text)
    assert fused.shape == shape
    assert fused.dtype == torch.float32
    assert torch.isfinite(fused).all()
    assert fused.min() >= 0.0 and fused.max() <= 1.0


def test_none_equals_zero_guidance(small_net):
    ir, vis, _, _ = random_inputs(2, 40, 56, SMALL)
    with torch.inference_mode():
        plain = small_net(ir, vis)
        zeros = small_net(ir, vis, torch.zeros(2, 2, 40, 56), torch.zeros(2, 16))
    torch.testing.assert_close(plain, zeros, atol=1e-6, rtol=0)


def test_guidance_changes_the_output(small_net):
    ir, vis, masks, text = random_inputs(1, 64, 64, SMALL)
    with torch.inference_mode():
        plain = small_net(ir, vis)
        guided = small_net(ir, vis, masks, text)
    assert (plain - guided).abs().max() > 1e-5


def test_batch_items_are_independent(small_net):
    ir, vis, masks, text = random_inputs(2, 48, 40, SMALL)
    with torch.inference_mode():
        both = small_net(ir, vis, masks, text)
        second = small_net(ir[1:], vis[1:], masks[1:], text[1:])
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter_of_every_module():
    torch.manual_seed(2)
    net = TesgFusionNet(SMALL).train()
    ir, vis, masks, text = random_inputs(2, 64, 80, SMALL, seed=3)
    ir, vis = 0.2 + 0.6 * ir, 0.2 + 0.6 * vis  # stay clear of the output clamp
    target = torch.rand(2, 1, 64, 80, generator=torch.Generator().manual_seed(4))
    loss = torch.nn.functional.mse_loss(net(ir, vis, masks, text), target)
    loss.backward()
    dead = [name for name, p in net.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead, f'no gradient for {dead}'
    groups = {name.split('.')[0] for name, _ in net.named_parameters()}
    assert {'encoder', 'mgca', 'tdaf', 'decoder',
            'prior_scale'} <= groups


def test_seeded_construction_and_inference_are_deterministic():
    ir, vis, masks, text = random_inputs(1, 50, 70, SMALL)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = TesgFusionNet(SMALL).eval()
        with torch.inference_mode():
            outputs.append(net(ir, vis, masks, text))
            assert torch.equal(outputs[-1], net(ir, vis, masks, text))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(124)
    with torch.inference_mode():
        other = TesgFusionNet(SMALL).eval()(ir, vis, masks, text)
    assert not torch.equal(outputs[0], other)


def test_parameter_count_is_under_one_million(default_net):
    count = default_net.parameter_count()
    assert count == sum(p.numel() for p in default_net.parameters())
    assert 50_000 < count < 1_000_000


def test_intermediates_have_documented_shapes(small_net):
    ir, vis, masks, text = random_inputs(2, 37, 53, SMALL)
    with torch.inference_mode():
        fused, info = small_net(ir, vis, masks, text, return_intermediates=True)
        plain = small_net(ir, vis, masks, text)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=0)  # manual vs SDPA attention
    assert info['weight'].shape == info['detail'].shape == (2, 1, 37, 53)
    assert info['weight'].min() >= 0 and info['weight'].max() <= 1
    assert info['channel_gates'].shape == (2, 2, SMALL.channels)
    assert info['spatial_gate'].shape == (2, 1, 5, 7)  # ceil(37/8), ceil(53/8)
    assert len(info['mgca']) == SMALL.mgca_blocks
    for block in info['mgca']:
        attention = block['ir_to_vis']
        assert attention.shape[1:] == (SMALL.heads, 64, 64)
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))


def test_masks_blend_the_two_weights_at_full_resolution(small_net):
    """Inside a hard mask the weight is the target weight, outside it the background weight,
    switching between two neighbouring pixels (not over the 4 px of the 1/4-res grid)."""
    ir, vis, _, text = random_inputs(1, 40, 56, SMALL)
    masks = torch.zeros(1, 2, 40, 56)
    masks[0, 1, 10:23, 17:30] = 1.0  # odd edges: not aligned with the 1/4-resolution grid
    with torch.inference_mode():
        _, info = small_net(ir, vis, masks, text, return_intermediates=True)
        _, maskless = small_net(ir, vis, None, text, return_intermediates=True)
    inside = masks[:, 1:] > 0
    weight, background, target = (info[key] for key in
                                  ('weight', 'background_weight', 'target_weight'))
    torch.testing.assert_close(weight[inside], target[inside], atol=0, rtol=0)
    torch.testing.assert_close(weight[~inside], background[~inside], atol=0, rtol=0)
    assert (target - background)[inside].abs().max() > 1e-6  # two heads, not one map
    assert maskless['target_weight'] is None
    torch.testing.assert_close(maskless['background_weight'], maskless['weight'])
    # Soft mask values blend with a slope of 2 about 0.5: 0.6 -> 0.7, 0.2 -> 0, 0.8 -> 1.
    masks[0, 0, 0, 0:3] = torch.tensor([0.6, 0.2, 0.8])
    with torch.inference_mode():
        _, soft = small_net(ir, vis, masks, text, return_intermediates=True)
    background, target = soft['background_weight'][0, 0, 0], soft['target_weight'][0, 0, 0]
    torch.testing.assert_close(soft['weight'][0, 0, 0, :3], torch.stack([
        0.3 * background[0] + 0.7 * target[0], background[1], target[2]]))


def test_background_weight_inside_masks_comes_from_their_surroundings():
    """Inside a mask the (unused) background weight follows the target's saliency (0.9);
    bilinear upsampling would carry it past the mask edge. It is replaced by the mean weight of
    the non-mask pixels around it (0.2 here); outside the masks nothing changes."""
    radius = FILL_RADIUS
    weight = torch.full((1, 1, 40, 40), 0.2)
    weight[..., 16:24, 16:24] = 0.9        # the target's own saliency
    weight[..., 15, 16:24] = 0.4           # just outside the mask: the network's own choice
    masks = torch.zeros(1, 2, 40, 40)
    masks[:, 1, 16:24, 16:24] = 1.0
    masks[:, 1, 16, 16] = 0.5              # a soft mask value fills in proportion
    filled = background_from_surroundings(weight, masks)[0, 0]
    inside = masks[0, 1] > 0
    # Mask pixels within reach of the surroundings now read them (about 0.2 to 0.45), not 0.9.
    edge = inside.clone()
    edge[16 + radius:24 - radius, 16 + radius:24 - radius] = False
    edge[16, 16] = False
    assert filled[edge].max() < 0.5 and filled[edge].min() >= 0.2 - 1e-6
    assert 0.2 < filled[16, 16] < 0.9      # half filled
    assert filled[20, 20] == 0.9           # deep inside: no surroundings within reach
    assert torch.equal(filled[~inside], weight[0, 0][~inside])
    assert torch.equal(background_from_surroundings(weight, torch.zeros_like(masks)), weight)
    # A mask covering everything leaves no surroundings: the weight is kept.
    assert torch.equal(background_from_surroundings(weight, torch.ones_like(masks)), weight)


def test_fusion_without_guidance_keeps_targets_and_texture(default_net, tno_pair_paths):
    """Untrained, masks and text absent: the structural prior alone must already fuse well."""
    assert len(tno_pair_paths) == 3
    for ir_path, vis_path in tno_pair_paths:
        ir, vis = load_tno(ir_path), load_tno(vis_path)
        with torch.inference_mode():
            fused = default_net(ir, vis)
        average = 0.5 * (ir + vis)
        # No halos or overshoot: every pixel stays within the two sources (detail starts ~0).
        assert (fused - torch.maximum(ir, vis)).max() < 0.01
        assert (torch.minimum(ir, vis) - fused).max() < 0.01
        # Hot targets (brightest 2 % of infrared) keep their infrared intensity better than
        # plain averaging does.
        hot = ir > torch.quantile(ir.flatten(), 0.98)
        assert (fused - ir).abs()[hot].mean() < 0.95 * (average - ir).abs()[hot].mean()
        # Saliency weighting keeps more contrast and edge strength than averaging.
        assert fused.std() > 1.1 * average.std()
        assert sobel_energy(fused) > 1.05 * sobel_energy(average)


def sobel_energy(image):
    array = image[0, 0].numpy()
    return float(np.hypot(cv2.Sobel(array, cv2.CV_32F, 1, 0),
                          cv2.Sobel(array, cv2.CV_32F, 0, 1)).mean())


@pytest.mark.parametrize('bad', ['shape', 'range', 'mask_channels', 'text_dim', 'dtype',
                                 'bool_masks', 'mask_range', 'nan_text'])
def test_bad_inputs_raise_network_input_error(small_net, bad):
    ir, vis, masks, text = random_inputs(1, 16, 16, SMALL)
    if bad == 'shape':
        vis = vis[..., :15]
    elif bad == 'range':
        ir = ir * 255.0
    elif bad == 'mask_channels':
        masks = masks[:, :1]
    elif bad == 'text_dim':
        text = torch.zeros(1, 384)
    elif bad == 'bool_masks':
        masks = masks > 0
    elif bad == 'mask_range':
        masks = masks * 2.0
    elif bad == 'nan_text':
        text[0, 3] = float('nan')
    else:
        ir = (ir * 255).to(torch.uint8)
    with pytest.raises(NetworkInputError) as raised:
        small_net(ir, vis, masks, text)
    assert not isinstance(raised.value, ConfigError), 'a bad tensor is not configuration'


def test_config_round_trips_and_rejects_bad_values():
    config = TesgConfig(channels=32, heads=2, text_dim=512, mask_channels=3, reduction=16)
    assert TesgConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for values in [{'channels': 30, 'heads': 4}, {'reduction': 6}, {'reduction': 2},
                   {'text_dim': 0}, {'window': 2.5}, {'no_such_key': 1}]:
        with pytest.raises(ConfigError):
            TesgConfig.from_dict(values)


@pytest.mark.parametrize('reduction', [4, 16])
def test_other_reductions_work(reduction):
    config = TesgConfig(text_dim=8, reduction=reduction, mgca_blocks=1)
    net = TesgFusionNet(config).eval()
    ir, vis, masks, text = random_inputs(1, 45, 67, config)
    with torch.inference_mode():
        fused = net(ir, vis, masks, text)
    assert fused.shape == (1, 1, 45, 67) and 0 <= fused.min() and fused.max() <= 1


# --- MGCA ----------------------------------------------------------------------------------

def test_window_partition_and_merge_are_inverse():
    features = torch.randn(2, 3, 11, 13)
    for shift in (0, 2):
        tokens, grid = window_partition(features, 4, shift)
        assert tokens.shape[1:] == (16, 3)
        assert torch.equal(window_merge(tokens, 2, 11, 13, 4, shift, grid), features)


def mgca_inputs(mask_channels=1):
    generator = torch.Generator().manual_seed(5)
    feat_ir = torch.randn(1, 16, 12, 20, generator=generator)
    feat_vis = torch.randn(1, 16, 12, 20, generator=generator)
    masks = torch.zeros(1, mask_channels, 12, 20)
    masks[:, 0, 2:6, 3:9] = 1.0
    return feat_ir, feat_vis, masks


def test_masks_change_the_attention():
    torch.manual_seed(6)
    block = MaskGuidedCrossAttention(16, 1, heads=2, window=8, shift=4).eval()
    feat_ir, feat_vis, masks = mgca_inputs()
    with torch.no_grad():
        _, _, guided = block(feat_ir, feat_vis, masks, return_attention=True)
        _, _, plain = block(feat_ir, feat_vis, torch.zeros_like(masks), return_attention=True)
    assert (guided['ir_to_vis'] - plain['ir_to_vis']).abs().max() > 0.05
    assert (guided['vis_to_ir'] - plain['vis_to_ir']).abs().max() > 0.05


def test_mask_key_bias_moves_attention_onto_masked_keys():
    """With the embedding term off, a positive key bias must raise, for every query, the
    attention share of masked keys (softmax monotonicity), and a larger bias raises it more."""
    torch.manual_seed(7)
    block = MaskGuidedCrossAttention(16, 1, heads=2, window=8).eval()
    feat_ir, feat_vis, masks = mgca_inputs()
    masked_keys, _ = window_partition(masks, 8, 0)
    masked_keys = masked_keys[..., 0][:, None, None, :] > 0  # (Bw, 1, 1, N)
    has_masked = masked_keys.flatten(1).any(1)
    shares = []
    with torch.no_grad():
        block.mask_embed.weight.zero_()
        for bias in (0.0, 1.0, 3.0):
            block.mask_key_bias.fill_(bias)
            _, _, info = block(feat_ir, feat_vis, masks, return_attention=True)
            share = (info['ir_to_vis'] * masked_keys).sum(-1)[has_masked]
            shares.append(share)
    assert (shares[1] > shares[0] + 1e-4).all()
    assert (shares[2] > shares[1] + 1e-4).all()


def test_padded_keys_get_no_attention():
    block = MaskGuidedCrossAttention(16, 1, heads=2, window=8).eval()
    feat_ir, feat_vis, masks = mgca_inputs()  # 12 x 20 tokens -> padded to 16 x 24
    with torch.no_grad():
        _, _, info = block(feat_ir, feat_vis, masks, return_attention=True)
    valid, _ = window_partition(torch.ones(1, 1, 12, 20), 8, 0)
    padded = valid[..., 0] == 0  # (Bw, N) key positions outside the map
    assert padded.any() and not padded.all()
    for direction in ('ir_to_vis', 'vis_to_ir'):
        by_key = info[direction].permute(0, 3, 1, 2)  # (Bw, N keys, heads, N queries)
        assert by_key[padded].abs().max() == 0
        assert by_key[~padded].sum() > 0


# --- TDAF ----------------------------------------------------------------------------------

def test_text_changes_the_tdaf_gates():
    torch.manual_seed(8)
    fusion = TextDrivenAttentionalFusion(16, text_dim=12).eval()
    generator = torch.Generator().manual_seed(9)
    feat_ir = torch.randn(1, 16, 6, 10, generator=generator)
    feat_vis = torch.randn(1, 16, 6, 10, generator=generator)
    gates = []
    with torch.no_grad():
        for text in (torch.zeros(1, 12), torch.randn(1, 12, generator=generator),
                     torch.randn(1, 12, generator=generator)):
            fused, info = fusion(feat_ir, feat_vis, text, return_gates=True)
            gates.append(info)
            assert info['channel_gates'].min() > 0 and info['channel_gates'].max() < 2
            assert info['spatial_gate'].min() > 0 and info['spatial_gate'].max() < 1
    for first, second in ((0, 1), (1, 2)):
        assert (gates[first]['channel_gates'] - gates[second]['channel_gates']).abs().max() > 1e-3
        assert (gates[first]['spatial_gate'] - gates[second]['spatial_gate']).abs().max() > 1e-3


def test_tdaf_output_is_the_gated_mix():
    """With the projection zeroed the output is exactly alpha*ir_gated + (1-alpha)*vis_gated."""
    torch.manual_seed(10)
    fusion = TextDrivenAttentionalFusion(8, text_dim=4).eval()
    generator = torch.Generator().manual_seed(11)
    feat_ir = torch.randn(2, 8, 5, 7, generator=generator)
    feat_vis = torch.randn(2, 8, 5, 7, generator=generator)
    text = torch.randn(2, 4, generator=generator)
    with torch.no_grad():
        fusion.project.weight.zero_()
        fusion.project.bias.zero_()
        fused, info = fusion(feat_ir, feat_vis, text, return_gates=True)
    gate_ir = info['channel_gates'][:, 0, :, None, None]
    gate_vis = info['channel_gates'][:, 1, :, None, None]
    alpha = info['spatial_gate']
    expected = alpha * gate_ir * feat_ir + (1 - alpha) * gate_vis * feat_vis
    torch.testing.assert_close(fused, expected)


# --- checkpoints -------------------------------------------------------------------------

def test_save_load_round_trip(small_net, tmp_path):
    path = tmp_path / 'net.safetensors'
    save_fusion_net(small_net, path, extra_metadata={'run': 'unit-test'})
    raw = path.read_bytes()
    assert raw[8:9] == b'{' and not raw.startswith(b'PK') and raw[:1] != b'\x80'  # not pickle/zip
    assert read_config(path) == SMALL
    loaded = load_fusion_net(path, text_dim=16, mask_channels=2)
    assert loaded.config == SMALL and not loaded.training
    ir, vis, masks, text = random_inputs(1, 30, 44, SMALL)
    with torch.inference_mode():
        assert torch.equal(loaded(ir, vis, masks, text), small_net(ir, vis, masks, text))


def test_checkpoint_problems_raise_clear_errors(small_net, tmp_path):
    good = tmp_path / 'good.safetensors'
    save_fusion_net(small_net, good)
    state = {k: v.contiguous() for k, v in small_net.state_dict().items()}
    metadata = {'format': 'tesg_fusion_net', 'format_version': '1',
                'config': json.dumps(SMALL.to_dict())}

    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{not json at all')
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(good.read_bytes()[:-1000])
    missing_key = tmp_path / 'missing.safetensors'
    save_file({k: v for k, v in state.items() if k != 'prior_scale'}, missing_key, metadata)
    wrong_shape = tmp_path / 'shape.safetensors'
    save_file(state, wrong_shape, {**metadata, 'config': json.dumps(
        {**SMALL.to_dict(), 'text_dim': 384})})
    no_config = tmp_path / 'noconfig.safetensors'
    save_file(state, no_config, {'format': 'tesg_fusion_net', 'format_version': '1'})
    foreign = tmp_path / 'foreign.safetensors'
    save_file(state, foreign)

    cases = [(tmp_path / 'absent.safetensors', 'no such file'),
             (corrupt, 'not a readable safetensors'), (truncated, 'safetensors'),
             (missing_key, "missing ['prior_scale']"),
             (wrong_shape, 'text_dim mismatch: the metadata config says 384, the weights were '
                           'trained with 16'),
             (no_config, 'no valid JSON config'), (foreign, 'format')]
    for path, problem in cases:
        with pytest.raises(ConfigError) as raised:
            load_fusion_net(path)
        assert str(path) in str(raised.value) and problem in str(raised.value), raised.value
    with pytest.raises(ConfigError, match='text_dim is 16'):
        load_fusion_net(good, text_dim=384)
    with pytest.raises(TesgError, match='mask_channels'):
        load_fusion_net(good, mask_channels=1)


# --- colour ----------------------------------------------------------------------------------

def test_colour_round_trips_and_matches_opencv():
    generator = np.random.default_rng(12)
    rgb = generator.random((17, 23, 3), dtype=np.float32)
    np.testing.assert_allclose(colour.ycbcr_to_rgb_np(colour.rgb_to_ycbcr_np(rgb)), rgb,
                               atol=1e-5)
    bgr = rgb[..., ::-1].copy()
    np.testing.assert_allclose(colour.ycbcr_to_bgr_np(colour.bgr_to_ycbcr_np(bgr)), bgr,
                               atol=1e-5)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    ycbcr = colour.rgb_to_ycbcr(tensor)
    torch.testing.assert_close(colour.ycbcr_to_rgb(ycbcr), tensor, atol=1e-5, rtol=0)
    torch.testing.assert_close(colour.ycbcr_to_bgr(colour.bgr_to_ycbcr(tensor.flip(1))),
                               tensor.flip(1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ycbcr[0].permute(1, 2, 0).numpy(), colour.rgb_to_ycbcr_np(rgb),
                               atol=1e-6)
    # Same convention as OpenCV (which orders the channels Y, Cr, Cb).
    bgr8 = generator.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    opencv = cv2.cvtColor(bgr8, cv2.COLOR_BGR2YCrCb).astype(np.float32)
    ours = colour.float_to_uint8(colour.bgr_to_ycbcr_np(colour.uint8_to_float(bgr8)))
    assert np.abs(ours[..., [0, 2, 1]].astype(np.float32) - opencv).max() <= 1
    # Known values: pure red.
    np.testing.assert_allclose(colour.rgb_to_ycbcr_np(np.array([[[1.0, 0, 0]]], np.float32)),
                               [[[0.299, 0.5 - 0.299 / 1.772, 1.0]]], atol=1e-6)


def test_restore_colour_recovers_visible_and_uint8_helpers():
    generator = np.random.default_rng(13)
    bgr8 = generator.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    luma = colour.bgr_to_ycbcr_np(colour.uint8_to_float(bgr8))[..., 0]
    restored = colour.restore_colour_np(luma, bgr8)
    assert restored.dtype == np.uint8 and np.abs(restored.astype(int) - bgr8).max() <= 1
    brighter = colour.restore_colour_np(np.clip(luma + 0.1, 0, 1), bgr8)
    assert brighter.astype(int).sum() > bgr8.astype(int).sum()
    rgb = torch.from_numpy(colour.uint8_to_float(bgr8[..., ::-1].copy())).permute(2, 0, 1)[None]
    torch.testing.assert_close(colour.restore_colour(colour.rgb_to_ycbcr(rgb)[:, :1], rgb), rgb,
                               atol=1e-5, rtol=0)
    values = np.arange(256, dtype=np.uint8)
    assert np.array_equal(colour.float_to_uint8(colour.uint8_to_float(values)), values)
    tensor = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(colour.float_to_uint8(colour.uint8_to_float(tensor)), tensor)
    with pytest.raises(ConfigError):
        colour.uint8_to_float(values.astype(np.float32))
    with pytest.raises(ConfigError):
        colour.rgb_to_ycbcr_np(bgr8)


def test_fast_colour_restore_equals_one_saturating_float_add():
    """restore_colour_uint8 == round-and-saturate(visible + 255 (fused_y - visible_y)) per channel,
    including clipping at 0 and 255 and changes of more than 255 levels."""
    import cv2

    generator = np.random.default_rng(5)
    bgr8 = generator.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    bgr8[0, :5] = (0, 255, 128)
    visible_y = colour.luma_from_bgr_uint8(bgr8)
    fused_y = np.clip(visible_y + generator.normal(0, 0.3, visible_y.shape), 0, 1)
    fused_y = fused_y.astype(np.float32)
    fused_y[0, :2] = (0.0, 1.0)
    delta = (fused_y - visible_y) * np.float32(255.0)
    expected = cv2.add(bgr8, cv2.merge((delta, delta, delta)), dtype=cv2.CV_8U)
    restored = colour.restore_colour_uint8(fused_y, visible_y, bgr8)
    assert restored.dtype == np.uint8 and restored.shape == bgr8.shape
    np.testing.assert_array_equal(restored, expected)
    assert (restored == 0).any() and (restored == 255).any()
    np.testing.assert_array_equal(colour.restore_colour_uint8(visible_y, visible_y, bgr8), bgr8)


def test_block_diagonal_dense_conv_equals_grouped_conv():
    conv = torch.nn.Conv2d(6, 8, 3, padding=1, groups=2)
    features = torch.randn(2, 6, 9, 7)
    dense = torch.nn.functional.conv2d(features, block_diagonal(conv.weight), conv.bias,
                                       padding=1)
    torch.testing.assert_close(dense, conv(features))


def test_flat_inputs_give_a_flat_convex_fusion(default_net):
    """Zero-sum detail filters: constant images carry no detail, the output is a convex mix."""
    ir = torch.full((1, 1, 33, 47), 0.8)
    vis = torch.full((1, 1, 33, 47), 0.2)
    with torch.inference_mode():
        fused, info = default_net(ir, vis, return_intermediates=True)
    assert info['detail'].abs().max() < 1e-6
    torch.testing.assert_close(fused, 0.2 + 0.6 * info['weight'])
    assert 0.2 <= fused.min() and fused.max() <= 0.8


def test_short_training_learns_to_use_the_mask(tno_pair_paths):
    """Trainability: 80 Adam steps on one crop learn 'infrared inside the mask, average
    outside'; the trained net needs the mask (without it the loss is several times higher)."""
    torch.manual_seed(0)
    net = TesgFusionNet(TesgConfig(text_dim=16)).train()
    ir_path, vis_path = [pair for pair in tno_pair_paths if pair[0].stem == '10'][0]
    ir = load_tno(ir_path)[..., 200:264, 300:364]
    vis = load_tno(vis_path)[..., 200:264, 300:364]
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1.0
    target = torch.where(mask > 0, ir, 0.5 * (ir + vis))
    text = torch.randn(1, 16, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(80):
        loss = torch.nn.functional.l1_loss(net(ir, vis, mask, text), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        trained = torch.nn.functional.l1_loss(net(ir, vis, mask, text), target).item()
        maskless = torch.nn.functional.l1_loss(net(ir, vis, None, text), target).item()
    assert trained < 0.3 * losses[0]
    assert maskless > 2.0 * trained


def test_benchmark_script_prints_a_table(capsys):
    from bench_scripts import load_bench_script
    bench = load_bench_script('bench_network')
    bench.main(['--sizes', '64x48', '--runs', '2', '--warmup', '1', '--threads', '1',
                '--breakdown'])
    output = capsys.readouterr().out
    assert 'GLIBC_TUNABLES=' in output and 'parameters 164,428' in output
    row = [line for line in output.splitlines() if line.startswith('| 64x48 |')][0]
    cells = [cell.strip() for cell in row.strip('|').split('|')]
    median_ms, gmac = float(cells[1]), float(cells[5])
    assert median_ms > 0
    # MACs scale with pixels: 64x48 is 1/100 of 640x480 (~1.08 GMAC), plus window padding.
    assert 0.008 < gmac < 0.02
    assert '| mgca |' in output and '| encoder |' in output


def test_cost_is_linear_in_pixels(default_net):
    """4x the pixels -> ~4x the MACs (a global attention would grow much faster)."""
    from torch.utils.flop_counter import FlopCounterMode

    def macs(height, width):
        ir, vis, masks, text = random_inputs(1, height, width, default_net.config)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            default_net(ir, vis, masks, text, return_intermediates=True)
        return counter.get_total_flops() / 2

    small, large = macs(128, 192), macs(256, 384)
    assert 3.5 < large / small < 4.1
    assert 3000 < large / (256 * 384) < 4000  # MAC per pixel, see docs/network.md


# --- edge-aware (guided) weight map ------------------------------------------------------

GUIDED = TesgConfig(text_dim=16, mask_channels=1, guided_radius=4)


def test_guided_filter_gives_the_window_mean_where_both_sources_are_flat():
    """Mottled weights over flat sources (the blotch case) come out as their smooth mean."""
    from tesg_ros.network.tesg_net import box_mean, guided_coefficients
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(1, 1, 40, 40, generator=generator)
    guide = torch.cat([torch.full((1, 1, 40, 40), 0.3),
                       0.6 + 0.002 * torch.rand(1, 1, 40, 40, generator=generator)], dim=1)
    coefficients = guided_coefficients(weight, guide, 4, 2e-3)
    filtered = (coefficients[:, :1] * guide[:, :1] + coefficients[:, 1:2] * guide[:, 1:]
                + coefficients[:, 2:])
    smooth = box_mean(box_mean(weight, 4), 4)
    assert (filtered - smooth).abs().max() < 0.01
    assert filtered[..., 8:-8, 8:-8].std() < 0.25 * weight.std()


def test_guided_weight_switches_at_the_sources_edge_not_on_the_coarse_grid():
    """A weight that is high on the warm side of an IR edge at 1/4 resolution is applied at
    full resolution: it switches within a pixel of the edge (column 38, not a multiple of 4),
    where bilinear upsampling ramps over several pixels."""
    from tesg_ros.network.tesg_net import apply_guided, guided_coefficients
    height, width = 64, 96
    ir = torch.full((1, 1, height, width), 0.2)
    ir[..., 38:] = 0.8
    vis = torch.full((1, 1, height, width), 0.5)
    guide = F.avg_pool2d(torch.cat([ir, vis], dim=1), 4)
    weight_quarter = (guide[:, :1] > 0.5).float() * 0.9 + 0.05
    coefficients = F.interpolate(guided_coefficients(weight_quarter, guide, 4, 2e-3),
                                 size=(height, width), mode='bilinear', align_corners=False)
    guided = apply_guided(coefficients, ir, vis)[0, 0, height // 2]
    bilinear = F.interpolate(weight_quarter, size=(height, width), mode='bilinear',
                             align_corners=False)[0, 0, height // 2]
    assert guided[30:38].max() < 0.15 and guided[38:46].min() > 0.7
    assert int(((bilinear > 0.15) & (bilinear < 0.7)).sum()) >= 3


def test_guided_net_no_masks_equals_zero_masks_and_stays_between_the_sources():
    torch.manual_seed(2)
    net = TesgFusionNet(TesgConfig(text_dim=16, mask_channels=1, guided_radius=4,
                                   max_detail_gain=1e-6)).eval()
    ir, vis, masks, text = random_inputs(1, 45, 70, net.config)
    with torch.inference_mode():
        plain = net(ir, vis, None, text)
        zero = net(ir, vis, torch.zeros_like(masks), text)
        fused, info = net(ir, vis, masks, text, return_intermediates=True)
    assert torch.allclose(plain, zero, atol=1e-6)
    assert fused.shape == ir.shape and info['weight'].shape == ir.shape
    assert info['background_weight'].shape == ir.shape == info['target_weight'].shape
    assert float(info['weight'].min()) >= 0.0 and float(info['weight'].max()) <= 1.0
    assert (fused - torch.maximum(ir, vis)).max() < 1e-3
    assert (torch.minimum(ir, vis) - fused).max() < 1e-3


def test_guided_radius_is_validated_and_old_configs_default_to_bilinear():
    with pytest.raises(ConfigError, match='guided_radius'):
        TesgConfig(guided_radius=-1)
    assert TesgConfig.from_dict({'channels': 48}).guided_radius == 0


def test_guided_net_exports_to_onnx(tmp_path):
    pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    torch.manual_seed(3)
    net = TesgFusionNet(GUIDED).eval()
    net.validate_inputs = False
    ir, vis, masks, text = random_inputs(1, 64, 96, GUIDED)
    path = tmp_path / 'guided.onnx'
    torch.onnx.export(net, (ir, vis, masks, text), str(path), dynamo=False,
                      input_names=['ir', 'vis', 'masks', 'text'], output_names=['fused'])
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (onnx_out,) = session.run(None, {'ir': ir.numpy(), 'vis': vis.numpy(),
                                     'masks': masks.numpy(), 'text': text.numpy()})
    with torch.inference_mode():
        expected = net(ir, vis, masks, text).numpy()
    assert np.abs(onnx_out - expected).max() < 1e-4


def test_shipped_weights_reproduce_the_saved_reference_outputs(test_data):
    """The forward pass of the shipped weights (and of the guided candidate) against outputs
    saved from an earlier tree on a 29 x 43 random input, with and without masks and text:
    bit-identical on the torch build and CPU kind that wrote them, else within 1e-5 (another
    kernel may round differently), on one thread."""
    reference = dict(np.load(test_data / 'network_reference.npz'))
    same_build = (str(reference['torch_version']) == torch.__version__ and
                  str(reference['cpu_capability']) == torch.backends.cpu.get_cpu_capability())
    ir, vis, masks, text = (torch.from_numpy(reference[k]) for k in ('ir', 'vis', 'masks', 'text'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # oneDNN's rounding depends on how the work is split
    try:
        _compare_with_reference(reference, same_build, ir, vis, masks, text)
    finally:
        torch.set_num_threads(threads)


def _compare_with_reference(reference, same_build, ir, vis, masks, text):
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.paths import share_path

    for tag, name in (('shipped', 'tesg_fusion.safetensors'),
                      ('guided', 'tesg_fusion_guided_candidate.safetensors')):
        net = load_fusion_net(share_path('model', name), device='cpu').eval()
        with torch.inference_mode():
            outputs = {'plain': net(ir, vis)}
            outputs['guided'], info = net(ir, vis, masks, text, return_intermediates=True)
        outputs.update({f'info_{key}': info[key] for key in (
            'weight', 'detail', 'prior_weight', 'background_weight', 'target_weight')})
        for key, value in outputs.items():
            expected = reference[f'{tag}_{key}']
            if same_build:
                np.testing.assert_array_equal(value.numpy(), expected, err_msg=f'{tag} {key}')
            else:
                np.testing.assert_allclose(value.numpy(), expected, rtol=0, atol=1e-5,
                                           err_msg=f'{tag} {key}')


@pytest.mark.parametrize('shape, radius', [((1, 1, 60, 80), 2), ((1, 2, 7, 5), 1),
                                           ((2, 3, 4, 9), 2), ((1, 1, 1, 1), 2)])
@pytest.mark.parametrize('border_aware', [True, False])
def test_band_box_mean_equals_the_average_pool(shape, radius, border_aware):
    """The banded-matrix box mean gives torch's average pool: border windows average the pixels
    inside (count_include_pad=False) or count the zero padding (True); windows wider than the
    image included."""
    from tesg_ros.network.tesg_net import band_box_mean
    size = 2 * radius + 1
    image = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    if border_aware:
        expected = F.avg_pool2d(F.avg_pool2d(image, (1, size), 1, (0, radius),
                                             count_include_pad=False),
                                (size, 1), 1, (radius, 0), count_include_pad=False)
    else:
        padded = F.pad(image, (radius, radius, radius, radius))
        expected = F.avg_pool2d(padded, size, 1, 0)
    assert (band_box_mean(image, radius, border_aware) - expected).abs().max() < 1e-6


@pytest.mark.parametrize('shape, radius', [((1, 8, 30, 40), 8), ((2, 3, 5, 7), 2),
                                           ((1, 1, 3, 40), 8), ((1, 2, 1, 1), 3)])
def test_box_mean_equals_the_border_aware_average_pool(shape, radius):
    """Running sums give the average pool's result, borders averaging only the pixels inside,
    for windows wider than the image too; float16 inputs are summed in float32."""
    from tesg_ros.network.tesg_net import box_mean
    size = 2 * radius + 1
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    expected = F.avg_pool2d(F.avg_pool2d(image, (1, size), 1, (0, radius),
                                         count_include_pad=False),
                            (size, 1), 1, (radius, 0), count_include_pad=False)
    assert (box_mean(image, radius) - expected).abs().max() < 1e-6
    half = box_mean(image.half(), radius)
    assert half.dtype == torch.float16 and (half.float() - expected).abs().max() < 1e-3
