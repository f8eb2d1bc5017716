# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Checkpoints of :class:`TesgFusionNet` in safetensors format (no pickle).

File layout: the model's ``state_dict`` tensors, plus string metadata
``format = 'tesg_fusion_net'``, ``format_version = '1'`` and ``config`` = the JSON of
:meth:`TesgConfig.to_dict`. Every problem with a file (missing, corrupt, not ours, missing or
unexpected tensors, wrong shapes, a text_dim other than the caller's) raises
:class:`tesg_ros.errors.ConfigError` naming the file and the problem.
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
    return keys, config


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
    net = TesgFusionNet(config)
    expected = net.state_dict()
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    if missing or unexpected:
        raise ConfigError(f'fusion-net checkpoint {path}: tensors do not match its config: '
                          f'missing {missing}, unexpected {unexpected}')
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
            hint = ''
            if name == TEXT_INPUT_WEIGHT:
                hint = (f' (text_dim mismatch: the metadata config says {config.text_dim}, the '
                        f'weights were trained with {tensor.shape[-1]})')
            raise ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} has shape '
                              f'{tuple(tensor.shape)}, the config needs '
                              f'{tuple(expected[name].shape)}{hint}')
        if not tensor.is_floating_point():
            raise ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} has dtype '
                              f'{tensor.dtype}, expected a float type')
        if not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f'fusion-net checkpoint {path}: tensor {name!r} contains NaN '
                              'or Inf')
    net.load_state_dict(state)
    return net.to(device).eval()
