# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""rosbag2 reading and writing (mcap and sqlite3) with the PyPI ``rosbags`` library, ROS-free.

Writing: :class:`BagWriter` wraps ``rosbags.rosbag2.Writer``. Topics are registered with the
offered QoS profiles ``ros2 bag record`` stores (sensor-data best-effort for cameras,
reliable + transient-local for a latched topic) and messages are written at a receive time in
nanoseconds. Messages are the ``rosbags`` typestore classes of ROS 2 Kilted; build them with
:func:`image_message`, :func:`compressed_image_message`, :func:`camera_info_message`,
:func:`string_message` (images go through :mod:`tesg_ros.sensor.image_codec`).

Reading: :func:`open_bag` opens a rosbag2 directory (``metadata.yaml`` + storage files) or a
bare ``.mcap`` / ``.db3`` file and returns a :class:`Bag` that lists its topics
(:class:`TopicInfo`: name, type, count, offered QoS) and iterates ``(topic, receive_time_ns,
msg)`` in time order, deserialised with the typestore. :func:`detect_image_topics` finds the
thermal and RGB image topics. A truncated mcap file (recording killed before the summary was
written) is recovered: every message in a complete record before the damage is readable and
:attr:`Bag.damage` says what was lost.

Every failure (missing path, corrupt file, unknown topic, undecodable message) raises
:class:`BagError` with a message naming the file or topic.
"""

from collections import defaultdict
import heapq
from pathlib import Path
import re
from typing import NamedTuple

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2 import storage_mcap
from rosbags.typesys import (get_types_from_idl, get_types_from_msg, get_typestore, Stores,
                             TypesysError)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from tesg_ros.errors import ImageEncodingError, TesgError
from tesg_ros.sensor.image_codec import (
    compressed_to_numpy, numpy_to_compressed, numpy_to_image, parse_compressed_format,
    THERMAL_ENCODINGS, VISIBLE_ENCODINGS)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
STRING = 'std_msgs/msg/String'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGES = ('mcap', 'sqlite3')
# The message definitions written into bags; Kilted is the distribution the node targets.
TYPESTORE = Stores.ROS2_KILTED
NS_PER_S = 1_000_000_000
# builtin_interfaces/Time.sec is an int32.
MAX_STAMP_NS = (2 ** 31 - 1) * NS_PER_S + NS_PER_S - 1

# DDS reports no history/depth of a remote publisher, so `ros2 bag record` stores
# history 'unknown', depth 0 and infinite (max int64 ns) deadline/lifespan/lease.
_INFINITE = QosTime(9223372036, 854775807)


def _recorded_qos(reliability, durability):
    return Qos(QosHistory.UNKNOWN, 0, reliability, durability, _INFINITE, _INFINITE,
               QosLiveliness.AUTOMATIC, _INFINITE, False)


QOS_PROFILES = {
    # rclcpp::SensorDataQoS: camera drivers publish best-effort, volatile.
    'sensor_data': _recorded_qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE),
    # A latched topic (e.g. the semantics text): late joiners get the last message.
    'latched': _recorded_qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL),
    # rclcpp's default QoS.
    'reliable': _recorded_qos(QosReliability.RELIABLE, QosDurability.VOLATILE),
}

_THERMAL_NAME_TOKENS = frozenset({'thermal', 'ir', 'lwir', 'flir', 'infrared', 'boson',
                                  'lepton'})
_VISIBLE_NAME_TOKENS = frozenset({'rgb', 'color', 'colour', 'visible', 'vis', 'vi'})
_COLOUR_ENCODINGS = VISIBLE_ENCODINGS - {'mono8', 'mono16'}
# 'camera' hints at the visible camera only when the name has no thermal token (camera_ir).
_GENERIC_CAMERA_TOKENS = frozenset({'camera', 'cam'})


class BagError(TesgError, ValueError):
    """A bag cannot be written or read: missing path, corrupt file, unknown topic, bad data."""


def _typestore():
    return get_typestore(TYPESTORE)


def message_class(msgtype):
    """The ``rosbags`` (ROS 2 Kilted) class of ``msgtype``, e.g. ``'sensor_msgs/msg/Image'``."""
    try:
        return _typestore().types[msgtype]
    except KeyError:
        raise BagError(f'message type {msgtype!r} is not in the {TYPESTORE.value} '
                       'typestore') from None


def make_header(stamp_ns, frame_id=''):
    """A ``rosbags`` ``std_msgs/msg/Header`` with ``stamp`` = ``stamp_ns`` (int ns since epoch)."""
    stamp_ns = int(stamp_ns)
    if not 0 <= stamp_ns <= MAX_STAMP_NS:
        raise BagError(f'stamp {stamp_ns} ns is outside builtin_interfaces/Time '
                       f'(0 .. {MAX_STAMP_NS} ns)')
    sec, nanosec = divmod(stamp_ns, NS_PER_S)
    time = message_class('builtin_interfaces/msg/Time')(sec=sec, nanosec=nanosec)
    return message_class('std_msgs/msg/Header')(stamp=time, frame_id=str(frame_id))


def image_message(image, encoding, stamp_ns, frame_id=''):
    """A ``rosbags`` ``sensor_msgs/msg/Image`` holding ``image`` (H x W [x C]) in ``encoding``.

    The array must match the encoding (:func:`tesg_ros.sensor.image_codec.numpy_to_image`).
    """
    return numpy_to_image(image, encoding, header=make_header(stamp_ns, frame_id),
                          message_class=message_class(IMAGE))


def compressed_image_message(image, fmt, stamp_ns, frame_id='', jpeg_quality=95):
    """A ``rosbags`` ``sensor_msgs/msg/CompressedImage`` (``fmt`` as image_transport writes it,
    e.g. ``'bgr8; jpeg compressed bgr8'``, ``'mono16; png compressed'``; see
    :func:`tesg_ros.sensor.image_codec.numpy_to_compressed`)."""
    return numpy_to_compressed(image, fmt, header=make_header(stamp_ns, frame_id),
                               message_class=message_class(COMPRESSED_IMAGE),
                               jpeg_quality=jpeg_quality)


def camera_info_message(width, height, k, stamp_ns, frame_id='', d=(),
                        distortion_model='plumb_bob', r=None, p=None):
    """A ``rosbags`` ``sensor_msgs/msg/CameraInfo``.

    Args:
        width, height: image size in pixels.
        k: 3 x 3 intrinsic matrix (any array-like of 9 numbers, row-major).
        d: distortion coefficients (5 for plumb_bob; empty = none).
        r: 3 x 3 rectification rotation, default identity.
        p: 3 x 4 projection matrix, default ``[K | 0]`` (a monocular camera).
    """
    k = np.asarray(k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.isfinite(k).all():
        raise BagError(f'camera matrix k needs 9 finite numbers, got {k.size}')
    r = np.eye(3) if r is None else np.asarray(r, dtype=np.float64)
    if p is None:
        p = np.hstack([k.reshape(3, 3), np.zeros((3, 1))])
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    r = r.reshape(-1)
    if r.size != 9 or p.size != 12:
        raise BagError(f'r needs 9 and p 12 numbers, got {r.size} and {p.size}')
    roi = message_class('sensor_msgs/msg/RegionOfInterest')(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return message_class(CAMERA_INFO)(
        header=make_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model=str(distortion_model), d=np.asarray(d, dtype=np.float64).reshape(-1),
        k=k, r=r, p=p, binning_x=0, binning_y=0, roi=roi)


def string_message(text):
    """A ``rosbags`` ``std_msgs/msg/String``."""
    return message_class(STRING)(data=str(text))


def default_qos_name(msgtype):
    """The QoS profile name a topic of ``msgtype`` gets unless told otherwise."""
    return 'sensor_data' if msgtype.startswith('sensor_msgs/') else 'reliable'


class BagWriter:
    """Write a new rosbag2 (directory with ``metadata.yaml``) as a context manager.

    ``path`` must not exist. ``storage`` is 'mcap' (one ``<name>.mcap``) or 'sqlite3'
    (``<name>.db3``). Topics are registered by :meth:`add_topic` or, on first write, with the
    QoS profile :func:`default_qos_name` picks. On an exception inside the ``with`` block the
    bag is left without ``metadata.yaml`` (as rosbags' writer aborts).
    """

    def __init__(self, path, storage='mcap'):
        if storage not in STORAGES:
            raise BagError(f'storage must be one of {STORAGES}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        if self.path.exists():
            raise BagError(f'{self.path} exists already; a bag is never overwritten')
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._typestore = _typestore()
        self._connections = {}
        self._counts = defaultdict(int)
        self._is_open = False

    def __enter__(self):
        try:
            self._writer.open()
        except (WriterError, OSError) as error:
            raise BagError(f'cannot create bag {self.path}: {error}') from None
        self._is_open = True
        return self

    def __exit__(self, exc_type, exc, traceback):
        self._is_open = False
        try:
            return self._writer.__exit__(exc_type, exc, traceback)
        except (WriterError, OSError) as error:
            raise BagError(f'cannot finish bag {self.path}: {error}') from None

    @property
    def counts(self):
        """Messages written so far per topic (dict topic -> int)."""
        return dict(self._counts)

    def add_topic(self, topic, msgtype, qos=None):
        """Register ``topic`` of ``msgtype`` with offered QoS ``qos``.

        ``qos`` is a name of :data:`QOS_PROFILES` ('sensor_data', 'latched', 'reliable'), a
        ``rosbags.interfaces.Qos`` or None for :func:`default_qos_name`.
        """
        if not self._is_open:
            raise BagError('BagWriter is not open; use it as a context manager')
        if topic in self._connections:
            raise BagError(f'topic {topic} is already registered')
        if not isinstance(topic, str) or not topic.startswith('/'):
            raise BagError(f'topic name must be an absolute name starting with /, got {topic!r}')
        if msgtype not in self._typestore.types:
            raise BagError(f'message type {msgtype!r} is not in the {TYPESTORE.value} typestore')
        if qos is None:
            qos = default_qos_name(msgtype)
        if isinstance(qos, str):
            if qos not in QOS_PROFILES:
                raise BagError(f'unknown QoS profile {qos!r}; expected one of '
                               f'{sorted(QOS_PROFILES)}')
            qos = QOS_PROFILES[qos]
        if not isinstance(qos, Qos):
            raise BagError(f'qos must be a profile name or rosbags Qos, got {type(qos).__name__}')
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self._typestore, offered_qos_profiles=[qos])

    def write(self, topic, msg, receive_time_ns):
        """Serialise ``msg`` (a rosbags typestore message) to ``topic`` at ``receive_time_ns``."""
        if not self._is_open:
            raise BagError('BagWriter is not open; use it as a context manager')
        msgtype = getattr(msg, '__msgtype__', None)
        if msgtype is None:
            raise BagError(f'{type(msg).__name__} is not a rosbags typestore message; build it '
                           'with tesg_ros.bags helpers or bags.message_class()')
        if topic not in self._connections:
            self.add_topic(topic, msgtype)
        connection = self._connections[topic]
        if connection.msgtype != msgtype:
            raise BagError(f'topic {topic} carries {connection.msgtype}, got a {msgtype}')
        receive_time_ns = int(receive_time_ns)
        if receive_time_ns < 0:
            raise BagError(f'receive time must not be negative, got {receive_time_ns}')
        try:
            data = self._typestore.serialize_cdr(msg, msgtype)
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            raise BagError(f'cannot serialise the {msgtype} for {topic}: {error}') from None
        self._writer.write(connection, receive_time_ns, data)
        self._counts[topic] += 1


class OfferedQos(NamedTuple):
    """One offered QoS profile of a recorded publisher (names as in metadata.yaml v9)."""

    reliability: str
    durability: str
    history: str
    depth: int


class TopicInfo(NamedTuple):
    """A topic of a bag: ``count`` messages of ``msgtype``; ``qos`` one entry per publisher."""

    name: str
    msgtype: str
    count: int
    qos: tuple


class ImageTopics(NamedTuple):
    """The thermal and RGB image topics of a bag and their first message's encoding."""

    thermal: str
    rgb: str
    thermal_encoding: str
    rgb_encoding: str


def _offered_qos(profiles):
    return tuple(OfferedQos(p.reliability.name.lower(), p.durability.name.lower(),
                            p.history.name.lower(), int(p.depth)) for p in profiles)


_MCAP_MAGIC = b'\x89MCAP0\r\n'
# rosbags parses with struct, lz4, zstd, sqlite3/apsw and ruamel.yaml and asserts on
# impossible states, so a damaged file raises many exception types from deep inside it.
_READ_ERRORS = (Exception,)


def _error_text(error):
    if isinstance(error, (ReaderError, BagError, OSError)):
        return str(error)
    return f'{type(error).__name__}: {error}'


class _RecoveredMcap:
    """Messages of an mcap file whose end is missing or damaged, read up to the damage.

    Uses rosbags' own mcap record parser in its linear-scan mode over the whole file; the
    scan stops at the first incomplete or invalid record (``damage`` says which; None when the
    file is complete).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.damage = None
        reader = storage_mcap.McapReader(self.path)
        self._reader = reader
        try:
            reader.bio = self.path.open('rb')
        except OSError as error:
            raise BagError(f'cannot open {self.path}: {error.strerror}') from None
        try:
            if reader.bio.read(8) != _MCAP_MAGIC:
                raise BagError(f'{self.path} is not an mcap file (bad magic bytes)')
            if reader.bio.read(1) != b'\x01':
                raise BagError(f'{self.path} is damaged: no mcap header record')
            header = storage_mcap.read_sized(reader.bio)
            if b'ros2' not in header[:16]:
                raise BagError(f'{self.path} is not a ROS 2 mcap file (profile is not ros2)')
            reader.data_start = reader.bio.tell()
            size = self.path.stat().st_size
            # An intact file ends with the magic bytes after the footer record.
            reader.bio.seek(max(0, size - 8))
            ends_with_magic = reader.bio.read(8) == _MCAP_MAGIC
            reader.data_end = size - 8 if ends_with_magic else size
            try:
                reader.meta_scan()
            except _READ_ERRORS as error:
                self.damage = _error_text(error)
            self.connections = list(reader.connections)
            # One pass to count what is readable and to learn whether the file is in time order.
            self.counts = defaultdict(int)
            self.in_order = True
            self.start_ns = self.end_ns = None
            previous = -1
            for connection, timestamp, _ in self._scan(self.connections):
                self.counts[connection.id] += 1
                self.in_order = self.in_order and timestamp >= previous
                previous = timestamp
                self.start_ns = timestamp if self.start_ns is None else min(self.start_ns,
                                                                            timestamp)
                self.end_ns = timestamp if self.end_ns is None else max(self.end_ns, timestamp)
        except BaseException:
            self.close()
            raise

    def _scan(self, connections):
        try:
            yield from self._reader.messages_scan(connections)
        except _READ_ERRORS:
            return

    def messages(self, connections):
        if self.in_order:
            yield from self._scan(connections)
            return
        # Out-of-order files are sorted in memory (only damaged, unindexed files get here).
        yield from sorted(self._scan(connections), key=lambda item: item[1])

    def close(self):
        bio, self._reader.bio = self._reader.bio, None
        if bio is not None:
            bio.close()


def _mcap_files_of(path):
    """The mcap storage files of a bag path (a directory's metadata.yaml or a bare file)."""
    if path.is_file():
        return [path] if path.suffix == '.mcap' else []
    metadata = path / 'metadata.yaml'
    try:
        info = YAML(typ='safe').load(metadata.read_text())['rosbag2_bagfile_information']
        if info['storage_identifier'] != 'mcap' or info.get('compression_mode'):
            return []
        return [path / Path(name).name for name in info['relative_file_paths']]
    except (OSError, YAMLError, KeyError, TypeError):
        return sorted(path.glob('*.mcap'))


class Bag:
    """An open rosbag2 (use :func:`open_bag`); close it or use it as a context manager.

    Attributes:
        path: the bag path as given.
        storage: 'mcap' or 'sqlite3'.
        topics: dict name -> :class:`TopicInfo`, sorted by name.
        start_ns, end_ns: receive time of the first and last message (None if empty).
        damage: None for an intact bag; for a recovered truncated mcap a sentence saying what
            was wrong (the messages before the damage are readable).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.damage = None
        self._reader = None
        self._recovered = []
        self._storage_files = []
        self._typestore = _typestore()
        self._registered = set()
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist')
        if self.path.is_dir() and not (self.path / 'metadata.yaml').is_file():
            if not any(self.path.glob('*.mcap')):
                raise BagError(f'{self.path} is a directory without metadata.yaml and without '
                               '.mcap files; not a rosbag2 (open a .db3 file directly)')
            # A recording that was killed leaves its mcap files but no metadata.yaml.
            self._recover('metadata.yaml is missing (recording not closed?)')
            return
        if self.path.is_file() and self.path.suffix not in ('.mcap', '.db3'):
            raise BagError(f'{self.path}: expected a rosbag2 directory, a .mcap or a .db3 file')
        try:
            reader = Reader(self.path)
            reader.open()
        except _READ_ERRORS as error:
            self._recover(_error_text(error))
        else:
            self._reader = reader
            self._describe_reader()

    def _describe_reader(self):
        reader = self._reader
        try:
            storage = reader.storage
            if isinstance(storage, storage_mcap.McapReader):
                self.storage = 'mcap'
            elif hasattr(storage, 'storages'):
                storages = {type(s).__name__ for s in storage.storages}
                self.storage = 'mcap' if storages == {'McapReader'} else 'sqlite3'
            else:
                self.storage = 'sqlite3'
            topics = {}
            for name, info in sorted(reader.topics.items()):
                qos = tuple(q for c in info.connections
                            for q in _offered_qos(c.ext.offered_qos_profiles))
                topics[name] = TopicInfo(name, info.msgtype, int(info.msgcount), qos)
            self.topics = topics
            count = reader.message_count
            self.start_ns = reader.start_time if count else None
            self.end_ns = reader.end_time - 1 if count else None
            self._connections = list(reader.connections)
            # Message-compressed files need the directory reader's decompression.
            if hasattr(storage, 'storages') and reader.compression_mode != 'message':
                self._storage_files = list(storage.storages)
        except _READ_ERRORS as error:
            self.close()
            raise BagError(f'cannot read bag {self.path}: {_error_text(error)}') from None

    def _recover(self, error):
        files = _mcap_files_of(self.path)
        if not files or not all(f.is_file() for f in files):
            raise BagError(f'cannot open bag {self.path}: {error}') from None
        try:
            for storage_file in files:
                self._recovered.append(_RecoveredMcap(storage_file))
        except BagError as recovery_error:
            self.close()
            raise BagError(f'cannot open bag {self.path}: {error} ({recovery_error})') from None
        if not any(r.connections for r in self._recovered):
            damage = '; '.join(str(r.damage) for r in self._recovered)
            self.close()
            raise BagError(f'cannot open bag {self.path}: {error}; recovery found no readable '
                           f'topic before the damage ({damage})')
        self.storage = 'mcap'
        self.damage = '; '.join([str(error)] + [f'{r.path.name}: {r.damage}'
                                                for r in self._recovered if r.damage])
        topics = {}
        self._connections = []
        for recovered in self._recovered:
            for connection in recovered.connections:
                count = recovered.counts.get(connection.id, 0)
                old = topics.get(connection.topic)
                qos = _offered_qos(connection.ext.offered_qos_profiles)
                if old is None:
                    topics[connection.topic] = TopicInfo(connection.topic, connection.msgtype,
                                                         count, qos)
                else:
                    topics[connection.topic] = old._replace(count=old.count + count)
                self._connections.append(connection)
        self.topics = dict(sorted(topics.items()))
        starts = [r.start_ns for r in self._recovered if r.start_ns is not None]
        ends = [r.end_ns for r in self._recovered if r.end_ns is not None]
        self.start_ns = min(starts) if starts else None
        self.end_ns = max(ends) if ends else None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close()
        return False

    def close(self):
        """Release the files; idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None and reader.is_open:
            reader.close()
        for recovered in self._recovered:
            recovered.close()
        self._recovered = []
        self._storage_files = []

    @property
    def message_count(self):
        """Number of readable messages over all topics."""
        return sum(t.count for t in self.topics.values())

    def _require_topics(self, topics):
        if topics is None:
            return list(self.topics)
        if isinstance(topics, str):
            topics = [topics]
        topics = list(topics)
        missing = [t for t in topics if t not in self.topics]
        if missing:
            raise BagError(f'topic(s) {missing} not in bag {self.path}; it has '
                           f'{self.describe_topics()}')
        return topics

    def describe_topics(self):
        """One-line listing 'name (type, N msgs), ...' for error messages and logs."""
        if not self.topics:
            return 'no topics'
        return ', '.join(f'{t.name} ({t.msgtype}, {t.count} msgs)' for t in self.topics.values())

    def _ensure_type(self, connection):
        """Register a message type the Kilted typestore lacks from the bag's own definition."""
        msgtype = connection.msgtype
        if msgtype in self._typestore.types or msgtype in self._registered:
            return
        definition = connection.msgdef
        try:
            if definition.format.name == 'IDL':
                types = get_types_from_idl(definition.data)
            elif definition.data:
                types = get_types_from_msg(definition.data, msgtype)
            else:
                raise BagError(f'topic {connection.topic}: type {msgtype} is unknown and the '
                               'bag carries no definition of it')
            self._typestore.register(types)
        except TypesysError as error:
            raise BagError(f'topic {connection.topic}: cannot parse the definition of '
                           f'{msgtype}: {error}') from None
        self._registered.add(msgtype)

    def _raw(self, topics, start_ns, stop_ns):
        wanted = set(topics)
        if self._storage_files:
            # rosbags' directory reader pairs metadata.yaml topics with the storage's by
            # comparing QoS too and silently yields nothing when they differ (e.g. real
            # Foxy-era bags); pair by topic name and merge the files by time instead.
            streams = []
            for storage in self._storage_files:
                connections = [c for c in storage.connections if c.topic in wanted]
                if connections:
                    streams.append(storage.messages(connections, start_ns, stop_ns))
            yield from heapq.merge(*streams, key=lambda item: item[1])
            return
        if self._reader is not None:
            connections = [c for c in self._connections if c.topic in wanted]
            if not connections:
                return
            yield from self._reader.messages(connections, start=start_ns, stop=stop_ns)
            return
        streams = []
        for recovered in self._recovered:
            connections = [c for c in recovered.connections if c.topic in wanted]
            if connections:
                streams.append(recovered.messages(connections))
        for connection, timestamp, data in heapq.merge(*streams, key=lambda item: item[1]):
            if (start_ns is None or timestamp >= start_ns) and (
                    stop_ns is None or timestamp < stop_ns):
                yield connection, timestamp, data

    def _checked(self, topics, start_ns, stop_ns):
        """``(connection, receive_time_ns, cdr_bytes)`` with rosbags' errors as BagError."""
        topics = self._require_topics(topics)
        if self._reader is None and not self._recovered:
            raise BagError(f'bag {self.path} is closed')
        raw = self._raw(topics, start_ns, stop_ns)
        while True:
            try:
                connection, timestamp, data = next(raw)
            except StopIteration:
                return
            except _READ_ERRORS as error:
                raise BagError(f'bag {self.path} is damaged: {_error_text(error)}') from None
            yield connection, int(timestamp), data

    def raw_messages(self, topics=None, start_ns=None, stop_ns=None):
        """Like :meth:`messages` but yields ``(topic, receive_time_ns, cdr_bytes, msgtype)``."""
        for connection, timestamp, data in self._checked(topics, start_ns, stop_ns):
            yield connection.topic, timestamp, data, connection.msgtype

    def messages(self, topics=None, start_ns=None, stop_ns=None):
        """Yield ``(topic, receive_time_ns, msg)`` in receive-time order.

        Args:
            topics: a topic name, a list of names or None for all; an unknown name raises
                BagError listing the bag's topics.
            start_ns, stop_ns: only receive times in ``[start_ns, stop_ns)``.

        ``msg`` is a rosbags typestore message (fields as in rclpy; ``data`` of Image is a
        uint8 numpy array), readable by :mod:`tesg_ros.sensor.image_codec`.
        """
        for connection, timestamp, data in self._checked(topics, start_ns, stop_ns):
            self._ensure_type(connection)
            try:
                msg = self._typestore.deserialize_cdr(data, connection.msgtype)
            except Exception as error:  # rosbags raises assorted errors on bad CDR.
                raise BagError(f'{connection.topic}: message at {timestamp} ns cannot be '
                               f'deserialised as {connection.msgtype}: '
                               f'{type(error).__name__}: {error}') from None
            yield connection.topic, timestamp, msg

    def first_message(self, topic):
        """The first message of ``topic`` (BagError if the topic is unknown or empty)."""
        for _, _, msg in self.messages(topic):
            return msg
        raise BagError(f'topic {topic} has no readable message in {self.path}')


def open_bag(path):
    """Open a rosbag2 directory or a bare .mcap/.db3 file for reading; see :class:`Bag`."""
    return Bag(path)


def _name_tokens(topic):
    return set(t for t in re.split(r'[^a-z0-9]+', topic.lower()) if t)


def _name_hint(topic):
    """'thermal', 'visible' or None from the words of a topic name."""
    tokens = _name_tokens(topic)
    thermal = bool(tokens & _THERMAL_NAME_TOKENS)
    visible = bool(tokens & _VISIBLE_NAME_TOKENS) or (
        not thermal and bool(tokens & _GENERIC_CAMERA_TOKENS))
    if thermal == visible:
        return None
    return 'thermal' if thermal else 'visible'


def image_encoding_of(msg):
    """The pixel encoding of an Image or CompressedImage message.

    A CompressedImage gives the encoding named in its image_transport format, or for a bare
    'jpeg'/'png' format the layout it decodes to (mono8, bgr8, mono16, ...).
    """
    if hasattr(msg, 'encoding'):
        return msg.encoding
    try:
        parsed = parse_compressed_format(msg.format)
        if parsed.encoding is not None:
            return parsed.encoding
        return compressed_to_numpy(msg)[1]
    except ImageEncodingError as error:
        raise BagError(f'cannot tell the encoding of a CompressedImage: {error}') from None


def _first_encoding(bag, topic):
    try:
        return image_encoding_of(bag.first_message(topic))
    except BagError as error:
        raise BagError(f'{topic}: {error}') from None


def detect_image_topics(bag, thermal_topic=None, rgb_topic=None):
    """Find the thermal and RGB image topics of ``bag`` (an open :class:`Bag`).

    Image and CompressedImage topics are classified by the encoding of their first message:
    mono8/8UC1/mono16/16UC1/32FC1 are thermal candidates, colour encodings (rgb8, bgr8,
    yuv422/uyvy/yuyv, bayer, ...) visible. Several candidates are told apart by the topic
    name: a word thermal/ir/lwir/flir/infrared marks thermal, rgb/color/colour/visible/vis/vi
    (or camera without a thermal word) visible. A grey (mono8/mono16) topic named as visible is
    the RGB camera when no colour topic exists. ``thermal_topic``/``rgb_topic`` given
    explicitly are used as they are (they must exist and be image topics).

    Returns:
        :class:`ImageTopics`. Raises BagError listing the image topics and encodings when a
        camera is missing or the choice is ambiguous.
    """
    for given in (thermal_topic, rgb_topic):
        if given is not None:
            bag._require_topics([given])
            if bag.topics[given].msgtype not in IMAGE_TYPES:
                raise BagError(f'{given} is a {bag.topics[given].msgtype}, not an image topic')
    image_topics = [t.name for t in bag.topics.values()
                    if t.msgtype in IMAGE_TYPES and t.count > 0]
    encodings = {}

    def encoding(topic):
        if topic not in encodings:
            encodings[topic] = _first_encoding(bag, topic)
        return encodings[topic]

    def listing():
        return ', '.join(f'{t} ({encoding(t)})' for t in image_topics) or 'none'

    def pick(candidates, camera, hint, preferred):
        """The one candidate; else the one named like ``hint``; else the one ``preferred``."""
        if not candidates:
            raise BagError(f'no {camera} image topic found in {bag.path}; image topics: '
                           f'{listing()}')
        for narrowed in (candidates, [t for t in candidates if _name_hint(t) == hint],
                         [t for t in candidates if preferred(t)]):
            if len(narrowed) == 1:
                return narrowed[0]
        raise BagError(f'cannot tell which topic is the {camera} camera among {candidates}; '
                       f'image topics: {listing()}; pass the {camera} topic explicitly')

    thermal = thermal_topic
    if thermal is None:
        pool = [t for t in image_topics if t != rgb_topic and encoding(t) in THERMAL_ENCODINGS]
        if len(pool) > 1:
            pool = [t for t in pool if _name_hint(t) != 'visible']
        # mono8 may be a grey visible camera; 16-bit and float images are thermal.
        thermal = pick(pool, 'thermal', 'thermal', lambda t: encoding(t) != 'mono8')
    rgb = rgb_topic
    if rgb is None:
        others = [t for t in image_topics if t != thermal]
        pool = [t for t in others if encoding(t) in _COLOUR_ENCODINGS]
        if not pool:
            pool = [t for t in others if encoding(t) in ('mono8', 'mono16')
                    and (_name_hint(t) == 'visible' or len(others) == 1)]
        rgb = pick(pool, 'RGB', 'visible', lambda t: encoding(t) in ('bgr8', 'rgb8'))
    if thermal == rgb:
        raise BagError(f'thermal and RGB topics are both {thermal}')
    return ImageTopics(thermal, rgb, encoding(thermal), encoding(rgb))


def summary(bag):
    """A human-readable multi-line description of an open :class:`Bag` (``ros2 bag info``-like,
    plus the detected camera topics and their first frame's size and encoding)."""
    lines = [f'bag:      {bag.path} ({bag.storage})']
    if bag.start_ns is not None:
        duration = (bag.end_ns - bag.start_ns) / NS_PER_S
        lines.append(f'time:     {bag.start_ns} .. {bag.end_ns} ns ({duration:.3f} s)')
    lines.append(f'messages: {bag.message_count}')
    if bag.damage:
        lines.append(f'DAMAGED:  {bag.damage}')
    width = max((len(name) for name in bag.topics), default=0)
    for info in bag.topics.values():
        qos = ', '.join(f'{q.reliability}/{q.durability}' for q in info.qos) or 'no QoS'
        lines.append(f'  {info.name:<{width}}  {info.msgtype}  {info.count} msgs  [{qos}]')
    try:
        cameras = detect_image_topics(bag)
    except BagError as error:
        lines.append(f'cameras:  not detected: {error}')
    else:
        for role, topic in (('thermal', cameras.thermal), ('rgb', cameras.rgb)):
            first = bag.first_message(topic)
            size = ''
            if hasattr(first, 'width'):
                size = f' {first.width}x{first.height}'
            lines.append(f'{role + ":":<9} {topic} ({image_encoding_of(first)}{size})')
    return '\n'.join(lines)


def main(argv=None):
    """``python -m tesg_ros.bags BAG...``: print :func:`summary` of each bag; 1 on an error."""
    import sys
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print('usage: python -m tesg_ros.bags BAG [BAG ...]', file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            with open_bag(path) as bag:
                print(summary(bag))
        except BagError as error:
            print(f'error: {error}', file=sys.stderr)
            status = 1
    return status


if __name__ == '__main__':
    raise SystemExit(main())
