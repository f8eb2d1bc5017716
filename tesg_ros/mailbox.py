# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""A one-slot "latest item" mailbox between the pairing callback and the fusion worker.

The producer (the synchroniser callback, on the executor thread) never blocks and never
queues: a new item replaces an unconsumed one, which is counted as dropped. The consumer
(the worker thread that owns the model) waits on a condition variable, not a polling loop.
"""

import threading


class LatestMailbox:
    """Hold at most one item; ``put`` overwrites, ``take`` waits for the next item."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item = None
        self._has_item = False
        self._closed = False
        self.delivered = 0
        self.overwritten = 0

    def put(self, item):
        """Store ``item``; return True if it replaced one the consumer had not taken."""
        with self._condition:
            if self._closed:
                return False
            replaced = self._has_item
            if replaced:
                self.overwritten += 1
            self._item = item
            self._has_item = True
            self._condition.notify()
            return replaced

    def take(self, timeout=None):
        """Return the newest item, waiting up to ``timeout`` s; None on timeout or close."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            self.delivered += 1
            return item

    def close(self):
        """Wake the consumer for shutdown; later puts are ignored."""
        with self._condition:
            self._closed = True
            self._item, self._has_item = None, False
            self._condition.notify_all()

    @property
    def closed(self):
        return self._closed
