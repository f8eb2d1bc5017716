# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""What a text asks of the fusion: which object classes, which global balance.

A description or operator prompt is parsed into a :class:`Request`:

* ``classes``: the object classes it names, a subset of ``person``, ``vehicle``, ``animal``,
  ``warm`` (synonyms and plurals: "pedestrians", "a man", "walkers", "cars", "truck", "bike",
  "dogs", "hot spots", "warm objects" ...). A clause that names a person/vehicle/animal class
  uses warm words as adjectives ("warm person-shaped object" is a person); a clause with warm
  words only ("small hot spot", "heat sources") names ``warm``, i.e. every warm object. A
  cyclist / rider is a person and a vehicle. Classes after a negation word in the same clause
  ("no warm objects", "without the cars") are not named.
* ``intent``: ``'visible'`` (show the visible scene / daylight detail: lower infrared share
  outside the objects), ``'thermal'`` (dark / night / smoke / fog / glare: raise it where the
  visible image carries little) or None. Both in one text cancel (None). Negated intent words
  ("no fog") do nothing.

Unknown words do nothing. The request is then written as one canonical sentence
(:func:`canonical_sentence`): paraphrases of the same request give the same sentence, hence
the same text embedding, and the masks are those of the named classes
(:attr:`Request.mask_phrases`). A request naming nothing is neutral: no masks and the zero
text vector (the network's "no semantics").
"""

from dataclasses import dataclass
import re

PERSON = 'person'
VEHICLE = 'vehicle'
ANIMAL = 'animal'
WARM = 'warm'
CLASSES = (PERSON, VEHICLE, ANIMAL, WARM)   # canonical order
VISIBLE = 'visible'
THERMAL = 'thermal'
INTENTS = (VISIBLE, THERMAL)

# Base forms; plurals are found by the rules of _base_form.
PERSON_WORDS = frozenset({
    'person', 'people', 'persons', 'pedestrian', 'man', 'men', 'woman', 'women', 'child',
    'children', 'kid', 'human', 'figure', 'walker', 'someone', 'somebody', 'passerby',
    'passersby', 'boy', 'girl', 'soldier', 'hiker', 'runner', 'jogger', 'crowd', 'body',
    'bodies', 'individual'})
VEHICLE_WORDS = frozenset({
    'vehicle', 'car', 'truck', 'lorry', 'bus', 'buses', 'van', 'jeep', 'bike', 'bicycle',
    'motorbike', 'motorcycle', 'scooter', 'moped', 'tank', 'automobile', 'taxi', 'tractor',
    'traffic'})
RIDER_WORDS = frozenset({'cyclist', 'rider', 'biker', 'motorcyclist', 'bicyclist', 'driver'})
ANIMAL_WORDS = frozenset({
    'animal', 'dog', 'cat', 'deer', 'horse', 'cow', 'sheep', 'bird', 'fox', 'wildlife',
    'boar', 'rabbit', 'pet'})
WARM_WORDS = frozenset({
    'warm', 'hot', 'heat', 'fire', 'flame', 'hotspot', 'blaze', 'glowing', 'warmer',
    'hottest', 'warmest'})
# Intent: lower the infrared share outside the objects / raise it where the visible is poor.
VISIBLE_WORDS = frozenset({'visible', 'daylight', 'rgb', 'colour', 'color', 'colours',
                           'colors', 'natural'})
THERMAL_INTENT_WORDS = frozenset({
    'dark', 'darkness', 'night', 'nighttime', 'smoke', 'smoky', 'fog', 'foggy', 'mist',
    'misty', 'haze', 'hazy', 'glare', 'dazzle', 'dazzling', 'blinding', 'unlit', 'gloom',
    'dim', 'murky', 'obscured'})
NEGATIONS = frozenset({'no', 'not', 'without', 'none', 'nothing', 'never', 'ignore',
                       'except', 'excluding', 'nor', 'dont', 'neither', 'hide',
                       'drop', 'exclude'})
# A negation holds until the end of its clause: punctuation or one of these words.
CLAUSE_WORDS = frozenset({'but', 'with', 'while', 'though', 'although', 'yet', 'also',
                          'plus'})

_NOUNS = {PERSON: 'people', VEHICLE: 'vehicles', ANIMAL: 'animals', WARM: 'warm objects'}
_INTENT_SENTENCES = {VISIBLE: 'show the visible scene around them',
                     THERMAL: 'it is dark'}
_INTENT_ONLY = {VISIBLE: 'show the visible scene', THERMAL: 'it is dark'}


def _base_form(word):
    """The vocabulary form of ``word``: plurals ('cars', 'buses', 'bodies') to singular."""
    vocabulary = (PERSON_WORDS | VEHICLE_WORDS | RIDER_WORDS | ANIMAL_WORDS | WARM_WORDS
                  | VISIBLE_WORDS | THERMAL_INTENT_WORDS)
    if word in vocabulary:
        return word
    for suffix, replacement in (('ies', 'y'), ('es', ''), ('s', '')):
        if word.endswith(suffix) and word[:-len(suffix)] + replacement in vocabulary:
            return word[:-len(suffix)] + replacement
    return word


def word_classes(word):
    """The classes one word names (a frozenset), e.g. 'cyclists' -> {person, vehicle}."""
    base = _base_form(word)
    classes = set()
    if base in PERSON_WORDS or base in RIDER_WORDS:
        classes.add(PERSON)
    if base in VEHICLE_WORDS or base in RIDER_WORDS:
        classes.add(VEHICLE)
    if base in ANIMAL_WORDS:
        classes.add(ANIMAL)
    return frozenset(classes)


def _tokens(text):
    """Lower-case words and clause-break characters of ``text`` ("don't" -> 'do', 'not')."""
    text = text.lower().replace('n' + chr(39) + 't', ' not').replace('-', ' ')
    return re.findall(r'[a-z]+|[.;,:!?\n()]', text)


def _clauses(text):
    """Clauses of ``text``: lists of parts (split at 'and' / 'or'), each a list of
    (word, negated) pairs. A negation holds to the end of its clause, across its parts."""
    clauses, parts, current, negated = [], [], [], False
    for token in _tokens(text):
        if not token.isalpha() or token in CLAUSE_WORDS:
            if current:
                parts.append(current)
            if parts:
                clauses.append(parts)
            parts, current, negated = [], [], False
        elif token in ('and', 'or', 'nor'):
            if current:
                parts.append(current)
            current = []
            negated = negated or token == 'nor'
        elif token in NEGATIONS:
            negated = True
        else:
            current.append((token, negated))
    if current:
        parts.append(current)
    if parts:
        clauses.append(parts)
    return clauses


def part_classes(words):
    """Classes named by one part of a clause: its object classes, else warm if it has a
    warm word ("small hot spot"), else none."""
    classes = set()
    warm = False
    for word in words:
        classes |= word_classes(word)
        warm = warm or _base_form(word) in WARM_WORDS
    if classes:
        return frozenset(classes)
    return frozenset({WARM}) if warm else frozenset()


@dataclass(frozen=True)
class Request:
    """A parsed request: ``classes`` (tuple in :data:`CLASSES` order) and ``intent``.

    ``warm`` (every warm object) covers the other classes, so a request naming it is
    canonicalised to ``('warm',)``: the masks would be the same.
    """

    classes: tuple = ()
    intent: str = None

    @property
    def neutral(self):
        """True when the request asks for nothing: no masks, the zero text vector."""
        return not self.classes and self.intent is None

    @property
    def mask_phrases(self):
        """One phrase per named class, for the mask backends ('people', 'warm objects')."""
        return tuple(_NOUNS[name] for name in self.classes)

    @property
    def canonical(self):
        """The canonical sentence (:func:`canonical_sentence`)."""
        return canonical_sentence(self)

    def as_dict(self):
        return {'classes': list(self.classes), 'intent': self.intent,
                'canonical': self.canonical}


def make_request(classes=(), intent=None):
    """A canonical :class:`Request` from any iterable of class names and an intent."""
    classes = set(classes)
    unknown = classes - set(CLASSES)
    if unknown:
        raise ValueError(f'unknown classes {sorted(unknown)}; known: {CLASSES}')
    if intent is not None and intent not in INTENTS:
        raise ValueError(f'unknown intent {intent!r}; known: {INTENTS}')
    if WARM in classes:
        classes = {WARM}
    return Request(classes=tuple(name for name in CLASSES if name in classes), intent=intent)


def text_classes(text):
    """Every class ``text`` names, not reduced to ``warm`` (a mask backend's view of one
    phrase: "warm person-shaped object" -> {person}, "small hot spot" -> {warm})."""
    classes = set()
    for clause in _clauses(text or ''):
        for part in clause:
            classes |= part_classes([word for word, negated in part if not negated])
    return frozenset(classes)


def parse_request(text):
    """Parse a description or prompt (str; None = '') into a canonical :class:`Request`."""
    classes, intents = set(), set()
    for clause in _clauses(text or ''):
        for part in clause:
            words = [word for word, negated in part if not negated]
            classes |= part_classes(words)
            intents |= _intents(words)
    intent = intents.pop() if len(intents) == 1 else None
    return make_request(classes, intent)


def _intents(words):
    intents = set()
    for word in words:
        base = _base_form(word)
        if base in VISIBLE_WORDS:
            intents.add(VISIBLE)
        elif base in THERMAL_INTENT_WORDS:
            intents.add(THERMAL)
    return intents


def canonical_sentence(request):
    """One sentence per request; '' for the neutral request.

    e.g. (person, vehicle) + visible -> 'highlight people and vehicles, show the visible scene
    around them'; thermal only -> 'it is dark'.
    """
    nouns = [_NOUNS[name] for name in request.classes]
    if not nouns:
        return _INTENT_ONLY.get(request.intent, '')
    if len(nouns) == 1:
        sentence = f'highlight {nouns[0]}'
    else:
        sentence = f'highlight {", ".join(nouns[:-1])} and {nouns[-1]}'
    if request.intent is not None:
        sentence += f', {_INTENT_SENTENCES[request.intent]}'
    return sentence
