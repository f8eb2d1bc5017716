# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion node: synchronised thermal + RGB in, fused frames out (the thin ROS shell).

A managed (lifecycle) node: configure reads and checks the parameters and creates the
publishers; activate loads and warms up the model, starts the semantics thread and the worker
and creates the subscriptions; deactivate undoes activate (the model is freed); cleanup drops
the publishers; shutdown joins every thread. With ``autostart`` (default) the node configures
and activates itself in its constructor, so ``fusion_node`` runs as a plain node would.

Threads (while active):
- the executor thread runs subscriptions; the pairing callback only checks the pair and drops
  it into a one-slot mailbox (it never runs the model);
- the fusion worker owns the engine, fuses the newest pair and publishes;
- the semantics refresher (inside the engine's Semantic Information Generator) describes the
  scene in the background; the worker only reads its latest snapshot.

All ages and latencies use the node clock (sim-time aware); processing times are monotonic.
"""

import json
import os
import sys
import threading
import time
import weakref

import cv2
import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, qos_profile_sensor_data,
                       ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from tesg_ros import debug_images, image_codec
from tesg_ros.engine import (EngineSettings, FusionEngine, registration_config, resolve_device,
                             thermal_config)
from tesg_ros.errors import CalibrationError, ConfigError, TesgError
from tesg_ros.mailbox import LatestMailbox
from tesg_ros.node_params import NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME
from tesg_ros.stats import RateMeter, RunningStats

_PARAMETER_TYPES = {
    'bool': ParameterType.PARAMETER_BOOL,
    'int': ParameterType.PARAMETER_INTEGER,
    'double': ParameterType.PARAMETER_DOUBLE,
    'string': ParameterType.PARAMETER_STRING,
    'double_array': ParameterType.PARAMETER_DOUBLE_ARRAY,
}

# Parameters whose change needs the pairing policy rebuilt (it has no setters).
_SYNC_PARAMETERS = {'sync.queue_size', 'sync.slop', 'thermal.time_offset'}

# Per-frame stages timed by the worker, in order (ms): wait in the mailbox, decode of both
# messages, the engine's own stages, building the output messages, publishing them.
STAGES = ('wait', 'decode', 'normalise', 'register', 'semantics', 'network', 'colour',
          'message', 'publish')

_SUCCESS = TransitionCallbackReturn.SUCCESS
_FAILURE = TransitionCallbackReturn.FAILURE


def _descriptor(spec):
    descriptor = ParameterDescriptor(
        description=spec.description, type=_PARAMETER_TYPES[spec.kind],
        read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.kind == 'double' and spec.minimum is not None and spec.maximum is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    if spec.kind == 'int' and spec.minimum is not None and spec.maximum is not None:
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return descriptor


def _stamp_ns(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def resolve_sync_backend(requested, thermal_time_offset):
    """Pick the pairing implementation: 'message_filters' or 'builtin'.

    'auto' prefers message_filters when importable, except with a non-zero thermal time
    offset, which only the builtin policy supports.
    """
    if requested == 'builtin':
        return 'builtin'
    try:
        import message_filters  # noqa: F401
    except ImportError:
        if requested == 'message_filters':
            raise ConfigError('sync.backend: message_filters is not importable here; install '
                              'ros-<distro>-message-filters or use builtin') from None
        return 'builtin'
    if thermal_time_offset != 0.0:
        if requested == 'message_filters':
            raise ConfigError('thermal.time_offset needs sync.backend builtin or auto: '
                              'message_filters has no per-input offset')
        return 'builtin'
    return 'message_filters'


def resolve_torch_threads(requested, available=None):
    """torch CPU threads for ``model.threads``: itself when > 0; for 0 (auto) one fewer than the
    CPUs this process may run on, at least 1.

    The spare core keeps the executor, DDS and camera drivers from pre-empting an OpenMP
    thread: torch's spinning barriers then stall every parallel op, and on 2 cores the
    network ran 17x slower with 2 threads than with 1 while one other process was busy
    (docs/benchmarks.md). ``available`` overrides the CPU count (tests).
    """
    if requested > 0:
        return requested
    if available is None:
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            available = os.cpu_count() or 1
    return max(1, available - 1)


def make_synchronizer(backend, queue_size, slop, thermal_time_offset):
    """Return ``(thermal_input, rgb_input, synchronizer)`` for a resolved backend.

    The inputs are filters the subscription callbacks feed with ``signalMessage(msg)``.
    """
    if backend == 'message_filters':
        import message_filters
        inputs = [message_filters.SimpleFilter(), message_filters.SimpleFilter()]
        synchronizer = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
    else:
        from tesg_ros.pairing import ApproximateTimeSynchronizer, InputFilter
        inputs = [InputFilter(), InputFilter()]
        synchronizer = ApproximateTimeSynchronizer(inputs, queue_size, slop,
                                                   thermal_time_offset=thermal_time_offset)
    return inputs[0], inputs[1], synchronizer


class FusionNode(LifecycleNode):
    """Thermal + RGB → fused image node (see the module docstring for states and threads)."""

    def __init__(self, node_name=NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        # Raw declared values until configure checks them (the parameter callback needs a base).
        self._params = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self._lifecycle_state = 'unconfigured'
        self._transition_error = None

        self._lock = threading.Lock()  # guards counters and caches, never held while fusing
        self._counters = {key: 0 for key in (
            'thermal_received', 'rgb_received', 'thermal_zero_stamp', 'rgb_zero_stamp',
            'thermal_bad_encoding', 'rgb_bad_encoding', 'pairs', 'dropped_stale',
            'dropped_out_of_order', 'dropped_bad_input', 'dropped_error', 'published')}
        self._error_kinds = {}
        self._last_error = ''
        self._warned = set()
        self._rates = {name: RateMeter() for name in ('thermal', 'rgb', 'pairs', 'published')}
        self._pair_dt = RunningStats()
        self._processing_ms = RunningStats()
        self._network_ms = RunningStats()
        self._arrival_to_publish_ms = RunningStats()
        self._latency_ms = RunningStats()
        self._stage_ms = {stage: RunningStats() for stage in STAGES}
        self._last_published_stamp = None
        self._rgb_info = None
        self._thermal_info = None

        self.engine = None
        self._fused_pub = self._fused_info_pub = self._semantics_pub = None
        self._compressed_pub = self._debug_masks_pub = self._debug_weights_pub = None
        self._weights_asked = False
        self._geometry = _GeometryState()
        self._diagnostics_pub = self._diagnostics_timer = None
        self._input_subscriptions = []
        self._sync_lock = threading.Lock()
        self._thermal_input = self._rgb_input = self._synchronizer = None
        self._sync_backend = ''
        self._mailbox = LatestMailbox()
        self._mailbox.close()  # a fresh one opens on activate
        self._dropped_busy_before = 0  # overwritten pairs of earlier activations
        self._dropped_late_before = 0  # pairs that waited too long, earlier activations
        self._worker = None
        self._semantics_seen = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.get_parameter('autostart').value:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    @property
    def lifecycle_state(self):
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._lifecycle_state

    def start(self):
        """Configure and activate now; re-raise the reason (e.g. a ConfigError) on failure."""
        for name, trigger in (('configure', self.trigger_configure),
                              ('activate', self.trigger_activate)):
            self._transition_error = None
            if trigger() != _SUCCESS:
                error = self._transition_error
                if isinstance(error, Exception):
                    raise error
                raise ConfigError(f'{self.get_name()}: {name} failed (see the log)')

    def on_configure(self, state):
        """Read and check every parameter, create the publishers and the pairing policy."""
        try:
            params = {spec.name: self._read_parameter(spec) for spec in PARAMETERS}
            problem = _cross_check(params)
            if problem:
                raise ConfigError(problem)
            _check_engine_settings(params)
            resolve_sync_backend(params['sync.backend'], params['thermal.time_offset'])
        except TesgError as error:
            return self._transition_failed('configure', error)
        except Exception as error:  # noqa: BLE001 - rclpy would swallow it without a word
            self._transition_failed('configure', error)
            return TransitionCallbackReturn.ERROR
        self._params = params
        output_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                                depth=params['qos.output_depth'],
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
        overrides = QoSOverridingOptions.with_default_policies()
        self._fused_pub = self.create_lifecycle_publisher(
            Image, 'fused/image', output_qos, qos_overriding_options=overrides)
        self._fused_info_pub = self.create_lifecycle_publisher(
            CameraInfo, 'fused/camera_info', output_qos, qos_overriding_options=overrides)
        if params['semantics.mode'] != 'replay':
            self._semantics_pub = self.create_lifecycle_publisher(String, 'semantics',
                                                                  _LATCHED_QOS)
        self._create_extra_outputs(output_qos, overrides)
        # Diagnostics report every state, inactive included.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(params['diagnostics.period'],
                                                    self._publish_diagnostics)
        self._build_synchronizer()
        self._lifecycle_state = 'inactive'
        return super().on_configure(state)

    def on_activate(self, state):
        """Load and warm up the model, start the worker, then subscribe."""
        threads = resolve_torch_threads(self._params['model.threads'])
        try:
            self.engine = FusionEngine(
                EngineSettings.from_params(dict(self._params, **{'model.threads': threads})),
                logger=self.get_logger())
        except TesgError as error:
            return self._transition_failed('activate', error)
        except Exception as error:  # noqa: BLE001 - e.g. a torch error: log it, then on_error
            self._transition_failed('activate', error)
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(
            f'fusion engine ready on {self.engine.device} ({self.engine.dtype_name}); '
            f'weights: {self.engine.weights_path}' + _backend_note(self.engine))
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._semantics_seen = None
        self._mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, args=(self._mailbox,),
                                        name='tesg_fusion_worker', daemon=True)
        self._worker.start()
        self._create_subscriptions()
        self._lifecycle_state = 'active'
        return result

    def on_deactivate(self, state):
        """Unsubscribe, join the worker and the semantics thread, free the model."""
        self._stop_processing()
        self._lifecycle_state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        """Drop the publishers, the pairing policy and the per-stream state."""
        self._destroy_outputs()
        self._lifecycle_state = 'unconfigured'
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        """From any state: stop and join everything, drop the publishers."""
        self._stop_processing()
        self._destroy_outputs()
        self._lifecycle_state = 'finalized'
        return super().on_shutdown(state)

    def on_error(self, state):
        """A transition raised: release everything and return to unconfigured."""
        self._stop_processing()
        self._destroy_outputs()
        self._lifecycle_state = 'unconfigured'
        return _SUCCESS

    def shutdown(self):
        """Shut the node down (lifecycle shutdown) and join its threads; call before destroy."""
        if self._lifecycle_state != 'finalized' and self.context.ok():
            try:
                self.trigger_shutdown()
            except Exception as error:  # noqa: BLE001 - rclpy raises RCLError mid-transition
                self.get_logger().warning(f'lifecycle shutdown transition failed: {error}')
        # After Ctrl-C the context is already shut down and a transition cannot announce
        # itself; release the threads and the model directly.
        self._stop_processing()
        self._lifecycle_state = 'finalized'

    def _transition_failed(self, name, error):
        self._transition_error = error
        kind = '' if isinstance(error, TesgError) else f' ({type(error).__name__})'
        self.get_logger().error(f'{name} failed{kind}: {error}')
        return _FAILURE

    def _create_subscriptions(self):
        params = self._params
        sensor_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=params['qos.input_depth'],
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability)
        overrides = QoSOverridingOptions.with_default_policies()
        subscriptions = []
        if params['semantics.mode'] == 'replay':
            subscriptions.append(self.create_subscription(
                String, 'semantics', self._on_recorded_semantics, _LATCHED_QOS))
        subscriptions.append(self.create_subscription(String, '~/prompt', self._on_prompt, 10))
        # image_transport naming: the compressed stream of 'x/image' is 'x/image/compressed'.
        for kind, callback in (('thermal', self._on_thermal), ('rgb', self._on_rgb)):
            if params[f'{kind}.transport'] == 'compressed':
                subscriptions.append(self.create_subscription(
                    CompressedImage, f'{kind}/image/compressed', callback, sensor_qos,
                    qos_overriding_options=overrides))
            else:
                subscriptions.append(self.create_subscription(
                    Image, f'{kind}/image', callback, sensor_qos,
                    qos_overriding_options=overrides))
        subscriptions.append(self.create_subscription(
            CameraInfo, 'thermal/camera_info', self._on_thermal_info, sensor_qos))
        subscriptions.append(self.create_subscription(
            CameraInfo, 'rgb/camera_info', self._on_rgb_info, sensor_qos))
        self._input_subscriptions = subscriptions

    def _stop_processing(self):
        """Undo activate; idempotent (deactivate, shutdown and error all call it)."""
        subscriptions, self._input_subscriptions = self._input_subscriptions, []
        for subscription in subscriptions:
            self.destroy_subscription(subscription)
        self._mailbox.close()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout=30.0)
            if worker.is_alive():
                self.get_logger().error('the fusion worker did not stop within 30 s')
        self._dropped_busy_before += self._mailbox.overwritten
        self._dropped_late_before += self._mailbox.expired
        self._mailbox = LatestMailbox()
        self._mailbox.close()
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()  # joins the semantics thread
            on_cuda = engine.device.type == 'cuda'
            del engine
            if on_cuda:
                import torch
                torch.cuda.empty_cache()

    def _destroy_outputs(self):
        self._destroy_extra_outputs()
        for name in ('_fused_pub', '_fused_info_pub', '_semantics_pub'):
            publisher = getattr(self, name)
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        with self._sync_lock:
            self._thermal_input = self._rgb_input = self._synchronizer = None
            self._sync_backend = ''
        self._rgb_info = self._thermal_info = None
        self._last_published_stamp = None

    # ------------------------------------------------------------------ parameters
    def _read_parameter(self, spec):
        value = self.get_parameter(spec.name).value
        try:
            return spec.validate(value)
        except ConfigError as error:
            raise ConfigError(f'parameter {error}') from None

    def _on_set_parameters(self, parameters):
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is None:
                continue  # use_sim_time, qos_overrides.* and friends are rclpy's business
            try:
                updates[spec.name] = spec.validate(parameter.value)
            except ConfigError as error:
                return SetParametersResult(successful=False, reason=str(error))
        merged = dict(self._params, **updates)
        problem = _cross_check(merged)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        try:
            if _SYNC_PARAMETERS & updates.keys():
                resolve_sync_backend(merged['sync.backend'], merged['thermal.time_offset'])
            engine = self.engine
            if engine is not None:
                engine.update_settings(merged)
            else:
                _check_engine_settings(merged, device=False)
        except TesgError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._params = merged
        if _SYNC_PARAMETERS & updates.keys() and self._synchronizer is not None:
            self._build_synchronizer()
        return SetParametersResult(successful=True)

    def _build_synchronizer(self):
        """(Re)build the pairing policy atomically; pending unpaired frames are discarded."""
        offset = self._params['thermal.time_offset']
        backend = resolve_sync_backend(self._params['sync.backend'], offset)
        thermal_input, rgb_input, synchronizer = make_synchronizer(
            backend, self._params['sync.queue_size'], self._params['sync.slop'], offset)
        synchronizer.registerCallback(self._on_pair)
        with self._sync_lock:
            self._thermal_input, self._rgb_input = thermal_input, rgb_input
            self._synchronizer, self._sync_backend = synchronizer, backend

    # ------------------------------------------------------------------ inputs
    def _check_input(self, msg, kind):
        """Count the message; return False (and count why) if it cannot be paired."""
        with self._lock:
            self._counters[f'{kind}_received'] += 1
        self._rates[kind].tick(time.monotonic())
        if msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0:
            with self._lock:
                self._counters[f'{kind}_zero_stamp'] += 1
            self._warn_once(f'{kind}_zero_stamp',
                            f'{kind} image with a zero stamp: dropped (check the driver)')
            return False
        if not msg.header.frame_id:
            fallback = self._params[f'{kind}.frame_id']
            self._warn_once(f'{kind}_frame_id',
                            f'{kind} images have an empty frame_id; using "{fallback}"')
            msg.header.frame_id = fallback
        return True

    def _on_thermal(self, msg):
        if self._check_input(msg, 'thermal'):
            with self._sync_lock:
                target = self._thermal_input
            if target is not None:
                target.signalMessage(msg)

    def _on_rgb(self, msg):
        if self._check_input(msg, 'rgb'):
            with self._sync_lock:
                target = self._rgb_input
            if target is not None:
                target.signalMessage(msg)

    def _on_thermal_info(self, msg):
        self._thermal_info = msg

    def _on_rgb_info(self, msg):
        self._rgb_info = msg

    def _on_prompt(self, msg):
        engine = self.engine
        if engine is not None:
            engine.set_operator_prompt(msg.data)

    def _on_recorded_semantics(self, msg):
        engine = self.engine
        if engine is None:
            return
        try:
            engine.set_recorded_semantics(json.loads(msg.data))
        except (ValueError, TesgError) as error:
            self._record_error('bad_semantics', f'recorded semantics rejected: {error}')

    def _on_pair(self, thermal_msg, rgb_msg):
        """Synchroniser callback: check and hand over; never fuse here."""
        dt = abs(_stamp_ns(thermal_msg.header) - _stamp_ns(rgb_msg.header)) / 1e9
        self._pair_dt.add(dt)
        self._rates['pairs'].tick(time.monotonic())
        with self._lock:
            self._counters['pairs'] += 1
        self._mailbox.put((thermal_msg, rgb_msg, time.monotonic()))

    # ------------------------------------------------------------------ worker
    def _work(self, mailbox):
        engine = self.engine  # this activation's engine; deactivate joins before freeing it
        while not mailbox.closed:
            item = mailbox.take(timeout=0.5, max_wait=self._params['worker.max_wait'])
            if item is None:
                continue
            try:
                self._process(engine, *item, taken_monotonic=time.monotonic())
            except TesgError as error:
                self._count_drop('dropped_bad_input')
                self._record_error(type(error).__name__, str(error))
            except Exception as error:  # noqa: BLE001 - the worker must survive anything
                self._count_drop('dropped_error')
                self._record_error(type(error).__name__, f'fusion failed: {error!r}')

    def _process(self, engine, thermal_msg, rgb_msg, paired_monotonic, taken_monotonic):
        stamp = _stamp_ns(rgb_msg.header)
        if self._last_published_stamp is not None and stamp <= self._last_published_stamp:
            self._count_drop('dropped_out_of_order')
            return
        max_age = self._params['worker.max_pair_age']
        if max_age > 0.0:
            age = (self.get_clock().now().nanoseconds - stamp) / 1e9
            if age > max_age:
                self._count_drop('dropped_stale')
                return
        start = time.monotonic()
        try:
            thermal, thermal_valid = image_codec.thermal_to_array(thermal_msg)
        except TesgError:
            with self._lock:
                self._counters['thermal_bad_encoding'] += 1
            raise
        try:
            rgb_bgr = image_codec.visible_to_bgr8(rgb_msg)
        except TesgError:
            with self._lock:
                self._counters['rgb_bad_encoding'] += 1
            raise
        decoded = time.monotonic()
        self._update_geometry(engine)
        result = engine.process(thermal, rgb_bgr, thermal_valid=thermal_valid,
                                want_weights=self._want_weights())
        fused = time.monotonic()
        encoding = self._params['output.encoding']
        pixels = result.bgr if encoding == 'bgr8' else cv2.cvtColor(result.bgr,
                                                                    cv2.COLOR_BGR2RGB)
        image = image_codec.numpy_to_image(pixels, encoding, header=rgb_msg.header)
        info = engine.output_camera_info(self._rgb_info, rgb_msg.header,
                                         result.bgr.shape[1], result.bgr.shape[0])
        built = time.monotonic()
        self._fused_pub.publish(image)
        self._fused_info_pub.publish(info)
        self._publish_extra_outputs(result, rgb_msg.header)
        self._last_published_stamp = stamp
        finished = time.monotonic()
        stage_ms = dict(result.timings_ms, wait=(taken_monotonic - paired_monotonic) * 1e3,
                        decode=(decoded - start) * 1e3, message=(built - fused) * 1e3,
                        publish=(finished - built) * 1e3)
        for stage, stats in self._stage_ms.items():
            stats.add(stage_ms.get(stage, 0.0))
        self._processing_ms.add((finished - start) * 1e3)
        self._network_ms.add(result.timings_ms['network'])
        self._arrival_to_publish_ms.add((finished - paired_monotonic) * 1e3)
        self._latency_ms.add((self.get_clock().now().nanoseconds - stamp) / 1e6)
        self._rates['published'].tick(finished)
        with self._lock:
            self._counters['published'] += 1
        self._publish_semantics_if_new(engine)

    def _publish_semantics_if_new(self, engine):
        if self._semantics_pub is None:
            return
        snapshot = engine.semantics_snapshot()
        if snapshot is None or snapshot is self._semantics_seen:
            return
        self._semantics_seen = snapshot
        self._semantics_pub.publish(String(data=json.dumps(snapshot)))

    def _count_drop(self, key):
        with self._lock:
            self._counters[key] += 1

    def _record_error(self, kind, message):
        with self._lock:
            first = kind not in self._error_kinds
            self._error_kinds[kind] = self._error_kinds.get(kind, 0) + 1
            self._last_error = message
        if first:
            self.get_logger().error(f'{message} (further {kind} errors are only counted)')

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(message)

    # ------------------------------------------------------------------ extra outputs, geometry
    def _create_extra_outputs(self, output_qos, overrides):
        """fused/image/compressed and the debug images (computed only while subscribed), and
        the TF listener of plane registration."""
        self._compressed_pub = self.create_lifecycle_publisher(
            CompressedImage, 'fused/image/compressed', output_qos,
            qos_overriding_options=overrides)
        self._debug_masks_pub = self.create_lifecycle_publisher(Image, '~/debug/masks',
                                                                output_qos)
        self._debug_weights_pub = self.create_lifecycle_publisher(Image, '~/debug/weights',
                                                                  output_qos)
        self._geometry = _GeometryState(_extrinsics_source(self._params))
        if self._geometry.source == 'tf':
            import tf2_ros  # importable: _check_engine_settings checked it
            self._geometry.tf_buffer = tf2_ros.Buffer()
            self._geometry.tf_listener = tf2_ros.TransformListener(self._geometry.tf_buffer,
                                                                   self)

    def _destroy_extra_outputs(self):
        for name in ('_compressed_pub', '_debug_masks_pub', '_debug_weights_pub'):
            publisher = getattr(self, name)
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)
        listener = self._geometry.tf_listener
        if listener is not None:
            listener.unregister()
        self._geometry = _GeometryState()

    def _publish_extra_outputs(self, result, header):
        """Each extra output costs nothing while nobody subscribes to it."""
        if _has_subscribers(self._compressed_pub):
            self._compressed_pub.publish(image_codec.numpy_to_compressed(
                result.bgr, 'bgr8; jpeg compressed bgr8', header=header,
                message_class=CompressedImage, jpeg_quality=self._params['output.jpeg_quality']))
        if _has_subscribers(self._debug_masks_pub):
            masks = result.phrase_masks if result.phrase_masks is not None else result.masks
            self._debug_masks_pub.publish(image_codec.numpy_to_image(
                debug_images.mask_overlay(result.bgr, masks), 'bgr8', header=header))
        if _has_subscribers(self._debug_weights_pub):
            if result.weights is None:
                if self._weights_asked:  # e.g. a network backend without intermediates
                    self._warn_once('debug_weights', '~/debug/weights is subscribed but '
                                    'the network backend gives no infrared-share map')
                return
            self._debug_weights_pub.publish(image_codec.numpy_to_image(
                debug_images.weights_image(result.weights), '32FC1', header=header))

    def _want_weights(self):
        self._weights_asked = _has_subscribers(self._debug_weights_pub)
        return self._weights_asked

    def _update_geometry(self, engine):
        """Plane registration: hand the engine the latest CameraInfo and, from TF, the
        extrinsics (looked up at most once a second); the engine rebuilds only on change."""
        geometry = self._geometry
        if self._params['registration.mode'] != 'plane':
            return
        if geometry.engine() is not engine:  # a new activation: feed everything again
            geometry.reset(engine)
            if geometry.source == 'tf':
                engine.set_extrinsics(waiting='no TF lookup yet')
        infos = (self._thermal_info, self._rgb_info)
        if any(new is not old for new, old in zip(infos, geometry.fed_infos)):
            try:
                engine.set_camera_info(*infos)
            except TesgError as error:
                self._record_error('camera_info', f'CameraInfo rejected: {error}')
            geometry.fed_infos = infos
        if geometry.source != 'tf':
            return
        now = time.monotonic()
        if now - geometry.last_lookup < 1.0 and geometry.have_extrinsics:
            return
        geometry.last_lookup = now
        source_frame = ((infos[0].header.frame_id if infos[0] is not None else '')
                        or self._params['thermal.frame_id'])
        target_frame = ((infos[1].header.frame_id if infos[1] is not None else '')
                        or self._params['rgb.frame_id'])
        if not source_frame or not target_frame:
            engine.set_extrinsics(waiting='TF needs the frame_id of both CameraInfo topics '
                                  '(or thermal.frame_id / rgb.frame_id)')
            return
        import tf2_ros
        try:
            transform = geometry.tf_buffer.lookup_transform(target_frame, source_frame,
                                                            rclpy.time.Time())
            from tesg_ros.registration import extrinsics_from_transform
            rotation, translation = extrinsics_from_transform(transform)
        except (tf2_ros.TransformException, TesgError) as error:
            geometry.tf_error = f'{target_frame} <- {source_frame}: {error}'
            if not geometry.have_extrinsics:  # else keep the last good transform
                engine.set_extrinsics(waiting=f'no TF {geometry.tf_error}')
            return
        geometry.tf_error = ''
        geometry.have_extrinsics = True
        engine.set_extrinsics(rotation, translation)

    def _registration_status(self, values, level, message):
        """Registration refusing to build (e.g. identity across aspect ratios): an ERROR
        status naming why, logged once per distinct reason; waiting for calibration: WARN."""
        error = values.get('registration_error', '')
        if self._geometry.tf_error:
            values['registration_tf_error'] = self._geometry.tf_error
        if not error or self._lifecycle_state != 'active':
            return level, message
        waiting = 'waits for' in error
        if error != self._geometry.logged_error:
            self._geometry.logged_error = error
            log = self.get_logger().warning if waiting else self.get_logger().error
            log(f'no fused output: {error}')
        if waiting:
            return max(level, DiagnosticStatus.WARN), f'no fused output: {error}'
        return DiagnosticStatus.ERROR, f'no fused output: {error}'

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_snapshot(self):
        """Everything /diagnostics reports, as a flat dict (also used by tests)."""
        now = time.monotonic()
        with self._lock:
            values = dict(self._counters)
            values['error_kinds'] = dict(self._error_kinds)
            values['last_error'] = self._last_error
        values['lifecycle_state'] = self._lifecycle_state
        for name, meter in self._rates.items():
            values[f'{name}_rate_hz'] = meter.rate(now)
        values['pair_dt_s'] = self._pair_dt.summary()
        values['processing_ms'] = self._processing_ms.summary()
        values['network_ms'] = self._network_ms.summary()
        values['arrival_to_publish_ms'] = self._arrival_to_publish_ms.summary()
        values['latency_ms'] = self._latency_ms.summary()
        values['stage_ms'] = {stage: _p50_p99(stats.summary())
                              for stage, stats in self._stage_ms.items()}
        values['dropped_busy'] = self._dropped_busy_before + self._mailbox.overwritten
        values['dropped_late'] = self._dropped_late_before + self._mailbox.expired
        values['sync_backend'] = self._sync_backend
        pairing_counters = getattr(self._synchronizer, 'counters', None)
        if callable(pairing_counters):  # the builtin policy counts what message_filters cannot
            values['pairing'] = pairing_counters().as_dict()
        for kind, info in (('rgb', self._rgb_info), ('thermal', self._thermal_info)):
            values[f'{kind}_camera_info'] = 'none received' if info is None else (
                f'{info.width}x{info.height}, ' + ('calibrated' if info.k[0] else 'uncalibrated'))
        engine = self.engine
        if engine is not None:
            values.update(engine.diagnostics())
        return values

    def _overload_check(self, values):
        """Overload warning over the pairs since the previous diagnostics message."""
        now = (values['pairs'], values['published'])
        before = getattr(self, '_overload_seen', None) or now
        self._overload_seen = now
        pairs, fused = now[0] - before[0], now[1] - before[1]
        values['period_fused_share'] = round(fused / pairs, 3) if pairs else None
        if not values['processing_ms'].get('count'):
            return ''  # nothing fused yet: 'no fused frame published yet' says it
        message = overload_message(pairs, fused, self._params['diagnostics.min_fused_share'],
                                   values['processing_ms']['p50'], values['pairs_rate_hz'])
        if message:
            self._warn_once('overload', message)
        return message

    def _publish_diagnostics(self):
        publisher = self._diagnostics_pub
        if publisher is None:
            return
        values = self.diagnostics_snapshot()
        pair_rate = values['pairs_rate_hz']
        level, message = DiagnosticStatus.OK, 'fusing'
        if self._lifecycle_state != 'active':
            message = f'{self._lifecycle_state}: no fused output until activated'
        elif values['published'] == 0:
            level, message = DiagnosticStatus.WARN, 'no fused frame published yet'
        elif pair_rate < self._params['diagnostics.expected_pair_rate'] * 0.5:
            level, message = DiagnosticStatus.WARN, f'pair rate {pair_rate:.1f} Hz is low'
        overload = self._overload_check(values)
        if overload and self._lifecycle_state == 'active':
            level = DiagnosticStatus.WARN
            message = overload if message == 'fusing' else f'{message}; {overload}'
        if values.get('backend_fallback'):
            level = max(level, DiagnosticStatus.WARN)
            message += f'; {values["backend_fallback"]}'
        if values['last_error']:
            message += f'; last error: {values["last_error"]}'
        level, message = self._registration_status(values, level, message)
        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: fusion', message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=key, value=_format_value(value))
                    for key, value in sorted(values.items())])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        publisher.publish(array)


class _GeometryState:
    """Per-configuration state of plane registration's inputs (worker thread only)."""

    def __init__(self, source=''):
        self.source = source  # 'tf', 'parameters' or '' (not plane mode)
        self.tf_buffer = self.tf_listener = None
        self.logged_error = ''
        self.reset(None)

    def reset(self, engine):
        # A weak reference: deactivate must be able to free the engine (and its GPU memory).
        self.engine = (lambda: None) if engine is None else weakref.ref(engine)
        self.fed_infos = (None, None)
        self.last_lookup = -1e9
        self.have_extrinsics = False
        self.tf_error = ''


def _has_subscribers(publisher):
    return publisher is not None and publisher.get_subscription_count() > 0


def _tf2_importable():
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def _extrinsics_source(params):
    """'tf' or 'parameters' for plane registration, '' in the other modes."""
    if params['registration.mode'] != 'plane':
        return ''
    source = params['registration.extrinsics.source']
    if source == 'auto':
        return 'tf' if _tf2_importable() else 'parameters'
    return source


def overload_message(pairs, fused, min_share, fusion_ms, pair_rate_hz):
    """The overload warning when ``fused`` of ``pairs`` (one diagnostics period) is below
    ``min_share``, else ''. ``fusion_ms``: the worker's p50 time per fused pair."""
    if min_share <= 0.0 or pairs < 3 or fused >= min_share * pairs:
        return ''
    period = f'{1e3 / pair_rate_hz:.0f} ms' if pair_rate_hz > 0 else 'unknown'
    return (f'overloaded: fused {fused} of {pairs} pairs ({fused / pairs:.0%}, below '
            f'{min_share:.0%}); fusion takes {fusion_ms:.0f} ms per pair against a frame '
            f'period of {period} (consider model.max_pixels, model.backend, a GPU)')


def _backend_note(engine):
    ort = getattr(engine, 'ort', None)
    if ort is None:
        return ''
    return f'; backend onnxruntime ({", ".join(ort.providers)})'


_LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _cross_check(params):
    """The reason a combination of parameter values is invalid, or '' when it is fine."""
    if params['thermal.percentile_low'] >= params['thermal.percentile_high']:
        return 'thermal.percentile_low must be below thermal.percentile_high'
    if params['thermal.fixed_low'] >= params['thermal.fixed_high']:
        return 'thermal.fixed_low must be below thermal.fixed_high'
    if not any(params.get('registration.plane.normal', (1.0,))):
        return 'registration.plane.normal must be a non-zero vector'
    return ''


def _check_engine_settings(params, device=True):
    """Raise ConfigError for settings the engine would reject, without loading the model.

    The registration maps themselves need the image sizes and are built at the first pair.
    """
    from tesg_ros.registration import check_invertible, load_homography_file, resolve_config_path
    from tesg_ros.thermal import ThermalNormalizer

    ThermalNormalizer.from_config(thermal_config(params))
    if device and params.get('model.backend', 'torch') == 'torch':
        resolve_device(params['model.device'], params['model.half'])  # ONNX Runtime falls back
    registration = registration_config(params)
    _check_plane_settings(params, registration)
    if registration.get('homography_file'):
        load_homography_file(resolve_config_path(registration['homography_file'],
                                                 'registration.file'))
    elif registration['mode'] == 'homography':
        try:  # the registration's own test, so a value passes here iff it builds later
            check_invertible(registration['homography'])
        except CalibrationError as error:
            raise ConfigError(f'registration.homography: {error}') from None


def _check_plane_settings(params, registration):
    """ConfigError for a plane configuration that cannot work, before any image arrives."""
    if registration['mode'] != 'plane':
        return
    from tesg_ros.registration import rotation_from_spec

    if params['registration.file']:
        raise ConfigError('registration.file is a homography; it is not used with '
                          'registration.mode plane (set one or the other)')
    if params['registration.extrinsics.source'] == 'tf' and not _tf2_importable():
        raise ConfigError('registration.extrinsics.source tf needs tf2_ros, which is not '
                          'importable here; install ros-<distro>-tf2-ros or use parameters')
    if not any(params['registration.plane.normal']):
        raise ConfigError('registration.plane.normal must be a non-zero vector')
    rotation_from_spec(rpy=registration['extrinsics']['rpy'],
                       prefix='registration.extrinsics')


def _p50_p99(summary):
    if not summary.get('count'):
        return {'count': 0}
    return {'count': summary['count'], 'p50': round(summary['p50'], 2),
            'p99': round(summary['p99'], 2)}


def _format_value(value):
    if isinstance(value, float):
        return f'{value:.4g}'
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def main(args=None):
    """Console script ``fusion_node``: accepts the usual ``--ros-args`` (params file, remaps).

    With ``autostart`` true (default) the node activates itself; with false it waits,
    unconfigured, for a lifecycle manager (``ros2 lifecycle set``, launch_ros, nav2's).
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = FusionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (TesgError, ParameterException) as error:
        # Configuration errors end the process with one clear line, not a traceback.
        print(f'tesg_fusion: {error}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
