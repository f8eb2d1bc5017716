# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The operator's text over DDS: ``~/prompt`` and ``semantics.prompt`` drive the same fusion.

The node runs live semantics (MiniLM, thermal masks) on TNO 19 with a seeded untrained network:
what is checked is the contract's plumbing (docs/semantics.md), not fusion quality. A prompt
applies from the next frame; the semantics are published latched with the stamp of the first
fused frame they applied to; a neutral text fuses exactly as no semantics at all; a paraphrase
given as the parameter fuses exactly as the topic's text; each fused frame equals the offline
engine's (replay) fusion of the same text.
"""

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from tesg_ros.sensor.image_codec import image_to_numpy  # noqa: E402
from test_fusion_node import Graph, rgb_message, thermal_message  # noqa: E402
from test_sig_text_encoder import load_minilm  # noqa: E402

PERSON_19 = (260, 123, 14, 44)  # x, y, w, h of the warm person in TNO 19
# Frames are stamped 100 s apart (one per prompt): above worker.time_jump's default, where the
# first pair after a forward jump is dropped as a future outlier (docs/node.md).
OVERRIDES = {'semantics.mode': 'live', 'semantics.period': 30.0,
             'thermal.temporal_alpha': 1.0, 'semantics.prompt': 'nothing',
             'worker.time_jump': 1000.0}


@pytest.fixture(scope='module')
def tno19_pair(test_data):
    import cv2
    ir = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_COLOR)
    return ir, vi


@pytest.fixture(scope='module')
def reference(random_weights):
    """Offline fusion of one pair for a text, through the engine in replay mode."""
    load_minilm()  # skips cleanly where the encoder is not installed
    from tesg_ros.engine import EngineSettings, FusionEngine
    from tesg_ros.node_params import defaults
    params = dict(defaults())
    params.update({'model.weights': random_weights, 'model.device': 'cpu',
                   'semantics.mode': 'replay', 'thermal.temporal_alpha': 1.0})
    engine = FusionEngine(EngineSettings.from_params(params))
    params.update({'semantics.mode': 'disabled'})
    plain = FusionEngine(EngineSettings.from_params(params))

    def fuse(text, ir, vi_bgr):
        thermal = (ir.astype(np.uint16) * 64 + 1000)  # as thermal_message sends it
        if text is None:
            return plain.process(thermal, vi_bgr).bgr
        engine.set_recorded_semantics({'description': text, 'phrases': []})
        return engine.process(thermal, vi_bgr).bgr

    yield fuse
    engine.close()
    plain.close()


def _fused_at(graph, sec):
    for message in graph.fused:
        if message.header.stamp.sec == sec:
            return image_to_numpy(message).astype(np.int16)
    return None


def _record_for(graph, description):
    for message in graph.semantics:
        record = json.loads(message.data)
        if record['description'] == description:
            return record
    return None


def _step(graph, ir, vi_bgr, sec, description):
    """Publish the pair stamped ``sec`` until it is fused; the latched record of
    ``description``."""
    def done():
        if _fused_at(graph, sec) is None:
            graph.publish_pair(thermal_message(ir), rgb_message(vi_bgr), sec=sec)
            time.sleep(0.2)
        return _fused_at(graph, sec) is not None and _record_for(graph, description)

    graph.wait_for(done, f'frame {sec} and the semantics of {description!r}', timeout=60.0)
    return _fused_at(graph, sec), _record_for(graph, description)


def test_prompt_topic_and_parameter_drive_the_same_fusion(random_weights, reference,
                                                          tno19_pair):
    ir, vi_bgr = tno19_pair
    graph = Graph(random_weights, OVERRIDES)
    try:
        engine = graph.node.engine
        # semantics.prompt at start: neutral text, no masks, zero text vector.
        neutral, record = _step(graph, ir, vi_bgr, 100, 'nothing')
        assert record['request'] == {'classes': [], 'intent': None, 'canonical': ''}
        assert record['stamp'] == {'sec': 100, 'nanosec': 0}
        assert np.abs(neutral - reference(None, ir, vi_bgr)).max() <= 1

        prompt = graph.driver.create_publisher(String, '/tesg_fusion/prompt', 10)
        graph.wait_for(lambda: prompt.get_subscription_count() > 0, 'prompt subscriber')
        prompt.publish(String(data='people walking'))
        graph.wait_for(lambda: engine._describer.prompt == 'people walking', 'the prompt')
        people, record = _step(graph, ir, vi_bgr, 200, 'people walking')
        # It applied from the next frame, and the record names that frame.
        assert record['stamp'] == {'sec': 200, 'nanosec': 0}
        assert record['request']['classes'] == ['person']
        assert record['request']['canonical'] == 'highlight people'
        assert np.abs(people - reference('people walking', ir, vi_bgr)).max() <= 1
        # The person's mask steers the person (an untrained network: only where, not how).
        change = np.abs(people - neutral).max(axis=2)
        x, y, w, h = PERSON_19
        inside = np.zeros(change.shape, bool)
        inside[y:y + h, x:x + w] = True
        assert change[inside].mean() > 2 * change[~inside].mean() + 0.1

        # A paraphrase through the parameter: the same request, the same fused image.
        result = graph.node.set_parameters([Parameter('semantics.prompt',
                                                      value='show me the pedestrians')])[0]
        assert result.successful
        paraphrase, record = _step(graph, ir, vi_bgr, 300, 'show me the pedestrians')
        assert record['stamp'] == {'sec': 300, 'nanosec': 0}
        assert record['request']['canonical'] == 'highlight people'
        assert np.array_equal(paraphrase, people)

        # Back to a class-free text on the topic: the neutral fusion again.
        prompt.publish(String(data='a street with trees'))
        graph.wait_for(lambda: engine._describer.prompt == 'a street with trees', 'the prompt')
        again, record = _step(graph, ir, vi_bgr, 400, 'a street with trees')
        assert record['stamp'] == {'sec': 400, 'nanosec': 0}
        assert np.array_equal(again, neutral)
    finally:
        graph.close()


def test_the_shipped_model_follows_a_visible_intent_over_dds(tno19_pair):
    """The shipped weights, live: "show the visible scene" on ``~/prompt`` moves the next fused
    frames' background towards the visible image (docs/semantics.md, "How much")."""
    import cv2
    from pathlib import Path
    weights = Path(__file__).resolve().parent.parent / 'model' / 'tesg_fusion.safetensors'
    load_minilm()
    ir, vi_bgr = tno19_pair
    graph = Graph(str(weights), OVERRIDES)
    try:
        neutral, _ = _step(graph, ir, vi_bgr, 100, 'nothing')
        prompt = graph.driver.create_publisher(String, '/tesg_fusion/prompt', 10)
        graph.wait_for(lambda: prompt.get_subscription_count() > 0, 'prompt subscriber')
        prompt.publish(String(data='show the visible scene'))
        graph.wait_for(lambda: graph.node.engine._describer.prompt == 'show the visible scene',
                       'the prompt')
        visible, record = _step(graph, ir, vi_bgr, 200, 'show the visible scene')
        assert record['request']['intent'] == 'visible'
    finally:
        graph.close()
    vis_y = cv2.cvtColor(vi_bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
    background = np.ones(vis_y.shape, bool)
    x, y, w, h = PERSON_19
    background[y:y + h, x:x + w] = False

    def distance(fused):
        luma = cv2.cvtColor(fused.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float64)
        return np.abs(luma - vis_y)[background].mean()

    assert distance(visible) < 0.8 * distance(neutral), (distance(visible), distance(neutral))
