# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training pipeline of the TeSG fusion network (``tesg-train``).

:mod:`~tesg_ros.training.dataset` (pairs, cached SIG semantics, aligned crops),
:mod:`~tesg_ros.training.losses` (intensity, gradient, SSIM, colour),
:mod:`~tesg_ros.training.trainer` (config, AdamW + cosine, DDP, checkpoints, validation) and
:mod:`~tesg_ros.cli.train` (the command line). See docs/training.md.
"""

from tesg_ros.training.trainer import load_config, train, TrainConfig, TrainResult

__all__ = ['load_config', 'train', 'TrainConfig', 'TrainResult']
