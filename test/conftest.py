# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Shared pytest fixtures: repository test data, the optional ../shared data, DDS isolation."""

import os
from pathlib import Path
import random

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = REPO_ROOT / 'test' / 'data'
SHARED_DATA = Path(os.environ.get('TESG_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))

# Each test session gets its own DDS domain so parallel runs on one machine never see each
# other's topics. Must happen before any rclpy.init().
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


# Test tiers: `pytest -m "not ros and not slow"` runs the unit tests in well under a minute.
# ros: the node or replay over real DDS; slow: model export, training, full evaluations.
ROS_MODULES = {'test_fault_injection', 'test_fusion_node', 'test_launch_upstream',
               'test_node_geometry_outputs', 'test_node_pair_stamps', 'test_replay',
               'test_ros_dds', 'test_semantics_dds'}
SLOW_MODULES = {'test_deployment', 'test_evaluation', 'test_fault_injection',
                'test_semantics_dds', 'test_shipped_model', 'test_training'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition('.')[2] if item.module else ''
        if module in ROS_MODULES:
            item.add_marker(pytest.mark.ros)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def test_data():
    """The repository's own small test data (TNO pairs, CC BY 4.0; see test/data/README.md)."""
    return TEST_DATA


@pytest.fixture(scope='session')
def shared_data():
    """``../shared/data`` beside the clone; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'shared data not available at {SHARED_DATA}')
    return SHARED_DATA


@pytest.fixture(scope='module')
def pair(test_data):
    """TNO pair 19 (360x270, 4:3): IR grey and a tinted BGR visible frame, so that chroma
    restoration is exercised. Modules may define their own ``pair``."""
    import cv2
    import numpy as np

    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_GRAYSCALE)
    vi_bgr = np.dstack([vi, np.clip(vi * 0.9, 0, 255), np.clip(vi * 0.8 + 20, 0, 255)])
    return ir, vi_bgr.astype(np.uint8)


@pytest.fixture(scope='session')
def tno_pair_paths():
    """(ir_path, vi_path) for each TNO pair shipped in test/data/tno."""
    ir_dir = TEST_DATA / 'tno' / 'ir'
    return [(p, TEST_DATA / 'tno' / 'vi' / p.name) for p in sorted(ir_dir.glob('*.png'))]


@pytest.fixture(scope='session')
def random_weights(tmp_path_factory):
    """A seeded, untrained TesgFusionNet saved as safetensors (loaded through the real code).

    For tests of plumbing (node, replay, evaluation), not of fusion quality.
    """
    torch = pytest.importorskip('torch')
    from tesg_ros.network import TesgFusionNet
    from tesg_ros.network.tesg_net import TesgConfig
    from tesg_ros.network.weights import save_fusion_net

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'tesg_random.safetensors'
    save_fusion_net(TesgFusionNet(TesgConfig()), path)
    return str(path)
