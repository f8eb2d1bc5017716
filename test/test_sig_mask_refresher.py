# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""MaskRefresher: a heavy mask backend at its own rate (threading with a slow fake backend
object; then the tiny CLIPSeg through the SIG and the engine's diagnostics)."""

import threading
import time

import cv2
import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig import MaskRefresher, SemanticInformationGenerator
from tesg_ros.sig.masks import ClipSegMaskBackend
from test_sig_masks import build_tiny_clipseg, load_pair
from test_sig_refresher import HashEncoder, RecordingLogger, wait_for


class GatedBackend:
    """Slow fake mask backend (a test double for the threading): each call waits for
    ``gate``, records its arguments, and returns mask ``i`` = constant (frame id + i) / 100."""

    name = 'gated'

    def __init__(self):
        self.gate = threading.Event()
        self.calls = []
        self.entered = threading.Event()
        self.error = None

    def __call__(self, visible, thermal, phrases):
        self.entered.set()
        self.gate.wait()
        self.calls.append((int(visible[0, 0, 0]), tuple(phrases), visible.shape[:2]))
        if self.error is not None:
            raise self.error
        height, width = visible.shape[:2]
        values = (int(visible[0, 0, 0]) + np.arange(len(phrases))) / 100.0
        return np.broadcast_to(values[:, None, None], (len(phrases), height, width)).astype(
            np.float32)


def frame(frame_id, height=40, width=60):
    """A frame pair whose visible pixels all equal ``frame_id`` (so masks tell which frame)."""
    return (np.full((height, width, 3), frame_id, np.uint8),
            np.zeros((height, width), np.uint8))


@pytest.fixture
def gated():
    backend = GatedBackend()
    yield backend
    backend.gate.set()  # never leave a worker blocked


def test_per_frame_call_returns_while_the_backend_is_busy(gated):
    refresher = MaskRefresher(gated, period_s=0.01, timeout_s=30, logger=RecordingLogger())
    refresher.start()
    try:
        masks = refresher(*frame(1), ['a person', 'a car'])
        assert gated.entered.wait(5)  # the worker is now inside the blocked backend
        # Before any result: zero masks of this frame's shape, reported as not computed.
        for frame_id in range(2, 6):
            masks = refresher(*frame(frame_id), ['a person', 'a car'])
            assert masks.shape == (2, 40, 60) and masks.dtype == np.float32
            assert not masks.any()
        status = refresher.status()
        assert status['computed'] is False and status['backend'] == 'gated'
        assert gated.calls == []  # every call above returned while the backend was blocked
        gated.gate.set()
        wait_for(lambda: refresher.status()['computed'])
        # The first run worked on frame 1; the latest frame (5) is what the next run takes.
        assert gated.calls[0] == (1, ('a person', 'a car'), (40, 60))
        wait_for(lambda: len(gated.calls) >= 2)
        assert gated.calls[1][0] == 5
        masks = refresher(*frame(6), ['a person', 'a car'])
        # The masks of one of the frames the backend ran on, phrase by phrase.
        frame_id = int(round(float(masks[0, 0, 0]) * 100))
        assert frame_id in {call[0] for call in gated.calls}
        np.testing.assert_allclose(masks[0], frame_id / 100, atol=1e-6)
        np.testing.assert_allclose(masks[1], frame_id / 100 + 0.01, atol=1e-6)
        assert not masks.flags.writeable  # the snapshot itself, shared read-only
    finally:
        assert refresher.stop(timeout=5)


def test_masks_of_another_frame_size_and_phrase_order_are_fitted(gated):
    gated.gate.set()
    refresher = MaskRefresher(gated, logger=RecordingLogger())
    refresher.submit(*frame(20, 40, 60), ('a person', 'a car'), time.monotonic())
    assert refresher.refresh_once()
    snapshot = refresher.latest()
    # A larger frame and the phrases in another order plus a new one.
    masks = refresher(*frame(30, 80, 90), ['a car', 'a dog', 'a person'])
    assert masks.shape == (3, 80, 90)
    np.testing.assert_allclose(
        masks[0], cv2.resize(snapshot.masks[1], (90, 80), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(masks[0], 0.21, atol=1e-6)
    np.testing.assert_allclose(masks[2], 0.20, atol=1e-6)
    assert not masks[1].any()  # not segmented yet: zero, never another phrase's mask
    assert masks.flags.writeable
    # The unknown phrase woke the worker once (not on every frame).
    assert refresher._wake.is_set()
    refresher._wake.clear()
    refresher(*frame(31, 80, 90), ['a car', 'a dog', 'a person'])
    assert not refresher._wake.is_set()


def test_a_real_resize_keeps_the_mask_geometry(gated):
    """A left-half mask computed at 40 x 60 is still the left half at 120 x 180."""
    class HalfBackend:
        def __call__(self, visible, thermal, phrases):
            masks = np.zeros((len(phrases),) + visible.shape[:2], np.float32)
            masks[:, :, :visible.shape[1] // 2] = 1.0
            return masks

    refresher = MaskRefresher(HalfBackend())
    refresher.submit(*frame(0, 40, 60), ('a person',), time.monotonic())
    assert refresher.refresh_once()
    masks = refresher(*frame(0, 120, 180), ['a person'])
    assert masks[0, :, :85].min() == 1.0 and masks[0, :, 95:].max() == 0.0


def test_failures_keep_the_last_masks_with_their_age_and_error(gated):
    logger = RecordingLogger()
    refresher = MaskRefresher(gated, timeout_s=0.2, logger=logger)
    gated.gate.set()
    refresher.submit(*frame(7), ('a person',), time.monotonic())
    assert refresher.refresh_once()
    good = refresher.latest()
    gated.error = RuntimeError('model exploded')
    refresher.submit(*frame(8), ('a person',), time.monotonic())
    assert not refresher.refresh_once() and not refresher.refresh_once()
    status = refresher.status()
    assert status['error'].startswith('RuntimeError') and 'model exploded' in status['error']
    assert status['age_s'] >= good.age(now=good.stamp) and status['computed']
    np.testing.assert_allclose(refresher(*frame(9), ['a person']), 0.07, atol=1e-6)
    assert len(logger.warnings) == 1 and 'keeping the last masks' in logger.warnings[0]
    # A hung backend: timeout, then 'busy' while it still hangs; masks stay the last good.
    gated.error = None
    gated.gate.clear()
    assert not refresher.refresh_once()
    assert refresher.status()['error'].startswith('timeout')
    assert 'no masks within 0.2 s' in logger.warnings[-1]
    assert not refresher.refresh_once()
    assert refresher.status()['error'].startswith('busy')
    np.testing.assert_allclose(refresher(*frame(10), ['a person']), 0.07, atol=1e-6)
    gated.gate.set()
    wait_for(lambda: refresher._pending.done.is_set())
    assert refresher.refresh_once()
    assert refresher.status()['error'] == '' and len(logger.infos) == 1


def test_wrong_mask_shape_is_a_failure_not_a_crash():
    refresher = MaskRefresher(lambda visible, thermal, phrases: np.zeros((1, 4, 4), np.float32),
                              logger=RecordingLogger())
    refresher(*frame(1), ['a person', 'a car'])
    assert not refresher.refresh_once()
    assert refresher.status()['error'].startswith('masks:ValueError')
    assert 'expected (2, 40, 60)' in refresher.status()['error']


def test_bad_settings_name_the_parameter():
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.period '):
        MaskRefresher(GatedBackend(), period_s=0)
    with pytest.raises(ConfigError, match=r'semantics\.clipseg\.timeout '):
        MaskRefresher(GatedBackend(), timeout_s=0)
    with pytest.raises(ConfigError, match=r'semantics\.clipseg.*callable'):
        MaskRefresher('clipseg')


@pytest.fixture(scope='module')
def clipseg_dir(tmp_path_factory):
    return build_tiny_clipseg(tmp_path_factory.mktemp('clipseg'))


@pytest.mark.timeout(60)
def test_tiny_clipseg_at_its_own_rate_through_the_sig(clipseg_dir, test_data):
    visible, thermal = load_pair(test_data, '19')
    clipseg = ClipSegMaskBackend(clipseg_dir)
    refresher = MaskRefresher(clipseg, period_s=0.05, timeout_s=30)
    sig = SemanticInformationGenerator(
        HashEncoder(), mask_backend=refresher, period_s=0.05, timeout_s=5,
        describer=lambda vis, ir: 'a person on the right, a car')
    assert sig.mask_refresher is refresher
    sig.start()
    try:
        assert refresher.running and sig.refresher.running
        phrases = ('people', 'vehicles')  # the classes the description names

        def masks_for_the_description():
            sig(visible, thermal)  # frames keep flowing; each call returns at once
            return sig.semantics().mask_phrases == phrases \
                and refresher.latest().phrases == phrases

        wait_for(masks_for_the_description, 30)
        masks, _ = sig(visible, thermal)
        np.testing.assert_allclose(masks, clipseg(visible, thermal, list(phrases)), atol=1e-5)
        status = sig.mask_status()
        assert status['backend'] == 'clipseg' and status['error'] == ''
        assert 0.0 <= status['age_s'] < 30
    finally:
        assert sig.stop(timeout=10)
    assert not refresher.running


def test_engine_diagnostics_show_the_mask_age(clipseg_dir, test_data, random_weights,
                                              monkeypatch):
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults
    monkeypatch.setattr(FusionEngine, 'warm_up', lambda self, height=480, width=640: None)
    params = dict(defaults())
    params.update({'model.weights': random_weights, 'model.device': 'cpu',
                   'semantics.masks': 'clipseg', 'semantics.clipseg.path': str(clipseg_dir),
                   'semantics.clipseg.period': 0.05, 'semantics.prompt': 'a person'})
    engine = FusionEngine(EngineSettings.from_params(params))
    try:
        assert isinstance(engine.sig.mask_backend, MaskRefresher)
        visible, thermal = load_pair(test_data, '19')
        deadline = time.monotonic() + 30
        while not engine.sig.mask_status()['computed']:
            fused = engine.process(thermal, visible)
            assert fused.masks.shape[1:] == fused.bgr.shape[:2]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        values = engine.diagnostics()
        assert values['semantics_mask_backend'] == 'clipseg'
        assert values['semantics_mask_error'] == ''
        assert 0.0 <= values['semantics_mask_age_s'] < 30
    finally:
        engine.close()
    assert not engine.sig.mask_backend.running


# --- EveryNthFrame: per-frame masks at a lower rate ---------------------------------------

class _CountingBackend:
    def __init__(self):
        self.calls = 0

    def __call__(self, visible, thermal, phrases):
        self.calls += 1
        return np.full((len(phrases),) + thermal.shape, self.calls / 10.0, np.float32)


def test_every_nth_frame_computes_on_every_nth_frame_and_reuses_in_between():
    from tesg_ros.sig.mask_refresher import EveryNthFrame
    backend = _CountingBackend()
    strided = EveryNthFrame(backend, 3)
    thermal = np.zeros((4, 6), np.float32)
    values = [float(strided(None, thermal, ['person'])[0, 0, 0]) for _ in range(7)]
    assert values == pytest.approx([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3])
    assert backend.calls == strided.computed == 3
    assert not strided(None, thermal, ['person']).flags.writeable
    assert strided.name == '_CountingBackend, every 3 frames'


def test_every_nth_frame_recomputes_at_once_for_new_phrases_or_a_new_size():
    from tesg_ros.sig.mask_refresher import EveryNthFrame
    backend = _CountingBackend()
    strided = EveryNthFrame(backend, 5)
    first = strided(None, np.zeros((4, 6), np.float32), ['person'])
    changed = strided(None, np.zeros((4, 6), np.float32), ['person', 'car'])
    resized = strided(None, np.zeros((8, 6), np.float32), ['person', 'car'])
    assert backend.calls == 3
    assert first.shape == (1, 4, 6) and changed.shape == (2, 4, 6) and resized.shape == (2, 8, 6)


def test_every_nth_frame_one_is_every_frame_and_bad_values_are_config_errors():
    from tesg_ros.sig.mask_refresher import EveryNthFrame
    backend = _CountingBackend()
    strided = EveryNthFrame(backend, 1)
    for _ in range(4):
        strided(None, np.zeros((2, 2), np.float32), ['person'])
    assert backend.calls == 4
    for bad in (0, -1, 1.5, True, '2'):
        with pytest.raises(ConfigError, match='mask_every'):
            EveryNthFrame(backend, bad)
