# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The fusion network (a safetensors checkpoint) to ONNX, its metadata and the export cache.

The graph is :meth:`TesgFusionNet.forward` with all four inputs, batch 1::

    ir (1, 1, height, width), vis_y (1, 1, height, width), masks (1, M, height, width),
    text (1, D)  ->  fused (1, 1, height, width)

all float32 in [0, 1] (text: the sentence embedding), with ``height`` and ``width`` dynamic
(any size >= 1, odd ones included). It is exported with torch's dynamo exporter at
:data:`OPSET`; the model's config, the sha256 of the weights file and the opset are stored in
the ONNX ``metadata_props`` (keys :data:`META_CONFIG`, :data:`META_SHA256`...), so a runtime
can refuse an ONNX file that no longer matches the weights it claims to come from.

The console script is ``tesg-export`` (:mod:`tesg_ros.cli.export`).
"""

import json
import logging
import os
from pathlib import Path
import re
import time

from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.paths import file_sha256

OPSET = 18
INPUT_NAMES = ('ir', 'vis_y', 'masks', 'text')
OUTPUT_NAMES = ('fused',)
FORMAT = 'tesg_fusion_onnx'
META_FORMAT = 'tesg.format'
META_CONFIG = 'tesg.config'
META_SHA256 = 'tesg.weights_sha256'
META_WEIGHTS = 'tesg.weights_file'
META_OPSET = 'tesg.opset'
META_TORCH = 'tesg.torch_version'
# Traced at an odd size so no size-dependent branch (padding to the reduction, windows) is
# specialised on an even one; the export keeps height and width symbolic.
EXAMPLE_SIZE = (243, 321)

_LOG = logging.getLogger(__name__)


def default_weights():
    from tesg_ros.paths import DEFAULT_WEIGHTS, share_path

    return str(share_path(*DEFAULT_WEIGHTS))


def export_onnx(out_path, weights=None, opset=OPSET):
    """Export the checkpoint ``weights`` (default: the shipped one) to ``out_path``.

    Returns the metadata dict written into the file. Raises ConfigError for a bad
    checkpoint and TesgError when torch cannot export the graph.
    """
    import onnx
    import torch
    from torch.nn.attention import sdpa_kernel, SDPBackend

    from tesg_ros.network.weights import load_fusion_net

    weights = str(weights or default_weights())
    net = load_fusion_net(weights, device='cpu')
    net.validate_inputs = False  # data-dependent range checks have no graph equivalent
    config = net.config
    height, width = EXAMPLE_SIZE
    generator = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 1, height, width, generator=generator),
               torch.rand(1, 1, height, width, generator=generator),
               torch.rand(1, config.mask_channels, height, width, generator=generator),
               torch.rand(1, config.text_dim, generator=generator))
    auto = torch.export.Dim.AUTO
    spatial = {2: auto, 3: auto}
    dynamic = {'ir': spatial, 'vis_y': spatial, 'masks': spatial, 'text': None}
    try:
        # The math attention kernel: the fused CPU kernel's output strides make the exported
        # reshape after the head transpose a view that the ONNX decomposition cannot replay.
        with sdpa_kernel(SDPBackend.MATH), torch.inference_mode(False):
            program = torch.onnx.export(
                net, example, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                optimize=True, verbose=False)
    except Exception as error:  # noqa: BLE001 - torch raises many exporter error types
        raise TesgError(f'ONNX export of {weights} failed: {type(error).__name__}: '
                        f'{str(error)[:2000]}') from error
    model = program.model_proto
    _name_spatial_dims(model)
    metadata = {META_FORMAT: FORMAT, META_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                META_SHA256: file_sha256(weights), META_WEIGHTS: Path(weights).name,
                META_OPSET: str(opset), META_TORCH: torch.__version__}
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + f'.{os.getpid()}.partial')
    onnx.save(model, str(partial))
    os.replace(partial, out_path)  # atomic: a concurrent reader never sees half a file
    return metadata


def _name_spatial_dims(model):
    """Rename the exporter's symbols for the input height and width to 'height'/'width'."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    renames = {dims[2].dim_param: 'height', dims[3].dim_param: 'width'}
    renames = {old: new for old, new in renames.items() if old}
    if not renames:
        return
    pattern = re.compile(r'\b(' + '|'.join(re.escape(old) for old in renames) + r')\b')
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda match: renames[match.group(1)],
                                            dim.dim_param)


def read_metadata(path):
    """The ``metadata_props`` of an ONNX file as a dict (the graph is not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'ONNX model {path}: no such file')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf decode errors vary
        raise ConfigError(f'ONNX model {path}: not readable ({type(error).__name__}: '
                          f'{error})') from None
    return {entry.key: entry.value for entry in model.metadata_props}


def check_matches(onnx_path, weights):
    """Raise ConfigError unless ``onnx_path`` was exported by this tool from ``weights``."""
    metadata = read_metadata(onnx_path)
    if metadata.get(META_FORMAT) != FORMAT:
        raise ConfigError(f'ONNX model {onnx_path}: not written by tesg-export (metadata '
                          f'{META_FORMAT} is {metadata.get(META_FORMAT)!r})')
    expected = file_sha256(weights)
    if metadata.get(META_SHA256) != expected:
        raise ConfigError(
            f'ONNX model {onnx_path} was exported from weights with sha256 '
            f'{metadata.get(META_SHA256)}, but model.weights {weights} has sha256 {expected}: '
            're-export it (tesg-export --weights ...)')
    return metadata


def cache_dir():
    """Where exported models are cached: $TESG_CACHE_DIR or ~/.cache/tesg_ros."""
    root = os.environ.get('TESG_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(Path.home(), '.cache'), 'tesg_ros')
    return Path(root) / 'onnx'


def ensure_onnx(weights=None, onnx_path='', logger=None):
    """The ONNX model for ``weights``: ``onnx_path`` checked against them, or (empty) the
    cached export keyed by the weights' sha256, exported once when absent."""
    logger = logger or _LOG
    weights = str(weights or default_weights())
    if onnx_path:
        check_matches(onnx_path, weights)
        return str(onnx_path)
    if not Path(weights).is_file():
        raise ConfigError(f'fusion-net checkpoint {weights}: no such file')
    cached = cache_dir() / f'tesg_fusion_{file_sha256(weights)[:16]}_opset{OPSET}.onnx'
    if cached.is_file():
        try:
            check_matches(cached, weights)
            return str(cached)
        except ConfigError as error:
            logger.warning(f'{error}; exporting again')
    logger.info(f'exporting {weights} to ONNX (once; cached as {cached}; a minute or two '
                'on a small CPU)')
    start = time.monotonic()
    export_onnx(cached, weights)
    logger.info(f'ONNX export done in {time.monotonic() - start:.0f} s')
    return str(cached)


def parity(onnx_path, weights=None, sizes=((480, 640), (243, 321)), pairs=None):
    """Largest |ONNX Runtime - torch| of the fused luma in grey levels, per (pair, size).

    ``pairs``: ``[(name, ir_uint8, vis_uint8)]``; default: the TNO pairs under test/data.
    Masks are the thermal masks the node computes, text a fixed unit vector.
    """
    import cv2
    import numpy as np
    import onnxruntime
    import torch

    from tesg_ros.sig.masks import fit_masks
    from tesg_ros.network.weights import load_fusion_net
    from tesg_ros.sig.masks import ThermalMaskBackend

    net = load_fusion_net(str(weights or default_weights()), device='cpu')
    session = onnxruntime.InferenceSession(str(onnx_path),
                                           providers=['CPUExecutionProvider'])
    if pairs is None:
        pairs = test_data_pairs()
    text = np.random.default_rng(0).normal(size=net.config.text_dim).astype(np.float32)
    text /= np.linalg.norm(text)
    masker = ThermalMaskBackend()
    results = []
    for name, ir8, vis8 in pairs:
        for height, width in sizes:
            ir = cv2.resize(ir8, (width, height), interpolation=cv2.INTER_AREA)
            vis = cv2.resize(vis8, (width, height), interpolation=cv2.INTER_AREA)
            masks = fit_masks(np.asarray(masker(None, ir, ['a warm person-shaped object']),
                                         np.float32), net.config.mask_channels)
            feeds = {'ir': (ir / 255.0).astype(np.float32)[None, None],
                     'vis_y': (vis / 255.0).astype(np.float32)[None, None],
                     'masks': masks[None], 'text': text[None]}
            with torch.inference_mode():
                expected = net(*[torch.from_numpy(feeds[key]) for key in INPUT_NAMES])
            got = session.run(None, feeds)[0]
            difference = float(np.abs(got - expected.numpy()).max() * 255.0)
            results.append((name, (height, width), difference))
    return results


def test_data_pairs(names=None):
    """The TNO pairs under test/data as ``[(name, ir_uint8, vis_uint8)]``."""
    import cv2

    from tesg_ros.paths import _SOURCE_ROOT

    folder = _SOURCE_ROOT / 'test' / 'data' / 'tno'
    pairs = []
    for path in sorted((folder / 'ir').glob('*.png')):
        if names and path.stem not in names:
            continue
        ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(folder / 'vi' / path.name), cv2.IMREAD_GRAYSCALE)
        if ir is not None and vis is not None:
            pairs.append((path.stem, ir, vis))
    return pairs
