# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Background refresh of slow SIG outputs; the fusion loop never waits for a model.

:class:`BackgroundRefresher` owns one worker thread. Every ``period_s`` it takes the latest job
given to :meth:`~BackgroundRefresher.submit` (older ones are dropped), calls the backend in a
separate daemon thread, waits at most ``timeout_s`` for it, turns the result into an immutable
snapshot and publishes it by one reference assignment (atomic in CPython).
:meth:`~BackgroundRefresher.latest` only reads that reference: no lock is ever held while the
backend runs.

A raising or hung backend keeps the last good snapshot: the published one is the last good one
with ``error`` set and its ``stamp`` unchanged, so ``age()`` keeps growing. Each failure kind
(exception type, 'timeout', 'busy') is logged once until the next success. A hung call cannot
be killed in Python: it is left running in its daemon thread and no new call is started until
it returns (its late result is dropped, the job it worked on is old by then).

Two refreshers use this:

* :class:`SemanticsRefresher` - the describer: ``backend(visible, thermal) -> str |
  SceneDescription``, published as :class:`Semantics` (description, phrases, text embedding);
* :class:`tesg_ros.sig.mask_refresher.MaskRefresher` - a heavy mask backend (CLIPSeg) at its
  own rate.
"""

from dataclasses import dataclass, field, replace
import logging
import os
import threading
import time

import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.describer import description_phrases, description_text
from tesg_ros.sig.request import parse_request, Request

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Semantics:
    """One immutable snapshot of the scene semantics.

    description: the sentence; phrases: tuple of its clauses;
    request: the :class:`~tesg_ros.sig.request.Request` it makes (classes, intent); its
    ``mask_phrases`` are the mask prompts and ``text_embedding`` is the embedding of its
    canonical sentence, (D,) float32 unit-norm, or zeros for a neutral request; read-only;
    source: which backend produced it ('initial', 'offline', 'vlm', ...); model_id: the
    backend's model; stamp: ``time.monotonic()`` when it was produced; error: None, or the
    last failure since then.
    """

    description: str
    phrases: tuple
    text_embedding: np.ndarray = field(repr=False)
    source: str
    model_id: str
    stamp: float
    error: str = None
    request: Request = None

    @property
    def mask_phrases(self):
        """The phrases the mask backends get: one per class the request names."""
        return self.phrases if self.request is None else self.request.mask_phrases

    def age(self, now=None):
        """Seconds since this semantics was produced (``time.monotonic()`` clock)."""
        return (time.monotonic() if now is None else now) - self.stamp


def make_semantics(description, encoder, source, model_id, stamp=None):
    """Build a :class:`Semantics` from a description (str or SceneDescription): the request
    it makes and the embedding of the request's canonical sentence (zeros when neutral)."""
    text = description_text(description)
    phrases = tuple(description_phrases(description))
    request = parse_request(text)
    embedding = request_embedding(request, encoder)
    embedding.setflags(write=False)
    return Semantics(description=text, phrases=phrases, text_embedding=embedding,
                     source=source, model_id=str(model_id),
                     stamp=time.monotonic() if stamp is None else stamp, request=request)


def request_embedding(request, encoder):
    """(D,) float32: the embedding of ``request.canonical``, or zeros for a neutral request
    (the network's "no semantics"); a new writable array."""
    if request.neutral:
        return np.zeros(encoder.dim, np.float32)
    return np.array(encoder.encode([request.canonical])[0], dtype=np.float32)


def lower_thread_priority(niceness):
    """Raise the calling thread's nice value by ``niceness`` (Linux: per thread).

    The background models share the CPU with the fusion worker; at a lower priority they take
    the cores the fusion leaves idle instead of delaying frames. Best effort: a no-op where the
    OS does not support it.
    """
    if niceness <= 0 or not hasattr(os, 'setpriority'):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                 + int(niceness)))
        return True
    except OSError:
        return False


class _Call:
    """One backend call in its own daemon thread (so a hung backend can be abandoned)."""

    def __init__(self, backend, job, name, niceness=0):
        self.niceness = niceness
        self.result = None
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(backend, job),
                                       name=f'{name}-backend', daemon=True)
        self.thread.start()

    def _run(self, backend, job):
        lower_thread_priority(self.niceness)
        try:
            self.result = backend(*job)
        except BaseException as error:  # handed to the worker, which reports it
            self.error = error
        finally:
            self.done.set()


class BackgroundRefresher:
    """Run a slow ``backend(*job)`` in the background on the latest job; publish snapshots.

    Subclasses say what a result becomes (:meth:`_snapshot`, which may raise: a 'convert'
    failure) and how failures read in the log (``what`` / ``keeping``).
    initial: the snapshot served until the first success (needs ``error`` and ``age()``).
    period_s: time between calls (start to start, at least); timeout_s: longest wait for one
    call. parameter: the settings prefix named in errors (``<parameter>.period`` ...).
    logger: anything with ``warning()`` and ``info()`` (Python or rclpy logger).
    niceness: how much lower than the caller's the backend threads' CPU priority is (Linux
    nice increment; 0 keeps it), so the fusion path wins the CPU when both want it.
    """

    what = 'result'            # 'no <what> within ...'
    keeping = 'the last good result'
    convert_failure = 'convert'

    def __init__(self, backend, initial, period_s, timeout_s, parameter, logger=None,
                 name='tesg-refresher', niceness=10):
        if not period_s > 0:
            raise ConfigError(f'{parameter}.period must be > 0, got {period_s}')
        if not timeout_s > 0:
            raise ConfigError(f'{parameter}.timeout must be > 0, got {timeout_s}')
        if not callable(backend):
            raise ConfigError(f'{parameter}: the backend must be callable, got '
                              f'{type(backend).__name__}')
        self.backend = backend
        self.period_s = float(period_s)
        self.timeout_s = float(timeout_s)
        self.logger = logger if logger is not None else _LOG
        self.name = name
        self.niceness = int(niceness)
        self._latest = initial
        self._last_good = initial
        self._generation = 0   # bumped by publish(): results of calls started before it drop
        self._publish_lock = threading.Lock()
        self._job = None
        self._job_lock = threading.Lock()
        self._job_event = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending = None
        self._logged_kinds = set()
        self._thread = None
        self.successes = 0
        self.failures = 0

    def submit(self, *job):
        """Offer the newest job (the backend's arguments); only the latest is kept."""
        with self._job_lock:
            self._job = job
        self._job_event.set()

    def latest(self):
        """The current snapshot (never blocks on the backend)."""
        return self._latest

    def request_refresh(self):
        """Start the next call now instead of waiting for the period."""
        self._wake.set()

    def publish(self, snapshot):
        """Serve ``snapshot`` from now on (the caller built it); a backend call already
        running when this happens is older and its result is dropped."""
        with self._publish_lock:
            self._generation += 1
            self._last_good = snapshot
            self._latest = snapshot

    def start(self):
        """Start the worker thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout=None):
        """Stop the worker and join it and a running backend call; True when both ended.

        Both joins share ``timeout`` (s; None: the worker returns at once on stop, the
        backend call is waited for up to ``timeout_s``). A backend call still running then is
        hung: it is left behind in its daemon thread, logged, and stop returns False. Native
        code running in a thread at interpreter exit can abort the process, so the caller
        should know.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._job_event.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        pending = self._pending
        if pending is not None:
            limit = self.timeout_s if deadline is None else max(0.0, deadline - time.monotonic())
            pending.thread.join(limit)
            if pending.thread.is_alive():
                stopped = False
                self.logger.warning(f'{self.name}: a backend call is still running after '
                                    f'{limit:.1f} s; left behind (hung?)')
            else:
                self._pending = None
        return stopped

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def refresh_once(self, timeout_s=None):
        """Run one refresh on the latest job in the caller's thread; returns True on success.

        Used by the worker, and by offline tools that process a bag without a thread.
        """
        with self._job_lock:
            job = self._job
        if job is None:
            return False
        if self._pending is not None and not self._pending.done.is_set():
            self._fail('busy', 'the previous backend call is still running (hung?)')
            return False
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        generation = self._generation
        call = _Call(self.backend, job, self.name, self.niceness)
        self._pending = call
        if not self._wait(call.done, limit):
            if self._stop.is_set() and threading.current_thread() is self._thread:
                return False  # stopping: not a backend failure
            self._fail('timeout', f'the backend gave no {self.what} within {limit:g} s')
            return False
        self._pending = None
        if call.error is not None:
            self._fail(type(call.error).__name__, f'the backend raised {call.error!r}')
            return False
        try:
            snapshot = self._snapshot(call.result, job)
        except Exception as error:  # a bad result keeps the last good snapshot
            self._fail(f'{self.convert_failure}:{type(error).__name__}',
                       f'{self.convert_failure} failed: {error!r}')
            return False
        with self._publish_lock:
            if generation != self._generation:
                return False  # publish() replaced what this call was asked for
            self._last_good = snapshot
            self._latest = snapshot
        self.successes += 1
        if self._logged_kinds:
            self.logger.info(f'{self.name} recovered: {self._recovered(snapshot)}')
            self._logged_kinds.clear()
        return True

    def _snapshot(self, result, job):
        """The immutable snapshot published for a backend ``result`` computed on ``job``."""
        raise NotImplementedError

    def _recovered(self, snapshot):
        """A few words on the snapshot for the 'recovered' log line."""
        return ''

    def _wait(self, event, timeout):
        """Wait for ``event`` up to ``timeout`` s; the worker returns early on stop()."""
        deadline = time.monotonic() + timeout
        in_worker = threading.current_thread() is self._thread
        while not event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (in_worker and self._stop.is_set()):
                return event.is_set()
            event.wait(min(remaining, 0.05))
        return True

    def _fail(self, kind, message):
        self.failures += 1
        self._latest = replace(self._last_good, error=f'{kind}: {message}')
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            self.logger.warning(f'{self.name}: not refreshed ({message}); keeping '
                                f'{self.keeping}, {self._last_good.age():.1f} s old')

    def _loop(self):
        while not self._stop.is_set():
            started = time.monotonic()
            if self._job is None:
                self._job_event.wait(self.period_s)
                continue
            self.refresh_once()
            remaining = self.period_s - (time.monotonic() - started)
            if remaining > 0:
                self._wake.wait(remaining)
            self._wake.clear()


class SemanticsRefresher(BackgroundRefresher):
    """Refresh :class:`Semantics` from a slow describer in the background.

    backend: callable (visible, thermal) -> str or SceneDescription.
    encoder: text encoder (``encode(texts) -> (N, D)``), ideally cached.
    initial: the :class:`Semantics` served until the first success (required so ``latest()``
    always has an answer). period_s: time between calls (start to start, at least);
    timeout_s: longest wait for one call. source / model_id: recorded in each snapshot.
    logger: anything with ``warning()`` and ``info()`` (Python or rclpy logger).
    """

    what = 'description'
    keeping = 'the last good description'
    convert_failure = 'encode'

    def __init__(self, backend, encoder, initial, period_s=5.0, timeout_s=30.0,
                 source='describer', model_id=None, logger=None):
        super().__init__(backend, initial, period_s, timeout_s, parameter='semantics',
                         logger=logger, name='tesg-semantics')
        self.encoder = encoder
        self.source = source
        self.model_id = model_id if model_id is not None else getattr(
            backend, 'model_id', type(backend).__name__)

    def submit_frame(self, visible, thermal):
        """Offer the newest frame pair; only the latest is kept (older ones are dropped)."""
        self.submit(visible, thermal)

    def publish_description(self, description, source='operator', model_id='prompt'):
        """Serve ``description`` (e.g. an operator prompt) from the next frame on, without
        waiting for the worker; returns the new :class:`Semantics`."""
        snapshot = make_semantics(description, self.encoder, source, model_id)
        self.publish(snapshot)
        return snapshot

    def _snapshot(self, result, job):
        return make_semantics(result, self.encoder, self.source, self.model_id)

    def _recovered(self, snapshot):
        return repr(snapshot.description)
