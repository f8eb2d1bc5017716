# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The semantics of an evaluation run (:mod:`.evaluate`), deterministic in bag order.

* ``replay``: the engine takes the recorded ``semantics`` topic (JSON written by the node, or
  plain text as ``tesg-make-bag --semantics`` writes it) in bag order;
* ``live``: the engine's Semantic Information Generator describes a frame synchronously
  (``sig.describe_now``) every ``semantics_every`` pairs, or every ``semantics.period``
  seconds of bag time; as in the node, a description is used from the next frame on and the
  first frames use the SIG's initial description;
* ``disabled``: zero masks and text.

:class:`EvaluationSemantics` also tracks scene changes between consecutive visible frames,
which the report sets beside the descriptions.
"""

import json
import time
import warnings

import numpy as np

from tesg_ros import bags, node_params
from tesg_ros.errors import ConfigError

# The node's semantics.mode values; 'off' is an older spelling of 'disabled', still accepted.
SEMANTICS_MODES = node_params.PARAMETERS_BY_NAME['semantics.mode'].choices
DEPRECATED_SEMANTICS = {'off': 'disabled'}


def semantics_mode(value):
    """``value`` with the deprecated spelling 'off' replaced by 'disabled' (warns)."""
    if value in DEPRECATED_SEMANTICS:
        new = DEPRECATED_SEMANTICS[value]
        warnings.warn(f'semantics {value!r} is deprecated; use {new!r}', FutureWarning,
                      stacklevel=3)
        return new
    return value


def recorded_semantics_record(text):
    """A recorded ``semantics`` String as ``{'description', 'phrases'}``.

    The node records the JSON of its semantics snapshot (an object with 'description' and
    'phrases'); any text that is not a JSON object is a plain description (as
    ``tesg-make-bag --semantics`` writes it) and is split into phrases like a describer's
    output. A JSON object without a 'description' raises ConfigError.
    """
    from tesg_ros.sig.describer import split_phrases

    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        if 'description' not in record:
            raise ConfigError(f'recorded semantics JSON has no "description": {text[:80]!r}')
        phrases = record.get('phrases')
        if phrases is None:
            phrases = split_phrases(str(record['description']))
        return {'description': str(record['description']), 'phrases': list(phrases)}
    return {'description': ' '.join(text.split()), 'phrases': list(split_phrases(text))}


def choose_semantics(bag, options, explicit):
    """``(mode, topic)`` of a run: ``options`` (:class:`~.evaluate.EvaluationOptions`), then
    the explicit ``semantics.mode`` parameter, then replay when the bag has one topic named
    ``.../semantics``, else live. ``topic`` is None unless the mode is replay; a topic that is
    missing, of the wrong type or ambiguous raises ConfigError."""
    topic = options.semantics_topic
    if topic is not None:
        info = bag.topics.get(topic)
        if info is None:
            raise ConfigError(f'semantics topic {topic} is not in the bag; it has '
                              f'{bag.describe_topics()}')
        if info.msgtype != bags.STRING:
            raise ConfigError(f'semantics topic {topic} is a {info.msgtype}, expected '
                              f'{bags.STRING}')
    else:
        candidates = [info.name for info in bag.topics.values()
                      if info.msgtype == bags.STRING and info.count > 0
                      and info.name.rsplit('/', 1)[-1] == 'semantics']
        if len(candidates) > 1:
            raise ConfigError(f'several semantics topics {candidates}; choose one with '
                              '--semantics-topic')
        topic = candidates[0] if candidates else None
    mode = options.semantics or explicit.get('semantics.mode')
    if mode is None:
        mode = 'replay' if topic is not None else 'live'
    if mode == 'replay' and topic is None:
        raise ConfigError('semantics replay needs a recorded std_msgs/String topic named '
                          '.../semantics (or --semantics-topic); the bag has '
                          f'{bag.describe_topics()}. Use --semantics live or disabled')
    return mode, topic if mode == 'replay' else None


class EvaluationSemantics:
    """The description in force while a bag is evaluated, and where it changed.

    mode: 'replay', 'live' or 'disabled'; topic: the recorded semantics topic (replay only).
    ``semantics_every`` (live: describe every N pairs; None = every ``semantics.period``
    seconds of RGB stamps, from ``params``). The engine is passed in: it is built lazily, on
    the first pair.
    """

    def __init__(self, mode, topic, params, semantics_every=None):
        self.mode = mode
        self.topic = topic
        self.params = params
        self.semantics_every = semantics_every
        self.description = None
        self.phrases = []
        self.descriptions = []  # (first frame index, description, source)
        self.pending = None  # recorded record not yet given to the engine
        self.last_refresh = None  # (frame index, rgb stamp ns) of the last live description
        self.previous_thumbnail = None  # grey 64 x 64 of the last visible frame (scenes)
        self.messages = 0
        self.errors = 0
        self.first_error = None

    def settings(self):
        """``{'mode', 'topic'}`` (+ 'schedule' when live) for the result."""
        settings = {'mode': self.mode, 'topic': self.topic}
        if self.mode == 'live':
            settings['schedule'] = (
                f'every {self.semantics_every} pairs' if self.semantics_every
                else f'every {self.params["semantics.period"]:g} s of RGB stamps')
        return settings

    def start(self, engine):
        """A new engine: live mode starts from the SIG's initial description."""
        if self.mode == 'live':
            initial = engine.sig.semantics()
            self._apply(engine, {'description': initial.description,
                                 'phrases': list(initial.phrases)}, 0, 'initial')

    def on_recorded(self, msg, engine, frame_index):
        """A message of the recorded topic; used from ``frame_index`` on (kept until the
        engine exists when it is None). A message that cannot be read counts as a failure."""
        self.messages += 1
        try:
            record = recorded_semantics_record(str(msg.data))
        except ConfigError as error:
            self._failed(str(error))
            return
        self.pending = record
        if engine is not None:
            self.take_pending(engine, frame_index)

    def take_pending(self, engine, frame_index):
        """Give the engine the recorded description received before its first frame."""
        record, self.pending = self.pending, None
        if record is not None:
            self._apply(engine, record, frame_index, 'recorded')

    def refresh_live(self, engine, frame_index, stamp_ns, visible, thermal_registered):
        """Describe this frame when due (used from the next frame on); the time taken, ms."""
        if self.last_refresh is not None:
            last_index, last_stamp = self.last_refresh
            if self.semantics_every:
                due = frame_index - last_index >= self.semantics_every
            else:
                due = stamp_ns - last_stamp >= self.params['semantics.period'] * bags.NS_PER_S
            if not due:
                return 0.0
        start = time.perf_counter()
        semantics = engine.sig.describe_now(visible, thermal_registered)
        elapsed = (time.perf_counter() - start) * 1e3
        self.last_refresh = (frame_index, stamp_ns)
        if semantics.error:
            self._failed(semantics.error)
            return elapsed
        if semantics.description != self.description:
            self._apply(engine, {'description': semantics.description,
                                 'phrases': list(semantics.phrases)},
                        frame_index + 1, semantics.source)
        return elapsed

    def scene_difference(self, visible_bgr):
        """Mean absolute grey difference to the previous frame (None for the first)."""
        import cv2

        grey = cv2.cvtColor(visible_bgr, cv2.COLOR_BGR2GRAY)
        thumbnail = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self.previous_thumbnail = self.previous_thumbnail, thumbnail
        if previous is None:
            return None
        return float(np.abs(thumbnail - previous).mean())

    def finish(self, result):
        """The descriptions (and recorded message count) into ``result.semantics``, failed
        updates into ``result.problems``."""
        result.semantics['descriptions'] = [
            {'first_frame': first, 'description': text, 'source': source}
            for first, text, source in self.descriptions]
        if self.topic:
            result.semantics['messages'] = self.messages
        if self.errors:
            result.problems.append(f'{self.errors} semantics update(s) failed; '
                                   f'first: {self.first_error}')

    def _apply(self, engine, record, frame_index, source):
        engine.set_recorded_semantics(record)
        self.description = record['description']
        self.phrases = list(record['phrases'])
        self.descriptions.append((frame_index, record['description'], source))

    def _failed(self, message):
        if not self.errors:
            self.first_error = message
        self.errors += 1
