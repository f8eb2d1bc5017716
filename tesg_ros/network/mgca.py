# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Mask-Guided Cross-Attention (MGCA): windowed infrared <-> visible cross-attention.

Both directions run in one block: infrared queries attend to visible keys/values (the infrared
stream borrows visible texture) and visible queries attend to infrared keys/values (the visible
stream borrows thermal targets). The mask semantics from the Semantic Information Generator enter
the attention twice:

* a learnable per-head, per-mask additive bias on the attention logits at masked *key*
  positions (``mask_key_bias``, shape ``(heads, M)``): a positive bias makes every query look
  harder at the regions the text phrase named;
* a learnable mask embedding added to queries and keys (``mask_embed``, ``M -> 2 C``), so the
  query-key product gains a term that links masked queries to masked keys (same-object
  affinity).

Both terms are exactly zero when the masks are zero. Attention runs inside non-overlapping
``window x window`` windows (optionally shifted by ``shift`` tokens, Swin-style, realised by
padding rather than rolling so no window wraps around the image), so the cost is linear in the
number of pixels. Padded keys are excluded from the softmax.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

from tesg_ros.errors import ConfigError


def window_partition(features, window, shift):
    """Split a feature map into windows of tokens.

    features: ``(B, C, h, w)``. The map is zero-padded by ``shift`` rows/columns at the top/left
    and up to a multiple of ``window`` at the bottom/right.
    Returns ``(tokens, grid)``: tokens ``(B * nH * nW, window * window, C)`` and
    ``grid = (nH, nW, height_padded, width_padded)``.
    """
    batch, channels, height, width = features.shape
    padded_h = math.ceil((height + shift) / window) * window
    padded_w = math.ceil((width + shift) / window) * window
    if (padded_h, padded_w) != (height, width):
        features = F.pad(features, (shift, padded_w - width - shift,
                                    shift, padded_h - height - shift))
    rows, cols = padded_h // window, padded_w // window
    tokens = features.view(batch, channels, rows, window, cols, window)
    tokens = tokens.permute(0, 2, 4, 3, 5, 1).reshape(batch * rows * cols, window * window,
                                                      channels)
    return tokens, (rows, cols, padded_h, padded_w)


def window_merge(tokens, batch, height, width, window, shift, grid):
    """Inverse of :func:`window_partition`: ``(B * nH * nW, N, C)`` -> ``(B, C, h, w)``."""
    rows, cols, padded_h, padded_w = grid
    channels = tokens.shape[-1]
    features = tokens.view(batch, rows, cols, window, window, channels)
    features = features.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, padded_h, padded_w)
    return features[:, :, shift:shift + height, shift:shift + width]


class MaskGuidedCrossAttention(nn.Module):
    """Bidirectional, windowed, mask-guided cross-attention between infrared and visible features.

    Args:
        channels: feature channels C (divisible by ``heads``).
        mask_channels: number of masks M from the Semantic Information Generator.
        heads: attention heads.
        window: window side in tokens (N = window**2 keys per query).
        shift: window offset in tokens (0 or window // 2 for a shifted block).
    """

    def __init__(self, channels, mask_channels, heads=4, window=8, shift=0):
        super().__init__()
        if channels % heads:
            raise ConfigError(f'channels ({channels}) must be divisible by heads ({heads})')
        if not 0 <= shift < window:
            raise ConfigError(f'shift ({shift}) must be in [0, window={window})')
        if mask_channels < 1:
            raise ConfigError(f'mask_channels must be >= 1, got {mask_channels}')
        self.channels = channels
        self.mask_channels = mask_channels
        self.heads = heads
        self.window = window
        self.shift = shift
        self.norm_ir = nn.LayerNorm(channels)
        self.norm_vis = nn.LayerNorm(channels)
        # Per modality: its query (for attending to the other) and its key/value (for the other).
        self.qkv_ir = nn.Linear(channels, 3 * channels)
        self.qkv_vis = nn.Linear(channels, 3 * channels)
        # No bias: zero masks must add exactly nothing.
        self.mask_embed = nn.Linear(mask_channels, 2 * channels, bias=False)
        self.mask_key_bias = nn.Parameter(torch.ones(heads, mask_channels))
        self.out_ir = nn.Linear(channels, channels)
        self.out_vis = nn.Linear(channels, channels)
        nn.init.normal_(self.mask_embed.weight, std=0.5)

    def _split_heads(self, tokens):
        windows, count, _ = tokens.shape
        return tokens.view(windows, count, self.heads, -1).transpose(1, 2)

    def _attend(self, query, key, value, logit_bias, return_attention):
        """query/key/value ``(Bw, N, C)``; logit_bias ``(Bw, heads, 1, N)``.

        Returns ``(out (Bw, N, C), attention (Bw, heads, N, N) or None)``.
        """
        query, key, value = (self._split_heads(t) for t in (query, key, value))
        if return_attention:
            scale = query.shape[-1] ** -0.5
            logits = torch.matmul(query, key.transpose(-1, -2)) * scale + logit_bias
            attention = logits.softmax(dim=-1)
            out = torch.matmul(attention, value)
        else:
            attention = None
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=logit_bias.expand(-1, -1, query.shape[2], -1))
        windows, _, count, _ = out.shape
        return out.transpose(1, 2).reshape(windows, count, self.channels), attention

    def forward(self, feat_ir, feat_vis, masks, return_attention=False):
        """Cross-attend the two modalities under mask guidance.

        feat_ir, feat_vis: ``(B, C, h, w)`` float features.
        masks: ``(B, M, h, w)`` soft masks in [0, 1] at the feature resolution.
        Returns ``(out_ir, out_vis, info)``: residual-updated features ``(B, C, h, w)`` each, and
        ``info`` = ``{}`` or, with ``return_attention``, ``{'ir_to_vis': (Bw, heads, N, N),
        'vis_to_ir': (Bw, heads, N, N), 'key_bias': (Bw, heads, 1, N)}``
        (Bw = B x windows, N = window**2; rows are queries, columns keys).
        """
        batch, channels, height, width = feat_ir.shape
        if channels != self.channels or feat_vis.shape != feat_ir.shape:
            raise ConfigError(f'MGCA expects two (B, {self.channels}, h, w) feature maps, got '
                              f'{tuple(feat_ir.shape)} and {tuple(feat_vis.shape)}')
        if masks.shape != (batch, self.mask_channels, height, width):
            raise ConfigError(f'MGCA expects masks of shape '
                              f'{(batch, self.mask_channels, height, width)}, '
                              f'got {tuple(masks.shape)}')
        window, shift = self.window, self.shift
        tokens_ir, grid = window_partition(feat_ir, window, shift)
        tokens_vis, _ = window_partition(feat_vis, window, shift)
        mask_tokens, _ = window_partition(masks, window, shift)
        valid = torch.ones((1, 1, height, width), dtype=feat_ir.dtype, device=feat_ir.device)
        valid, _ = window_partition(valid, window, shift)

        query_ir, key_ir, value_ir = self.qkv_ir(self.norm_ir(tokens_ir)).chunk(3, dim=-1)
        query_vis, key_vis, value_vis = self.qkv_vis(self.norm_vis(tokens_vis)).chunk(3, dim=-1)
        query_shift, key_shift = self.mask_embed(mask_tokens).chunk(2, dim=-1)
        query_ir, query_vis = query_ir + query_shift, query_vis + query_shift
        key_ir, key_vis = key_ir + key_shift, key_vis + key_shift

        # (Bw, N, M) @ (M, heads) -> (Bw, heads, 1, N); padded keys get -inf.
        key_bias = torch.matmul(mask_tokens, self.mask_key_bias.t()).transpose(1, 2).unsqueeze(2)
        padded = (valid[..., 0] == 0).repeat(batch, 1)[:, None, None, :]
        key_bias = key_bias.masked_fill(padded, float('-inf'))

        attended_ir, attention_ir = self._attend(query_ir, key_vis, value_vis, key_bias,
                                                 return_attention)
        attended_vis, attention_vis = self._attend(query_vis, key_ir, value_ir, key_bias,
                                                   return_attention)
        out_ir = feat_ir + window_merge(self.out_ir(attended_ir), batch, height, width,
                                        window, shift, grid)
        out_vis = feat_vis + window_merge(self.out_vis(attended_vis), batch, height, width,
                                          window, shift, grid)
        info = {}
        if return_attention:
            info = {'ir_to_vis': attention_ir, 'vis_to_ir': attention_vis, 'key_bias': key_bias}
        return out_ir, out_vis, info
