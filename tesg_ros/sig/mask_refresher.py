# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""A heavy mask backend (CLIPSeg) at its own rate: the per-frame call never waits for it.

:class:`MaskRefresher` wraps a mask backend ``backend(visible, thermal, phrases) -> (M, H, W)``
and is itself a mask backend with the same signature, so it plugs into
:class:`tesg_ros.sig.SemanticInformationGenerator` unchanged. Each call submits the frame and
phrases as the newest job and returns at once the latest masks the background worker has
computed (the :class:`~tesg_ros.sig.refresher.BackgroundRefresher` thread: period, timeout,
latest-job submission, atomic swap, failures keep the last good masks):

* mask ``i`` still belongs to phrase ``i``: masks are looked up by phrase text; a phrase the
  worker has not segmented yet gets a zero mask (and the worker is woken once for the new
  phrases instead of waiting out its period);
* masks computed on a frame of another size are bilinearly resized to the current one;
* :meth:`MaskRefresher.status` reports their age - seconds since the frame they were computed
  from was submitted - and the last error.
"""

from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.refresher import BackgroundRefresher


@dataclass(frozen=True)
class MaskSnapshot:
    """Masks computed in the background for one frame.

    masks: (M, H, W) float32 in [0, 1], read-only, one per phrase; phrases: the M phrases;
    stamp: ``time.monotonic()`` when their frame was submitted; computed: False for the
    initial empty snapshot; error: None, or the last failure since they were computed.
    """

    masks: np.ndarray = field(repr=False)
    phrases: tuple
    stamp: float
    computed: bool = True
    error: str = None

    @property
    def frame_shape(self):
        return tuple(self.masks.shape[1:])

    def age(self, now=None):
        """Seconds since the frame these masks belong to was submitted (monotonic clock)."""
        return (time.monotonic() if now is None else now) - self.stamp


def _frame_shape(visible, thermal):
    return tuple(np.shape(visible if visible is not None else thermal)[:2])


class MaskRefresher(BackgroundRefresher):
    """Run ``backend`` every ``period_s`` on the latest frame; serve its latest masks per frame.

    backend: mask backend (visible, thermal, phrases) -> (M, H, W) float32 in [0, 1].
    period_s / timeout_s: as for the describer (``parameter`` names them in errors).
    Call :meth:`start` (or let the SIG start it); without the thread, :meth:`refresh_once`
    computes synchronously (offline tools, tests).
    """

    what = 'masks'
    keeping = 'the last masks'
    convert_failure = 'masks'

    def __init__(self, backend, period_s=1.0, timeout_s=10.0, logger=None,
                 parameter='semantics.clipseg'):
        if not callable(backend):
            raise ConfigError(f'{parameter}: the mask backend must be callable (visible, '
                              f'thermal, phrases) -> masks, got {type(backend).__name__}')
        initial = MaskSnapshot(masks=_read_only(np.zeros((0, 0, 0), np.float32)), phrases=(),
                               stamp=time.monotonic(), computed=False)
        super().__init__(self._run_backend, initial, period_s, timeout_s, parameter,
                         logger=logger, name='tesg-masks')
        self.mask_backend = backend
        self.backend_name = getattr(backend, 'name', type(backend).__name__)
        self.model_id = getattr(backend, 'model_id', self.backend_name)
        self._woken_for = None

    def _run_backend(self, visible, thermal, phrases, stamp):
        return self.mask_backend(visible, thermal, list(phrases))

    def _snapshot(self, result, job):
        visible, thermal, phrases, stamp = job
        masks = np.asarray(result, dtype=np.float32)
        expected = (len(phrases),) + _frame_shape(visible, thermal)
        if masks.shape != expected:
            raise ValueError(f'the backend returned masks of shape {masks.shape}, '
                             f'expected {expected}')
        return MaskSnapshot(masks=_read_only(masks.copy()), phrases=phrases, stamp=stamp)

    def _recovered(self, snapshot):
        return f'masks for {len(snapshot.phrases)} phrases'

    def __call__(self, visible, thermal, phrases):
        """Submit this frame; return (M, H, W) float32 masks from the latest finished run.

        The result may be read-only (the snapshot's own array when nothing needs changing).
        """
        phrases = tuple(phrases)
        shape = _frame_shape(visible, thermal)
        self.submit(visible, thermal, phrases, time.monotonic())
        snapshot = self.latest()
        if snapshot.phrases == phrases and snapshot.frame_shape == shape:
            return snapshot.masks
        return self._fit(snapshot, phrases, shape)

    def _fit(self, snapshot, phrases, shape):
        height, width = shape
        masks = np.zeros((len(phrases), height, width), np.float32)
        row_of = {phrase: row for row, phrase in enumerate(snapshot.phrases)}
        missing = False
        for index, phrase in enumerate(phrases):
            row = row_of.get(phrase)
            if row is None:
                missing = True
                continue
            mask = snapshot.masks[row]
            if mask.shape != (height, width):
                mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
            masks[index] = mask
        if missing and self._woken_for != phrases:
            # New phrases: run now rather than after the period (once per phrase set).
            self._woken_for = phrases
            self.request_refresh()
        return masks

    def status(self):
        """What diagnostics show: backend name, age of the masks (s), error ('' if none)."""
        snapshot = self.latest()
        return {'backend': self.backend_name, 'age_s': snapshot.age(),
                'computed': snapshot.computed, 'error': snapshot.error or '',
                'period_s': self.period_s, 'successes': self.successes, 'failures': self.failures}


def _read_only(array):
    array.setflags(write=False)
    return array


class EveryNthFrame:
    """A per-frame mask backend run on every ``every``-th frame only; the frames in between
    reuse its last masks (``backend(visible, thermal, phrases) -> (M, H, W)``, same signature).

    The thermal backend costs about a third of a fused frame at 30 Hz on a small CPU; objects
    move a few pixels in the frame or two the masks are reused, and the masks are soft and
    grown past the objects' edges. A change of phrases or of frame size recomputes at once.
    ``every`` 1 calls the backend on every frame.
    """

    def __init__(self, backend, every):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f'semantics.mask_every must be an int >= 1, got {every!r}')
        self.backend, self.every = backend, every
        # What diagnostics show as the mask backend (SemanticInformationGenerator.mask_status).
        wrapped = getattr(backend, 'name', type(backend).__name__)
        self.name = f'{wrapped}, every {every} frames'
        self.calls = self.computed = 0
        self._last = None   # (phrases, frame shape, masks)

    def __call__(self, visible, thermal, phrases):
        phrases = tuple(phrases)
        shape = _frame_shape(visible, thermal)
        reuse = (self._last is not None and self.calls % self.every
                 and self._last[:2] == (phrases, shape))
        self.calls += 1
        if reuse:
            return self._last[2]
        masks = _read_only(np.array(self.backend(visible, thermal, list(phrases)),
                                    dtype=np.float32))
        self.computed += 1
        self._last = (phrases, shape, masks)
        return masks
