# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""SemanticsRefresher: failures keep the last good semantics, reads never block, clean stop."""

import hashlib
import threading
import time

import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig.refresher import make_semantics, request_embedding, SemanticsRefresher
from tesg_ros.sig.request import parse_request

FRAME = (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))


class HashEncoder:
    """Deterministic text -> unit vector (a test double for the sentence encoder)."""

    dim = 8
    model_id = 'hash'

    def encode(self, texts):
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()[:self.dim]
            row = np.frombuffer(digest, np.uint8).astype(np.float32) + 1.0
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows)


class RecordingLogger:
    def __init__(self):
        self.warnings, self.infos = [], []

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        self.infos.append(message)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('condition not reached in time')
        time.sleep(0.005)


def make_refresher(backend, **kwargs):
    encoder = HashEncoder()
    initial = make_semantics('initial scene', encoder, 'initial', 'none')
    logger = RecordingLogger()
    options = dict(period_s=0.01, timeout_s=0.5, logger=logger)
    options.update(kwargs)
    refresher = SemanticsRefresher(backend, encoder, initial, **options)
    return refresher, logger


def test_success_publishes_an_immutable_snapshot():
    refresher, _ = make_refresher(lambda vis, ir: 'a car, two people')
    assert refresher.latest().description == 'initial scene'
    assert refresher.refresh_once() is False  # no frame yet
    refresher.submit_frame(*FRAME)
    assert refresher.refresh_once() is True
    semantics = refresher.latest()
    assert semantics.description == 'a car, two people'
    assert semantics.phrases == ('a car', 'two people')
    # The embedding is the request's canonical sentence's, not the description's.
    assert semantics.request.classes == ('person', 'vehicle')
    assert semantics.mask_phrases == ('people', 'vehicles')
    np.testing.assert_array_equal(semantics.text_embedding,
                                  HashEncoder().encode(['highlight people and vehicles'])[0])
    assert semantics.error is None and semantics.source == 'describer'
    assert semantics.model_id == 'function' and 0 <= semantics.age() < 5
    with pytest.raises(ValueError):
        semantics.text_embedding[0] = 1.0
    with pytest.raises(AttributeError):
        semantics.description = 'x'


def test_raising_backend_keeps_the_last_good_semantics_and_logs_once():
    outcomes = iter(['a person on the left', RuntimeError('boom'), RuntimeError('again'),
                     KeyError('k'), 'a car'])

    def backend(vis, ir):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    refresher, logger = make_refresher(backend)
    refresher.submit_frame(*FRAME)
    assert refresher.refresh_once()
    good = refresher.latest()
    assert not refresher.refresh_once() and not refresher.refresh_once()
    failed = refresher.latest()
    assert failed.description == good.description and failed.stamp == good.stamp
    assert failed.error.startswith('RuntimeError') and 'again' in failed.error
    assert len(logger.warnings) == 1  # the same failure kind is logged once
    assert not refresher.refresh_once()
    assert refresher.latest().error.startswith('KeyError') and len(logger.warnings) == 2
    assert refresher.latest().age() >= good.age(now=good.stamp)
    assert refresher.refresh_once()
    assert refresher.latest().description == 'a car' and refresher.latest().error is None
    assert len(logger.infos) == 1 and 'recovered' in logger.infos[0]
    assert (refresher.successes, refresher.failures) == (2, 3)


@pytest.mark.timeout(20)
def test_hanging_backend_times_out_without_blocking_readers():
    release = threading.Event()
    calls = []

    def backend(vis, ir):
        calls.append(1)
        if len(calls) == 1:
            return 'a person'
        release.wait()
        return 'too late'

    refresher, logger = make_refresher(backend, timeout_s=0.2)
    refresher.submit_frame(*FRAME)
    refresher.start()
    wait_for(lambda: refresher.latest().description == 'a person')
    wait_for(lambda: refresher.latest().error is not None)
    # While the backend hangs, reads return at once with the last good description.
    assert refresher.latest().description == 'a person'
    assert refresher.latest().error.startswith(('timeout', 'busy'))
    wait_for(lambda: refresher.failures >= 3)
    assert len(calls) == 2  # no new call piles up behind the hung one
    # The first failure is the timeout, then 'busy' while the call still hangs: once each.
    assert len(logger.warnings) == 2
    assert 'no description within 0.2 s' in logger.warnings[0]
    assert 'still running' in logger.warnings[1]
    # stop() joins the worker at once, waits for the hung call within its bound, says False.
    assert refresher.stop(timeout=0.5) is False and not refresher.running
    assert 'still running after' in logger.warnings[-1]
    release.set()
    assert refresher.stop(timeout=5.0) is True  # the call returned: nothing is left behind


@pytest.mark.timeout(30)
def test_swaps_during_reads_are_always_consistent():
    counter = iter(range(10 ** 9))
    encoder = HashEncoder()
    words = ('a car', 'two people', 'a dog', 'a hot spot', 'it is dark', 'a street')
    refresher, _ = make_refresher(
        lambda vis, ir: f'{words[next(counter) % len(words)]} number {next(counter)}',
        period_s=0.001)
    refresher.submit_frame(*FRAME)
    refresher.start()
    seen = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline or len(seen) < 5:
        snapshot = refresher.latest()
        # Description, phrases and embedding of one snapshot always belong together.
        assert snapshot.phrases == (snapshot.description,)
        assert snapshot.request == parse_request(snapshot.description)
        np.testing.assert_array_equal(snapshot.text_embedding,
                                      request_embedding(snapshot.request, encoder))
        seen.add(snapshot.description)
        refresher.submit_frame(*FRAME)
    assert refresher.stop(timeout=5.0)
    assert len(seen) >= 5


def test_stop_before_start_and_bad_settings():
    refresher, _ = make_refresher(lambda vis, ir: 'x')
    assert refresher.stop() is True
    refresher.submit_frame(*FRAME)
    assert refresher.refresh_once()  # synchronous use still works after stop()
    assert refresher.latest().description == 'x'
    with pytest.raises(ConfigError, match=r'semantics\.period '):
        make_refresher(lambda vis, ir: 'x', period_s=0)
    with pytest.raises(ConfigError, match=r'semantics\.timeout '):
        make_refresher(lambda vis, ir: 'x', timeout_s=-1)
    with pytest.raises(ConfigError, match='callable'):
        make_refresher('not a backend')


def test_encoder_failure_keeps_the_last_good():
    refresher, logger = make_refresher(lambda vis, ir: 42)  # not a description
    refresher.submit_frame(*FRAME)
    assert not refresher.refresh_once()
    assert refresher.latest().description == 'initial scene'
    assert refresher.latest().error.startswith('encode:TypeError')
    assert len(logger.warnings) == 1


def test_backend_calls_run_at_a_lower_cpu_priority():
    import os
    import threading

    from tesg_ros.sig.refresher import BackgroundRefresher, lower_thread_priority

    if not hasattr(os, 'setpriority'):
        pytest.skip('no per-thread priorities on this OS')
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    def backend():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return 'x'

    class Initial:
        error = ''

        def age(self):
            return 0.0

    refresher = BackgroundRefresher(backend, Initial(), 1.0, 5.0, 'p', niceness=5)
    refresher._snapshot = lambda result, job: Initial()
    refresher.submit()
    refresher.refresh_once()
    assert seen == [min(19, caller + 5)]
    # The caller's own priority is untouched (only the backend's thread is lowered).
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
    assert lower_thread_priority(0) is False


def test_a_published_description_applies_at_once_and_drops_the_older_call():
    release = threading.Event()

    def slow(vis, ir):
        release.wait(5.0)
        return 'a car'

    refresher, _ = make_refresher(slow, timeout_s=10.0)
    refresher.submit_frame(*FRAME)
    results = []
    worker = threading.Thread(target=lambda: results.append(refresher.refresh_once()))
    worker.start()
    time.sleep(0.05)                      # the describer call is running
    snapshot = refresher.publish_description('two people')
    assert refresher.latest() is snapshot and snapshot.source == 'operator'
    assert snapshot.request.classes == ('person',)
    release.set()
    worker.join(5.0)
    # The call started before the prompt: its 'a car' must not replace the prompt.
    assert results == [False] and refresher.latest() is snapshot
    assert refresher.refresh_once() is True and refresher.latest().description == 'a car'
