# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Deployment paths: ONNX export and parity, the ONNX Runtime backend, the inference size
(model.max_pixels), the overload warning and the describer's HOG height."""

import json

import numpy as np
import pytest

from tesg_ros.errors import ConfigError

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def shipped_weights():
    from tesg_ros.network.onnx_export import default_weights

    return default_weights()


@pytest.fixture(scope='module')
def exported(tmp_path_factory, shipped_weights):
    """The shipped network exported once for this module (about a minute on 2 cores)."""
    from tesg_ros.network.onnx_export import export_onnx

    path = tmp_path_factory.mktemp('onnx') / 'tesg_fusion.onnx'
    metadata = export_onnx(path, shipped_weights)
    return path, metadata


@pytest.fixture(scope='module')
def tno_pairs():
    from tesg_ros.network.onnx_export import test_data_pairs

    pairs = test_data_pairs()
    if not pairs:
        pytest.skip('no TNO pairs under test/data')
    return pairs


def test_export_records_opset_config_weights_hash_and_dynamic_size(exported, shipped_weights):
    from tesg_ros.network.weights import read_config
    from tesg_ros.network import onnx_export as tool

    path, metadata = exported
    stored = tool.read_metadata(path)
    assert stored == metadata
    assert stored[tool.META_SHA256] == tool.file_sha256(shipped_weights)
    assert json.loads(stored[tool.META_CONFIG]) == read_config(shipped_weights).to_dict()
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[''] == tool.OPSET
    assert stored[tool.META_OPSET] == str(tool.OPSET)
    names = [value.name for value in model.graph.input]
    assert names == list(tool.INPUT_NAMES)
    for value in list(model.graph.input[:3]) + list(model.graph.output):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[2:] == ['height', 'width'], (value.name, dims)


def test_onnx_runtime_matches_torch_on_real_pairs_at_several_sizes(exported, tno_pairs):
    from tesg_ros.network.onnx_export import parity

    sizes = ((480, 640), (243, 321), (97, 131), (360, 270), (17, 9))
    results = parity(exported[0], sizes=sizes, pairs=tno_pairs)
    assert len(results) == len(sizes) * len(tno_pairs)
    worst = max(difference for _, _, difference in results)
    assert worst <= 1.0, results


def test_onnx_file_of_other_weights_is_refused(exported, shipped_weights, tmp_path):
    import torch

    from tesg_ros.network.weights import load_fusion_net, save_fusion_net
    from tesg_ros.network.onnx_export import check_matches, ensure_onnx

    net = load_fusion_net(shipped_weights)
    with torch.no_grad():
        net.prior_scale.add_(0.5)
    other = tmp_path / 'other.safetensors'
    save_fusion_net(net, other)
    check_matches(exported[0], shipped_weights)
    with pytest.raises(ConfigError, match='re-export'):
        ensure_onnx(other, exported[0])
    plain = tmp_path / 'plain.onnx'
    model = onnx.load(str(exported[0]))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(ConfigError, match='not written by tesg-export'):
        check_matches(plain, shipped_weights)


def _engine(weights, **overrides):
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults

    params = dict(defaults(), **{'model.weights': weights, 'semantics.mode': 'disabled',
                                 'model.device': 'cpu', 'model.threads': 1}, **overrides)
    return FusionEngine(EngineSettings.from_params(params))


def _bgr(pair, size=None):
    import cv2

    _, ir, vis = pair
    if size:
        ir = cv2.resize(ir, size[::-1], interpolation=cv2.INTER_LINEAR)
        vis = cv2.resize(vis, size[::-1], interpolation=cv2.INTER_LINEAR)
    return ir, cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)


def test_engine_onnxruntime_backend_fuses_like_torch(exported, shipped_weights, tno_pairs):
    torch_engine = _engine(shipped_weights)
    ort_engine = _engine(shipped_weights, **{'model.backend': 'onnxruntime',
                                             'model.onnx': str(exported[0])})
    diagnostics = ort_engine.diagnostics()
    assert diagnostics['backend'] == 'onnxruntime'
    assert diagnostics['ort_providers'][-1] == 'CPUExecutionProvider'
    assert diagnostics['backend_fallback'] == ''  # model.device cpu asked for no GPU
    ir, bgr = _bgr(tno_pairs[0], (241, 333))
    expected, got = torch_engine.process(ir, bgr).bgr, ort_engine.process(ir, bgr).bgr
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.abs(got.astype(int) - bgr).mean() > 1.0, 'fusion changed nothing'


def test_gpu_request_without_a_gpu_provider_falls_back_to_the_cpu_and_says_so(exported):
    from tesg_ros.network.ort_backend import CPU, OrtFusionNet

    gpu_providers = {'CUDAExecutionProvider', 'TensorrtExecutionProvider'}
    if set(onnxruntime.get_available_providers()) & gpu_providers:
        pytest.skip('a GPU execution provider is installed here')
    warnings = []

    class Logger:
        def warning(self, message):
            warnings.append(message)

    net = OrtFusionNet(exported[0], device='cuda', threads=1, logger=Logger())
    assert net.provider == CPU and 'runs on the CPU' in net.fallback
    assert warnings == [net.fallback]
    fused = net(*(np.full((20, 30), 0.5, np.float32),) * 2,
                np.zeros((1, 20, 30), np.float32), np.zeros(384, np.float32))
    assert fused.shape == (20, 30) and np.isfinite(fused).all()


@pytest.mark.parametrize('device, available, expected, wanted', [
    ('cpu', ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
     ['CPUExecutionProvider'], False),
    ('auto', ['CPUExecutionProvider'], ['CPUExecutionProvider'], False),
    ('cuda', ['CPUExecutionProvider'], ['CPUExecutionProvider'], True),
    ('auto', ['CUDAExecutionProvider', 'CPUExecutionProvider'],
     ['CUDAExecutionProvider', 'CPUExecutionProvider'], True),
    ('cuda:1', ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
     ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'], True),
])
def test_execution_providers_follow_the_device(device, available, expected, wanted):
    from tesg_ros.network.ort_backend import choose_providers

    providers, wants_gpu = choose_providers(device, True, available)
    assert [p if isinstance(p, str) else p[0] for p in providers] == expected
    assert wants_gpu == wanted
    for provider in providers:
        if not isinstance(provider, str):
            assert provider[1]['device_id'] == (1 if device == 'cuda:1' else 0)
            if provider[0] == 'TensorrtExecutionProvider':
                assert provider[1]['trt_fp16_enable'] is True
    with pytest.raises(ConfigError):
        choose_providers('gpu0', True, available)


# ---------------------------------------------------------------- inference size
def test_working_size_keeps_the_aspect_and_the_pixel_budget():
    from tesg_ros.engine import working_size

    assert working_size((720, 1280), 0) == (720, 1280)
    assert working_size((480, 640), 640 * 480) == (480, 640)
    height, width = working_size((720, 1280), 640 * 360)
    assert height * width <= 640 * 360 and abs(width / height - 1280 / 720) < 0.01
    assert working_size((1, 5000), 100) == (1, 100) or working_size((1, 5000), 100)[0] == 1


def test_guided_upsampling_restores_a_local_mix_of_the_sources():
    """A fused image that is locally a mix of the sources comes back at full resolution with
    the sources' own edges; bilinear upsampling of the small result blurs them."""
    import cv2

    from tesg_ros.engine import guided_upsample

    rng = np.random.default_rng(0)
    ir = cv2.GaussianBlur(rng.random((240, 320)).astype(np.float32), (0, 0), 1.0)
    vis = np.zeros((240, 320), np.float32)
    vis[:, 161:] = 0.8  # a sharp edge at an odd column
    weight = np.linspace(0.2, 0.7, 320, dtype=np.float32)[None].repeat(240, 0)
    full = weight * ir + (1 - weight) * vis
    small = (120, 160)

    def down(image):
        return cv2.resize(image, small[::-1], interpolation=cv2.INTER_AREA)

    low_ir, low_vis = down(ir), down(vis)
    low = down(full)
    guided = guided_upsample(low, (low_ir, low_vis), (ir, vis))
    bilinear = cv2.resize(low, (320, 240), interpolation=cv2.INTER_LINEAR)
    guided_error = np.abs(guided - full)[4:-4, 4:-4]
    bilinear_error = np.abs(bilinear - full)[4:-4, 4:-4]
    assert guided.shape == full.shape
    assert guided_error.mean() < 0.5 * bilinear_error.mean()
    assert guided_error.max() < bilinear_error.max()


def test_engine_with_max_pixels_fuses_at_full_size_close_to_the_full_network(
        shipped_weights, tno_pairs):
    import cv2

    pair = tno_pairs[-1]
    ir, bgr = _bgr(pair, (480, 640))
    reference = _engine(shipped_weights).process(ir, bgr)
    engine = _engine(shipped_weights, **{'model.max_pixels': 320 * 240})
    reduced = engine.process(ir, bgr)
    assert reduced.bgr.shape == reference.bgr.shape == bgr.shape
    assert 'upsample' in reduced.timings_ms
    assert reduced.masks.shape[1:] == bgr.shape[:2]
    # Against the naive alternative: the network at 320x240, its output resized up.
    small = _engine(shipped_weights).process(cv2.resize(ir, (320, 240)),
                                             cv2.resize(bgr, (320, 240)))
    naive = cv2.resize(small.bgr, (640, 480), interpolation=cv2.INTER_LINEAR)

    def error(image):
        return np.abs(image.astype(float) - reference.bgr).mean()

    # Most of what remains is the network's own dependence on the scale (docs/benchmarks.md).
    assert error(reduced.bgr) < error(naive), (error(reduced.bgr), error(naive))
    # The upsampling alone: the full-size result, shrunk and brought back by each method.
    from tesg_ros.engine import guided_upsample
    from tesg_ros.network.colour import luma_from_bgr_uint8

    full_y = luma_from_bgr_uint8(reference.bgr)
    ir_f = reference.thermal_registered
    vis_y = luma_from_bgr_uint8(bgr)

    def shrink(image):
        return cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)

    guided = guided_upsample(shrink(full_y), (shrink(ir_f), shrink(vis_y)), (ir_f, vis_y))
    bilinear = cv2.resize(shrink(full_y), (640, 480), interpolation=cv2.INTER_LINEAR)
    assert np.abs(guided - full_y).mean() < 0.7 * np.abs(bilinear - full_y).mean()
    with pytest.raises(ConfigError):
        _engine(shipped_weights, **{'model.backend': 'tensorflow'})


# ---------------------------------------------------------------- overload, describer
def test_overload_message_names_the_share_and_the_fusion_time_against_the_period():
    from tesg_ros.ros.fusion_node import overload_message

    assert overload_message(30, 30, 0.8, 20.0, 30.0) == ''
    assert overload_message(2, 0, 0.8, 20.0, 30.0) == ''  # too few pairs to judge
    assert overload_message(30, 10, 0.0, 80.0, 30.0) == ''  # disabled
    message = overload_message(30, 15, 0.8, 66.0, 30.0)
    assert 'fused 15 of 30 pairs (50%' in message and '66 ms' in message
    assert '33 ms' in message


def test_describer_hog_height_zero_runs_at_the_frame_size():
    from tesg_ros.sig.describer import OfflineDescriber

    with pytest.raises(ConfigError, match='hog_height'):
        OfflineDescriber(hog_height=64)
    describer = OfflineDescriber(hog_height=0)
    calls = []
    describer.hog.detect = lambda bgr, scale: calls.append(scale) or []
    frame = np.full((300, 400, 3), 90, np.uint8)
    thermal = np.full((300, 400), 0.3, np.float32)
    describer(frame, thermal)
    assert calls == [1.0]
    describer = OfflineDescriber(hog_height=600)
    describer.hog.detect = lambda bgr, scale: calls.append(scale) or []
    describer(frame, thermal)
    assert calls[-1] == 2.0


def test_replay_report_warns_of_overload_and_records_platform_and_plot(tmp_path):
    from tesg_ros import replay, replay_report

    result = {'input_pairs': 100, 'fused_matched': 20}
    node = {'processing_ms': {'p50': 180.0}, 'device': 'cpu', 'backend': 'torch',
            'torch_threads': 1}
    warning = replay_report.overload_warning(result, node, planned_wall_seconds=10.0)
    assert 'fused 20 of 100 pairs (20%' in warning and '180 ms' in warning
    assert '100 ms' in warning  # 10 s / 100 pairs
    assert replay_report.overload_warning({'input_pairs': 100, 'fused_matched': 95}, node,
                                          10.0) == ''
    info = replay_report.platform_info(node)
    assert info['backend'] == 'torch' and info['device'] == 'cpu' and info['usable_cpus'] >= 1
    assert info['cpu']
    tracker = replay.PairTracker(10, 0.05, 0.0)
    for index in range(5):
        stamp = 1_000_000_000 + index * 100_000_000
        tracker.published('thermal', stamp, index * 0.1)
        tracker.published('rgb', stamp, index * 0.1 + 0.01)
        if index % 2 == 0:
            tracker.fused(stamp, index * 0.1 + 0.05)
    latencies = tracker.latencies_ms()
    assert len(latencies) == 3 and all(abs(v - 40.0) < 1e-6 for v in latencies)
    path = replay_report.write_latency_plot(latencies, tmp_path / 'latency.png')
    assert path and (tmp_path / 'latency.png').stat().st_size > 1000
    assert replay_report.write_latency_plot([], tmp_path / 'none.png') is None
    report = {'platform': info, 'process_cpu': {'covers': 'x', 'seconds': 1.0,
                                                'wall_seconds': 2.0, 'cores': 0.5},
              'latency_plot': path}
    assert 'Platform: cpu' in _markdown_tail(replay_report, report)


def _markdown_tail(replay_report, extra):
    report = {'bag': 'b', 'command': 'c', 'mode': 'in-process', 'rate': 1.0, 'loops': 1,
              'storage': 'mcap', 'output_bag': 'o', 'bag_seconds': 1.0,
              'publish_wall_seconds': 1.0, 'planned_wall_seconds': 1.0, 'wall_seconds': 1.0,
              'interrupted': False, 'published': {}, 'publish_lag_ms': {'count': 0},
              'result': {'drop_rate': None, 'input_pairs': 0, 'fused_received': 0,
                         'fused_matched': 0, 'unexpected_fused': 0, 'duplicate_fused': 0,
                         'pairs_without_output': 0, 'latency_ms': {'count': 0}},
              'warnings': [], **extra}
    return replay_report.format_markdown(report)


def test_node_overload_check_covers_one_diagnostics_period():
    from types import SimpleNamespace

    from tesg_ros.ros.fusion_node import FusionNode

    warned = []
    node = SimpleNamespace(_params={'diagnostics.min_fused_share': 0.8},
                           _warn_once=lambda key, message: warned.append(message))
    values = {'pairs': 10, 'published': 10, 'pairs_rate_hz': 30.0,
              'processing_ms': {'count': 10, 'p50': 50.0}}
    assert FusionNode._overload_check(node, values) == ''  # the first message: no period yet
    values = dict(values, pairs=40, published=20)
    message = FusionNode._overload_check(node, values)
    assert 'fused 10 of 30 pairs' in message and '50 ms' in message and warned == [message]
    assert values['period_fused_share'] == 0.333
    values = dict(values, pairs=70, published=49)
    assert FusionNode._overload_check(node, values) == ''  # 29 of 30 in this period
