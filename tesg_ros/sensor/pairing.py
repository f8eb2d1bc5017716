# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Approximate-time pairing of a thermal and an RGB stream by header stamps (no rclpy).

Two layers:

* :class:`ApproximateTimePairingPolicy`: the pairing rule over ``(stamp_ns, message)``
  with counters. Plain Python, single-threaded, deterministic; the thing the tests check
  against a brute-force oracle.
* :class:`ApproximateTimeSynchronizer` (+ :class:`SimpleFilter`, :class:`InputFilter`):
  the ``message_filters`` interface (``ApproximateTimeSynchronizer(fs, queue_size, slop)``,
  ``registerCallback(cb, *args)``) on top of the policy, thread-safe, with the user callback
  invoked outside the lock. The node uses the real ``message_filters`` when importable and
  this builtin otherwise.

Input 0 is the thermal stream, input 1 the RGB stream; pairs come out as
``(thermal, rgb)``. The rule (details and rationale in docs/pairing.md): thermal messages,
in stamp order, each take the nearest queued RGB (ties: the earlier RGB) whose stamp is within
``slop`` of ``thermal stamp + thermal_time_offset``; each message is used at most once and
pairs come out in increasing stamp order on both inputs. Each input may arrive out of order by
up to ``reorder_window`` seconds; a thermal that must leave a full queue is paired with its
nearest queued RGB within slop rather than dropped.
"""

import bisect
from collections import deque
import dataclasses
import itertools
import math
import operator
import threading
from typing import Any, NamedTuple, Optional

from tesg_ros.errors import ConfigError

__all__ = [
    'ApproximateTimePairingPolicy', 'ApproximateTimeSynchronizer', 'InputFilter', 'Pair',
    'PairingCounters', 'SimpleFilter', 'message_stamp_ns', 'stamp_to_ns', 'seconds_to_ns',
    'THERMAL', 'RGB', 'INPUT_NAMES', 'NS_PER_S']

THERMAL = 0
RGB = 1
INPUT_NAMES = ('thermal', 'rgb')
NS_PER_S = 1_000_000_000


def seconds_to_ns(seconds: float) -> int:
    """Convert seconds (float) to integer nanoseconds, rounding to the nearest ns."""
    return int(round(seconds * NS_PER_S))


def stamp_to_ns(stamp) -> int:
    """Return a ``builtin_interfaces/Time``-like stamp as integer nanoseconds.

    Duck-typed: anything with ``sec``/``nanosec`` (rclpy and rosbags messages) or with
    ``nanoseconds`` (``rclpy.time.Time``, as message_filters accepts). A ``nanosec`` outside
    [0, 1e9) is malformed and raises :class:`ConfigError` rather than being normalised.
    """
    nanoseconds = getattr(stamp, 'nanoseconds', None)
    if nanoseconds is not None:
        return operator.index(nanoseconds)
    try:
        sec = operator.index(stamp.sec)
        nanosec = operator.index(stamp.nanosec)
    except (AttributeError, TypeError) as error:
        raise ConfigError(
            f'stamp of type {type(stamp).__name__} has no integer sec/nanosec') from error
    if not 0 <= nanosec < NS_PER_S:
        raise ConfigError(f'stamp nanosec={nanosec} is outside [0, 1e9)')
    return sec * NS_PER_S + nanosec


def message_stamp_ns(message) -> int:
    """Return ``message.header.stamp`` in integer nanoseconds.

    Raises :class:`ConfigError` for a message without ``header.stamp``: the synchroniser pairs
    by header stamps only and never substitutes the arrival time.
    """
    stamp = getattr(getattr(message, 'header', None), 'stamp', None)
    if stamp is None:
        raise ConfigError(
            f'message of type {type(message).__name__} has no header.stamp; approximate-time '
            'pairing needs stamped messages (headerless pairing is not supported)')
    return stamp_to_ns(stamp)


class Pair(NamedTuple):
    """One emitted pair.

    ``thermal_stamp_ns`` is the thermal message's own stamp (without the offset);
    ``dt_ns = thermal_stamp_ns + thermal_time_offset - rgb_stamp_ns`` (signed residual).
    """

    thermal: Any
    rgb: Any
    thermal_stamp_ns: int
    rgb_stamp_ns: int
    dt_ns: int


@dataclasses.dataclass(frozen=True)
class PairingCounters:
    """Snapshot of the policy's counters (per input where it matters).

    For each input: ``received == paired + evicted + pending + rejected`` where
    ``rejected = zero_stamp + negative_stamp + duplicate + late``. ``out_of_order`` counts every
    message older than the newest on its input (within the reset threshold); those still
    accepted are queued, those whose slot was already decided are also counted in ``late``.
    ``evicted`` counts queued messages that left without a pair: no partner within slop, queue
    overflow, or flushed by a reset. ``last_pair_abs_dt_s`` is ``|thermal + offset - rgb|`` of
    the newest pair in seconds (None before the first pair).
    """

    received_thermal: int = 0
    received_rgb: int = 0
    paired: int = 0
    evicted_thermal: int = 0
    evicted_rgb: int = 0
    pending_thermal: int = 0
    pending_rgb: int = 0
    zero_stamp_thermal: int = 0
    zero_stamp_rgb: int = 0
    negative_stamp_thermal: int = 0
    negative_stamp_rgb: int = 0
    duplicate_thermal: int = 0
    duplicate_rgb: int = 0
    out_of_order_thermal: int = 0
    out_of_order_rgb: int = 0
    late_thermal: int = 0
    late_rgb: int = 0
    resets: int = 0
    last_pair_abs_dt_s: Optional[float] = None

    def rejected(self, input_name: str) -> int:
        """Messages of ``input_name`` ('thermal' or 'rgb') refused on arrival (never queued)."""
        return sum(getattr(self, f'{kind}_{input_name}')
                   for kind in ('zero_stamp', 'negative_stamp', 'duplicate', 'late'))

    def as_dict(self) -> dict:
        """Plain ``{name: value}`` dict, e.g. for diagnostic_msgs KeyValue pairs."""
        return dataclasses.asdict(self)


class _InputState:
    """Queue and bookkeeping of one input. Stamps are match keys (thermal: + offset)."""

    __slots__ = ('keys', 'messages', 'newest_raw_ns', 'last_left_key', 'received', 'evicted',
                 'zero_stamp', 'negative_stamp', 'duplicate', 'out_of_order', 'late')

    def __init__(self):
        self.keys = []  # sorted match keys, ns
        self.messages = []
        self.newest_raw_ns = None  # newest accepted stamp since the last reset
        self.last_left_key = None  # key of the newest message that left the queue
        self.received = 0
        self.evicted = 0
        self.zero_stamp = 0
        self.negative_stamp = 0
        self.duplicate = 0
        self.out_of_order = 0
        self.late = 0

    def pop_oldest(self):
        self.last_left_key = self.keys.pop(0)
        return self.messages.pop(0)

    def evict_oldest(self, count=1):
        for _ in range(count):
            self.pop_oldest()
            self.evicted += 1

    def forget_time(self):
        self.newest_raw_ns = None
        self.last_left_key = None


class ApproximateTimePairingPolicy:
    """Pair thermal (input 0) and RGB (input 1) messages by stamp; not thread-safe.

    Parameters
    ----------
    queue_size : int >= 1
        Most messages kept per input while waiting for a partner; the oldest is evicted
        (counted) beyond it.
    slop : float >= 0
        Largest ``|thermal stamp + thermal_time_offset - rgb stamp|`` of a pair, seconds
        (inclusive).
    thermal_time_offset : float
        Seconds added to every thermal stamp before matching (thermal drivers often stamp
        late: a positive lag ``L`` is compensated with ``-L``).
    reset_jump : float > 0
        A stamp this many seconds older than the newest on its input is a time jump (bag
        loop, simulation restart): both queues are flushed and pairing starts over.
    reorder_window : float >= 0, < reset_jump
        Seconds by which a message may arrive after a newer-stamped message of its own input
        (driver or network reordering). Decisions wait until no message within this window can
        still change them; 0 assumes each input arrives in stamp order (lowest latency).

    :meth:`add` returns the pairs that became certain, oldest first.
    """

    def __init__(self, queue_size: int, slop: float, thermal_time_offset: float = 0.0,
                 reset_jump: float = 1.0, reorder_window: float = 0.0):
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f'queue_size must be an integer >= 1, got {queue_size!r}')
        for name, value in (('slop', slop), ('thermal_time_offset', thermal_time_offset),
                            ('reset_jump', reset_jump), ('reorder_window', reorder_window)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ConfigError(f'{name} must be a finite number of seconds, got {value!r}')
        if slop < 0:
            raise ConfigError(f'slop must be >= 0 s, got {slop!r}')
        if reset_jump <= 0:
            raise ConfigError(f'reset_jump must be > 0 s, got {reset_jump!r}')
        if not 0 <= reorder_window < reset_jump:
            raise ConfigError(f'reorder_window must be >= 0 s and below reset_jump '
                              f'({reset_jump!r} s), got {reorder_window!r}')
        self.queue_size = queue_size
        self.slop = float(slop)
        self.thermal_time_offset = float(thermal_time_offset)
        self.reset_jump = float(reset_jump)
        self._slop_ns = seconds_to_ns(slop)
        self._offset_ns = seconds_to_ns(thermal_time_offset)
        self._reset_jump_ns = seconds_to_ns(reset_jump)
        self.reorder_window = float(reorder_window)
        self._reorder_ns = seconds_to_ns(reorder_window)
        self._inputs = (_InputState(), _InputState())
        self._paired = 0
        self._resets = 0
        self._last_pair_abs_dt_ns = None

    # -- input -------------------------------------------------------------------------------

    def add_thermal(self, stamp_ns: int, message) -> list:
        """Add a thermal message stamped ``stamp_ns`` (int ns); return the new pairs."""
        return self.add(THERMAL, stamp_ns, message)

    def add_rgb(self, stamp_ns: int, message) -> list:
        """Add an RGB message stamped ``stamp_ns`` (int ns); return the new pairs."""
        return self.add(RGB, stamp_ns, message)

    def add(self, input_index: int, stamp_ns: int, message) -> list:
        """Add ``message`` stamped ``stamp_ns`` (int ns) to input 0 (thermal) or 1 (RGB).

        Returns a list of :class:`Pair`, possibly empty, in increasing stamp order.
        """
        if input_index not in (THERMAL, RGB):
            raise ConfigError(f'input_index must be 0 (thermal) or 1 (rgb), got {input_index!r}')
        try:
            stamp_ns = operator.index(stamp_ns)
        except TypeError as error:
            raise ConfigError(
                f'stamp_ns must be an integer nanosecond count, got {stamp_ns!r}') from error
        state = self._inputs[input_index]
        state.received += 1
        if stamp_ns == 0:
            state.zero_stamp += 1
            return []
        if stamp_ns < 0:
            state.negative_stamp += 1
            return []
        newest = state.newest_raw_ns
        if newest is not None and newest - stamp_ns > self._reset_jump_ns:
            self._flush()
            self._resets += 1
            newest = None
        key = stamp_ns + self._offset_ns if input_index == THERMAL else stamp_ns
        position = bisect.bisect_left(state.keys, key)
        queued = position < len(state.keys) and state.keys[position] == key
        if queued or stamp_ns == newest or key == state.last_left_key:
            state.duplicate += 1
            return []
        if newest is not None and stamp_ns < newest:
            state.out_of_order += 1
            if state.last_left_key is not None and key <= state.last_left_key:
                # Its place in the queue was already decided; pairing it now could break the
                # one-use / increasing-order guarantees.
                state.late += 1
                return []
        state.keys.insert(position, key)
        state.messages.insert(position, message)
        if newest is None or stamp_ns > newest:
            state.newest_raw_ns = stamp_ns
        pairs = self._match()
        pairs += self._bound_queues()
        self._evict_unusable_rgb()
        return pairs

    def reset(self):
        """Flush both queues (counted as evicted) and forget stamp history; counts a reset.

        For the node to call on an external time jump (e.g. a ``/clock`` restart).
        """
        self._flush()
        self._resets += 1

    # -- state -------------------------------------------------------------------------------

    def counters(self) -> PairingCounters:
        """Snapshot of all counters."""
        thermal, rgb = self._inputs
        last_dt = self._last_pair_abs_dt_ns
        return PairingCounters(
            received_thermal=thermal.received, received_rgb=rgb.received,
            paired=self._paired,
            evicted_thermal=thermal.evicted, evicted_rgb=rgb.evicted,
            pending_thermal=len(thermal.keys), pending_rgb=len(rgb.keys),
            zero_stamp_thermal=thermal.zero_stamp, zero_stamp_rgb=rgb.zero_stamp,
            negative_stamp_thermal=thermal.negative_stamp,
            negative_stamp_rgb=rgb.negative_stamp,
            duplicate_thermal=thermal.duplicate, duplicate_rgb=rgb.duplicate,
            out_of_order_thermal=thermal.out_of_order, out_of_order_rgb=rgb.out_of_order,
            late_thermal=thermal.late, late_rgb=rgb.late,
            resets=self._resets,
            last_pair_abs_dt_s=None if last_dt is None else last_dt / NS_PER_S)

    def pending_stamps_ns(self, input_index: int) -> list:
        """Stamps (as received, without the offset) waiting on input 0 or 1, oldest first."""
        offset = self._offset_ns if input_index == THERMAL else 0
        return [key - offset for key in self._inputs[input_index].keys]

    # -- rule --------------------------------------------------------------------------------

    def _future_floor(self, input_index: int):
        """Smallest match key a message still to come on ``input_index`` can have (None: any).

        In-order inputs (window 0) only bring keys above the newest; otherwise keys down to
        ``newest - reorder_window`` may still arrive.
        """
        state = self._inputs[input_index]
        if state.newest_raw_ns is None:
            return None
        newest = state.newest_raw_ns + (self._offset_ns if input_index == THERMAL else 0)
        return newest + 1 if self._reorder_ns == 0 else newest - self._reorder_ns

    def _nearest_rgb(self, thermal_key: int):
        """Index of the queued RGB nearest to ``thermal_key`` (ties: the earlier), or None."""
        rgb_keys = self._inputs[RGB].keys
        after = bisect.bisect_left(rgb_keys, thermal_key)  # first RGB at/after the thermal
        nearest = after - 1 if after > 0 else None
        if after < len(rgb_keys) and (
                nearest is None
                or rgb_keys[after] - thermal_key < thermal_key - rgb_keys[nearest]):
            nearest = after
        return nearest

    def _match(self) -> list:
        """Decide the oldest thermal messages whose nearest RGB can no longer change."""
        thermal, rgb = self._inputs
        pairs = []
        while thermal.keys:
            thermal_key = thermal.keys[0]
            thermal_floor = self._future_floor(THERMAL)
            if thermal_floor < thermal_key:
                break  # an older thermal may still arrive and must be decided first
            nearest = self._nearest_rgb(thermal_key)
            distance = None if nearest is None else abs(thermal_key - rgb.keys[nearest])
            if distance is not None and distance > self._slop_ns:
                distance = None
            rgb_floor = self._future_floor(RGB)
            # A future RGB is at or above rgb_floor; it could still be nearer (or, with no
            # partner yet, within slop) unless the floor is past that distance.
            if rgb_floor is None or (
                    rgb_floor < thermal_key + distance if distance is not None
                    else rgb_floor <= thermal_key + self._slop_ns):
                break
            pairs.append(self._decide_oldest_thermal(nearest if distance is not None else None))
        return [pair for pair in pairs if pair is not None]

    def _decide_oldest_thermal(self, rgb_index):
        """Pair the oldest thermal with queued RGB ``rgb_index``, or evict it (None)."""
        thermal, rgb = self._inputs
        if rgb_index is None:
            thermal.evict_oldest()
            return None
        # RGB older than the chosen one can no longer pair: later thermals are later.
        rgb.evict_oldest(rgb_index)
        rgb_key = rgb.keys[0]
        rgb_message = rgb.pop_oldest()
        thermal_key = thermal.keys[0]
        thermal_message = thermal.pop_oldest()
        dt_ns = thermal_key - rgb_key
        self._paired += 1
        self._last_pair_abs_dt_ns = abs(dt_ns)
        return Pair(thermal_message, rgb_message, thermal_key - self._offset_ns, rgb_key, dt_ns)

    def _decide_oldest_thermal_now(self):
        """Decide the oldest thermal with what is queued: its nearest RGB if within slop."""
        thermal_key = self._inputs[THERMAL].keys[0]
        nearest = self._nearest_rgb(thermal_key)
        if nearest is not None and \
                abs(thermal_key - self._inputs[RGB].keys[nearest]) > self._slop_ns:
            nearest = None
        return self._decide_oldest_thermal(nearest)

    def _bound_queues(self) -> list:
        """Keep both queues within queue_size without dropping a thermal that has a partner.

        A thermal that must leave (its queue is full, or the RGB within slop of it is about to
        be pushed out) is decided with what is queued now instead of being evicted unpaired.
        """
        thermal, rgb = self._inputs
        pairs = []
        while len(thermal.keys) > self.queue_size:
            pairs.append(self._decide_oldest_thermal_now())
        while len(rgb.keys) > self.queue_size:
            if thermal.keys and abs(thermal.keys[0] - rgb.keys[0]) <= self._slop_ns:
                pairs.append(self._decide_oldest_thermal_now())
            else:
                rgb.evict_oldest()
        return [pair for pair in pairs if pair is not None]

    def _evict_unusable_rgb(self):
        """Evict RGB messages more than slop before every pending and future thermal."""
        thermal, rgb = self._inputs
        if thermal.keys:
            # Pending thermals are undecided: the oldest still needs RGB >= its key - slop
            # (an older thermal may still come within the reorder window).
            oldest_usable = min(thermal.keys[0], self._future_floor(THERMAL)) - self._slop_ns
        elif thermal.newest_raw_ns is not None:
            # Future thermals are at or above the floor (newer than the newest when in order).
            oldest_usable = self._future_floor(THERMAL) - self._slop_ns
        else:
            return
        unusable = bisect.bisect_left(rgb.keys, oldest_usable)
        rgb.evict_oldest(unusable)

    def _flush(self):
        for state in self._inputs:
            state.evict_oldest(len(state.keys))
            state.forget_time()


class SimpleFilter:
    """message_filters-style filter: ``registerCallback`` and ``signalMessage``."""

    def __init__(self):
        self.callbacks = {}
        self._connection_ids = itertools.count()

    def registerCallback(self, cb, *args):  # noqa: N802 (message_filters API)
        """Call ``cb(*messages, *args)`` on every output; return a connection id."""
        connection = next(self._connection_ids)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg):  # noqa: N802 (message_filters API)
        """Pass ``msg`` to every registered callback, in registration order."""
        for callback, args in list(self.callbacks.values()):
            callback(*(msg + args))


class InputFilter(SimpleFilter):
    """A synchroniser input the node feeds from an rclpy subscription callback.

    ``node.create_subscription(Image, topic, input_filter.callback, qos)``, or call
    ``input_filter.signalMessage(msg)`` directly.
    """

    def callback(self, msg):
        """Subscription callback: forward ``msg`` to the connected filters."""
        self.signalMessage(msg)


class ApproximateTimeSynchronizer(SimpleFilter):
    """message_filters-compatible synchroniser of (thermal, rgb) built on the policy.

    ``fs`` are two filters with ``registerCallback`` (thermal first). Registered callbacks are
    called as ``cb(thermal_msg, rgb_msg, *args)``, one pair at a time, in increasing stamp
    order, from whichever input thread completed the pair, and never while the queue lock is
    held (unlike message_filters' Python synchroniser): a slow callback does not block inputs,
    and a callback may call :meth:`counters` or feed inputs. ``allow_headerless=True`` is not
    supported (pairing by arrival time would silently change the semantics) and raises.
    """

    def __init__(self, fs, queue_size, slop, allow_headerless=False, *,
                 thermal_time_offset=0.0, reset_jump=1.0, reorder_window=0.0):
        super().__init__()
        if allow_headerless:
            raise ConfigError('allow_headerless=True is not supported by the builtin '
                              'synchroniser: it pairs by header stamps only')
        self.policy = ApproximateTimePairingPolicy(
            queue_size, slop, thermal_time_offset=thermal_time_offset, reset_jump=reset_jump,
            reorder_window=reorder_window)
        self.queue_size = queue_size
        self.slop = slop
        self.allow_headerless = False
        self.lock = threading.Lock()
        self._outbox = deque()
        self._delivery_lock = threading.Lock()
        self.input_connections = []
        self.connectInput(fs)

    def connectInput(self, fs):  # noqa: N802 (message_filters API)
        """Register with the two input filters ``fs`` = (thermal, rgb)."""
        fs = list(fs)
        if len(fs) != 2:
            raise ConfigError(f'the builtin synchroniser pairs exactly 2 inputs (thermal, rgb), '
                              f'got {len(fs)}')
        self.input_connections = [
            input_filter.registerCallback(self.add, input_index)
            for input_index, input_filter in enumerate(fs)]

    def add(self, msg, input_index):
        """Queue ``msg`` (with ``header.stamp``) on input 0 (thermal) or 1 (rgb)."""
        stamp_ns = message_stamp_ns(msg)
        with self.lock:
            self._outbox.extend(self.policy.add(input_index, stamp_ns, msg))
        self._deliver()

    def counters(self) -> PairingCounters:
        """Snapshot of the policy's counters."""
        with self.lock:
            return self.policy.counters()

    def reset(self):
        """Flush the queues (see :meth:`ApproximateTimePairingPolicy.reset`)."""
        with self.lock:
            self.policy.reset()

    def _deliver(self):
        """Drain the outbox in order; one thread at a time, without holding the queue lock.

        A thread that finds another one delivering leaves its pairs to it instead of blocking;
        the deliverer re-checks the outbox after letting go, so no pair is stranded.
        """
        while self._delivery_lock.acquire(blocking=False):
            try:
                while True:
                    with self.lock:
                        if not self._outbox:
                            break
                        pair = self._outbox.popleft()
                    self.signalMessage(pair.thermal, pair.rgb)
            finally:
                self._delivery_lock.release()
            with self.lock:
                if not self._outbox:
                    return
