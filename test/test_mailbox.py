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


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_max_wait_discards_an_item_that_waited_too_long_and_counts_it():
    clock = FakeClock()
    box = LatestMailbox(clock=clock)
    box.put('old')
    clock.now += 0.020
    assert box.take(timeout=0, max_wait=0.010) is None  # expired, nothing fresh arrived
    assert (box.expired, box.delivered) == (1, 0)
    box.put('fresh')
    clock.now += 0.005
    assert box.take(timeout=0, max_wait=0.010) == 'fresh'
    assert (box.expired, box.delivered, box.overwritten) == (1, 1, 0)
    box.put('no limit')
    clock.now += 10.0
    assert box.take(timeout=0) == 'no limit'  # max_wait None (or 0) keeps every item
    box.put('zero limit')
    clock.now += 10.0
    assert box.take(timeout=0, max_wait=0.0) == 'zero limit'


def test_after_an_expired_item_the_consumer_waits_for_the_next_one():
    box = LatestMailbox()
    box.put('stale')
    time.sleep(0.05)
    got = []
    consumer = threading.Thread(
        target=lambda: got.append(box.take(timeout=5.0, max_wait=0.01)))
    consumer.start()
    time.sleep(0.05)
    assert consumer.is_alive(), 'the stale item must not be delivered'
    box.put('fresh')
    consumer.join(timeout=5.0)
    assert got == ['fresh'] and box.expired == 1


def test_an_item_put_while_the_consumer_waited_is_never_expired():
    clock = FakeClock()
    box = LatestMailbox(clock=clock)
    got = []
    consumer = threading.Thread(
        target=lambda: got.append(box.take(timeout=5.0, max_wait=0.010)))
    consumer.start()
    deadline = time.monotonic() + 5.0
    while not box._consumer_waiting and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.001)
    with box._condition:  # noqa: SLF001 - the consumer cannot wake before the clock moved
        box.put('fresh')
        clock.now += 1.0  # its thread wakes late (a loaded CPU): still delivered
    consumer.join(timeout=5.0)
    assert got == ['fresh'] and box.expired == 0
