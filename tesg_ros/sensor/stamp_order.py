# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Output ordering of fused frames across time jumps (ROS-free; the node's worker uses it).

Fused frames are published in increasing stamp order. A stamp is compared with the last
published one (the reference) and with how far the node clock moved since then:

* at or before the reference, by at most ``jump_s``: out of order, dropped (a reorder);
* more than ``jump_s`` before it: a backward time jump (bag loop, driver restart, clock step).
  The ordering is reset and the pair is published: it becomes the new reference;
* after it by more than the node clock's advance plus ``jump_s``: a pair from the future. A
  single such pair is an outlier (a bad driver or GPS clock): dropped and counted, never the
  new reference. A second pair in a row that is also that far ahead and consistent with the
  first (after it, by no more than the clock's advance plus ``jump_s``) confirms a forward
  jump: the ordering is reset and that pair is published. A real forward step therefore
  costs one pair;
* otherwise: published.

A camera that stalls and resumes is no jump: its stamps advance as the clock does.
"""

PUBLISH = 'publish'
OUT_OF_ORDER = 'out_of_order'
FUTURE = 'future'

BACKWARD_JUMP = 'backward'
FORWARD_JUMP = 'forward'


class OutputOrder:
    """Decide whether a pair stamped ``stamp_ns`` may be published (see the module docstring).

    jump_ns: the bound (int ns, > 0). Not thread-safe: one worker thread owns it.
    """

    def __init__(self, jump_ns):
        if jump_ns <= 0:
            raise ValueError(f'jump_ns must be > 0, got {jump_ns}')
        self.jump_ns = int(jump_ns)
        self.reset()

    def reset(self):
        """Forget the reference (the next pair is published whatever its stamp)."""
        self._last = None  # (stamp_ns, clock_ns) of the last published pair
        self._candidate = None  # (stamp_ns, clock_ns) of the last future outlier

    @property
    def last_stamp_ns(self):
        return None if self._last is None else self._last[0]

    def check(self, stamp_ns, clock_ns):
        """Return ``(verdict, jump)``: verdict PUBLISH, OUT_OF_ORDER or FUTURE; jump None,
        BACKWARD_JUMP or FORWARD_JUMP when this pair reset the ordering.

        Call :meth:`published` once the pair is actually published.
        """
        if self._last is None:
            return PUBLISH, None
        last_stamp, last_clock = self._last
        if stamp_ns <= last_stamp:
            if last_stamp - stamp_ns > self.jump_ns:
                self.reset()
                return PUBLISH, BACKWARD_JUMP
            return OUT_OF_ORDER, None
        if stamp_ns - last_stamp - max(0, clock_ns - last_clock) <= self.jump_ns:
            self._candidate = None
            return PUBLISH, None
        candidate = self._candidate
        if (candidate is not None and stamp_ns > candidate[0]
                and stamp_ns - candidate[0] - max(0, clock_ns - candidate[1]) <= self.jump_ns):
            self.reset()
            return PUBLISH, FORWARD_JUMP
        self._candidate = (stamp_ns, clock_ns)
        return FUTURE, None

    def published(self, stamp_ns, clock_ns):
        """Record a published pair as the new reference."""
        self._last = (stamp_ns, clock_ns)
        self._candidate = None
