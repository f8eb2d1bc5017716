# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""A one-slot "latest item" mailbox between the pairing callback and the fusion worker.

The producer (the synchroniser callback, on the executor thread) never blocks and never
queues: a new item replaces an unconsumed one, which is counted as dropped. The consumer
(the worker thread that owns the model) waits on a condition variable, not a polling loop.

``take(max_wait=...)`` is the latency-first policy: an item that has already waited longer
than ``max_wait`` for a busy consumer is discarded (counted as expired) and the consumer
waits for the next, fresh one. An item put while the consumer was already waiting is always
delivered, however long the consumer's thread takes to wake up. When the consumer is slower
than the producer this trades output rate for latency: every fused frame starts on a
just-arrived pair instead of on one that waited for up to a frame period (docs/node.md,
"Threads").
"""

import threading
import time


class LatestMailbox:
    """Hold at most one item; ``put`` overwrites, ``take`` waits for the next item.

    ``clock`` returns seconds (monotonic); tests may inject a fake one.
    """

    def __init__(self, clock=time.monotonic):
        self._condition = threading.Condition()
        self._clock = clock
        self._item = None
        self._put_time = 0.0
        self._put_while_waiting = False
        self._consumer_waiting = False
        self._has_item = False
        self._closed = False
        self.delivered = 0
        self.overwritten = 0
        self.expired = 0
        self.discarded = 0  # an untaken item dropped by close()
        self.rejected = 0  # items put after close()

    def put(self, item):
        """Store ``item``; return True if it replaced one the consumer had not taken."""
        with self._condition:
            if self._closed:
                self.rejected += 1
                return False
            replaced = self._has_item
            if replaced:
                self.overwritten += 1
            self._item = item
            self._put_time = self._clock()
            self._put_while_waiting = self._consumer_waiting
            self._has_item = True
            self._condition.notify()
            return replaced

    def take(self, timeout=None, max_wait=None):
        """Return the newest item, waiting up to ``timeout`` s; None on timeout or close.

        With ``max_wait`` (s, > 0) an item that was put while no consumer waited (the consumer
        was busy) and is older than that when the consumer comes for it is discarded and
        counted in :attr:`expired`; the call goes on waiting for a fresh item within the same
        ``timeout``.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._condition:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - self._clock())
                self._consumer_waiting = True
                try:
                    ready = self._condition.wait_for(lambda: self._has_item or self._closed,
                                                     remaining)
                finally:
                    self._consumer_waiting = False
                if not ready or not self._has_item:
                    return None
                item, self._item, self._has_item = self._item, None, False
                if (max_wait and not self._put_while_waiting
                        and self._clock() - self._put_time > max_wait):
                    self.expired += 1
                    continue
                self.delivered += 1
                return item

    def close(self):
        """Wake the consumer for shutdown; later puts are ignored.

        An item not taken yet is dropped and counted in :attr:`discarded`, so every put item
        is delivered, overwritten, expired or discarded.
        """
        with self._condition:
            self._closed = True
            if self._has_item:
                self.discarded += 1
            self._item, self._has_item = None, False
            self._condition.notify_all()

    @property
    def closed(self):
        return self._closed
