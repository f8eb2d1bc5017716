# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Offline, deterministic evaluation of recorded bags through the fusion pipeline (no DDS).

:func:`evaluate_bag` replays a rosbag2 through the node's pairing policy and the
:class:`~tesg_ros.engine.FusionEngine`, scores the fused frames and three baselines (IR copy,
visible copy, pixel average) with :mod:`tesg_ros.metrics`, writes a bag with the fused topic,
per-frame and summary tables and a Markdown + self-contained HTML report. ``tesg-eval`` is its
command line (:mod:`tesg_ros.cli.eval`). See docs/evaluation.md.
"""

from tesg_ros.evaluation.evaluate import (
    BASELINES, evaluate_bag, EvaluationOptions, EvaluationResult, FrameRecord,
    FUSED_INFO_TOPIC, FUSED_TOPIC, METHOD_TITLES, METHODS, REGISTERED_TOPIC, SEMANTICS_MODES,
    STAGES)

__all__ = [
    'BASELINES', 'evaluate_bag', 'EvaluationOptions', 'EvaluationResult', 'FrameRecord',
    'FUSED_INFO_TOPIC', 'FUSED_TOPIC', 'METHOD_TITLES', 'METHODS', 'REGISTERED_TOPIC',
    'SEMANTICS_MODES', 'STAGES']
