# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Text-Driven Attentional Fusion (TDAF): text-conditioned gates that merge the two streams.

The sentence embedding of the user's text prompt drives two gates:

* channel gates (SE-style, in (0, 2), 1 = neutral) on each modality's features, from the text
  embedding plus a squeeze of the globally pooled features: the text decides which feature
  channels of infrared and of visible matter (e.g. "hot pedestrians" vs "road markings");
* a spatial gate map ``alpha`` in (0, 1) from the gated features with a text FiLM bias: per
  region, how much the infrared stream (alpha) versus the visible stream (1 - alpha) contributes.

The output is ``alpha * ir_gated + (1 - alpha) * vis_gated`` plus a 1x1 projection of the gate's
hidden features (so the decoder sees what the gate saw).
"""

import torch
from torch import nn
import torch.nn.functional as F

from tesg_ros.errors import ConfigError


class TextDrivenAttentionalFusion(nn.Module):
    """Text-driven channel + spatial gating of the MGCA outputs.

    Args:
        channels: feature channels C of each modality.
        text_dim: sentence-embedding size D (384 for all-MiniLM-L6-v2).
        text_hidden: width of the shared text MLP.
    """

    def __init__(self, channels, text_dim, text_hidden=64):
        super().__init__()
        if text_dim < 1 or text_hidden < 1:
            raise ConfigError(f'text_dim ({text_dim}) and text_hidden ({text_hidden}) must be '
                              '>= 1')
        self.channels = channels
        self.text_dim = text_dim
        self.text_mlp = nn.Sequential(nn.Linear(text_dim, text_hidden), nn.GELU())
        self.text_to_channel = nn.Linear(text_hidden, 2 * channels)
        self.text_to_spatial = nn.Linear(text_hidden, channels)
        self.squeeze = nn.Linear(2 * channels, 2 * channels)
        self.spatial_hidden = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.spatial_out = nn.Conv2d(channels, 1, 3, padding=1)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, feat_ir, feat_vis, text, return_gates=False):
        """Fuse the two streams under text guidance.

        feat_ir, feat_vis: ``(B, C, h, w)`` float (MGCA outputs).
        text: ``(B, D)`` float sentence embedding (zeros = no text).
        Returns ``(fused (B, C, h, w), info)``; ``info`` is ``{}`` or, with ``return_gates``,
        ``{'channel_gates': (B, 2, C) in (0, 2) [ir, vis], 'spatial_gate': (B, 1, h, w) in
        (0, 1), infrared share}``.
        """
        batch = feat_ir.shape[0]
        if feat_ir.shape[1] != self.channels or feat_vis.shape != feat_ir.shape:
            raise ConfigError(f'TDAF expects two (B, {self.channels}, h, w) feature maps, got '
                              f'{tuple(feat_ir.shape)} and {tuple(feat_vis.shape)}')
        if text.shape != (batch, self.text_dim):
            raise ConfigError(f'text must have shape (B, text_dim) = {(batch, self.text_dim)}, '
                              f'got {tuple(text.shape)}')
        text_features = self.text_mlp(text)
        pooled = torch.cat([feat_ir.mean(dim=(2, 3)), feat_vis.mean(dim=(2, 3))], dim=1)
        gates = 2.0 * torch.sigmoid(self.text_to_channel(text_features) + self.squeeze(pooled))
        gate_ir, gate_vis = gates[:, :, None, None].chunk(2, dim=1)
        gated_ir = feat_ir * gate_ir
        gated_vis = feat_vis * gate_vis
        hidden = self.spatial_hidden(torch.cat([gated_ir, gated_vis], dim=1))
        hidden = F.gelu(hidden + self.text_to_spatial(text_features)[:, :, None, None])
        alpha = torch.sigmoid(self.spatial_out(hidden))
        fused = torch.lerp(gated_vis, gated_ir, alpha) + self.project(hidden)
        info = {}
        if return_gates:
            info = {'channel_gates': gates.view(batch, 2, self.channels), 'spatial_gate': alpha}
        return fused, info
