# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The request parser: which classes, which intent, one canonical sentence per meaning."""

import pytest

from tesg_ros.sig.request import (
    canonical_sentence, make_request, parse_request, Request, text_classes)


@pytest.mark.parametrize('text, classes', [
    ('people walking', ('person',)), ('a person', ('person',)), ('pedestrians', ('person',)),
    ('two walkers', ('person',)), ('a man', ('person',)), ('Children!', ('person',)),
    ('cars', ('vehicle',)), ('a truck', ('vehicle',)), ('buses and vans', ('vehicle',)),
    ('bikes', ('vehicle',)), ('a cyclist', ('person', 'vehicle')),
    ('dogs', ('animal',)), ('deer in the field', ('animal',)),
    ('hot spots', ('warm',)), ('warm objects', ('warm',)), ('heat sources', ('warm',)),
    ('people and hot spots', ('warm',)),   # warm covers every warm object
    ('cars, and the people', ('person', 'vehicle')),
])
def test_class_words_synonyms_and_plurals(text, classes):
    assert parse_request(text).classes == classes


@pytest.mark.parametrize('text, intent', [
    ('show the visible scene', 'visible'), ('daylight detail', 'visible'),
    ('it is dark', 'thermal'), ('night', 'thermal'), ('smoke', 'thermal'),
    ('heavy fog', 'thermal'), ('glare from headlights', 'thermal'),
    ('not foggy', None), ('dark night but show the visible scene', None),  # cancel
    ('a street with trees', None),
])
def test_intent_words(text, intent):
    assert parse_request(text).intent == intent


def test_negation_drops_the_classes_of_its_clause_only():
    assert parse_request('show the visible scene only, no warm objects') == \
        make_request((), 'visible')
    assert parse_request('no people or cars, only dogs').classes == ('animal',)
    assert parse_request('neither people nor cars').neutral
    assert parse_request("don't show cars, show people").classes == ('person',)
    assert parse_request('a day scene with no warm objects or people detected').neutral


def test_empty_unknown_and_class_free_texts_are_neutral():
    for text in ('', None, 'nothing', 'the quick brown box', 'a carpet', 'just fuse'):
        request = parse_request(text)
        assert request.neutral and request.mask_phrases == () and request.canonical == ''


def test_paraphrases_share_one_canonical_sentence():
    group = ['people walking', 'show me the pedestrians', 'a person', 'walkers please',
             'highlight people', 'Where are the humans?']
    assert {parse_request(t).canonical for t in group} == {'highlight people'}
    group = ['cars and people at night', 'pedestrians and vehicles, it is dark',
             'in the dark: a man, a truck']
    assert {parse_request(t).canonical for t in group} == \
        {'highlight people and vehicles, it is dark'}
    # The canonical sentence parses back to the same request.
    for request in (make_request(c, i) for c in ((), ('person',), ('vehicle', 'animal'),
                                                 ('warm',)) for i in (None, 'visible',
                                                                      'thermal')):
        assert parse_request(canonical_sentence(request)) == request


def test_describer_sentences():
    assert parse_request('a night scene with two pedestrians on the left and one warm '
                         'vehicle-shaped object in the centre') == \
        make_request(('person', 'vehicle'), 'thermal')
    assert parse_request('a day scene with one warm person-shaped object on the right') == \
        make_request(('person',))
    assert text_classes('one warm person-shaped object') == {'person'}
    assert text_classes('one small hot spot') == {'warm'}


def test_make_request_checks_its_arguments():
    assert make_request(['vehicle', 'person']) == Request(('person', 'vehicle'), None)
    with pytest.raises(ValueError, match='unknown classes'):
        make_request(['ghost'])
    with pytest.raises(ValueError, match='unknown intent'):
        make_request((), 'loud')
