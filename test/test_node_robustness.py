# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The node's defences without DDS: output ordering across time jumps, the mailbox's
accounting, bounded thread joins, checked weights, degenerate sizes, bad CameraInfo.

The same faults over real DDS are in test_fault_injection.py.
"""

import json
import math
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tesg_ros.errors import ImageEncodingError
from tesg_ros.mailbox import LatestMailbox

S = 10**9  # one second in ns
PUBLISH, OUT_OF_ORDER, FUTURE = 'publish', 'out_of_order', 'future'
BACKWARD_JUMP, FORWARD_JUMP = 'backward', 'forward'


def OutputOrder(jump_ns):  # noqa: N802 - imported late so the other tests run without it
    from tesg_ros.sensor.stamp_order import OutputOrder as order_class
    return order_class(jump_ns)


def _feed(order, stamps_s, clock_s=None):
    """Run stamps (s) through ``order``; publish what it allows; return the verdicts."""
    verdicts = []
    for index, stamp_s in enumerate(stamps_s):
        stamp = int(stamp_s * S)
        clock = int((clock_s[index] if clock_s else stamp_s) * S)
        verdict, jump = order.check(stamp, clock)
        if verdict == PUBLISH:
            order.published(stamp, clock)
        verdicts.append(jump or verdict)
    return verdicts


def test_a_single_future_pair_is_dropped_and_never_becomes_the_reference():
    order = OutputOrder(1 * S)
    clock = [100.0, 100.1, 100.2, 100.3, 100.4]
    verdicts = _feed(order, [100.0, 100.1, 100.2 + 3600, 100.3, 100.4], clock)
    assert verdicts == [PUBLISH, PUBLISH, FUTURE, PUBLISH, PUBLISH]
    assert order.last_stamp_ns == int(100.4 * S)
    # A year ahead, the same.
    assert _feed(order, [100.5 + 365 * 86400, 100.6], [100.5, 100.6]) == [FUTURE, PUBLISH]


def test_a_confirmed_forward_jump_and_a_backward_jump_reset_the_ordering():
    order = OutputOrder(1 * S)
    # The driver clock steps 60 s ahead: the first pair is taken for an outlier, the second
    # (consistent with it) confirms the jump; the ordering then follows the new time.
    clock = [10.0, 10.1, 10.2, 10.3, 10.4]
    assert _feed(order, [10.0, 10.1, 70.2, 70.3, 70.4], clock) == [
        PUBLISH, PUBLISH, FUTURE, FORWARD_JUMP, PUBLISH]
    # A bag loop: 60 s back. Published at once, then in order again.
    assert _feed(order, [10.5, 10.6], [10.5, 10.6]) == [BACKWARD_JUMP, PUBLISH]
    # Reordering within the bound is still dropped.
    assert _feed(order, [10.55, 10.6, 10.7], [10.7, 10.7, 10.7]) == [
        OUT_OF_ORDER, OUT_OF_ORDER, PUBLISH]


def test_a_camera_that_stalls_and_resumes_is_not_a_time_jump():
    order = OutputOrder(1 * S)
    # 30 s without frames, the node clock advanced as much: no jump, nothing dropped.
    assert _feed(order, [5.0, 5.1, 35.1, 35.2], [5.0, 5.1, 35.1, 35.2]) == [PUBLISH] * 4
    with pytest.raises(ValueError):
        OutputOrder(0)


def test_the_mailbox_accounts_for_every_item_put():
    mailbox = LatestMailbox()
    assert mailbox.put(1) is False
    assert mailbox.put(2) is True  # 1 overwritten
    assert mailbox.take(timeout=0.1) == 2
    mailbox.put(3)
    mailbox.close()  # 3 was never taken
    assert mailbox.put(4) is False  # after close
    assert (mailbox.delivered, mailbox.overwritten, mailbox.discarded, mailbox.rejected) == (
        1, 1, 1, 1)


def test_stop_joins_a_running_backend_call_within_its_bound():
    from tesg_ros.sig.refresher import make_semantics, SemanticsRefresher

    class Encoder:
        dim = 4

        def encode(self, texts):
            return np.ones((len(texts), 4), np.float32) / 2

    started = threading.Event()

    def slow_backend(visible, thermal):
        started.set()
        time.sleep(0.5)
        return 'a person'

    initial = make_semantics('nothing', Encoder(), 'initial', 'none')
    refresher = SemanticsRefresher(slow_backend, Encoder(), initial, period_s=0.05,
                                   timeout_s=5.0)
    refresher.submit_frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32))
    refresher.start()
    assert started.wait(5.0)
    assert refresher.stop(timeout=5.0) is True
    # No backend thread is left running native code behind the caller's back.
    assert not [t for t in threading.enumerate() if t.name == 'tesg-semantics-backend']


def _hostile_checkpoint(path, **config_changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    torch = pytest.importorskip('torch')
    from tesg_ros.network import TesgFusionNet
    from tesg_ros.network.tesg_net import TesgConfig
    from tesg_ros.network.weights import save_fusion_net

    torch.manual_seed(0)
    save_fusion_net(TesgFusionNet(TesgConfig()), path)
    with safe_open(str(path), framework='pt') as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads(metadata['config'])
    config.update(config_changes)
    metadata['config'] = json.dumps(config)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize('changes, reason', [
    ({'channels': 40000}, 'channels = 40000 is above'),
    ({'channels': 1024, 'heads': 2}, 'has shape'),  # in bounds: the shapes give it away
    ({'text_dim': 8192}, 'text_dim mismatch'),
])
def test_hostile_weights_metadata_is_refused_before_any_allocation(tmp_path, changes, reason):
    path = _hostile_checkpoint(tmp_path / 'hostile.safetensors', **changes)
    # Under a 3 GiB address-space limit: building the network first would fail differently
    # (or, on a robot without a limit, call the OOM killer).
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from tesg_ros.errors import ConfigError
        from tesg_ros.network.weights import load_fusion_net
        try:
            load_fusion_net({str(path)!r})
        except ConfigError as error:
            print('ConfigError:', error)
            sys.exit(0)
        sys.exit(3)
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert reason in result.stdout and 'hostile.safetensors' in result.stdout


@pytest.fixture(scope='module')
def engine(random_weights):
    pytest.importorskip('torch')
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults

    params = dict(defaults(), **{'model.weights': random_weights, 'model.device': 'cpu',
                                 'model.threads': 1, 'semantics.mode': 'disabled'})
    engine = FusionEngine(EngineSettings.from_params(params))
    yield engine
    engine.close()


@pytest.mark.parametrize('thermal_shape, rgb_shape, kind, size', [
    ((1, 1), (1, 1, 3), 'rgb', '1x1'),
    ((64, 64), (0, 0, 3), 'rgb', '0x0'),
    ((4, 64), (48, 64, 3), 'thermal', '64x4'),
])
def test_degenerate_frame_sizes_are_bad_input_with_the_reason(
        engine, thermal_shape, rgb_shape, kind, size):
    with pytest.raises(ImageEncodingError, match=f'{kind} image is {size} .*degenerate'):
        engine.process(np.zeros(thermal_shape, np.uint8), np.zeros(rgb_shape, np.uint8))
    fused = engine.process(np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8))
    assert fused.bgr.shape == (8, 8, 3)


def test_fused_camera_info_never_carries_nan_or_a_wrong_size(engine):
    msg = pytest.importorskip('sensor_msgs.msg')
    from std_msgs.msg import Header

    engine.registration = None
    fused = engine.process(np.full((48, 64), 100, np.uint8), np.full((48, 64, 3), 90, np.uint8))
    height, width = fused.bgr.shape[:2]

    def info(**changes):
        camera = msg.CameraInfo(width=64, height=48, distortion_model='plumb_bob',
                                d=[0.0] * 5, k=[50.0, 0, 32, 0, 50.0, 24, 0, 0, 1])
        for name, value in changes.items():
            setattr(camera, name, value)
        return camera

    nan, inf = float('nan'), float('inf')
    good = engine.output_camera_info(info(), Header(), width, height)
    assert good.k[0] == 50.0 and engine.camera_info_error == ''
    for bad in (info(k=[nan, 0, 32, 0, 50.0, 24, 0, 0, 1]),
                info(k=[-50.0, 0, 32, 0, 50, 24, 0, 0, 1]), info(width=0, height=0),
                info(d=[0.001] * 1000), info(d=[nan] * 5), info(p=[inf] * 12),
                info(r=[nan] * 9), info(width=640, height=480)):
        out = engine.output_camera_info(bad, Header(), width, height)
        assert (out.width, out.height) == (width, height)
        assert all(math.isfinite(v) for v in list(out.k) + list(out.d) + list(out.r)
                   + list(out.p))
        assert len(out.d) <= 14 and not any(out.k)
        assert engine.camera_info_error.startswith('rgb camera_info not used')
        assert engine.diagnostics()['camera_info_error'] == engine.camera_info_error
