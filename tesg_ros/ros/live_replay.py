# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The rclpy side of ``tesg-replay``: the graph (replay node, recorder, optional in-process
fusion node) and the run loop that publishes the bag at its pace. rclpy is imported only when
a replay starts."""

from collections import defaultdict
import math
from pathlib import Path
import sys
import threading
import time


from tesg_ros import bags
from tesg_ros.errors import ConfigError
from tesg_ros.node_params import NODE_NAME, PARAMETERS_BY_NAME
from tesg_ros.replay import (
    CLOCK_PERIOD_S, default_out_dir, EXIT_INTERRUPTED, EXIT_NO_OUTPUT, EXIT_OK, INPUT_TOPICS,
    loop_shift_ns, node_overrides, NS_PER_S, OUTPUT_BAG, OUTPUT_TOPICS, OutputBag, PairTracker,
    parse_set_values, plan_topics, prepare_out_dir, remove_unfinished, ReplayClock, ReplayError,
    semantics_for_node, warmup_stamps)
from tesg_ros.replay_report import (
    node_report, overload_warning, parse_diagnostic_values, platform_info, process_cpu_seconds,
    replay_verdict, write_fused_share_plot, write_latency_plot, write_report)
from tesg_ros.sensor.pairing import stamp_to_ns
from tesg_ros.stats import counted_percentiles


class _Progress:
    """A tqdm bar on stderr over the published RGB images (only when enabled)."""

    def __init__(self, enabled, total):
        self._bar = None
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit='rgb', file=sys.stderr, desc='tesg-replay',
                             dynamic_ncols=True, leave=False)

    def update(self, fused):
        if self._bar is not None:
            self._bar.set_postfix_str(f'fused {fused}', refresh=False)
            self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------- ROS side
def image_from_cdr(data, msgtype):
    """An rclpy ``sensor_msgs/Image`` from a bag's CDR bytes of ``msgtype``.

    ``sensor_msgs/msg/Image`` is read as it is (``rclpy.serialization.deserialize_message``;
    rosbags and rclpy write the same CDR). ``sensor_msgs/msg/CompressedImage`` is decoded
    (:func:`tesg_ros.sensor.image_codec.compressed_to_numpy`) into an Image of the encoding it
    carries, header kept, as image_transport's republisher would: the node subscribes to raw
    images only.
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from tesg_ros.sensor.image_codec import compressed_to_numpy, numpy_to_image

    if msgtype == bags.IMAGE:
        return deserialize_message(bytes(data), Image)
    if msgtype != bags.COMPRESSED_IMAGE:
        raise ReplayError(f'cannot publish a {msgtype} as sensor_msgs/Image')
    compressed = deserialize_message(bytes(data), CompressedImage)
    pixels, encoding = compressed_to_numpy(compressed)
    return numpy_to_image(pixels, encoding, header=compressed.header, message_class=Image)


def _set_stamp(time_msg, stamp_ns):
    """Set a builtin_interfaces/Time (``sec``, ``nanosec``) to ``stamp_ns``."""
    time_msg.sec, time_msg.nanosec = divmod(int(stamp_ns), NS_PER_S)


class _Graph:
    """The rclpy side: context, replay node (publishers + recorder), optional fusion node."""

    def __init__(self, options, ros_args, overrides, topics):
        import rclpy
        from rclpy.exceptions import ParameterException
        from rclpy.signals import SignalHandlerOptions

        self._rclpy = rclpy
        self.options = options
        self.context = rclpy.Context()
        # Ctrl-C must reach the replay loop as KeyboardInterrupt, not shut the context down
        # under the running threads.
        try:
            rclpy.init(args=['tesg-replay', *ros_args], context=self.context,
                       signal_handler_options=SignalHandlerOptions.NO)
        except Exception as error:  # rclpy raises RCLError on bad --ros-args
            raise ConfigError(f'bad --ros-args {" ".join(ros_args[1:])!r}: {error}') from None
        self.fusion_node = None
        self.executors, self.threads = [], []
        self.node = None
        self.publishers, self.subscriptions, self.callbacks = {}, {}, {}
        self.diagnostics = None
        self.diagnostics_count = 0
        self.diagnostics_period = PARAMETERS_BY_NAME['diagnostics.period'].default
        self.clock_ns = None  # the last /clock published
        try:
            self.node = rclpy.create_node('tesg_replay', context=self.context)
            if overrides is not None:
                from rclpy.parameter import Parameter

                from tesg_ros.ros.fusion_node import FusionNode

                try:
                    self.fusion_node = FusionNode(
                        context=self.context, parameter_overrides=[
                            Parameter(name, value=value) for name, value in overrides.items()])
                except ParameterException as error:  # e.g. -p with the wrong type
                    raise ConfigError(f'fusion node parameters: {error}') from None
            self._build(topics)
        except BaseException:
            self.close()
            raise

    def _build(self, topics):
        """Publishers, recorder subscriptions and one executor thread per node."""
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data,
                               QoSProfile, ReliabilityPolicy)
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=qos_profile_sensor_data.reliability,
                            durability=qos_profile_sensor_data.durability)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.message_classes = {'thermal': Image, 'rgb': Image, 'thermal_info': CameraInfo,
                                'rgb_info': CameraInfo, 'semantics': String}
        for role in topics.by_role():
            qos = latched if role == 'semantics' else sensor
            self.publishers[role] = self.node.create_publisher(
                self.message_classes[role], INPUT_TOPICS[role], qos)
        self.clock_class = Clock
        self.clock_publisher = self.node.create_publisher(Clock, '/clock', QoSProfile(depth=10))
        for topic, msg_class in zip(OUTPUT_TOPICS, (Image, CameraInfo, String)):
            qos = latched if topic == 'semantics' else reliable
            self.subscriptions[topic] = self.node.create_subscription(
                msg_class, topic, lambda msg, topic=topic: self._dispatch(topic, msg), qos)
        if self.fusion_node is None:
            from diagnostic_msgs.msg import DiagnosticArray

            self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                          self._on_diagnostics, 10)
        for node in (self.node, self.fusion_node):
            if node is None:
                continue
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(node)
            thread = threading.Thread(target=executor.spin, name=f'tesg_replay_{node.get_name()}',
                                      daemon=True)
            thread.start()
            self.executors.append(executor)
            self.threads.append(thread)

    def _dispatch(self, topic, msg):
        callback = self.callbacks.get(topic)
        if callback is not None:
            callback(msg)

    def _on_diagnostics(self, array):
        wanted = f'{self.options.node_name.strip("/").rsplit("/", 1)[-1]}: fusion'
        for status in array.status:
            if status.name == wanted:
                self.diagnostics = parse_diagnostic_values((kv.key, kv.value)
                                                           for kv in status.values)
                self.diagnostics_count += 1

    def resolved(self, topic):
        """The absolute name a relative output topic resolves to."""
        return self.subscriptions[topic].topic_name

    def publish_clock(self, bag_ns):
        """Publish ``bag_ns`` (int ns) on /clock."""
        self.clock_ns = bag_ns
        msg = self.clock_class()
        _set_stamp(msg.clock, bag_ns)
        self.clock_publisher.publish(msg)

    def wait_for_subscribers(self, roles, timeout):
        """Wait until a node subscribes to each input topic of ``roles`` and publishes
        ``fused/image`` to the recorder; ReplayError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [INPUT_TOPICS[r] for r in roles
                       if self.publishers[r].get_subscription_count() == 0]
            if not missing and self.subscriptions['fused/image'].get_publisher_count() > 0:
                return
            if time.monotonic() > deadline:
                what = (f'no node subscribes to {", ".join(missing)}' if missing
                        else 'no node publishes fused/image')
                raise ReplayError(
                    f'{what} after {timeout:g} s; start the fusion node (ros2 run tesg_ros '
                    'fusion_node --ros-args -p use_sim_time:=true) in this ROS domain and '
                    'namespace, or drop --external')
            time.sleep(0.05)

    def sync_parameters(self, warnings):
        """``(queue_size, slop, thermal_time_offset)`` of the node (its defaults if unknown)."""
        names = ('sync.queue_size', 'sync.slop', 'thermal.time_offset')
        if self.fusion_node is not None:
            return tuple(self.fusion_node.get_parameter(n).value for n in names)
        defaults = tuple(PARAMETERS_BY_NAME[n].default for n in names)
        values = self._remote_parameters(
            names + ('use_sim_time', 'diagnostics.period', 'semantics.mode'))
        if values is None:
            warnings.append(f'could not read the parameters of {self.options.node_name}; '
                            'expected pairs use the default sync.queue_size, sync.slop, '
                            'thermal.time_offset')
            return defaults
        if isinstance(values.get('diagnostics.period'), float):
            self.diagnostics_period = values['diagnostics.period']
        if self.options.semantics == 'replay' and values.get('semantics.mode') != 'replay':
            warnings.append(f'{self.options.node_name} runs with semantics.mode '
                            f'{values.get("semantics.mode")!r}: it ignores the replayed '
                            'semantics')
        if values.get('use_sim_time') is not True:
            warnings.append(f'{self.options.node_name} does not run with use_sim_time: its '
                            'ages and latency_ms compare wall time with bag stamps')
        return tuple(values.get(n, d) for n, d in zip(names, defaults))

    def _remote_parameters(self, names):
        """``{name: value}`` from the external node's get_parameters service, or None."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        service = f'{self.options.node_name.rstrip("/")}/get_parameters'
        client = self.node.create_client(GetParameters, service)
        try:
            if not client.wait_for_service(timeout_sec=self.options.discovery_timeout):
                return None
            future = client.call_async(GetParameters.Request(names=list(names)))
            deadline = time.monotonic() + self.options.discovery_timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done() or future.result() is None:
                return None
            return {name: parameter_value_to_python(value)
                    for name, value in zip(names, future.result().values)}
        finally:
            self.node.destroy_client(client)

    def fresh_diagnostics(self, clock_ns, timeout=2.0):
        """External node: move ``/clock`` to ``clock_ns`` and wait for its next /diagnostics.

        Its diagnostics timer runs on sim time, so it only fires while ``/clock`` advances.
        Returns False when none came within ``timeout`` wall seconds.
        """
        seen = self.diagnostics_count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish_clock(clock_ns)
            if self.diagnostics_count > seen:
                return True
            time.sleep(0.05)
        return False

    def snapshot(self):
        """The node's diagnostics snapshot (in-process) or the last /diagnostics values."""
        if self.fusion_node is not None:
            return self.fusion_node.diagnostics_snapshot()
        return dict(self.diagnostics) if self.diagnostics else {}

    def close(self):
        """Stop the node's worker, the executors and their threads; shut the context down."""
        if self.fusion_node is not None:
            self.fusion_node.shutdown()
        for executor in self.executors:
            executor.shutdown()
        for thread in self.threads:
            thread.join(timeout=10.0)
        for node in (self.fusion_node, self.node):
            if node is not None:
                node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


class _Extent:
    """Smallest and largest of some stamps (ns) and how many there were."""

    def __init__(self):
        self.low = self.high = None
        self.count = 0

    def add(self, value):
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.count += 1

    @property
    def span(self):
        return 0 if self.low is None else self.high - self.low


class _Replay:
    """One replay run: warm-up, paced publishing, drain, report."""

    def __init__(self, options, bag, topics, graph, out_bag, warnings):
        self.options = options
        self.bag = bag
        self.topics = topics
        self.graph = graph
        self.out_bag = out_bag
        self.warnings = warnings
        self.tracker = None
        self.clock = None
        self.recording = False
        self._lock = threading.Lock()
        self._warmup_stamps = set()
        self._warm_frames = 0
        self._pending_semantics = None
        self._last_fused_wall = None
        self._fused_infos = 0  # fused/camera_info messages recorded
        self._last_clock_wall = -math.inf
        self.published = defaultdict(int)
        self.publish_lag_ms = []
        self.last_bag_ns = None  # scheduled bag time of the last published message
        self.wall_start = self.wall_end = self.last_publish_wall = None
        self.interrupted = False
        self.baseline = {}  # the in-process node's snapshot after the warm-up
        graph.callbacks['fused/image'] = self._on_fused
        graph.callbacks['fused/camera_info'] = self._on_fused_info
        graph.callbacks['semantics'] = self._on_semantics
        self._classes = graph.message_classes

    # ------------------------------------------------------------------ recorder
    def _record(self, topic, msgtype, msg, wall, qos='reliable'):
        from rclpy.serialization import serialize_message

        self.out_bag.write(self.graph.resolved(topic), msgtype, serialize_message(msg),
                           self.clock.bag_time(wall), qos)

    def _on_fused(self, msg):
        wall = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            if stamp in self._warmup_stamps:
                self._warm_frames += 1
                return
            recording = self.recording
        if not recording:
            return
        self.tracker.fused(stamp, wall)
        self._last_fused_wall = wall
        self._record('fused/image', bags.IMAGE, msg, wall)

    def _on_fused_info(self, msg):
        wall = time.monotonic()
        with self._lock:
            if not self.recording or stamp_to_ns(msg.header.stamp) in self._warmup_stamps:
                return
        self._record('fused/camera_info', bags.CAMERA_INFO, msg, wall)
        self._fused_infos += 1

    def _outputs_complete(self):
        """Each recorded fused image has its camera_info (published right after it) here too,
        when the bag feeds the node an RGB CameraInfo."""
        if not self.published.get('rgb_info'):
            return True
        return self._fused_infos >= self.tracker.fused_count

    def _on_semantics(self, msg):
        wall = time.monotonic()
        with self._lock:
            if not self.recording:
                self._pending_semantics = msg  # latched: keep the newest for the start
                return
        self._record('semantics', bags.STRING, msg, wall, 'latched')

    # ------------------------------------------------------------------ messages
    def _first_image(self, role):
        topic = getattr(self.topics, role)
        for _, _, data, msgtype in self.bag.raw_messages(topic):
            return image_from_cdr(data, msgtype)
        raise ReplayError(f'{topic} has no message')

    # ------------------------------------------------------------------ phases
    def warm_up(self):
        """Send pairs stamped before the bag until the node returns a fused frame.

        The first frame pays for model loading and allocation; it must not count as latency.
        """
        options = self.options
        thermal, rgb = self._first_image('thermal'), self._first_image('rgb')
        first = min(stamp_to_ns(thermal.header.stamp), stamp_to_ns(rgb.header.stamp))
        interval = 0.5
        count = max(int(math.ceil(options.warmup_timeout / interval)), 1)
        stamps = warmup_stamps(first, count)
        with self._lock:
            self._warmup_stamps.update(stamps)
        start = time.monotonic()
        for sent, stamp in enumerate(stamps, start=1):
            self.graph.publish_clock(stamp)
            _set_stamp(rgb.header.stamp, stamp)
            _set_stamp(thermal.header.stamp, stamp)
            # RGB first: the pairing emits the pair as soon as the thermal arrives.
            self.graph.publishers['rgb'].publish(rgb)
            time.sleep(0.005)
            self.graph.publishers['thermal'].publish(thermal)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                with self._lock:
                    warmed = self._warm_frames > 0
                if warmed:
                    self._settle_warm_up(sent)
                    return time.monotonic() - start
                time.sleep(0.01)
        mode = ('is the external node running with use_sim_time, and restarted since it last '
                'fused later stamps (it drops stamps that go backwards)?'
                if options.external else 'see the node log above')
        raise ReplayError(f'no fused frame came back within {options.warmup_timeout:g} s of '
                          f'warm-up pairs; {mode}')

    def _settle_warm_up(self, sent):
        """Wait until the ``sent`` warm-up pairs still in flight are fused or dropped, so
        the node's counters after the warm-up (the report's baseline) hold none of them."""
        deadline = time.monotonic() + self.options.warmup_timeout
        if self.graph.fusion_node is not None:
            while time.monotonic() < deadline:
                with self._lock:
                    received = self._warm_frames
                if self._node_settled(received, {}):
                    return
                time.sleep(0.02)
            return
        # External node: its counters are unknown here; all frames back, or 2 s quiet (a
        # busy node may have dropped one).
        quiet_since, seen = time.monotonic(), -1
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0:
            with self._lock:
                received = self._warm_frames
            if received >= sent:
                return
            if received != seen:
                quiet_since, seen = time.monotonic(), received
            time.sleep(0.02)

    def run(self, queue_size, slop, offset):
        """Publish the bag ``--loop`` times at ``--rate``; then wait for the last outputs."""
        options = self.options
        self.tracker = PairTracker(queue_size, slop, offset)
        by_role = self.topics.by_role()
        role_of = {topic: role for role, topic in by_role.items()}
        bag_start = self.bag.start_ns
        self.clock = ReplayClock(bag_start, time.monotonic() + 0.05, options.rate)
        # The node's clock must reach the bag before its first pair does (the warm-up left it
        # up to 10 s earlier): /clock and the images are separate topics, so send it ahead.
        self.graph.publish_clock(bag_start)
        self._last_clock_wall = time.monotonic()
        with self._lock:
            self.recording = True
            pending, self._pending_semantics = self._pending_semantics, None
        if pending is not None:
            self._record('semantics', bags.STRING, pending, self.clock.wall_start, 'latched')
        self.wall_start = self.clock.wall_start
        shift_step = 0
        all_stamps, rgb_stamps = _Extent(), _Extent()  # of the first pass
        last_receive = bag_start
        rgb_info = (getattr(self.bag, 'topics', None) or {}).get(by_role.get('rgb'))
        rgb_total = getattr(rgb_info, 'count', None)
        progress = _Progress(
            options.progress if options.progress is not None else sys.stderr.isatty(),
            rgb_total * options.loop if rgb_total else None)
        self._progress = progress
        try:
            for loop in range(options.loop):
                if loop == 1:
                    shift_step = loop_shift_ns(rgb_stamps.span, rgb_stamps.count,
                                               all_stamps.span, last_receive - bag_start)
                shift = loop * shift_step
                for topic, receive_ns, data, msgtype in self.bag.raw_messages(list(role_of)):
                    role = role_of[topic]
                    if role == 'semantics' and loop > 0:
                        continue  # latched: once is enough
                    msg = self._prepare(role, data, msgtype)
                    # A zero stamp stays zero (invalid) in every pass; the node drops it.
                    stamp = 0 if role == 'semantics' else stamp_to_ns(msg.header.stamp)
                    if stamp:
                        if loop == 0:
                            all_stamps.add(stamp)
                            if role == 'rgb':
                                rgb_stamps.add(stamp)
                            last_receive = receive_ns
                        else:
                            _set_stamp(msg.header.stamp, stamp + shift)
                    self._publish_at(role, msg, receive_ns + shift)
            self._drain()
        except bags.BagError as error:
            # A damaged bag ends the replay; what came back so far is still reported.
            self.warnings.append(f'replay stopped early: {error}')
            try:
                self._drain()
            except KeyboardInterrupt:
                self.interrupted = True
        except KeyboardInterrupt:
            self.interrupted = True
        self.wall_end = time.monotonic()
        progress.close()
        with self._lock:
            self.recording = False

    def _prepare(self, role, data, msgtype):
        from rclpy.serialization import deserialize_message

        if role in ('thermal', 'rgb'):
            return image_from_cdr(data, msgtype)
        msg = deserialize_message(bytes(data), self._classes[role])
        if role == 'semantics':
            msg.data = semantics_for_node(msg.data, self.topics.semantics)[0]
        return msg

    def _publish_at(self, role, msg, bag_ns):
        target = self.clock.wall_time(bag_ns)
        while True:
            now = time.monotonic()
            if now >= target:
                break
            if now - self._last_clock_wall >= CLOCK_PERIOD_S:
                self.graph.publish_clock(self.clock.bag_time(now))
                self._last_clock_wall = now
            time.sleep(max(min(target - now, self._last_clock_wall + CLOCK_PERIOD_S - now),
                           0.0))
        self.graph.publish_clock(bag_ns)
        now = time.monotonic()
        self._last_clock_wall = now
        self.publish_lag_ms.append((now - target) * 1e3)
        if role in ('thermal', 'rgb'):
            self.tracker.published(role, stamp_to_ns(msg.header.stamp), now)
        self.graph.publishers[role].publish(msg)
        self.published[role] += 1
        self.last_bag_ns, self.last_publish_wall = bag_ns, now
        if role == 'rgb' and getattr(self, '_progress', None) is not None:
            self._progress.update(self.tracker.fused_count)

    def _drain(self):
        """Keep /clock running until the last pairs came back or the node went quiet."""
        quiet = self.options.drain_timeout
        end = time.monotonic()
        while True:
            now = time.monotonic()
            complete = self._outputs_complete()
            if complete and self.tracker.all_matched():
                break
            last = max(end, self._last_fused_wall or end)
            if now - last > quiet:
                break
            if (complete and self.graph.fusion_node is not None and now - end > 0.2
                    and self._node_settled(self.tracker.fused_count, self.baseline)):
                break
            self.graph.publish_clock(self.clock.bag_time(now))
            time.sleep(CLOCK_PERIOD_S)

    def _node_settled(self, received, baseline):
        """In-process node: it received every image published since ``baseline`` (its
        snapshot then), published or dropped every pair it formed, and the frames it
        published since then all arrived here (``received``)."""
        snapshot = self.graph.fusion_node.diagnostics_snapshot()

        def since(key):
            return snapshot[key] - baseline.get(key, 0)

        if baseline and any(since(f'{role}_received') < self.published[role]
                            for role in ('thermal', 'rgb')):
            return False  # still in DDS (or lost: then the quiet timeout ends the wait)
        settled = snapshot['published'] + sum(
            snapshot[k] for k in ('dropped_busy', 'dropped_late', 'dropped_stale',
                                  'dropped_out_of_order', 'dropped_bad_input', 'dropped_error',
                                  'dropped_future'))
        return settled >= snapshot['pairs'] and received >= since('published')


def replay(options, ros_args=(), command=''):
    """Run a replay for parsed ``options``; returns ``(report dict, exit status)``.

    Raises TesgError (bags.BagError, ConfigError, ReplayError) on bad input before or during
    the set-up; a Ctrl-C during the replay stops it and still writes the report.
    """
    overrides = None
    if not options.external:
        overrides = node_overrides(options.weights, options.semantics, options.set_values,
                                   options.params_file)
    ros_args = list(ros_args)
    if options.params_file:
        # First, so that -p after --ros-args overrides the file (rcl: later rules win).
        ros_args = ['--ros-args', '--params-file', str(options.params_file)] + ros_args
    with bags.open_bag(options.bag) as bag:
        if bag.damage:
            print(f'tesg-replay: warning: {bag.damage}; replaying what is readable',
                  file=sys.stderr)
        topics = plan_topics(
            bag, options.thermal_topic, options.rgb_topic, options.thermal_info_topic,
            options.rgb_info_topic, not options.no_camera_info, options.semantics_topic,
            options.semantics == 'replay')
        warnings = [f'bag damaged: {bag.damage}'] if bag.damage else []
        if topics.semantics is not None:
            converted = sum(semantics_for_node(msg.data, topics.semantics)[1]
                            for _, _, msg in bag.messages(topics.semantics))
            if converted:
                warnings.append(f'{converted} recorded semantics message(s) on '
                                f'{topics.semantics} are not JSON as the node writes it; '
                                'published as JSON with the text as description (as tesg-eval '
                                'reads them)')
        out, created = prepare_out_dir(options.out or default_out_dir(options.bag))
        try:
            graph = _Graph(options, ros_args, overrides, topics)
        except BaseException:
            remove_unfinished(out, created)
            raise
        out_bag = None
        finished = False
        try:
            out_bag = OutputBag(out / OUTPUT_BAG, options.storage)
            runner = _Replay(options, bag, topics, graph, out_bag, warnings)
            report = _run(options, bag, topics, graph, runner, warnings)
            finished = True
        finally:
            try:
                graph.close()  # first: no callback may queue into a finished bag
            finally:
                if out_bag is not None:
                    out_bag.close()
                if not finished:
                    remove_unfinished(out, created)
    report.update(command=command, bag=str(options.bag), output_bag=str(out / OUTPUT_BAG),
                  storage=options.storage,
                  recorded={topic: count for topic, count in sorted(out_bag.counts.items())})
    name = Path(str(options.bag)).name
    try:
        report['latency_plot'] = write_latency_plot(
            runner.tracker.latencies_ms(), out / 'latency.png',
            f'{name}: input published -> fused received', report.get('frame_period_ms'))
    except Exception as error:  # noqa: BLE001 - a missing plot must not lose the report
        report['warnings'].append(f'latency plot not written: {error}')
    try:
        report['fused_share_plot'] = write_fused_share_plot(
            report.get('fused_share_over_time'), out / 'fused_share.png',
            report.get('min_fused_share'), f'{name}: share of input pairs fused')
    except Exception as error:  # noqa: BLE001 - a missing plot must not lose the report
        report['warnings'].append(f'fused share plot not written: {error}')
    json_path, markdown_path = write_report(report, out)
    report['report_files'] = [str(json_path), str(markdown_path)]
    status = EXIT_OK
    if runner.interrupted:
        status = EXIT_INTERRUPTED
    elif report['result']['fused_received'] == 0:
        status = EXIT_NO_OUTPUT
    return report, status


def _run(options, bag, topics, graph, runner, warnings):
    roles = [r for r in ('thermal', 'rgb') if r in graph.publishers]
    interrupted_early = False
    warmup_s = None
    queue_size, slop, offset = PARAMETERS_BY_NAME['sync.queue_size'].default, \
        PARAMETERS_BY_NAME['sync.slop'].default, PARAMETERS_BY_NAME['thermal.time_offset'].default
    baseline = {}
    try:
        graph.wait_for_subscribers(roles, options.discovery_timeout)
        queue_size, slop, offset = graph.sync_parameters(warnings)
        if not options.no_warmup:
            warmup_s = runner.warm_up()
        if options.external:
            period_ns = int(graph.diagnostics_period * NS_PER_S)
            now_ns = bag.start_ns if graph.clock_ns is None else graph.clock_ns
            if not graph.fresh_diagnostics(min(now_ns + period_ns, bag.start_ns)):
                warnings.append('no /diagnostics from the node before the replay: its '
                                'counters are reported since it started')
        baseline = graph.snapshot()
        runner.baseline = baseline
    except KeyboardInterrupt:
        interrupted_early = True
    cpu_start = process_cpu_seconds()
    if interrupted_early:
        runner.interrupted = True
        runner.tracker = PairTracker(queue_size, slop, offset)
        runner.wall_start = runner.wall_end = time.monotonic()
        runner.clock = ReplayClock(bag.start_ns, runner.wall_start, options.rate)
    else:
        runner.run(queue_size, slop, offset)
        if options.external and not runner.interrupted:
            period_ns = int(graph.diagnostics_period * NS_PER_S)
            try:
                if not graph.fresh_diagnostics(graph.clock_ns + period_ns):
                    warnings.append('no /diagnostics from the node after the replay: its '
                                    'numbers may miss the end')
            except KeyboardInterrupt:
                runner.interrupted = True
    cpu_seconds = process_cpu_seconds() - cpu_start
    snapshot = graph.snapshot()
    # Bag time covered by what was published (later passes include their shift).
    bag_seconds = 0.0
    publish_wall = 0.0
    if runner.last_bag_ns is not None:
        bag_seconds = (runner.last_bag_ns - bag.start_ns) / NS_PER_S
        publish_wall = runner.last_publish_wall - runner.wall_start
    node = node_report(snapshot, baseline) if snapshot else None
    result = runner.tracker.summary()
    wall = runner.wall_end - runner.wall_start
    min_share = _min_fused_share(options)
    overload = overload_warning(result, node, bag_seconds / options.rate, min_share)
    if overload:
        warnings.append(overload)
    pairs = result['input_pairs']
    return {
        'verdict': replay_verdict(result, node, bag_seconds / options.rate, options.rate,
                                  min_share),
        'frame_period_ms': bag_seconds / options.rate / pairs * 1e3 if pairs else None,
        'min_fused_share': min_share,
        'fused_share_over_time': runner.tracker.fused_share_over_time(),
        'platform': platform_info(node),
        'process_cpu': None if options.external else {
            'covers': 'the in-process node and the replay publisher', 'seconds':
            round(cpu_seconds, 2), 'wall_seconds': round(wall, 2),
            'cores': round(cpu_seconds / wall, 2) if wall > 0 else None},
        'mode': 'external' if options.external else 'in-process',
        'node_name': options.node_name if options.external else '/' + NODE_NAME,
        'rate': options.rate,
        'loops': options.loop,
        'interrupted': runner.interrupted,
        'topics': {role: {'bag': topic, 'published_on': INPUT_TOPICS[role]}
                   for role, topic in topics.by_role().items()},
        'sync': {'queue_size': queue_size, 'slop': slop, 'thermal_time_offset': offset},
        'warmup_seconds': warmup_s,
        'bag_seconds': bag_seconds,
        'planned_wall_seconds': bag_seconds / options.rate,
        'publish_wall_seconds': publish_wall,
        'wall_seconds': runner.wall_end - runner.wall_start,
        'published': dict(runner.published),
        'publish_lag_ms': counted_percentiles(runner.publish_lag_ms),
        'result': result,
        'node': node,
        'warnings': warnings,
    }


def _min_fused_share(options):
    """diagnostics.min_fused_share as the in-process node gets it (else the default)."""
    values = parse_set_values(getattr(options, 'set_values', None) or [])
    return values.get('diagnostics.min_fused_share',
                      PARAMETERS_BY_NAME['diagnostics.min_fused_share'].default)
