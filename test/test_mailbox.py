# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The one-slot mailbox: newest wins, drops are counted, the consumer wakes without polling."""

import threading
import time

from tesg_ros.mailbox import LatestMailbox


def test_newest_item_wins_and_overwrites_are_counted():
    box = LatestMailbox()
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.take(timeout=0) == 3
    assert box.take(timeout=0) is None
    assert (box.delivered, box.overwritten) == (1, 2)


def test_consumer_wakes_when_an_item_arrives():
    box = LatestMailbox()
    got = []
    consumer = threading.Thread(target=lambda: got.append(box.take(timeout=5.0)))
    consumer.start()
    time.sleep(0.05)
    box.put('pair')
    consumer.join(timeout=5.0)
    assert got == ['pair']


def test_close_releases_a_waiting_consumer_and_ignores_later_puts():
    box = LatestMailbox()
    got = []
    consumer = threading.Thread(target=lambda: got.append(box.take(timeout=30.0)))
    consumer.start()
    time.sleep(0.05)
    box.close()
    consumer.join(timeout=5.0)
    assert not consumer.is_alive() and got == [None]
    assert box.put('late') is False and box.take(timeout=0) is None


def test_no_item_is_lost_or_duplicated_under_concurrency():
    box = LatestMailbox()
    taken = []
    done = threading.Event()

    def consume():
        while True:
            item = box.take(timeout=0.01)
            if item is not None:
                taken.append(item)
            elif done.is_set():
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(5000):
        box.put(i)
    time.sleep(0.05)
    done.set()
    consumer.join(timeout=10.0)
    assert len(taken) == box.delivered
    assert taken == sorted(set(taken)), 'items delivered out of order or twice'
    assert taken[-1] == 4999
    assert box.delivered + box.overwritten == 5000
