# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Checkpoints of :class:`TesgFusionNet` in safetensors format (no pickle).

File layout: the model's ``state_dict`` tensors, plus string metadata
``format = 'tesg_fusion_net'``, ``format_version = '1'`` and ``config`` = the JSON of
:meth:`TesgConfig.to_dict`. Every problem with a file (missing, corrupt, not ours, missing or
unexpected tensors, wrong shapes, a text_dim other than the caller's, a config outside
:data:`CONFIG_BOUNDS`) raises :class:`tesg_ros.errors.ConfigError` naming the file and the
problem. Everything is checked before the network is built: the config against sane bounds,
then the tensors' stored shapes against those the config implies (a shape-only network on
torch's ``meta`` device), so hostile metadata cannot make the loader allocate memory.
"""

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
import torch

from tesg_ros.errors import ConfigError
from tesg_ros.network.tesg_net import TesgConfig, TesgFusionNet

FORMAT_NAME = 'tesg_fusion_net'
FORMAT_VERSION = '1'
# First layer of the TDAF text MLP: its input size is the text embedding size D.
TEXT_INPUT_WEIGHT = 'tdaf.text_mlp.0.weight'
# Largest value accepted per integer config field: far above any trained model (defaults: 4, 24,
# 48, 32, 384, 64, 1, 2, 8, 8, 2), far below sizes that exhaust memory when the net is built.
CONFIG_BOUNDS = {
    'stem_channels': 256, 'skip_channels': 1024, 'channels': 2048, 'decoder_channels': 1024,
    'text_dim': 8192, 'text_hidden': 4096, 'mask_channels': 256, 'heads': 64, 'window': 256,
    'reduction': 64, 'mgca_blocks': 64,
}
# Bounded float fields (their own sanity: finite and not absurd).
FLOAT_BOUNDS = {'max_detail_gain': 100.0, 'max_logit_correction': 100.0,
                'prior_scale_init': 100.0}


def save_fusion_net(net, path, extra_metadata=None):
    """Write ``net`` (a TesgFusionNet) to ``path`` (.safetensors) with its config in metadata.

    extra_metadata: optional ``{str: str}`` stored beside the config (e.g. training run id).
    """
    if not isinstance(net, TesgFusionNet):
        raise ConfigError(f'save_fusion_net expects a TesgFusionNet, got {type(net).__name__}')
    metadata = {str(key): str(value) for key, value in (extra_metadata or {}).items()}
    metadata.update({'format': FORMAT_NAME, 'format_version': FORMAT_VERSION,
                     'config': json.dumps(net.config.to_dict(), sort_keys=True)})
    tensors = {name: tensor.detach().to('cpu').contiguous().clone()
               for name, tensor in net.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def read_config(path):
    """The :class:`TesgConfig` stored in a checkpoint's metadata (tensors are not read)."""
    return _open_checked(Path(path))[1]


def _open_checked(path):
    if not path.is_file():
        raise ConfigError(f'fusion-net checkpoint {path}: no such file')
    try:
        with safe_open(str(path), framework='pt') as handle:
            metadata = handle.metadata() or {}
            keys = set(handle.keys())
    except Exception as error:  # safetensors raises several types for a damaged header
        raise ConfigError(f'fusion-net checkpoint {path}: not a readable safetensors file '
                          f'({type(error).__name__}: {error})') from error
    if metadata.get('format') != FORMAT_NAME:
        raise ConfigError(f'fusion-net checkpoint {path}: metadata format is '
                          f'{metadata.get("format")!r}, expected {FORMAT_NAME!r}')
    if metadata.get('format_version') != FORMAT_VERSION:
        raise ConfigError(f'fusion-net checkpoint {path}: format_version '
                          f'{metadata.get("format_version")!r} is not supported '
                          f'(expected {FORMAT_VERSION!r})')
    try:
        config_dict = json.loads(metadata['config'])
    except (KeyError, ValueError) as error:
        raise ConfigError(f'fusion-net checkpoint {path}: metadata has no valid JSON config '
                          f'({type(error).__name__}: {error})') from error
    try:
        config = TesgConfig.from_dict(config_dict)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f'fusion-net checkpoint {path}: invalid config: {error}') from error
    problem = config_out_of_bounds(config)
    if problem:
        raise ConfigError(f'fusion-net checkpoint {path}: invalid config: {problem}')
    return keys, config


def config_out_of_bounds(config):
    """The reason ``config`` (a TesgConfig) is outside the sane bounds, or ''."""
    values = config.to_dict()
    for name, limit in {**CONFIG_BOUNDS, **FLOAT_BOUNDS}.items():
        value = values.get(name)
        if value is not None and not value <= limit:  # also catches NaN
            return f'{name} = {value} is above the largest accepted value {limit}'
    return ''


def _expected_shapes(config):
    """{tensor name: shape} of a TesgFusionNet with ``config``, without allocating it."""
    with torch.device('meta'):
        net = TesgFusionNet(config)
    return {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}


def _stored_shapes(path, names):
    try:
        with safe_open(str(path), framework='pt') as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except Exception as error:  # noqa: BLE001 - a damaged header
        raise ConfigError(f'fusion-net checkpoint {path}: cannot read tensor shapes '
                          f'({type(error).__name__}: {error})') from error


def _shape_error(path, config, name, stored, needed):
    hint = ''
    if name == TEXT_INPUT_WEIGHT and len(stored) == 2:
        hint = (f' (text_dim mismatch: the metadata config says {config.text_dim}, the '
                f'weights were trained with {stored[-1]})')
    return ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} has shape {stored}, '
                       f'the config needs {needed}{hint}')


def load_fusion_net(path, device='cpu', text_dim=None, mask_channels=None):
    """Build a TesgFusionNet from a checkpoint written by :func:`save_fusion_net`.

    path: the .safetensors file. device: torch device for the returned net.
    text_dim / mask_channels: if given, the checkpoint must match them (e.g. the text
    encoder's embedding size); a mismatch raises ConfigError.
    Returns the net in eval mode, float32, on ``device``.
    """
    path = Path(path)
    keys, config = _open_checked(path)
    if text_dim is not None and config.text_dim != text_dim:
        raise ConfigError(f'fusion-net checkpoint {path}: text_dim is {config.text_dim}, but '
                          f'the text encoder produces {text_dim}-dimensional embeddings')
    if mask_channels is not None and config.mask_channels != mask_channels:
        raise ConfigError(f'fusion-net checkpoint {path}: mask_channels is '
                          f'{config.mask_channels}, expected {mask_channels}')
    shapes = _expected_shapes(config)
    missing = sorted(set(shapes) - keys)
    unexpected = sorted(keys - set(shapes))
    if missing or unexpected:
        raise ConfigError(f'fusion-net checkpoint {path}: tensors do not match its config: '
                          f'missing {missing}, unexpected {unexpected}')
    for name, stored in _stored_shapes(path, shapes).items():
        if stored != shapes[name]:
            raise _shape_error(path, config, name, stored, shapes[name])
    net = TesgFusionNet(config)
    expected = net.state_dict()
    state = {}
    try:
        with safe_open(str(path), framework='pt') as handle:
            for name in expected:
                state[name] = handle.get_tensor(name)
    except Exception as error:  # truncated data section
        raise ConfigError(f'fusion-net checkpoint {path}: cannot read tensor data '
                          f'({type(error).__name__}: {error})') from error
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise _shape_error(path, config, name, tuple(tensor.shape),
                               tuple(expected[name].shape))
        if not tensor.is_floating_point():
            raise ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} has dtype '
                              f'{tensor.dtype}, expected a float type')
        if not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} contains NaN '
                              'or Inf')
    net.load_state_dict(state)
    return net.to(device).eval()
