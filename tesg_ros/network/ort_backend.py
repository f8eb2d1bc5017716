# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion network in ONNX Runtime (``model.backend: onnxruntime``).

Runs the graph ``tesg-export`` writes (inputs ir, vis_y, masks, text; output fused). Execution
providers, first available wins: TensorRT (float16 when ``half``), CUDA (the float32 graph),
CPU. ``model.device: cpu`` asks for the CPU provider only. When a GPU was asked for (``auto``
with a GPU wheel installed, or ``cuda``) and the session ends up on the CPU, that is a
fallback: :attr:`OrtFusionNet.fallback` says why (logged once, and in the node's diagnostics).
"""

import logging

import numpy as np

from tesg_ros.errors import ConfigError

TENSORRT = 'TensorrtExecutionProvider'
CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'


def parse_device(device):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> (kind, index)."""
    if device in ('auto', 'cpu', 'cuda'):
        return device, 0
    if device.startswith('cuda:') and device[5:].isdigit():
        return 'cuda', int(device[5:])
    raise ConfigError(f'model.device: {device!r} is not a device (auto, cpu, cuda, cuda:N)')


def choose_providers(device, half, available, cache_dir=None):
    """ONNX Runtime providers (with options) for ``device`` among ``available``.

    Returns ``(providers, wanted_gpu)``: wanted_gpu is True when a GPU was asked for
    explicitly (cuda) or implicitly (auto with a GPU provider installed).
    """
    kind, index = parse_device(device)
    if kind == 'cpu':
        return [CPU], False
    providers = []
    if TENSORRT in available:
        options = {'device_id': index, 'trt_fp16_enable': bool(half)}
        if cache_dir:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        providers.append((TENSORRT, options))
    if CUDA in available:
        providers.append((CUDA, {'device_id': index}))
    wanted_gpu = kind == 'cuda' or bool(providers)
    return providers + [CPU], wanted_gpu


class OrtFusionNet:
    """Callable ``(ir, vis_y, masks, text) -> fused`` over numpy arrays, like the engine's
    torch path: (H, W) ir and vis_y, (M, H, W) masks, (D,) text -> (H, W) float32 in [0, 1]."""

    def __init__(self, path, device='auto', half=True, threads=0, logger=None,
                 spinning=False, quantized=False, only=None):
        import onnxruntime

        self._logger = logger if logger is not None else logging.getLogger(__name__)
        self.path = str(path)
        available = onnxruntime.get_available_providers()
        from tesg_ros.network.onnx_export import cache_dir
        providers, wanted_gpu = choose_providers(device, half, available,
                                                 cache_dir=cache_dir() / 'tensorrt')
        if only is not None:  # one provider, for benchmarks (bench/device_check.py)
            providers = [p for p in providers if _names([p])[0] == only] or [only]
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning intra-op threads stall when another process takes a core (shared CPUs,
        # the executor and DDS threads); off unless asked.
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '1' if spinning else '0')
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(self.path, options, providers=providers)
        except Exception as error:  # noqa: BLE001 - a GPU provider failing to initialise
            if providers == [CPU]:
                raise ConfigError(f'ONNX Runtime cannot load {self.path}: {error}') from None
            self._logger.warning(f'ONNX Runtime providers {_names(providers)} failed '
                                 f'({type(error).__name__}: {error}); retrying on the CPU')
            self.session = onnxruntime.InferenceSession(self.path, options, providers=[CPU])
        self.providers = list(self.session.get_providers())
        self.provider = self.providers[0]
        self.available = available
        self.half = bool(half) and self.provider == TENSORRT
        self.fallback = ''
        if wanted_gpu and self.provider == CPU:
            self.fallback = (
                f'model.device {device}: ONNX Runtime runs on the CPU (providers available: '
                f'{", ".join(available)}; asked for {_names(providers)}); install the '
                'onnxruntime-gpu wheel matching your CUDA (docs/benchmarks.md)')
            self._logger.warning(self.fallback)
        self.threads = threads
        self.quantized = quantized
        self._input_names = [value.name for value in self.session.get_inputs()]

    def __call__(self, ir, vis_y, masks, text):
        arrays = (ir[None, None], vis_y[None, None], masks[None],
                  np.asarray(text, np.float32)[None])
        feeds = {name: np.ascontiguousarray(array, np.float32)
                 for name, array in zip(self._input_names, arrays)}
        fused = self.session.run(None, feeds)[0]
        return np.clip(fused[0, 0], 0.0, 1.0, out=fused[0, 0])

    @property
    def device_name(self):
        return {TENSORRT: 'tensorrt', CUDA: 'cuda', CPU: 'cpu'}.get(self.provider,
                                                                    self.provider)


def _names(providers):
    return [provider if isinstance(provider, str) else provider[0] for provider in providers]


def quantize_dynamic_int8(onnx_path, out_path):
    """int8 dynamic quantisation (weights int8, activations quantised per call) of the
    exported graph; a measured candidate (docs/benchmarks.md), not a default."""
    import onnxruntime
    from onnxruntime.quantization import quantize_dynamic, QuantType

    # Fold the weights the graph computes (block-diagonal stem, zero-sum detail kernels) into
    # constants first: the quantiser only quantises convolutions with initializer weights.
    folded = str(out_path) + '.folded.onnx'
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded
    onnxruntime.InferenceSession(str(onnx_path), options, providers=[CPU])
    quantize_dynamic(folded, str(out_path), weight_type=QuantType.QInt8)
    return str(out_path)
