# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The FusionEngine: one pipeline shared by the node and the offline tools (ROS-free).

numpy thermal (raw) + numpy BGR → thermal normalisation → registration into the RGB grid
(crop to overlap) → semantics (latest text embedding, masks of this frame) → TeSG network →
colour restored from the visible chroma → numpy BGR uint8.

The engine owns the network and the Semantic Information Generator (whose describer runs in
its own thread); :meth:`process` is called from one worker thread.
"""

from dataclasses import dataclass, field
import logging
import os
import threading
import time

import numpy as np

from tesg_ros.errors import CalibrationError, ConfigError, ImageEncodingError
from tesg_ros.node_params import defaults, PARAMETERS_BY_NAME
from tesg_ros.paths import DEFAULT_WEIGHTS, share_path
from tesg_ros.sig.masks import fit_masks

SEMANTICS_MODES = PARAMETERS_BY_NAME['semantics.mode'].choices
# Version of the JSON on the semantics topic (docs/node.md, "The semantics message"): the
# major number changes when a field is removed or changes meaning, the minor when one is added.
SEMANTICS_SCHEMA = 'tesg_ros/semantics/1.1'
SEMANTICS_FIELDS = ('schema', 'description', 'phrases', 'source', 'model_id', 'age_s', 'error',
                    'request', 'stamp')
BACKENDS = PARAMETERS_BY_NAME['model.backend'].choices

# node parameter -> ThermalNormalizer.from_config key
_THERMAL_KEYS = {
    'thermal.normalization': 'mode',
    'thermal.percentile_low': 'low_percentile',
    'thermal.percentile_high': 'high_percentile',
    'thermal.temporal_alpha': 'alpha',
    'thermal.scale': 'scale',
    'thermal.offset': 'offset',
    'thermal.clahe': 'clahe',
}


def thermal_config(params):
    """ThermalNormalizer configuration from node-style parameters."""
    config = {key: params[name] for name, key in _THERMAL_KEYS.items()}
    if config['mode'] == 'fixed_range':
        config['range_low'] = params['thermal.fixed_low']
        config['range_high'] = params['thermal.fixed_high']
    return config


def registration_config(params):
    """Registration configuration from node-style parameters."""
    config = {'mode': params['registration.mode'],
              'crop_to_overlap': params['registration.crop_to_overlap']}
    if config['mode'] == 'identity':
        # Same aspect ratio: scaled, with a warning. Another aspect ratio is a stretch, refused
        # unless registration.allow_stretch (registration.py).
        config['allow_resize'] = True
        config['allow_stretch'] = bool(params['registration.allow_stretch'])
    if params['registration.file']:
        config['homography_file'] = params['registration.file']
    elif config['mode'] == 'homography':
        config['homography'] = list(params['registration.homography'])
    if config['mode'] == 'plane':
        # The parameter extrinsics; the node replaces them by TF's (FusionEngine.set_extrinsics).
        config['extrinsics'] = {
            'translation': list(params['registration.extrinsics.translation']),
            'rpy': list(params['registration.extrinsics.rpy'])}
        config['plane'] = {'normal': list(params['registration.plane.normal']),
                           'distance': params['registration.plane.distance']}
    return config


@dataclass
class EngineSettings:
    """Everything the engine needs, decoupled from ROS parameter names."""

    thermal: dict
    registration: dict
    weights: str = ''
    device: str = 'auto'
    half: bool = True
    threads: int = 0
    semantics: dict = field(default_factory=dict)
    backend: str = 'torch'
    onnx: str = ''
    max_pixels: int = 0
    restore_range: bool = False
    lowlight_tone: bool = False

    @classmethod
    def from_params(cls, params):
        """Build from the node's parameters (``tesg_ros.node_params`` names)."""
        params = {**defaults(), **params}  # a partial dict takes the table's defaults
        return cls(thermal=thermal_config(params), registration=registration_config(params),
                   weights=params['model.weights'], device=params['model.device'],
                   half=params['model.half'], threads=params['model.threads'],
                   semantics=_semantics_section(params), backend=params['model.backend'],
                   onnx=params['model.onnx'], max_pixels=params['model.max_pixels'],
                   restore_range=params['model.restore_range'],
                   lowlight_tone=params['model.lowlight_tone'])


def _semantics_section(params):
    """``semantics.*`` parameters without the prefix, e.g. {'mode': 'live', 'period': 5.0}."""
    return {key[len('semantics.'):]: value for key, value in params.items()
            if key.startswith('semantics.')}


@dataclass
class FusedFrame:
    """One fused frame: ``bgr`` (H, W, 3) uint8 in the RGB camera's (cropped) grid.

    ``masks`` (M, H, W) are the network's mask input; ``phrase_masks`` (P, H, W) the mask of
    each phrase before they were fitted to M channels, ``phrases`` the phrases when known
    (same order). ``weights`` (H, W) float32 in [0, 1] is the network's infrared share
    (fused luma = vis + w (ir - vis) + detail), computed only when ``process`` was asked for it.
    """

    bgr: np.ndarray
    roi: tuple
    timings_ms: dict
    thermal_registered: np.ndarray = None
    masks: np.ndarray = None
    weights: np.ndarray = None
    phrase_masks: np.ndarray = None
    phrases: tuple = ()


@dataclass
class InferredFrame:
    """What :meth:`FusionEngine.finish` needs of a pair :meth:`FusionEngine.infer` ran the
    network on. ``fused_y`` (h, w) float32 at the working size; ``work`` the working-size
    (ir, vis_y) guides, or None when the network ran at the camera size (then ``vis_y`` is the
    full-size luma); ``visible`` (H, W, 3) uint8 and ``ir_grid`` (H, W) float32 the registered
    sources; ``masks`` (M, h, w), ``phrase_masks`` (P, h, w) or None, ``weights`` (h, w) or
    None at the working size."""

    fused_y: np.ndarray
    weights: np.ndarray
    masks: np.ndarray
    phrase_masks: np.ndarray
    phrases: tuple
    visible: np.ndarray
    ir_grid: np.ndarray
    work: tuple
    vis_y: np.ndarray
    roi: tuple
    restore_range: bool
    timings_ms: dict
    lowlight_tone: bool = False


def resolve_device(requested, half):
    """Return ``(torch.device, torch.dtype)`` for 'auto', 'cpu', 'cuda' or 'cuda:N'."""
    import torch

    if requested == 'auto':
        requested = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f'model.device: {requested!r} is not a device ({error})') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'model.device: {requested!r} requested but CUDA is not available; '
                          'use auto or cpu')
    if device.type not in ('cpu', 'cuda'):
        raise ConfigError(f'model.device: {requested!r} is not supported (cpu, cuda, cuda:N)')
    dtype = torch.float16 if device.type == 'cuda' and half else torch.float32
    return device, dtype


# Smallest frame side accepted: one cell of the network's coarsest grid (reduction 8). A 1x1
# frame breaks OpenCV inside the colour stage, 0 pixels break everything; such frames are bad
# input, rejected with the size, not a pipeline error.
MIN_FRAME_SIDE = 8


def check_frame_size(kind, shape):
    """Raise ImageEncodingError for a frame with a side below :data:`MIN_FRAME_SIDE` pixels."""
    if len(shape) < 2 or min(shape[:2]) < MIN_FRAME_SIDE:
        size = 'x'.join(str(n) for n in shape[1::-1]) if len(shape) >= 2 else str(shape)
        raise ImageEncodingError(f'{kind} image is {size} (width x height): degenerate, at '
                                 f'least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} pixels needed')


# Largest distortion vector OpenCV models (rational + thin prism + tilted: 14).
MAX_DISTORTION_COEFFICIENTS = 14


def camera_info_problem(info, width, height):
    """Why a CameraInfo-like ``info`` is unfit to describe a ``width`` x ``height`` image, or ''.

    Checked: the size, finite K, D, R, P, positive fx and fy, at most
    :data:`MAX_DISTORTION_COEFFICIENTS` coefficients.
    """
    import math

    if (info.width, info.height) != (width, height):
        return f'size {info.width}x{info.height}, the image is {width}x{height}'
    if len(info.d) > MAX_DISTORTION_COEFFICIENTS:
        return f'{len(info.d)} distortion coefficients (at most {MAX_DISTORTION_COEFFICIENTS})'
    for name in ('k', 'd', 'r', 'p'):
        if not all(math.isfinite(v) for v in getattr(info, name)):
            return f'{name.upper()} is not finite'
    if not (info.k[0] > 0 and info.k[4] > 0):
        return f'fx = {info.k[0]}, fy = {info.k[4]}: focal lengths must be positive'
    return ''


class _OperatorAwareDescriber:
    """Describer used by the refresher: the operator's prompt wins when one is set."""

    def __init__(self, fallback, prompt=''):
        self.fallback = fallback
        self.prompt = prompt
        self.model_id = getattr(fallback, 'model_id', type(fallback).__name__)

    def __call__(self, visible, thermal):
        prompt = self.prompt
        if prompt:
            return prompt
        return self.fallback(visible, thermal)


class FusionEngine:
    """Fuse registered thermal + RGB frames with the TeSG network (see the module docstring)."""

    def __init__(self, settings, logger=None, net=None):
        from tesg_ros.sensor.thermal import ThermalNormalizer

        self._logger = logger if logger is not None else logging.getLogger(__name__)
        self.settings = settings
        self._lock = threading.Lock()  # guards settings swaps against process()
        self.normalizer = ThermalNormalizer.from_config(settings.thermal)
        self.registration = None
        self._registration_error = ''
        self._init_geometry()
        if settings.backend not in BACKENDS:
            raise ConfigError(f'model.backend must be one of {", ".join(BACKENDS)}, got '
                              f'{settings.backend!r}')
        if settings.max_pixels < 0:
            raise ConfigError(f'model.max_pixels must be >= 0, got {settings.max_pixels}')
        # ONNX Runtime picks its own device (execution providers); torch keeps the CPU copy.
        self.device, self.dtype = resolve_device(
            settings.device if settings.backend == 'torch' else 'cpu', settings.half)
        if settings.threads > 0:
            import torch
            torch.set_num_threads(settings.threads)  # process-wide, as torch defines it
            # OpenCV's pool too: its workers (HOG in the describer, remaps) would otherwise
            # take the cores left to the executor and preempt the fusion at full priority.
            import cv2
            cv2.setNumThreads(settings.threads)
        self.fallbacks = 0
        self.camera_info_error = ''
        self._staging = {}  # pinned host buffers by input index (_staged)
        self.weights_path = None
        if net is None:
            net = self._load_net(settings.weights)
        self.net = net.to(self.device, self.dtype).eval()
        # Value ranges are checked once per frame on the host (process), not by the network:
        # its per-call check costs host synchronisations on CUDA.
        self.net.validate_inputs = False
        self.ort = None
        if settings.backend == 'onnxruntime':
            self.ort = self._build_ort(settings)
        config = self.net.config
        self.mask_channels = config.mask_channels
        self.text_dim = config.text_dim
        self.sig = None
        semantics = {**_semantics_section(defaults()), **settings.semantics}
        self._semantics_mode = semantics['mode']
        if self._semantics_mode not in SEMANTICS_MODES:
            raise ConfigError(f'semantics.mode must be one of {", ".join(SEMANTICS_MODES)}, '
                              f'got {self._semantics_mode!r}')
        self._recorded = None
        self._snapshot_of, self._snapshot = None, None
        if self._semantics_mode != 'disabled':
            self.sig = self._build_sig(semantics)
        self._zero_text = np.zeros(self.text_dim, np.float32)
        self.warm_up()
        if self.sig is not None and self._semantics_mode == 'live':
            self.sig.start()

    # ------------------------------------------------------------------ construction
    def _load_net(self, weights):
        from tesg_ros.network.weights import load_fusion_net

        path = weights or str(share_path(*DEFAULT_WEIGHTS))
        if weights and os.path.basename(weights) == weights and not os.path.exists(weights):
            path = str(share_path(DEFAULT_WEIGHTS[0], weights))   # a shipped file, by name
        self.weights_path = path
        return load_fusion_net(path, device='cpu')  # ConfigError naming the file if bad

    def _build_ort(self, settings):
        from tesg_ros.network.ort_backend import OrtFusionNet
        from tesg_ros.network.onnx_export import ensure_onnx

        path = ensure_onnx(self.weights_path or settings.weights or None, settings.onnx,
                           logger=self._logger)
        return OrtFusionNet(path, device=settings.device, half=settings.half,
                            threads=settings.threads, logger=self._logger)

    def _build_sig(self, semantics):
        from tesg_ros.sig import MaskRefresher, OfflineDescriber, SemanticInformationGenerator
        from tesg_ros.sig.mask_refresher import EveryNthFrame
        from tesg_ros.sig.masks import ClipSegMaskBackend, HogMaskBackend, ThermalMaskBackend
        from tesg_ros.sig.text_encoder import make_text_encoder

        encoder_path = semantics['text_encoder.path'] or None
        encoder_kind = 'clip' if encoder_path and 'clip' in encoder_path.lower() else 'minilm'
        encoder = make_text_encoder(encoder_kind, encoder_path, expected_dim=self.text_dim,
                                    parameter='semantics.text_encoder')
        masks = semantics['masks']
        if masks == 'thermal':
            mask_backend = ThermalMaskBackend()
        elif masks == 'hog':
            mask_backend = HogMaskBackend()
        elif masks == 'clipseg':
            mask_backend = ClipSegMaskBackend(semantics['clipseg.path'],
                                              image=semantics['clipseg.image'])
            if self._semantics_mode == 'live':
                # Far slower than the frame rate: at its own rate, the frame never waits.
                # Replay keeps it per frame so bag evaluations are reproducible.
                mask_backend = MaskRefresher(
                    mask_backend, period_s=semantics['clipseg.period'],
                    timeout_s=semantics['clipseg.timeout'], logger=self._logger)
        else:
            mask_backend = _NoMasks()
        if masks in ('thermal', 'hog') and semantics['mask_every'] > 1:
            mask_backend = EveryNthFrame(mask_backend, semantics['mask_every'])
        if semantics['source'] == 'vlm':
            from tesg_ros.sig.vlm import VlmDescriber
            fallback = VlmDescriber(
                semantics['vlm.path'], prompt=semantics['vlm.prompt'] or None,
                image=semantics['vlm.image'], max_new_tokens=semantics['vlm.max_new_tokens'],
                trust_remote_code=semantics['vlm.trust_remote_code'])
            source = 'vlm'
        else:
            fallback = OfflineDescriber(hog_height=semantics['offline.hog_height'])
            source = 'describer'
        prompt = (semantics['prompt'] or '').strip()
        self._describer = _OperatorAwareDescriber(fallback, prompt)
        sig = SemanticInformationGenerator(
            encoder, mask_backend=mask_backend, describer=self._describer,
            period_s=semantics['period'], timeout_s=semantics['timeout'],
            source=source, logger=self._logger)
        if prompt:  # the prompt parameter applies from the first frame, as the topic does
            sig.refresher.publish_description(prompt)
        return sig

    def warm_up(self, height=480, width=640):
        """One forward pass so the first real frame does not pay allocation/autotuning."""
        self._forward(np.zeros((height, width), np.float32), np.zeros((height, width), np.float32),
                      np.zeros((self.mask_channels, height, width), np.float32), self._zero_text)

    # ------------------------------------------------------------------ per frame
    def _registration_for(self, thermal_shape, rgb_shape):
        thermal_size = (thermal_shape[1], thermal_shape[0])
        rgb_size = (rgb_shape[1], rgb_shape[0])
        if self.settings.registration.get('mode') == 'plane':
            return self._plane_registration(thermal_size, rgb_size)
        builds = 0 if self.registration is None else self.registration.build_count
        self._registration_built(self._simple_registration(thermal_size, rgb_size), builds)
        return self.registration

    def _simple_registration(self, thermal_size, rgb_size):
        from tesg_ros.sensor.registration import Registration

        if self.registration is None:
            self.registration = Registration.from_config(
                self.settings.registration, thermal_size, rgb_size)
        else:
            self.registration.update(thermal_size=thermal_size, rgb_size=rgb_size)
        return self.registration

    def process(self, thermal, rgb_bgr, thermal_valid=None, want_weights=False):
        """Fuse one pair: :meth:`infer` then :meth:`finish`.

        thermal: (Ht, Wt) uint8/uint16/float32 raw thermal; thermal_valid: optional bool mask.
        rgb_bgr: (H, W, 3) uint8. Returns a :class:`FusedFrame` in the RGB grid, cropped to
        the overlap when ``registration.crop_to_overlap`` is set; ``timings_ms`` holds the
        stages normalise, register, semantics, network (luma + forward at the working size),
        upsample (only with ``model.max_pixels`` in effect), colour and total.
        ``want_weights``: also return the network's infrared-share map (FusedFrame.weights).
        """
        return self.finish(self.infer(thermal, rgb_bgr, thermal_valid, want_weights))

    def infer(self, thermal, rgb_bgr, thermal_valid=None, want_weights=False):
        """The first part of :meth:`process`: normalise, register, semantics and the network
        at the working size. Returns an :class:`InferredFrame` for :meth:`finish`, which
        needs nothing else from the engine, so another thread may finish frame N while this
        one infers frame N + 1 (the node's finishing thread)."""
        from tesg_ros.network.colour import luma_from_bgr_uint8
        from tesg_ros.network.tesg_net import check_input_values

        rgb_bgr = np.asarray(rgb_bgr)
        if rgb_bgr.ndim != 3 or rgb_bgr.shape[2] != 3 or rgb_bgr.dtype != np.uint8:
            raise ImageEncodingError(f'rgb image must be (H, W, 3) uint8, got {rgb_bgr.shape} '
                                     f'{rgb_bgr.dtype}')
        check_frame_size('rgb', rgb_bgr.shape)
        check_frame_size('thermal', np.shape(thermal))
        timings = {}
        start = time.perf_counter()
        with self._lock:
            ir = self.normalizer.normalize(thermal, thermal_valid)
        timings['normalise'] = _lap(start)

        mark = time.perf_counter()
        try:
            registration = self._registration_for(ir.shape, rgb_bgr.shape)
        except CalibrationError as error:
            self._registration_error = str(error)
            raise
        self._registration_error = ''
        ir_grid, visible, _ = registration.register(ir, rgb_bgr)
        visible = np.ascontiguousarray(visible)
        ir_grid = np.ascontiguousarray(ir_grid, dtype=np.float32)
        work_visible, work_ir = visible, ir_grid
        working = working_size(visible.shape[:2], self.settings.max_pixels)
        if working != visible.shape[:2]:
            work_visible, work_ir = _shrink(visible, working), _shrink(ir_grid, working)
        timings['register'] = _lap(mark)

        mark = time.perf_counter()
        masks, text = self._semantics(work_visible, work_ir)
        phrase_masks, phrases = self._phrase_masks
        timings['semantics'] = _lap(mark)

        mark = time.perf_counter()
        # Y of full-range BT.601 YCbCr in [0, 1], as network.colour computes it for training.
        work_y = luma_from_bgr_uint8(work_visible)
        check_input_values(work_ir, work_y, masks, text)
        weights = None
        if want_weights:
            fused_y, weights = self._forward_with_weights(work_ir, work_y, masks, text)
        else:
            fused_y = self._forward(work_ir, work_y, masks, text)
        timings['network'] = _lap(mark)
        return InferredFrame(
            fused_y=fused_y, weights=weights, masks=masks, phrase_masks=phrase_masks,
            phrases=phrases, visible=visible, ir_grid=ir_grid,
            work=None if work_visible is visible else (work_ir, work_y),
            vis_y=work_y if work_visible is visible else None, roi=tuple(registration.roi),
            restore_range=self.settings.restore_range, timings_ms=timings,
            lowlight_tone=self.settings.lowlight_tone)

    @staticmethod
    def finish(inferred):
        """The second part of :meth:`process`: the fused luma back to the camera size (when
        the network ran smaller), the range restoration when asked, the colour. Uses only
        ``inferred`` (an :class:`InferredFrame`); returns the :class:`FusedFrame`."""
        from tesg_ros.network.colour import luma_from_bgr_uint8, restore_colour_uint8
        from tesg_ros.network.tone import lowlight_tone, restore_range

        timings = inferred.timings_ms
        visible, ir_grid = inferred.visible, inferred.ir_grid
        fused_y, masks, weights = inferred.fused_y, inferred.masks, inferred.weights
        phrase_masks = inferred.phrase_masks
        vis_y = inferred.vis_y
        if inferred.work is not None:
            mark = time.perf_counter()
            vis_y = luma_from_bgr_uint8(visible)
            fused_y = guided_upsample(fused_y, inferred.work, (ir_grid, vis_y))
            # The masks and the debug outputs in the fused image's grid too.
            size = visible.shape[:2]
            masks = _grow(masks, size)
            if weights is not None:
                weights = _grow(weights[None], size)[0]
            if phrase_masks is not None:
                phrase_masks = _grow(phrase_masks, size)
            timings['upsample'] = _lap(mark)

        mark = time.perf_counter()
        if inferred.restore_range:
            fused_y = restore_range(fused_y, ir_grid, vis_y)
        if inferred.lowlight_tone:
            fused_y = lowlight_tone(fused_y, ir_grid, vis_y)
        bgr = restore_colour_uint8(fused_y, vis_y, visible)
        timings['colour'] = _lap(mark)
        timings['total'] = sum(timings[stage] for stage in (
            'normalise', 'register', 'semantics', 'network', 'upsample', 'colour')
            if stage in timings)
        return FusedFrame(bgr=bgr, roi=inferred.roi, timings_ms=timings,
                          thermal_registered=ir_grid, masks=masks, weights=weights,
                          phrase_masks=phrase_masks, phrases=inferred.phrases)

    def _semantics(self, visible, thermal):
        height, width = thermal.shape
        self._phrase_masks = (None, ())
        if self.sig is None:
            return np.zeros((self.mask_channels, height, width), np.float32), self._zero_text
        if self._semantics_mode == 'replay':
            recorded = self._recorded
            if recorded is None:
                return (np.zeros((self.mask_channels, height, width), np.float32),
                        self._zero_text)
            phrases, text = recorded
            masks = self.sig.mask_backend(visible, thermal, phrases)
        else:
            masks, text = self.sig(visible, thermal)
            # One mask per class the snapshot this frame used names.
            phrases = tuple(self.sig.applied.mask_phrases)
        masks = np.asarray(masks, np.float32)
        self._phrase_masks = (masks, phrases if len(phrases) == masks.shape[0] else ())
        return fit_masks(masks, self.mask_channels), text

    def _forward(self, ir, vis_y, masks, text):
        """(H, W) ir and vis_y, (C, H, W) masks, (D,) text, float32 -> (H, W) float32 in [0, 1].

        On the CPU in float32 the inputs are wrapped, not copied; on CUDA they go through
        reused pinned host buffers (one upload each, asynchronous).
        """
        if self.ort is not None:
            return self.ort(ir, vis_y, masks, text)
        import torch

        arrays = (ir[None, None], vis_y[None, None], masks[None],
                  np.asarray(text, np.float32)[None])

        def run(device, dtype):
            with torch.inference_mode():
                if device.type == 'cpu' and dtype == torch.float32:
                    tensors = [torch.from_numpy(_writable_float32(a)) for a in arrays]
                else:
                    # Upload float32 then cast on the device. Reusing the pinned buffers next
                    # frame is safe: .cpu() below waits for this stream, uploads included.
                    tensors = [self._staged(index, a).to(device, non_blocking=True).to(dtype)
                               for index, a in enumerate(arrays)]
                fused = self.net(*tensors)
                return fused[0, 0].float().clamp_(0.0, 1.0).cpu().numpy()

        try:
            return run(self.device, self.dtype)
        except torch.cuda.OutOfMemoryError:
            self._logger.error('CUDA out of memory: falling back to the CPU (float32)')
            torch.cuda.empty_cache()
            self.device, self.dtype = torch.device('cpu'), torch.float32
            self.net = self.net.to(self.device, self.dtype)
            self.fallbacks += 1
            return run(self.device, self.dtype)

    def _staged(self, index, array):
        """A pinned host tensor holding ``array``, reused while the shape stays the same."""
        import torch

        buffer = self._staging.get(index)
        if buffer is None or tuple(buffer.shape) != array.shape:
            buffer = torch.empty(array.shape, dtype=torch.float32,
                                 pin_memory=torch.cuda.is_available())
            self._staging[index] = buffer
        buffer.copy_(torch.from_numpy(_writable_float32(array)))
        return buffer

    # ------------------------------------------------------------------ runtime control
    def update_settings(self, params):
        """Apply runtime-tunable node parameters (validated before anything changes)."""
        from tesg_ros.sensor.thermal import ThermalNormalizer

        config = thermal_config(params)
        normalizer = None
        if config != self.settings.thermal:
            normalizer = ThermalNormalizer.from_config(config)  # raises ConfigError
        with self._lock:
            if normalizer is not None:
                self.normalizer = normalizer
                self.settings.thermal = config
        if self.sig is not None:
            self.sig.refresher.period_s = float(params['semantics.period'])
            self.set_operator_prompt(params['semantics.prompt'])
        self._update_plane(params)

    def set_operator_prompt(self, text):
        """Steer the fusion with an operator's text; empty returns to the describer."""
        if self.sig is None or self._semantics_mode != 'live':
            return
        text = text.strip()
        if text != self._describer.prompt:
            self._describer.prompt = text
            if text:
                # Applies from the next frame: no wait for the describer's worker.
                self.sig.refresher.publish_description(text)
            else:
                self.sig.refresher.request_refresh()

    def set_recorded_semantics(self, record):
        """Replay mode: use recorded semantics (the JSON of :meth:`semantics_snapshot`)."""
        if self.sig is None:
            return
        schema = record.get('schema', SEMANTICS_SCHEMA) if isinstance(record, dict) \
            else SEMANTICS_SCHEMA
        if not isinstance(schema, str) or schema.rpartition('.')[0] != \
                SEMANTICS_SCHEMA.rpartition('.')[0]:
            raise ConfigError(f'recorded semantics have schema {schema!r}; this node reads '
                              f'{SEMANTICS_SCHEMA} (and records without a schema field)')
        try:
            description = str(record['description'])
            tuple(str(p) for p in record['phrases'])  # required in a record, read only
        except (KeyError, TypeError) as error:
            raise ConfigError(f'recorded semantics lack a field: {error}') from None
        from tesg_ros.sig import parse_request, request_embedding
        # The same contract as live: the request's classes select the masks, its canonical
        # sentence is the text.
        request = parse_request(description)
        self._recorded = (request.mask_phrases, request_embedding(request, self.sig.encoder))

    def semantics_snapshot(self):
        """The current semantics as a JSON-ready dict (same object until it changes)."""
        if self.sig is None or self._semantics_mode != 'live':
            return None
        # The semantics the last processed frame used (the describer may have moved on).
        current = getattr(self.sig, 'applied', None) or self.sig.semantics()
        if self._snapshot_of is current:
            return self._snapshot
        previous, self._snapshot_of = self._snapshot_of, current
        request = getattr(current, 'request', None)
        if previous is not None and (previous.description, getattr(previous, 'request', None),
                                     previous.error) == (current.description, request,
                                                         current.error):
            return self._snapshot  # re-described the same: still in force since its stamp
        self._snapshot = {
            'schema': SEMANTICS_SCHEMA, 'description': current.description,
            'phrases': list(current.phrases),
            'source': current.source, 'model_id': current.model_id,
            'age_s': round(current.age(), 3), 'error': current.error,
            'request': None if request is None else request.as_dict(),
            'stamp': None}   # the node sets the stamp of the first frame they applied to
        return self._snapshot

    def output_camera_info(self, rgb_info, header, width, height):
        """CameraInfo of the fused image: the RGB camera's, adjusted for the crop.

        Without RGB CameraInfo (or with an uncalibrated one) the message carries only the
        size and a zero K, as uncalibrated cameras publish. So does a CameraInfo that is
        rejected (NaN/Inf, fx or fy not positive, another size than the images, a result
        that would not be finite or not ``width`` x ``height``): the reason is kept in
        :attr:`camera_info_error` (diagnostics), the output never carries NaN or a wrong size.
        """
        from tesg_ros.sensor.registration import CameraModel

        if rgb_info is not None and self.registration is not None:
            try:
                model = CameraModel.from_camera_info(rgb_info)
                if model.is_calibrated and model.size == self.registration.rgb_size:
                    info = self.registration.crop_camera_info(model).to_camera_info(header)
                    problem = camera_info_problem(info, width, height)
                    if not problem:
                        self.camera_info_error = ''
                        return info
                    self.camera_info_error = f'rgb camera_info not used: {problem}'
                elif model.is_calibrated:
                    self.camera_info_error = (
                        f'rgb camera_info not used: it is {model.width}x{model.height}, the '
                        f'images are {self.registration.rgb_size[0]}x'
                        f'{self.registration.rgb_size[1]}')
                else:  # an all-zero K is how uncalibrated cameras say so: not an error
                    self.camera_info_error = '' if not any(rgb_info.k) else (
                        f'rgb camera_info not used: K {[float(v) for v in rgb_info.k]} is no '
                        'calibration')
            except (CalibrationError, ConfigError, ValueError) as error:
                self.camera_info_error = f'rgb camera_info not used: {error}'
        from sensor_msgs.msg import CameraInfo
        return CameraInfo(header=header, width=width, height=height)

    def diagnostics(self):
        """Engine state for /diagnostics."""
        import torch

        values = {'device': str(self.device), 'dtype': str(self.dtype).replace('torch.', ''),
                  'torch_threads': torch.get_num_threads(),
                  'cuda_fallbacks': self.fallbacks, 'weights': self.weights_path or '',
                  'thermal_mode': self.normalizer.mode,
                  'semantics_mode': self._semantics_mode, 'backend': self.settings.backend,
                  'max_pixels': self.settings.max_pixels,
                  'restore_range': self.settings.restore_range,
                  'lowlight_tone': self.settings.lowlight_tone}
        if self.ort is not None:
            values['device'] = self.ort.device_name
            values['ort_providers'] = self.ort.providers
            values['backend_fallback'] = self.ort.fallback
        stats = self.normalizer.last_stats
        if stats is not None:
            values['thermal_window'] = [round(stats.low, 3), round(stats.high, 3)]
            values['thermal_clipped'] = round(stats.fraction_clipped, 4)
        if self.device.type == 'cuda':
            values['gpu_memory_mb'] = round(torch.cuda.memory_allocated(self.device) / 2**20, 1)
        if self.registration is not None:
            summary = self.registration.summary()
            values['registration'] = {key: summary[key] for key in (
                'mode', 'overlap_fraction', 'roi', 'ok', 'warnings')}
        if self._registration_error:
            values['registration_error'] = self._registration_error
        if self.camera_info_error:
            values['camera_info_error'] = self.camera_info_error
        values.update(self._geometry_diagnostics())
        if self.sig is not None:
            current = self.sig.semantics()
            values['semantics_age_s'] = round(current.age(), 2)
            values['semantics_description'] = current.description
            values['semantics_error'] = current.error or ''
            mask_status = self.sig.mask_status()
            values['semantics_mask_backend'] = mask_status['backend']
            values['semantics_mask_age_s'] = round(mask_status['age_s'], 2)
            values['semantics_mask_error'] = mask_status['error']
        return values

    @property
    def dtype_name(self):
        return str(self.dtype).replace('torch.', '')

    # ------------------------------------------------------------------ camera geometry
    def _init_geometry(self):
        self._camera_models = (None, None)  # (thermal, rgb) CameraModel from CameraInfo
        self._extrinsics = None  # (R, t) from TF; None: the configuration's (parameters)
        self._extrinsics_wait = ''  # why plane registration waits for extrinsics, '' if not
        self._plane_key = None  # inputs of the current plane registration
        self._plane_failed = (None, '')  # inputs that failed, and why (not rebuilt per frame)
        self._phrase_masks = (None, ())

    def set_camera_info(self, thermal_info=None, rgb_info=None):
        """Calibration for plane registration from ``sensor_msgs/CameraInfo`` messages
        (duck-typed; None keeps the current one). A changed calibration rebuilds the
        registration at the next frame; an unchanged one costs a comparison. Raises
        CalibrationError for a message that is not a usable camera model."""
        from tesg_ros.sensor.registration import CameraModel

        thermal_model, rgb_model = self._camera_models
        if thermal_info is not None:
            thermal_model = _same_or_new(thermal_model, CameraModel.from_camera_info(thermal_info))
        if rgb_info is not None:
            rgb_model = _same_or_new(rgb_model, CameraModel.from_camera_info(rgb_info))
        self._camera_models = (thermal_model, rgb_model)  # one assignment: the worker reads it

    def set_extrinsics(self, rotation=None, translation=None, waiting=''):
        """Thermal -> RGB extrinsics for plane registration (``X_rgb = R X_thermal + t``), e.g.
        from TF. ``waiting`` (with no extrinsics): plane registration refuses to build until
        extrinsics are given, with this text as the reason."""
        if rotation is None:
            self._extrinsics, self._extrinsics_wait = None, waiting
            return
        self._extrinsics = (np.array(rotation, np.float64).reshape(3, 3),
                            np.array(translation, np.float64).reshape(3))
        self._extrinsics_wait = ''

    def _update_plane(self, params):
        if self.settings.registration.get('mode') != 'plane' or 'registration.plane.distance' \
                not in params:
            return
        plane = {'normal': list(params['registration.plane.normal']),
                 'distance': params['registration.plane.distance']}
        if plane != self.settings.registration['plane']:
            # A new dict in one assignment: the worker sees the old or the new plane.
            self.settings.registration = dict(self.settings.registration, plane=plane)

    def _plane_registration(self, thermal_size, rgb_size):
        """Plane-induced registration from the CameraInfo models, the extrinsics and the
        configured plane; rebuilt only when one of them (or an image size) changes."""
        from tesg_ros.sensor.registration import Registration

        thermal_model, rgb_model = self._camera_models
        missing = [f'{name}/camera_info' for name, model
                   in (('thermal', thermal_model), ('rgb', rgb_model)) if model is None]
        if missing:
            raise CalibrationError('plane registration waits for a calibrated CameraInfo on '
                                   + ' and '.join(missing))
        config = dict(self.settings.registration)
        extrinsics = self._extrinsics
        if extrinsics is None and self._extrinsics_wait:
            raise CalibrationError(f'plane registration waits for the thermal -> RGB '
                                   f'extrinsics: {self._extrinsics_wait}')
        if extrinsics is not None:
            config['extrinsics'] = {'translation': extrinsics[1].tolist(),
                                    'rotation': extrinsics[0].ravel().tolist()}
        key = (thermal_size, rgb_size, thermal_model.fingerprint(), rgb_model.fingerprint(),
               repr(config['extrinsics']), repr(config['plane']))
        if key == self._plane_key and self.registration is not None:
            return self.registration
        if key == self._plane_failed[0]:
            raise CalibrationError(self._plane_failed[1])
        try:
            registration = Registration.from_config(config, thermal_size, rgb_size,
                                                    thermal_model, rgb_model)
        except (CalibrationError, ConfigError) as error:
            self._plane_failed = (key, f'plane registration: {error}')
            raise CalibrationError(self._plane_failed[1]) from None
        self.registration, self._plane_key = registration, key
        self._registration_built(registration, 0)
        return registration

    def _registration_built(self, registration, builds_before):
        """Log the warnings of a new build once (e.g. an identity resize), not per frame."""
        if registration.build_count != builds_before:
            for message in registration.warnings:
                self._logger.warning(f'registration: {message}')

    def _geometry_diagnostics(self):
        values = {}
        if self.settings.registration.get('mode') == 'plane':
            plane = self.settings.registration['plane']
            values['registration_plane'] = {
                'distance_m': plane['distance'], 'normal': plane['normal'],
                'extrinsics': 'tf' if self._extrinsics is not None else (
                    'waiting: ' + self._extrinsics_wait if self._extrinsics_wait
                    else 'parameters'),
                'camera_info': [name for name, model
                                in zip(('thermal', 'rgb'), self._camera_models)
                                if model is not None]}
            if self.registration is not None:
                values['registration_plane']['homography'] = [
                    round(float(v), 6) for v in self.registration.homography.ravel()]
        return values

    def _forward_with_weights(self, ir, vis_y, masks, text):
        """:meth:`_forward` that also returns the network's infrared share ``weight`` (H, W).

        Same network, same weights; its intermediates path computes attention explicitly
        instead of with the fused kernel, so the fused luma differs by float rounding only.
        """
        if getattr(self, 'ort', None) is not None:  # ONNX Runtime: the graph's output only
            return self._forward(ir, vis_y, masks, text), None
        import torch

        arrays = (ir[None, None], vis_y[None, None], masks[None],
                  np.asarray(text, np.float32)[None])
        try:
            with torch.inference_mode():
                if self.device.type == 'cpu' and self.dtype == torch.float32:
                    tensors = [torch.from_numpy(_writable_float32(a)) for a in arrays]
                else:
                    tensors = [self._staged(index, a).to(self.device, non_blocking=True)
                               .to(self.dtype) for index, a in enumerate(arrays)]
                fused, info = self.net(*tensors, return_intermediates=True)
                return (fused[0, 0].float().clamp_(0.0, 1.0).cpu().numpy(),
                        info['weight'][0, 0].float().cpu().numpy())
        except (TypeError, KeyError, ValueError):
            # A backend without intermediates (an exported graph): fused frame, no weights.
            return self._forward(ir, vis_y, masks, text), None
        except torch.cuda.OutOfMemoryError:
            return self._forward(ir, vis_y, masks, text), None  # _forward falls back to CPU

    def close(self, timeout=5.0):
        """Stop and join the semantics threads and their backend calls (bounded by
        ``timeout`` s each) and drop the pinned staging buffers.

        Returns False when a background thread did not end in time (it is logged). The
        models are freed when the engine itself is dropped.
        """
        stopped = True
        if self.sig is not None:
            stopped = self.sig.stop(timeout=timeout)
            if not stopped:
                self._logger.error(f'a semantics thread did not stop within {timeout:g} s')
        self._staging.clear()
        return stopped


class _NoMasks:
    """Mask backend 'none': zero masks (the network fuses without mask semantics)."""

    name = 'none'

    def __call__(self, visible, thermal, phrases):
        return np.zeros((len(phrases), *thermal.shape[:2]), np.float32)


def _same_or_new(current, model):
    """Keep the current model object when the values are equal (cheap change detection)."""
    if current is not None and current.fingerprint() == model.fingerprint():
        return current
    return model


def working_size(shape, max_pixels):
    """(height, width) the network runs at: ``shape`` scaled to at most ``max_pixels``
    pixels, aspect kept (0 = no limit)."""
    height, width = int(shape[0]), int(shape[1])
    if max_pixels <= 0 or height * width <= max_pixels:
        return height, width
    scale = (max_pixels / float(height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


def _shrink(image, size):
    import cv2

    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _grow(masks, size):
    import cv2

    return np.stack([cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for mask in masks]) if len(masks) else np.zeros((0, *size), np.float32)


def guided_upsample(low, low_guides, full_guides, radius=2, eps=1e-5):
    """Bring ``low`` (h, w) back to the size of ``full_guides``, edge-aware.

    A fast guided filter with a two-channel guide (the thermal and visible luma): locally
    ``low ~ a_ir * ir + a_vis * vis + b``, fitted at the low size over (2 radius + 1)^2
    windows, the coefficients smoothed and upsampled bilinearly, then applied to the
    full-resolution sources. The fused luma is, locally, just such a mix (IR share, detail
    gains), so the sources' full-resolution edges and texture come back at their own
    positions; a bilinear upsampling of the fused image would blur them.
    """
    import cv2

    size = (2 * radius + 1, 2 * radius + 1)

    def mean(image):
        return cv2.boxFilter(image, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    guide_ir, guide_vis = (np.asarray(g, np.float32) for g in low_guides)
    low = np.asarray(low, np.float32)
    m_ir, m_vis, m_p = mean(guide_ir), mean(guide_vis), mean(low)
    var_ir = mean(guide_ir * guide_ir) - m_ir * m_ir + eps
    var_vis = mean(guide_vis * guide_vis) - m_vis * m_vis + eps
    cov_iv = mean(guide_ir * guide_vis) - m_ir * m_vis
    cov_ip = mean(guide_ir * low) - m_ir * m_p
    cov_vp = mean(guide_vis * low) - m_vis * m_p
    det = var_ir * var_vis - cov_iv * cov_iv
    a_ir = (var_vis * cov_ip - cov_iv * cov_vp) / det
    a_vis = (var_ir * cov_vp - cov_iv * cov_ip) / det
    b = m_p - a_ir * m_ir - a_vis * m_vis
    full_ir, full_vis = (np.asarray(g, np.float32) for g in full_guides)
    height, width = full_ir.shape

    def up(image):
        return cv2.resize(mean(image), (width, height), interpolation=cv2.INTER_LINEAR)

    fused = up(a_ir) * full_ir
    fused += up(a_vis) * full_vis
    fused += up(b)
    return np.clip(fused, 0.0, 1.0, out=fused)


def _lap(start):
    return (time.perf_counter() - start) * 1e3


def _writable_float32(array):
    """C-contiguous float32 without a copy where possible (torch refuses read-only arrays)."""
    array = np.ascontiguousarray(array, np.float32)
    return array if array.flags.writeable else array.copy()
