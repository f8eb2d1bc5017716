# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training loop of the TeSG fusion network: config, seeding, DDP, checkpoints, validation.

Single process (``tesg-train``) or several under ``torchrun`` (DistributedDataParallel;
gloo on CPU, nccl on CUDA, chosen from the device). Rank 0 logs, validates, writes
checkpoints and exports the best model. Checkpoints hold no pickle: tensors go to
safetensors files, everything else to JSON (see :func:`save_checkpoint`).
"""

from dataclasses import asdict, dataclass, field, fields
import json
import logging
import math
import os
from pathlib import Path
import random
import shutil
import time

import numpy as np
from safetensors.torch import load_file, save_file
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
import yaml

from tesg_ros.errors import ConfigError
from tesg_ros.training import dataset as data_module
from tesg_ros.training.losses import fusion_loss, LossWeights

LOGGER = logging.getLogger('tesg_ros.training')
CHECKPOINT_PREFIX = 'step_'


# --------------------------------------------------------------------------- configuration


@dataclass
class DataConfig:
    """Dataset roots (relative paths resolve against the working directory) and batching."""

    train: list = field(default_factory=lambda: ['../shared/data/roadscene50',
                                                 '../shared/data/vifb21'])
    val: list = field(default_factory=lambda: ['../shared/data/tno25'])
    crop_size: int = 128
    batch_size: int = 8
    num_workers: int = 0
    horizontal_flip: bool = True
    vertical_flip: bool = False
    semantics_drop: float = 0.0
    text_drop: float = 0.0      # share of crops trained with zero text, masks kept
    degrade: float = 0.0        # share of crops whose visible image is degraded (dataset.py)
    ir_stretch: float = 0.0     # share of crops with the node's percentile-stretched IR
    scale_min: float = 1.0      # random rescale of the crop (objects at other sizes)
    scale_max: float = 1.0
    text_targets: bool = False  # per crop a drawn request decides masks, text and target
    intent_strength: float = 0.5  # background shift of an intent (training/text_targets.py)


@dataclass
class SemanticsConfig:
    """SIG inputs: captions -> text embedding, thermal masks; cached under ``cache_dir``."""

    enabled: bool = True
    cache_dir: str = 'out/semantics_cache'
    text_encoder_kind: str = 'minilm'
    text_encoder_path: str = ''
    mask_backend: str = 'thermal'


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0


@dataclass
class LoopConfig:
    """Length of the run and how often it logs and writes checkpoints."""

    max_steps: int = 4000
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    device: str = 'auto'
    threads: int = 0


@dataclass
class ValidationConfig:
    """Validation cadence, metrics and the value that selects the exported best model."""

    every: int = 500
    at_start: bool = True
    baselines: bool = True
    max_pairs: int = 0
    metrics: bool = True
    convention: str = 'vifb'
    best_key: str = 'loss/total'
    best_mode: str = 'min'


@dataclass
class DistillConfig:
    """Knowledge distillation: a frozen teacher network fuses every batch the student sees.

    ``teacher``: its weights file ('' = no teacher); ``loss.distill`` and
    ``loss.distill_weight_map`` weigh the student's pull to its output. ``init_matching``: the
    student starts with every teacher tensor of the same name and shape (the rest from scratch).
    """

    teacher: str = ''
    init_matching: bool = False


@dataclass
class TrainConfig:
    """Everything ``tesg-train`` needs; ``model`` is passed to the network's config."""

    seed: int = 0
    run_dir: str = 'out/train'
    export_path: str = 'model/tesg_fusion.safetensors'
    init_weights: str = ''   # start from these weights (same tensors; the config's model wins)
    data: DataConfig = field(default_factory=DataConfig)
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    model: dict = field(default_factory=dict)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self):
        """Return the configuration as plain nested dicts (YAML/JSON serialisable)."""
        return asdict(self)


def _coerce(value, expected, key):
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{key} must be true or false, got {value!r}')
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{key} must be an integer, got {value!r}')
        return value
    if expected is float:
        # PyYAML reads "1e-3" (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, bool):
            raise ConfigError(f'{key} must be a number, got {value!r}')
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f'{key} must be a number, got {value!r}') from None
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f'{key} must be a string, got {value!r}')
        return value
    if expected is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f'{key} must be a list of paths, got {value!r}')
        return value
    if expected is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f'{key} must be a mapping, got {value!r}')
        return dict(value)
    return value


def _build_section(cls, values, prefix):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f'{prefix or "config"} must be a mapping, got {values!r}')
    known = {item.name: item for item in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f'unknown key(s) {[prefix + k for k in unknown]}; '
                          f'valid: {[prefix + k for k in known]}')
    kwargs = {}
    for name, value in values.items():
        expected = known[name].type
        if isinstance(expected, type) and hasattr(expected, '__dataclass_fields__'):
            kwargs[name] = _build_section(expected, value, f'{prefix}{name}.')
        else:
            kwargs[name] = _coerce(value, expected, prefix + name)
    return cls(**kwargs)


def _check_config(config):
    checks = [
        (config.data.batch_size >= 1, 'data.batch_size must be >= 1'),
        (config.data.num_workers >= 0, 'data.num_workers must be >= 0'),
        (bool(config.data.train), 'data.train must name at least one dataset folder'),
        (config.optim.lr > 0, 'optim.lr must be > 0'),
        (0.0 <= config.optim.min_lr_ratio <= 1.0, 'optim.min_lr_ratio must be in [0, 1]'),
        (config.optim.warmup_steps >= 0, 'optim.warmup_steps must be >= 0'),
        (config.train.max_steps >= 1, 'train.max_steps must be >= 1'),
        (config.train.log_every >= 1, 'train.log_every must be >= 1'),
        (config.train.checkpoint_every >= 1, 'train.checkpoint_every must be >= 1'),
        (config.train.keep_checkpoints >= 1, 'train.keep_checkpoints must be >= 1'),
        (config.validation.every >= 1, 'validation.every must be >= 1'),
        (config.validation.best_mode in ('min', 'max'), 'validation.best_mode must be min or max'),
        (config.semantics.mask_backend == 'thermal',
         'semantics.mask_backend: only "thermal" is supported for training'),
        (config.train.device in ('auto', 'cpu') or config.train.device.startswith('cuda'),
         'train.device must be auto, cpu or cuda[:N]'),
    ]
    for passed, message in checks:
        if not passed:
            raise ConfigError(message)
    for key, value in (('loss.ssim_ir_weight', config.loss.ssim_ir_weight),
                       ('loss.background_visible', config.loss.background_visible),
                       ('data.semantics_drop', config.data.semantics_drop)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f'{key} must be in [0, 1], got {value}')
    if not config.loss.gradient_excess >= 0.0:  # also rejects NaN
        raise ConfigError(f'loss.gradient_excess must be >= 0, got {config.loss.gradient_excess}')
    if config.loss.edge_band < 0:
        raise ConfigError(f'loss.edge_band must be >= 0 (pixels), got {config.loss.edge_band}')
    _check_distill(config)


def _check_distill(config):
    weights = (('loss.distill', config.loss.distill),
               ('loss.distill_weight_map', config.loss.distill_weight_map))
    for key, value in weights:
        if not value >= 0.0:
            raise ConfigError(f'{key} must be >= 0, got {value}')
    if config.distill.teacher and not any(value > 0.0 for _, value in weights):
        raise ConfigError('distill.teacher is set but loss.distill and loss.distill_weight_map '
                          'are 0: the teacher would be run for nothing')
    if not config.distill.teacher and (any(value > 0.0 for _, value in weights)
                                       or config.distill.init_matching):
        raise ConfigError('loss.distill, loss.distill_weight_map and distill.init_matching '
                          'need distill.teacher (a weights file)')
    if config.distill.init_matching and config.init_weights:
        raise ConfigError('distill.init_matching and init_weights both initialise the student: '
                          'set one')


def _set_dotted(tree, dotted_key, value):
    parts = dotted_key.split('.')
    if not all(parts):
        raise ConfigError(f'bad override key "{dotted_key}"')
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f'override "{dotted_key}": "{part}" is not a section')
        node = child
    node[parts[-1]] = value


def parse_override(text):
    """Parse one ``key.sub=value`` override; the value is read as YAML (``1e-3`` -> float)."""
    if '=' not in text:
        raise ConfigError(f'override "{text}" must look like key=value (e.g. optim.lr=1e-3)')
    key, raw = text.split('=', 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ''
    except yaml.YAMLError as error:
        raise ConfigError(f'override "{text}": value is not valid YAML ({error})') from None
    return key.strip(), value


def load_config(path=None, overrides=()):
    """Build a :class:`TrainConfig` from a YAML file (or defaults) plus ``key=value`` overrides.

    Unknown keys and wrongly typed values raise ConfigError naming the key.
    """
    tree = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f'config file not found: {path}')
        try:
            tree = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f'config file {path} is not valid YAML: {error}') from None
        if not isinstance(tree, dict):
            raise ConfigError(f'config file {path} must hold a mapping at the top level')
    for override in overrides:
        key, value = parse_override(override) if isinstance(override, str) else override
        _set_dotted(tree, key, value)
    config = _build_section(TrainConfig, tree, '')
    _check_config(config)
    return config


# --------------------------------------------------------------------------- helpers


def seed_everything(seed):
    """Seed Python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def learning_rate_factor(step, warmup_steps, max_steps, min_lr_ratio):
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup`` for ``step < warmup``, then cosine decay
    ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t`` going 0 -> 1 over the rest.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (to resume mid-epoch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_index = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start_index:])

    def __len__(self):
        return self.num_samples - self.start_index


def _resolve_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'train.device is {name} but CUDA is not available')
    return device


def init_distributed(device):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1).

    Returns ``(rank, world_size, device, created)``; on CUDA each rank takes
    ``cuda:LOCAL_RANK``. The backend is nccl on CUDA and gloo on CPU. ``created`` says this
    call initialised the process group (and the caller should destroy it).
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1 and not dist.is_initialized():
        return 0, 1, device, False
    if device.type == 'cuda':
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device, created


def _barrier(world_size):
    if world_size > 1:
        dist.barrier()


# --------------------------------------------------------------------------- network adapters


def build_network(model_settings):
    """Build ``TesgFusionNet`` from the ``model`` config section (network config fields)."""
    from tesg_ros.network import TesgConfig, TesgFusionNet
    return TesgFusionNet(TesgConfig.from_dict(dict(model_settings)))


def export_network(network, path, metadata=None):
    """Write the network for inference (safetensors + config metadata) via network.weights."""
    from tesg_ros.network import save_fusion_net
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees a half-written model.
    temporary = path.with_name(path.name + '.tmp')
    save_fusion_net(network, temporary, extra_metadata=metadata)
    os.replace(temporary, path)


# --------------------------------------------------------------------------- checkpoints


def _optimizer_to_files(optimizer):
    state = optimizer.state_dict()
    tensors, extra_state = {}, {}
    for index, values in state['state'].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f'state.{index}.{name}'] = value.detach().cpu().contiguous()
            else:
                extra_state.setdefault(str(index), {})[name] = value
    return tensors, {'param_groups': state['param_groups'], 'extra_state': extra_state}


def _optimizer_from_files(tensors, meta):
    state = {}
    for key, value in tensors.items():
        _, index, name = key.split('.', 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta['extra_state'].items():
        state.setdefault(int(index), {}).update(values)
    return {'state': state, 'param_groups': meta['param_groups']}


def _rng_state():
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    tensors = {'torch_cpu': torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f'torch_cuda_{index}'] = state
    meta = {'python': [python_state[0], list(python_state[1]), python_state[2]],
            'numpy': [numpy_state[0], numpy_state[1].tolist(), int(numpy_state[2]),
                      int(numpy_state[3]), float(numpy_state[4])]}
    return tensors, meta


def _set_rng_state(tensors, meta):
    version, internal, gauss = meta['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = meta['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors['torch_cpu'])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith('torch_cuda_')]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])


def save_checkpoint(directory, network, optimizer, scheduler, trainer_state):
    """Write one checkpoint directory atomically (temp dir + rename); no pickle anywhere.

    Files: ``model.safetensors`` (state dict), ``optimizer.safetensors`` (moment tensors) +
    ``optimizer.json`` (param groups), ``rng.safetensors`` (torch generators) and
    ``state.json`` (step, epoch, best value, scheduler, Python/numpy RNG, config).
    """
    directory = Path(directory)
    temporary = directory.with_name(directory.name + '.tmp')
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    model_state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(model_state, str(temporary / 'model.safetensors'))
    optimizer_tensors, optimizer_meta = _optimizer_to_files(optimizer)
    save_file(optimizer_tensors, str(temporary / 'optimizer.safetensors'))
    (temporary / 'optimizer.json').write_text(json.dumps(optimizer_meta), encoding='utf-8')
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(temporary / 'rng.safetensors'))
    state = dict(trainer_state, scheduler=scheduler.state_dict(), rng=rng_meta)
    (temporary / 'state.json').write_text(json.dumps(state, indent=1), encoding='utf-8')
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(temporary, directory)


def load_checkpoint(directory, network, optimizer, scheduler, device):
    """Restore a directory written by :func:`save_checkpoint`; returns its trainer state."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f'checkpoint directory does not exist: {directory}')
    required = ('model.safetensors', 'optimizer.safetensors', 'optimizer.json',
                'rng.safetensors', 'state.json')
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f'checkpoint {directory} is incomplete: missing {missing}')
    try:
        model_state = load_file(str(directory / 'model.safetensors'), device=str(device))
        network.load_state_dict(model_state)
        optimizer_tensors = load_file(str(directory / 'optimizer.safetensors'),
                                      device=str(device))
        optimizer_meta = json.loads((directory / 'optimizer.json').read_text(encoding='utf-8'))
        optimizer.load_state_dict(_optimizer_from_files(optimizer_tensors, optimizer_meta))
        state = json.loads((directory / 'state.json').read_text(encoding='utf-8'))
        scheduler.load_state_dict(state.pop('scheduler'))
        _set_rng_state(load_file(str(directory / 'rng.safetensors')), state.pop('rng'))
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise ConfigError(f'cannot resume from checkpoint {directory}: {error}') from None
    return state


def latest_checkpoint(run_dir):
    """Return the newest complete checkpoint directory under ``run_dir/checkpoints`` or None."""
    folder = Path(run_dir) / 'checkpoints'
    if not folder.is_dir():
        return None
    candidates = sorted(p for p in folder.iterdir()
                        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                        and not p.name.endswith('.tmp') and (p / 'state.json').is_file())
    return candidates[-1] if candidates else None


# --------------------------------------------------------------------------- the trainer


@dataclass
class TrainResult:
    """What a finished run returns (rank 0 has the logged values; other ranks mostly None)."""

    step: int
    rank: int
    best_value: float
    export_path: Path
    last_checkpoint: Path
    history: list
    network: torch.nn.Module


class _TqdmLoggingHandler(logging.Handler):
    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record))


def _with_term(total, parts, name, term, weight):
    """``(total + weight * term, parts)`` with ``parts[name]`` and ``parts['total']`` updated
    (detached, for the logs)."""
    total = total + weight * term
    parts = dict(parts, **{name: term.detach()})
    parts['total'] = total.detach()
    return total, parts


class Trainer:
    """Builds data, network, optimiser and runs the loop; see :func:`train`."""

    def __init__(self, config, progress=True, resume=None):
        self.config = config
        self.progress = progress
        self.resume = resume
        self.device = _resolve_device(config.train.device)
        self.rank, self.world_size, self.device, self._owns_group = init_distributed(
            self.device)
        self.is_main = self.rank == 0
        self.run_dir = Path(config.run_dir)
        self.history = []
        self._handlers = []
        self._log_file = None
        self._teacher = None

    # ----------------------------------------------------------------- set-up

    def _setup_logging(self):
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        formatter = logging.Formatter('%(asctime)s %(levelname)s %(message)s')
        file_handler = logging.FileHandler(self.run_dir / 'train.log', encoding='utf-8')
        console = _TqdmLoggingHandler()
        for handler in (file_handler, console):
            handler.setFormatter(formatter)
            LOGGER.addHandler(handler)
            self._handlers.append(handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False
        self._log_file = open(self.run_dir / 'train_log.jsonl', 'a', encoding='utf-8')

    def _teardown_logging(self):
        for handler in self._handlers:
            LOGGER.removeHandler(handler)
            handler.close()
        self._handlers = []
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _record(self, event, **values):
        if not self.is_main:
            return
        # Strict JSON has no NaN (e.g. SCD of a copy baseline): write null instead.
        entry = {'event': event, **{key: None if isinstance(value, float)
                                    and not math.isfinite(value) else value
                                    for key, value in values.items()}}
        self.history.append(entry)
        self._log_file.write(json.dumps(entry) + '\n')
        self._log_file.flush()

    def _semantics_cache(self, text_dim):
        settings = self.config.semantics
        if not settings.enabled:
            return None
        components = (settings.text_encoder_kind, settings.text_encoder_path, text_dim)
        return data_module.SemanticsCache(
            settings.cache_dir, data_module.SigComponents.settings(*components),
            lambda: data_module.SigComponents(*components))

    def _text_sampler(self):
        if not self.config.data.text_targets:
            return None
        from tesg_ros.training.text_targets import TextTargetSampler
        return TextTargetSampler(strength=self.config.data.intent_strength)

    def _load_data(self, network_config):
        cache = self._semantics_cache(network_config.text_dim)
        kwargs = dict(cache=cache, mask_channels=network_config.mask_channels,
                      text_dim=network_config.text_dim)
        self._text_table = None
        if self.config.data.text_targets:
            if cache is None:
                raise ConfigError('data.text_targets needs semantics.enabled')
            from tesg_ros.sig.masks import ThermalMaskBackend
            from tesg_ros.sig.text_encoder import make_text_encoder
            from tesg_ros.training.text_targets import canonical_embeddings
            settings = self.config.semantics
            encoder = make_text_encoder(settings.text_encoder_kind,
                                        settings.text_encoder_path or None,
                                        expected_dim=network_config.text_dim,
                                        parameter='semantics.text_encoder')
            self._text_table = canonical_embeddings(encoder)
            kwargs.update(class_mask_backend=ThermalMaskBackend(), text_table=self._text_table)
        # Rank 0 fills the cache first; the others then only read it.
        if not self.is_main:
            _barrier(self.world_size)
        train_samples = data_module.load_samples(self.config.data.train, **kwargs)
        val_samples = (data_module.load_samples(self.config.data.val, **kwargs)
                       if self.config.data.val else [])
        if self.is_main:
            _barrier(self.world_size)
        if self.config.validation.max_pairs > 0:
            val_samples = val_samples[:self.config.validation.max_pairs]
        if cache is not None and self.is_main:
            LOGGER.info('semantics cache %s: %d hits, %d computed', cache.cache_dir,
                        cache.hits, cache.misses)
        return train_samples, val_samples

    # ----------------------------------------------------------------- steps

    def _batch_to_device(self, batch):
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _forward_loss(self, model, batch):
        student_info = None
        if self._teacher is not None and self.config.loss.distill_weight_map > 0.0:
            fused, student_info = model(batch['ir'], batch['vis_y'], batch['masks'],
                                        batch['text'], return_intermediates=True)
        else:
            fused = model(batch['ir'], batch['vis_y'], batch['masks'], batch['text'])
        # Chroma only matters for colour images; a grey visible image has Cb = Cr = 0.5.
        vis_cbcr = batch['vis_cbcr'] if bool(batch['colour'].any()) else None
        total, parts = fusion_loss(fused, batch['ir'], batch['vis_y'], vis_cbcr, batch['masks'],
                                   self.config.loss, batch.get('vis_y_clean'),
                                   batch.get('shift'))
        weight = self.config.loss.text_consistency
        if weight > 0.0 and model.training:
            total, parts = self._add_text_consistency(model, batch, fused, total, parts, weight)
        weight = self.config.loss.shift_consistency
        if weight > 0.0 and model.training:
            total, parts = self._add_shift_consistency(model, batch, fused, total, parts, weight)
        weight = self.config.loss.scale_consistency
        if weight > 0.0 and model.training:
            total, parts = self._add_scale_consistency(model, batch, fused, total, parts, weight)
        if self._teacher is not None:
            total, parts = self._add_distillation(batch, fused, student_info, total, parts)
        return total, parts, fused

    def _load_teacher(self, network):
        """The frozen teacher of ``distill.teacher`` (eval, no gradients), checked against the
        student's inputs; with ``distill.init_matching`` its same-named, same-shaped tensors
        are copied into the student (only on a fresh start)."""
        from tesg_ros.network.weights import load_fusion_net
        settings = self.config.distill
        teacher = load_fusion_net(settings.teacher, device=self.device,
                                  text_dim=network.config.text_dim,
                                  mask_channels=network.config.mask_channels)
        teacher.requires_grad_(False)
        teacher.validate_inputs = False   # the student checks the same tensors
        if settings.init_matching and self.resume is None:
            source = teacher.state_dict()
            matching = {name: source[name].to(value.device) for name, value
                        in network.state_dict().items()
                        if name in source and source[name].shape == value.shape}
            network.load_state_dict(matching, strict=False)
            if self.is_main:
                LOGGER.info('student starts with %d of its %d tensors from the teacher: %s',
                            len(matching), len(network.state_dict()), sorted(matching))
        if self.is_main:
            LOGGER.info('distilling from %s (%d parameters) into %d parameters',
                        settings.teacher, sum(p.numel() for p in teacher.parameters()),
                        network.parameter_count())
        return teacher.eval()

    def _add_distillation(self, batch, fused, student_info, total, parts):
        """L1 between the student's fused luma and the frozen teacher's on the same inputs
        (``loss.distill``), and between their infrared-share maps
        (``loss.distill_weight_map``, the ``weight`` intermediate)."""
        weights = self.config.loss
        inputs = (batch['ir'], batch['vis_y'], batch['masks'], batch['text'])
        with torch.no_grad():
            if student_info is not None:
                target, teacher_info = self._teacher(*inputs, return_intermediates=True)
            else:
                target = self._teacher(*inputs)
        term = (fused - target).abs().mean()
        total, parts = _with_term(total, parts, 'distill', term, weights.distill)
        if student_info is not None:
            term = (student_info['weight'] - teacher_info['weight']).abs().mean()
            total, parts = _with_term(total, parts, 'distill_weight_map', term,
                                      weights.distill_weight_map)
        return total, parts

    @staticmethod
    def _add_scale_consistency(model, batch, fused, total, parts, weight):
        """The crop fused at half size must match the full-size fusion brought to half size
        (2x2 means): a frame fused at another resolution (``model.max_pixels``, another camera)
        must look the same, not change where the network's receptive field meets objects."""
        def half(image):
            return torch.nn.functional.avg_pool2d(image, 2)

        small = model(half(batch['ir']), half(batch['vis_y']), half(batch['masks']),
                      batch['text'])
        term = (small - half(fused)).abs().mean()
        return _with_term(total, parts, 'scale_consistency', term, weight)

    @staticmethod
    def _add_shift_consistency(model, batch, fused, total, parts, weight):
        """The fused crop of a shifted input must be the shifted fused crop: the output may not
        depend on where the network's padding grid and attention windows fall. The shift
        (1..63 px per axis, less than a window of tokens) is drawn from the batch's content,
        so a resumed run draws the same."""
        seed = int(batch['ir'].detach().double().sum().item() * 1e6) % (2 ** 32)
        generator = torch.Generator().manual_seed(seed)
        limit = min(64, batch['ir'].shape[-2] // 2, batch['ir'].shape[-1] // 2)
        rows, cols = (int(v) for v in torch.randint(1, limit, (2,), generator=generator))
        shifted = model(batch['ir'][..., rows:, cols:], batch['vis_y'][..., rows:, cols:],
                        batch['masks'][..., rows:, cols:], batch['text'])
        term = (shifted - fused[..., rows:, cols:]).abs().mean()
        return _with_term(total, parts, 'shift_consistency', term, weight)

    @staticmethod
    def _add_text_consistency(model, batch, fused, total, parts, weight):
        """Outside the masks, the fused image with the text must match the one with zero text
        (a no-grad forward): a description alone must not swing the global balance. Crops
        whose text states an intent (``intent_free`` 0) are exempt: there it must."""
        with torch.no_grad():
            plain = model(batch['ir'], batch['vis_y'], batch['masks'],
                          torch.zeros_like(batch['text']))
        outside = 1.0 - batch['masks'].amax(dim=1, keepdim=True) if batch['masks'].shape[1] \
            else torch.ones_like(fused)
        difference = outside * (fused - plain).abs()
        if 'intent_free' in batch:
            difference = difference * batch['intent_free'].view(-1, 1, 1, 1)
        term = difference.mean()
        return _with_term(total, parts, 'text_consistency', term, weight)

    def validate(self, network, samples, fuse=None):
        """Mean loss parts (``loss/*``) and, if available, fusion metrics over ``samples``.

        ``fuse(batch) -> fused`` replaces the network (used for the trivial baselines).
        Returns ``(values, metrics_available)``.
        """
        metrics_module = None
        if self.config.validation.metrics:
            try:
                from tesg_ros import metrics as metrics_module
            except ImportError:
                metrics_module = None
        dataset = data_module.FusionDataset(samples, crop_size=None)
        totals, count = {}, 0
        was_training = network.training
        network.eval()
        from tesg_ros.network import colour
        with torch.no_grad():
            for index in range(len(dataset)):
                batch = self._batch_to_device(
                    {k: v.unsqueeze(0) for k, v in dataset[index].items()})
                if fuse is None:
                    _, parts, fused = self._forward_loss(network, batch)
                else:
                    fused = fuse(batch)
                    _, parts = fusion_loss(fused, batch['ir'], batch['vis_y'], batch['vis_cbcr'],
                                           batch['masks'], self.config.loss)
                values = {f'loss/{k}': float(v) for k, v in parts.items()}
                if metrics_module is not None:
                    ycbcr = torch.cat([fused, batch['vis_cbcr']], dim=1)[0].cpu()
                    fused_rgb = colour.float_to_uint8(
                        colour.ycbcr_to_rgb(ycbcr).clamp(0, 1)).permute(1, 2, 0).numpy()
                    visible_rgb = colour.float_to_uint8(colour.ycbcr_to_rgb(
                        torch.cat([batch['vis_y'], batch['vis_cbcr']], 1)[0].cpu()
                    ).clamp(0, 1)).permute(1, 2, 0).numpy()
                    ir = colour.float_to_uint8(batch['ir'][0, 0].cpu()).numpy()
                    scores = metrics_module.evaluate(
                        ir, visible_rgb, fused_rgb, convention=self.config.validation.convention)
                    values.update({f'metric/{k}': float(v) for k, v in scores.items()})
                for key, value in values.items():
                    totals[key] = totals.get(key, 0.0) + value
                count += 1
        network.train(was_training)
        return {key: value / count for key, value in totals.items()}, metrics_module is not None

    # ----------------------------------------------------------------- run

    def run(self):
        """Train to ``train.max_steps``; returns a :class:`TrainResult`."""
        self._setup_logging()
        # Process-wide torch settings this run changes; restored so callers are unaffected.
        saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
        try:
            return self._run()
        finally:
            torch.set_num_threads(saved[0])
            torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
            self._teardown_logging()
            if self._owns_group and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self):
        config = self.config
        if self.device.type == 'cuda':
            # cuBLAS needs a fixed workspace to be deterministic; must be set before first use.
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        seed_everything(config.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        network = build_network(config.model)
        if config.init_weights and self.resume is None:
            from tesg_ros.network.weights import load_fusion_net
            source = load_fusion_net(config.init_weights)
            network.load_state_dict(source.state_dict())
            if self.is_main:
                LOGGER.info('initialised from %s', config.init_weights)
        network = network.to(self.device)
        if config.distill.teacher:
            self._teacher = self._load_teacher(network)
        net_config = network.config
        train_samples, val_samples = self._load_data(net_config)
        train_set = data_module.FusionDataset(
            train_samples, config.data.crop_size, config.data.horizontal_flip,
            config.data.vertical_flip, seed=config.seed,
            semantics_drop=config.data.semantics_drop, text_drop=config.data.text_drop,
            degrade=config.data.degrade, ir_stretch=config.data.ir_stretch,
            scale_range=(config.data.scale_min, config.data.scale_max),
            text_targets=self._text_sampler(), text_table=self._text_table)
        sampler = ResumableDistributedSampler(
            train_set, num_replicas=self.world_size, rank=self.rank, shuffle=True,
            seed=config.seed, drop_last=True)
        batches_per_epoch = sampler.num_samples // config.data.batch_size
        if batches_per_epoch < 1:
            raise ConfigError(
                f'data.batch_size {config.data.batch_size} x {self.world_size} process(es) is '
                f'larger than the training set ({len(train_set)} pairs)')
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(train_set, batch_size=config.data.batch_size, sampler=sampler,
                            num_workers=config.data.num_workers, drop_last=True,
                            worker_init_fn=_seed_worker, generator=generator,
                            pin_memory=self.device.type == 'cuda')
        model = network
        if self.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                network, device_ids=[self.device.index] if self.device.type == 'cuda' else None)
        optim = config.optim
        optimizer = torch.optim.AdamW(network.parameters(), lr=optim.lr,
                                      betas=(optim.beta1, optim.beta2),
                                      weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(
                step, optim.warmup_steps, config.train.max_steps, optim.min_lr_ratio))

        step, best_value, wall_offset, last_checkpoint = 0, None, 0.0, None
        if self.resume is not None:
            checkpoint = (latest_checkpoint(self.run_dir) if self.resume == 'latest'
                          else Path(self.resume))
            if checkpoint is None:
                raise ConfigError(f'--resume: no checkpoint under {self.run_dir / "checkpoints"}')
            state = load_checkpoint(checkpoint, network, optimizer, scheduler, self.device)
            step, best_value = state['step'], state['best_value']
            wall_offset = state['wall_s']
            last_checkpoint = checkpoint
            if self.is_main:
                LOGGER.info('resumed from %s at step %d', checkpoint, step)
        start_time = time.monotonic()

        def wall():
            return wall_offset + time.monotonic() - start_time

        if self.is_main:
            parameters = sum(p.numel() for p in network.parameters())
            LOGGER.info('training %d pairs (%d batches/epoch/rank), validating on %d, '
                        '%d parameters, %d process(es) on %s', len(train_set), batches_per_epoch,
                        len(val_samples), parameters, self.world_size, self.device)
            self._record('start', step=step, wall_s=wall(), world_size=self.world_size,
                         device=str(self.device), parameters=parameters,
                         train_pairs=len(train_set), val_pairs=len(val_samples),
                         config=config.to_dict())
        bar = None
        if self.is_main and self.progress:
            from tqdm import tqdm
            bar = tqdm(total=config.train.max_steps, initial=step, unit='step',
                       dynamic_ncols=True)
        # step_s counts data loading + forward + backward + update, not validation/checkpoints.
        metrics_warned = False
        if val_samples and step == 0 and config.validation.baselines and self.is_main:
            self._log_baselines(network, val_samples, wall)
        if val_samples and step == 0 and config.validation.at_start:
            # Baseline of the untrained network (the structural prior) before any update.
            if self.is_main:
                best_value, metrics_available = self._validate_and_export(
                    network, val_samples, step, best_value, wall)
                metrics_warned = self._warn_metrics(metrics_available, metrics_warned)
            _barrier(self.world_size)
        window, tick = {}, time.monotonic()
        network.train()
        while step < config.train.max_steps:
            epoch, offset = divmod(step, batches_per_epoch)
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            sampler.start_index = offset * config.data.batch_size
            for batch in loader:
                batch = self._batch_to_device(batch)
                loss, parts, _ = self._forward_loss(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f'non-finite loss at step {step + 1}: '
                        f'{ {k: float(v) for k, v in parts.items()} }; lower optim.lr or '
                        'resume from an earlier checkpoint')
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(network.parameters(), optim.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                window['_seconds'] = window.get('_seconds', 0.0) + time.monotonic() - tick
                for key, value in parts.items():
                    window[key] = window.get(key, 0.0) + float(value)
                window['_count'] = window.get('_count', 0) + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f'{float(parts["total"]):.4f}')
                if step % config.train.log_every == 0 or step == config.train.max_steps:
                    count = window.pop('_count')
                    step_s = window.pop('_seconds') / count
                    losses = {f'loss/{k}': v / count for k, v in window.items()}
                    lr = scheduler.get_last_lr()[0]
                    self._record('train', step=step, epoch=epoch, lr=lr, step_s=step_s,
                                 wall_s=wall(), **losses)
                    if self.is_main:
                        LOGGER.info('step %d epoch %d lr %.3g loss %.4g (int %.4g grad %.4g '
                                    'ssim %.4g colour %.3g) %.2f s/step', step, epoch, lr,
                                    losses['loss/total'], losses['loss/intensity'],
                                    losses['loss/gradient'], losses['loss/ssim'],
                                    losses['loss/colour'], step_s)
                    window = {}
                at_end = step == config.train.max_steps
                if val_samples and (step % config.validation.every == 0 or at_end):
                    if self.is_main:
                        best_value, metrics_available = self._validate_and_export(
                            network, val_samples, step, best_value, wall)
                        metrics_warned = self._warn_metrics(metrics_available, metrics_warned)
                    _barrier(self.world_size)
                if step % config.train.checkpoint_every == 0 or at_end:
                    if self.is_main:
                        last_checkpoint = self._write_checkpoint(
                            network, optimizer, scheduler, step, epoch, best_value, wall())
                    _barrier(self.world_size)
                if at_end:
                    break
                tick = time.monotonic()
        if bar is not None:
            bar.close()
        if self.is_main and not val_samples:
            # Nothing to select the best model with: export the final one.
            export_network(network, config.export_path, {'step': str(step)})
            LOGGER.info('no validation set: exported the final model -> %s', config.export_path)
        if self.is_main:
            LOGGER.info('finished at step %d after %.1f s', step, wall())
            self._record('end', step=step, wall_s=wall(), best_value=best_value)
        return TrainResult(step=step, rank=self.rank, best_value=best_value,
                           export_path=Path(config.export_path),
                           last_checkpoint=last_checkpoint, history=self.history,
                           network=network)

    def _log_baselines(self, network, val_samples, wall):
        baselines = {'ir_copy': lambda batch: batch['ir'],
                     'visible_copy': lambda batch: batch['vis_y'],
                     'average': lambda batch: 0.5 * (batch['ir'] + batch['vis_y'])}
        for name, fuse in baselines.items():
            values, _ = self.validate(network, val_samples, fuse)
            self._record('val_baseline', step=0, wall_s=wall(), baseline=name, **values)
            LOGGER.info('validation baseline %s: %s', name,
                        ' '.join(f'{k}={v:.4g}' for k, v in sorted(values.items())))

    def _warn_metrics(self, metrics_available, warned):
        if self.config.validation.metrics and not metrics_available and not warned:
            LOGGER.warning('tesg_ros.metrics is not available: validation logs losses only')
            return True
        return warned

    def _validate_and_export(self, network, val_samples, step, best_value, wall):
        values, metrics_available = self.validate(network, val_samples)
        self._record('val', step=step, wall_s=wall(), metrics_available=metrics_available,
                     **values)
        summary = ' '.join(f'{k}={v:.4g}' for k, v in sorted(values.items()))
        LOGGER.info('validation at step %d: %s', step, summary)
        key = self.config.validation.best_key
        if key not in values:
            raise ConfigError(f'validation.best_key "{key}" is not among the validation '
                              f'values {sorted(values)}')
        value = values[key]
        better = (best_value is None
                  or (value < best_value if self.config.validation.best_mode == 'min'
                      else value > best_value))
        if better:
            best_value = value
            export_network(network, self.config.export_path,
                           {'step': str(step), key: repr(value)})
            self._record('best', step=step, wall_s=wall(), key=key, value=value,
                         path=str(self.config.export_path))
            LOGGER.info('new best %s = %.5g at step %d -> %s', key, value, step,
                        self.config.export_path)
        return best_value, metrics_available

    def _write_checkpoint(self, network, optimizer, scheduler, step, epoch, best_value, wall_s):
        directory = self.run_dir / 'checkpoints' / f'{CHECKPOINT_PREFIX}{step:08d}'
        save_checkpoint(directory, network, optimizer, scheduler, {
            'step': step, 'epoch': epoch, 'best_value': best_value, 'wall_s': wall_s,
            'config': self.config.to_dict()})
        existing = sorted(p for p in directory.parent.iterdir()
                          if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                          and not p.name.endswith('.tmp'))
        for old in existing[:-self.config.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self._record('checkpoint', step=step, wall_s=wall_s, path=str(directory))
        return directory


def train(config, progress=True, resume=None):
    """Run one training job (this process's share when under torchrun).

    ``resume``: None (fresh), 'latest' (newest checkpoint in ``config.run_dir``) or a
    checkpoint directory. Returns a :class:`TrainResult`.
    """
    return Trainer(config, progress=progress, resume=resume).run()
