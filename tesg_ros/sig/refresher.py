# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Background refresh of the scene semantics; the fusion loop never waits for the describer.

:class:`SemanticsRefresher` owns one worker thread. Every ``period_s`` it takes the latest frame
pair given to :meth:`~SemanticsRefresher.submit_frame`, calls the backend (any callable
``backend(visible, thermal) -> str | SceneDescription``) in a separate daemon thread, waits at
most ``timeout_s`` for it, splits the description into phrases, embeds the sentence and
publishes an immutable :class:`Semantics` snapshot by one reference assignment (atomic in
CPython). :meth:`~SemanticsRefresher.latest` only reads that reference: no lock is ever held
while the backend or the encoder runs.

A raising or hung backend keeps the last good semantics: the published snapshot is the last
good one with ``error`` set, its ``stamp`` unchanged, so ``age()`` keeps growing. Each failure
kind (exception type, or 'timeout') is logged once until the next success. A hung call cannot
be killed in Python: it is left running in its daemon thread and no new call is started until
it returns (its late result is dropped, the frame it described is old by then).
"""

from dataclasses import dataclass, field, replace
import logging
import threading
import time

import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.describer import description_phrases, description_text

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Semantics:
    """One immutable snapshot of the scene semantics.

    description: the sentence; phrases: tuple of clauses (mask prompts);
    text_embedding: (D,) float32 unit-norm, read-only; source: which backend produced it
    ('initial', 'offline', 'vlm', ...); model_id: the backend's model; stamp:
    ``time.monotonic()`` when it was produced; error: None, or the last failure since then.
    """

    description: str
    phrases: tuple
    text_embedding: np.ndarray = field(repr=False)
    source: str
    model_id: str
    stamp: float
    error: str = None

    def age(self, now=None):
        """Seconds since this semantics was produced (``time.monotonic()`` clock)."""
        return (time.monotonic() if now is None else now) - self.stamp


def make_semantics(description, encoder, source, model_id, stamp=None):
    """Build a :class:`Semantics` from a description (str or SceneDescription)."""
    text = description_text(description)
    phrases = tuple(description_phrases(description))
    embedding = np.array(encoder.encode([text])[0], dtype=np.float32)
    embedding.setflags(write=False)
    return Semantics(description=text, phrases=phrases, text_embedding=embedding,
                     source=source, model_id=str(model_id),
                     stamp=time.monotonic() if stamp is None else stamp)


class _Call:
    """One backend call in its own daemon thread (so a hung backend can be abandoned)."""

    def __init__(self, backend, visible, thermal):
        self.result = None
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(backend, visible, thermal),
                                       name='tesg-semantics-backend', daemon=True)
        self.thread.start()

    def _run(self, backend, visible, thermal):
        try:
            self.result = backend(visible, thermal)
        except BaseException as error:  # handed to the worker, which reports it
            self.error = error
        finally:
            self.done.set()


class SemanticsRefresher:
    """Refresh :class:`Semantics` from a slow describer in the background.

    backend: callable (visible, thermal) -> str or SceneDescription.
    encoder: text encoder (``encode(texts) -> (N, D)``), ideally cached.
    initial: the :class:`Semantics` served until the first success (required so ``latest()``
    always has an answer). period_s: time between calls (start to start, at least);
    timeout_s: longest wait for one call. source / model_id: recorded in each snapshot.
    logger: anything with ``warning()`` and ``info()`` (Python or rclpy logger).
    """

    def __init__(self, backend, encoder, initial, period_s=5.0, timeout_s=30.0,
                 source='describer', model_id=None, logger=None):
        if period_s <= 0:
            raise ConfigError(f'semantics.period_s must be > 0, got {period_s}')
        if timeout_s <= 0:
            raise ConfigError(f'semantics.timeout_s must be > 0, got {timeout_s}')
        if not callable(backend):
            raise ConfigError('semantics backend must be callable (visible, thermal) -> str')
        self.backend = backend
        self.encoder = encoder
        self.period_s = float(period_s)
        self.timeout_s = float(timeout_s)
        self.source = source
        self.model_id = model_id if model_id is not None else getattr(
            backend, 'model_id', type(backend).__name__)
        self.logger = logger if logger is not None else _LOG
        self._latest = initial
        self._last_good = initial
        self._frame = None
        self._frame_lock = threading.Lock()
        self._frame_event = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending = None
        self._logged_kinds = set()
        self._thread = None
        self.successes = 0
        self.failures = 0

    def submit_frame(self, visible, thermal):
        """Offer the newest frame pair; only the latest is kept (older ones are dropped)."""
        with self._frame_lock:
            self._frame = (visible, thermal)
        self._frame_event.set()

    def latest(self):
        """The current :class:`Semantics` (never blocks on the backend)."""
        return self._latest

    def request_refresh(self):
        """Start the next call now instead of waiting for the period."""
        self._wake.set()

    def start(self):
        """Start the worker thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name='tesg-semantics', daemon=True)
        self._thread.start()

    def stop(self, timeout=None):
        """Stop the worker and join it; returns True when it ended within ``timeout``.

        The worker waits at most ``timeout_s`` for a running backend call, so
        ``timeout=None`` returns within about that long. A hung backend thread is a daemon
        and is left behind.
        """
        self._stop.set()
        self._wake.set()
        self._frame_event.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def refresh_once(self, timeout_s=None):
        """Run one refresh on the latest frame in the caller's thread; returns True on success.

        Used by the worker, and by offline tools that process a bag without a thread.
        """
        with self._frame_lock:
            frame = self._frame
        if frame is None:
            return False
        if self._pending is not None and not self._pending.done.is_set():
            self._fail('busy', 'the previous backend call is still running (hung?)')
            return False
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        call = _Call(self.backend, *frame)
        self._pending = call
        if not self._wait(call.done, limit):
            if self._stop.is_set() and threading.current_thread() is self._thread:
                return False  # stopping: not a backend failure
            self._fail('timeout', f'the backend gave no description within {limit:g} s')
            return False
        self._pending = None
        if call.error is not None:
            self._fail(type(call.error).__name__, f'the backend raised {call.error!r}')
            return False
        try:
            semantics = make_semantics(call.result, self.encoder, self.source, self.model_id)
        except Exception as error:  # any encoder failure keeps the last good semantics
            self._fail(f'encode:{type(error).__name__}',
                       f'embedding the description failed: {error!r}')
            return False
        self._last_good = semantics
        self._latest = semantics
        self.successes += 1
        if self._logged_kinds:
            self.logger.info(f'semantics recovered: {semantics.description!r}')
            self._logged_kinds.clear()
        return True

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
            self.logger.warning(f'semantics not refreshed ({message}); keeping the last good '
                                f'description, {self._last_good.age():.1f} s old')

    def _loop(self):
        while not self._stop.is_set():
            started = time.monotonic()
            if self._frame is None:
                self._frame_event.wait(self.period_s)
                continue
            self.refresh_once()
            remaining = self.period_s - (time.monotonic() - started)
            if remaining > 0:
                self._wake.wait(remaining)
            self._wake.clear()
