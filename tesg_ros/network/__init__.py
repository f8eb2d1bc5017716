# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The TeSG fusion network (ROS-free): MGCA, TDAF, the full net, colour helpers, checkpoints.

``TesgFusionNet(config)(ir, vis_y, masks=None, text=None) -> fused_y``, all ``(B, 1, H, W)``
float in [0, 1]; see :mod:`tesg_ros.network.tesg_net` and docs/network.md.
"""

from tesg_ros.network.mgca import MaskGuidedCrossAttention
from tesg_ros.network.tdaf import TextDrivenAttentionalFusion
from tesg_ros.network.tesg_net import TesgConfig, TesgFusionNet
from tesg_ros.network.weights import load_fusion_net, read_config, save_fusion_net

__all__ = ['MaskGuidedCrossAttention', 'TextDrivenAttentionalFusion', 'TesgConfig',
           'TesgFusionNet', 'load_fusion_net', 'read_config', 'save_fusion_net']
