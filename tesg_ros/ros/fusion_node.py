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
- the fusion worker owns the engine and runs the network on the newest pair; with
  ``worker.pipeline`` (default) a finishing thread brings frame N to the camera size, colours
  and publishes it while the worker runs frame N + 1 (without it the worker does both);
- the semantics refresher (inside the engine's Semantic Information Generator) describes the
  scene in the background; the worker only reads its latest snapshot.

All ages and latencies use the node clock (sim-time aware); processing times are monotonic.
"""

from concurrent.futures import ThreadPoolExecutor
import contextlib
from dataclasses import dataclass
import gc
import json
import os
import signal
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
from rclpy.signals import SignalHandlerOptions

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from tesg_ros import debug_images
from tesg_ros.sensor import image_codec
from tesg_ros.engine import EngineSettings, FusionEngine
from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.mailbox import LatestMailbox
from tesg_ros.node_params import NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME
from tesg_ros.sensor.pairing import stamp_to_ns
from tesg_ros.settings import (check_engine_settings, cross_check, extrinsics_source,
                               make_synchronizer, resolve_sync_backend, resolve_torch_threads)
from tesg_ros.sensor.stamp_order import BACKWARD_JUMP, FUTURE, OUT_OF_ORDER, OutputOrder
from tesg_ros.stats import RateMeter, RunningStats

_PARAMETER_TYPES = {
    'bool': ParameterType.PARAMETER_BOOL,
    'int': ParameterType.PARAMETER_INTEGER,
    'double': ParameterType.PARAMETER_DOUBLE,
    'string': ParameterType.PARAMETER_STRING,
    'double_array': ParameterType.PARAMETER_DOUBLE_ARRAY,
}

# Parameters whose change needs the pairing policy rebuilt (it has no setters).
_SYNC_PARAMETERS = {'sync.queue_size', 'sync.slop', 'sync.reorder_window', 'thermal.time_offset'}

# Per-frame stages timed by the worker, in order (ms): wait in the mailbox, decode of both
# messages, the engine's own stages, building the output messages, publishing them.
STAGES = ('wait', 'decode', 'normalise', 'register', 'semantics', 'network', 'handoff',
          'upsample', 'colour', 'message', 'publish')

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
            'thermal_bad_stamp', 'rgb_bad_stamp', 'thermal_bad_encoding', 'rgb_bad_encoding',
            'pairs', 'dropped_stale',
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
        self._init_robustness_state()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Jazzy and later apply a change once every on-set callback accepted it; Humble has
        # no post-set callbacks, so there the validating callback applies it.
        self._apply_on_set = not hasattr(self, 'add_post_set_parameters_callback')
        if not self._apply_on_set:
            self.add_post_set_parameters_callback(self._after_set_parameters)
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
            problem = cross_check(params)
            if problem:
                raise ConfigError(problem)
            check_engine_settings(params)
            resolve_sync_backend(params['sync.backend'], params['thermal.time_offset'],
                                 params['sync.reorder_window'])
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
        self._retire_mailbox()
        self._begin_activation()
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
        self._retire_mailbox()
        self._mailbox = LatestMailbox()
        self._mailbox.close()
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()  # joins the semantics threads (bounded), drops the models
            on_cuda = engine.device.type == 'cuda'
            del engine
            if on_cuda:
                import torch
                torch.cuda.empty_cache()
            _release_memory()

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
        """Validate a change (each value, the combination, the engine's settings); change
        nothing: other callbacks may still reject it (:meth:`_after_set_parameters` applies)."""
        try:
            merged, changed = self._merged_parameters(parameters)
            problem = cross_check(merged)
            if problem:
                raise ConfigError(problem)
            if _SYNC_PARAMETERS & changed:
                resolve_sync_backend(merged['sync.backend'], merged['thermal.time_offset'],
                                     merged['sync.reorder_window'])
            check_engine_settings(merged, device=False)
        except TesgError as error:
            return SetParametersResult(successful=False, reason=str(error))
        if self._apply_on_set:
            self._after_set_parameters(parameters)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters):
        """Apply a change every on-set callback accepted: the engine, then the pairing."""
        merged, changed = self._merged_parameters(parameters)
        engine = self.engine
        if engine is not None:
            try:
                engine.update_settings(merged)
            except TesgError as error:  # validated above: only a file changed under us
                self.get_logger().error(f'parameter change not applied to the engine: {error}')
        self._params = merged
        if _SYNC_PARAMETERS & changed and self._synchronizer is not None:
            self._build_synchronizer()

    def _merged_parameters(self, parameters):
        """(current values with the coerced new ones, names changed); ConfigError if one is
        invalid. Parameters outside the table (use_sim_time, qos_overrides.*) are rclpy's."""
        updates = {}
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            if spec is not None:
                updates[spec.name] = spec.validate(parameter.value)
        return dict(self._params, **updates), updates.keys()

    def _build_synchronizer(self):
        """(Re)build the pairing policy atomically; pending unpaired frames are discarded."""
        offset = self._params['thermal.time_offset']
        window = self._params['sync.reorder_window']
        backend = resolve_sync_backend(self._params['sync.backend'], offset, window)
        thermal_input, rgb_input, synchronizer = make_synchronizer(
            backend, self._params['sync.queue_size'], self._params['sync.slop'], offset, window)
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
        if msg.header.stamp.nanosec >= 1_000_000_000:
            # Not a valid builtin_interfaces/Time: pairing would raise inside the callback.
            with self._lock:
                self._counters[f'{kind}_bad_stamp'] += 1
            self._warn_once(f'{kind}_bad_stamp',
                            f'{kind} image with stamp nanosec={msg.header.stamp.nanosec} '
                            f'(>= 1e9): dropped (check the driver)')
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
        self._info_seen['thermal'] = time.monotonic()

    def _on_rgb_info(self, msg):
        self._rgb_info = msg
        self._info_seen['rgb'] = time.monotonic()

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
        self._rates['pairs'].tick(time.monotonic())
        with self._lock:
            self._counters['pairs'] += 1
        try:  # message_filters pairs stamps whose nanosec is out of range; they stop here
            dt = abs(stamp_to_ns(thermal_msg.header.stamp) - stamp_to_ns(rgb_msg.header.stamp))
        except TesgError as error:
            self._count_drop('dropped_bad_input')
            self._record_error(type(error).__name__, str(error))
            return
        self._pair_dt.add(dt / 1e9)
        self._mailbox.put((thermal_msg, rgb_msg, time.monotonic()))

    # ------------------------------------------------------------------ worker
    def _work(self, mailbox):
        """Take pairs and fuse them. With ``worker.pipeline`` a finishing thread publishes
        frame N while this thread runs the network on frame N + 1; at most one frame waits
        for it, so frames are published in order and the mailbox keeps the newest pair."""
        engine = self.engine  # this activation's engine; deactivate joins before freeing it
        finisher = (ThreadPoolExecutor(1, thread_name_prefix='tesg_fusion_finisher')
                    if self._params['worker.pipeline'] else None)
        finishing = None
        try:
            while not mailbox.closed:
                item = mailbox.take(timeout=0.5, max_wait=self._params['worker.max_wait'])
                if item is None:
                    continue
                frame = self._guarded(mailbox, self._infer, engine, *item,
                                      taken_monotonic=time.monotonic())
                if frame is None:
                    continue
                if finisher is None:
                    self._guarded(mailbox, self._finish, frame)
                    continue
                if finishing is not None:
                    finishing.result()
                finishing = finisher.submit(self._guarded, mailbox, self._finish, frame)
        finally:
            if finisher is not None:
                finisher.shutdown(wait=True)  # the frame in hand is still published

    def _guarded(self, mailbox, step, *args, **kwargs):
        """Run one step of a frame; count and report what fails (the worker survives
        anything), returning None then."""
        try:
            return step(*args, **kwargs)
        except TesgError as error:
            self._count_drop('dropped_bad_input')
            self._record_error(type(error).__name__, str(error))
        except Exception as error:  # noqa: BLE001 - the worker must survive anything
            if mailbox.closed or not self.context.ok():
                self._count_drop('dropped_shutdown')  # the pair in hand when stopped
                return None
            self._count_drop('dropped_error')
            self._record_error(type(error).__name__, f'fusion failed: {error!r}')
        return None

    def _infer(self, engine, thermal_msg, rgb_msg, paired_monotonic, taken_monotonic):
        """Checks, decoding and the network for one pair -> the frame to finish, or None
        when the pair is dropped (out of order, stale)."""
        stamp = stamp_to_ns(rgb_msg.header.stamp)
        if not self._check_order(stamp, paired_monotonic):
            return None
        max_age = self._params['worker.max_pair_age']
        if max_age > 0.0:
            age = (self.get_clock().now().nanoseconds - stamp) / 1e9
            if age > max_age:
                self._count_drop('dropped_stale')
                return None
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
        inferred = engine.infer(thermal, rgb_bgr, thermal_valid=thermal_valid,
                                want_weights=self._want_weights())
        height, width = inferred.visible.shape[:2]
        info = engine.output_camera_info(self._rgb_info, rgb_msg.header, width, height)
        return _InHand(inferred=inferred, header=rgb_msg.header, stamp=stamp, info=info,
                       semantics=engine.semantics_snapshot(), paired=paired_monotonic,
                       taken=taken_monotonic, start=start, decoded=decoded,
                       inferred_at=time.monotonic())

    def _finish(self, frame):
        """The fused image back to the camera size, in colour, published; the statistics."""
        begun = time.monotonic()
        result = FusionEngine.finish(frame.inferred)
        fused = time.monotonic()
        encoding = self._params['output.encoding']
        pixels = result.bgr if encoding == 'bgr8' else cv2.cvtColor(result.bgr,
                                                                    cv2.COLOR_BGR2RGB)
        image = image_codec.numpy_to_image(pixels, encoding, header=frame.header)
        built = time.monotonic()
        self._fused_pub.publish(image)
        self._fused_info_pub.publish(frame.info)
        self._publish_extra_outputs(result, frame.header)
        self._on_published(frame.stamp)
        finished = time.monotonic()
        stage_ms = dict(result.timings_ms, wait=(frame.taken - frame.paired) * 1e3,
                        decode=(frame.decoded - frame.start) * 1e3,
                        handoff=(begun - frame.inferred_at) * 1e3,
                        message=(built - fused) * 1e3, publish=(finished - built) * 1e3)
        for stage, stats in self._stage_ms.items():
            stats.add(stage_ms.get(stage, 0.0))
        self._processing_ms.add((finished - frame.start) * 1e3)
        self._network_ms.add(result.timings_ms['network'])
        self._arrival_to_publish_ms.add((finished - frame.paired) * 1e3)
        self._latency_ms.add((self.get_clock().now().nanoseconds - frame.stamp) / 1e6)
        self._rates['published'].tick(finished)
        with self._lock:
            self._counters['published'] += 1
        self._publish_semantics_if_new(frame.semantics, frame.header.stamp)

    def _publish_semantics_if_new(self, snapshot, stamp=None):
        """Publish ``snapshot`` (the engine's semantics_snapshot() of a frame) if new."""
        if self._semantics_pub is None:
            return
        if snapshot is None or snapshot is self._semantics_seen:
            return
        self._semantics_seen = snapshot
        record = dict(snapshot)
        if stamp is not None:  # the first fused frame these semantics applied to
            record['stamp'] = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        self._semantics_pub.publish(String(data=json.dumps(record)))

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

    # ------------------------------------------------------------------ time jumps, silence
    def _init_robustness_state(self):
        """State of the output-ordering policy and the no-output / missing-image reports."""
        with self._lock:
            self._counters.update({key: 0 for key in (
                'dropped_future', 'dropped_shutdown', 'time_jumps_backward',
                'time_jumps_forward')})
        self._order = OutputOrder(_seconds_ns(self._params['worker.time_jump']))
        self._order_jump_s = self._params['worker.time_jump']
        self._order_clock = 0  # node clock (ns) when the pair in hand was formed
        self._order_logged = {}  # event kind -> monotonic time of its last log line
        self._dropped_shutdown_before = 0  # pairs discarded or refused by closed mailboxes
        self._active_since = None
        self._drops_at_publish = {}
        self._info_seen = {}

    def _begin_activation(self):
        """A new activation starts a new output ordering and a fresh pairing policy, so a
        stale reference (a future stamp, a clock that went back meanwhile) never blocks it."""
        if self._synchronizer is not None:
            self._build_synchronizer()
        jump_s = self._params['worker.time_jump']
        if jump_s != self._order_jump_s:
            self._order = OutputOrder(_seconds_ns(jump_s))
            self._order_jump_s = jump_s
        self._order.reset()
        self._last_published_stamp = None
        self._active_since = time.monotonic()
        self._drops_at_publish = self._drop_totals()

    def _retire_mailbox(self):
        """Add a mailbox's drop counts to the totals of earlier activations (once per mailbox)."""
        mailbox = self._mailbox
        self._dropped_busy_before += mailbox.overwritten
        self._dropped_late_before += mailbox.expired
        self._dropped_shutdown_before += mailbox.discarded + mailbox.rejected
        mailbox.overwritten = mailbox.expired = mailbox.discarded = mailbox.rejected = 0

    def _check_order(self, stamp, paired_monotonic):
        """Apply the output-ordering policy (sensor/stamp_order.py); False drops the pair."""
        jump_s = self._params['worker.time_jump']
        if jump_s != self._order_jump_s:  # changed at runtime: takes effect at once
            self._order = OutputOrder(_seconds_ns(jump_s))
            self._order_jump_s = jump_s
        last = self._order.last_stamp_ns
        # The node clock when the pair was formed, not now: the time a pair waited for a busy
        # worker would otherwise make the next, fresher pair look as if it came from the future.
        waited_ns = int((time.monotonic() - paired_monotonic) * 1e9)
        self._order_clock = self.get_clock().now().nanoseconds - waited_ns
        verdict, jump = self._order.check(stamp, self._order_clock)
        if verdict == OUT_OF_ORDER:
            self._count_drop('dropped_out_of_order')
            return False
        if verdict == FUTURE:
            self._count_drop('dropped_future')
            self._log_order_event(
                'future', f'pair stamped {(stamp - last) / 1e9:.3f} s after the last published '
                'one, far ahead of the node clock: dropped as an outlier (dropped_future); a '
                'second such pair in a row would be taken as a forward time jump')
            return False
        if jump is not None:
            key = 'time_jumps_backward' if jump == BACKWARD_JUMP else 'time_jumps_forward'
            self._count_drop(key)
            direction = 'behind' if jump == BACKWARD_JUMP else 'ahead of'
            self._log_order_event(
                jump, f'time jump: pair stamped {abs(stamp - last) / 1e9:.3f} s {direction} the '
                f'last published one (bound worker.time_jump = {jump_s:g} s): output ordering '
                f'reset ({key} counts these)')
        return True

    def _log_order_event(self, kind, message):
        # One WARN per event, at most one per second per kind: the counters carry the rest.
        now = time.monotonic()
        if now - self._order_logged.get(kind, -1e9) >= 1.0:
            self._order_logged[kind] = now
            self.get_logger().warning(message)

    def _on_published(self, stamp):
        self._last_published_stamp = stamp
        self._order.published(stamp, self._order_clock)
        self._drops_at_publish = self._drop_totals()

    def _drop_totals(self):
        with self._lock:
            totals = {key: value for key, value in self._counters.items()
                      if key.startswith('dropped_')}
        totals['dropped_busy'] = self._dropped_busy_before + self._mailbox.overwritten
        totals['dropped_late'] = self._dropped_late_before + self._mailbox.expired
        return totals

    def _add_robustness_values(self, values):
        mailbox = self._mailbox
        values['dropped_shutdown'] += (self._dropped_shutdown_before + mailbox.discarded
                                       + mailbox.rejected)
        values['time_jump_bound_s'] = self._order_jump_s

    def _output_problems(self, values):
        """[(level, message)] for /diagnostics: pairs arrive but nothing is published; camera
        info arrives but its images do not (e.g. frames too large for the transport)."""
        if self._lifecycle_state != 'active' or self._active_since is None:
            return []
        problems = []
        now = time.monotonic()
        timeout = self._params['diagnostics.stall_timeout']
        last_pair = self._rates['pairs'].last
        last_output = max(self._rates['published'].last or 0.0, self._active_since)
        silent = now - last_output
        if last_pair is not None and last_pair > last_output and silent > timeout:
            totals = self._drop_totals()
            since = {key[len('dropped_'):]: value - self._drops_at_publish.get(key, 0)
                     for key, value in totals.items()}
            reasons = ', '.join(f'{key} {count}' for key, count in sorted(
                since.items(), key=lambda item: -item[1]) if count > 0) or 'none counted'
            level = DiagnosticStatus.ERROR if silent > 5 * timeout else DiagnosticStatus.WARN
            problems.append((level, f'pairs arrive but nothing was published for '
                                    f'{silent:.1f} s (dropped since: {reasons})'))
        for kind, info in (('rgb', self._rgb_info), ('thermal', self._thermal_info)):
            seen = self._info_seen.get(kind)
            last_image = max(self._rates[kind].last or 0.0, self._active_since)
            if info is None or seen is None or now - seen > timeout:
                continue
            if now - last_image > timeout:
                size_mb = info.width * info.height * (3 if kind == 'rgb' else 2) / 1e6
                values[f'{kind}_images_missing_s'] = round(now - last_image, 1)
                problems.append((DiagnosticStatus.WARN, (
                    f'{kind}/camera_info arrives ({info.width}x{info.height}, about '
                    f'{size_mb:.1f} MB a frame) but no {kind} image for {now - last_image:.0f} s: '
                    'frames too large for the transport are lost without a trace (docs/node.md, '
                    '"Large frames")')))
        return problems

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
        self._geometry = _GeometryState(extrinsics_source(self._params))
        if self._geometry.source == 'tf':
            import tf2_ros  # importable: check_engine_settings checked it
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
            from tesg_ros.sensor.registration import extrinsics_from_transform
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
        self._add_robustness_values(values)
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
        for problem_level, problem in self._output_problems(values):
            if problem_level > level:
                level, message = problem_level, problem
            elif problem_level == level and level != DiagnosticStatus.OK:
                message += f'; {problem}'
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
        try:
            publisher.publish(array)
        except Exception:  # noqa: BLE001 - shut down from another thread meanwhile
            if self._diagnostics_pub is not None:
                raise


@dataclass
class _InHand:
    """A pair between the network and its publication (see FusionNode._work); times are
    time.monotonic() seconds."""

    inferred: object   # engine.InferredFrame
    header: object
    stamp: int
    info: object
    semantics: dict
    paired: float
    taken: float
    start: float
    decoded: float
    inferred_at: float


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


def _seconds_ns(seconds):
    return int(round(seconds * 1e9))


def _release_memory():
    """Return freed memory to the OS after a model is dropped (deactivate, shutdown).

    Without it glibc keeps the freed arenas of each activation's model and threads, and the
    resident size grows with every deactivate/activate cycle.
    """
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _limit_malloc_arenas(arenas=2):
    """Cap glibc's malloc arenas (unless MALLOC_ARENA_MAX is set) before threads start.

    Every activation starts new threads (worker, semantics, backend calls); glibc gives
    threads their own arenas (up to 8 per core) and memory freed in them is kept, so the
    resident size grew with each deactivate/activate cycle (docs/benchmarks.md, "Soak and
    lifecycle churn"). These threads allocate little: two arenas are enough.
    """
    if 'MALLOC_ARENA_MAX' in os.environ:
        return
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


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
    # SIGINT/SIGTERM only set an event here: rclpy's own handlers would shut the context down
    # at once, under a worker that is still publishing (RCLError, a dropped frame) and with
    # threads still in native code at exit. The node is shut down first, then the context.
    _limit_malloc_arenas()
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _ros_context(args if args is not None else sys.argv):
            return _run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _wait_for_backend_calls()


@contextlib.contextmanager
def _ros_context(args):
    """rclpy initialised without its signal handlers, shut down on exit: ``with rclpy.init()``
    where init returns a context manager (Kilted), else init and try_shutdown (Humble, Jazzy)."""
    manager = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    if manager is not None:
        with manager:
            yield
        return
    try:
        yield
    finally:
        rclpy.try_shutdown()


def _run(stop):
    """Spin a FusionNode until ``stop`` is set; the exit code. The node is shut down here,
    while the context is still valid."""
    node = executor = spinner = None
    try:
        node = FusionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, stop), name='tesg_executor')
        spinner.start()
        while not stop.wait(0.5):
            pass
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (TesgError, ParameterException) as error:
        # Configuration errors end the process with one clear line, not a traceback.
        print(f'tesg_fusion: {error}', file=sys.stderr)
        return 2
    finally:
        # The executor stops first: no timer or service callback may run while the node
        # tears down its publishers from this thread.
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)
        if spinner is not None:
            spinner.join(timeout=10.0)
        if node is not None:
            node.shutdown()  # joins the worker and the semantics threads, context still valid
            node.destroy_node()
    return 0


# Longest wait at exit for a background model call that outlived its deactivate bound.
EXIT_JOIN_S = 30.0


def _wait_for_backend_calls(timeout=EXIT_JOIN_S):
    """Join model calls still running in daemon threads before the interpreter exits.

    Deactivate waits at most 5 s for a describer or CLIPSeg call (a lifecycle transition must
    not hang on a slow model); one still running then is left behind. Native code (torch,
    OpenCV) still running in a daemon thread while the interpreter finalises aborts the
    process ("terminate called without an active exception"), so exit waits for those calls,
    up to ``timeout`` s, and if one is truly hung ends the process with os._exit.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.daemon and thread.name.endswith('-backend'):
            thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threading.enumerate()
            if t.daemon and t.name.endswith('-backend') and t.is_alive()]
    if hung:
        print(f'tesg_fusion: {", ".join(hung)} still running after {timeout:g} s; exiting '
              'without interpreter finalisation', file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _spin(executor, stop):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    finally:
        stop.set()


if __name__ == '__main__':
    sys.exit(main())
