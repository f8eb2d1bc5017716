# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Downstream-detection scoring: detectors, ground-truth labels and AP at IoU 0.5.

The offline evaluator runs one detector over several image variants of the same frames (fused,
infrared-only, visible-only) and compares how well each variant serves a detector. This module
is the ROS-free plug-in it calls:

* :class:`Detector` interface, ``detect(image_bgr) -> list[Detection]`` with labels normalised
  to ``'person'`` / ``'vehicle'`` / the model's own label, and two implementations:
  :class:`HogPeopleDetector` (OpenCV's built-in HOG + linear SVM people detector) and
  :class:`TransformersDetector` (any local transformers object-detection model, run through
  its own image processor).
* Ground truth from COCO JSON (:func:`load_coco_labels`) and YOLO text files
  (:func:`load_yolo_labels`), as :class:`GroundTruthBox` lists per image.
* Scoring (:func:`score_frames`, :func:`score_variants`): AP per class at IoU >= 0.5 with the
  all-point interpolated precision/recall curve of PASCAL VOC 2010 and later (not COCO's
  101-point sampling), detections matched greedily in descending score order, per frame and
  pooled over all frames; without ground truth, detection counts and mean confidence.

Boxes are ``(x0, y0, x1, y1)`` float pixels in continuous coordinates: a box covering pixel
columns 0..9 is ``x0=0, x1=10`` and its width is ``x1 - x0`` (COCO convention, no VOC ``+1``).

This module is ROS-free (numpy, OpenCV; torch, transformers and Pillow only for
:class:`TransformersDetector`).
"""

import abc
from dataclasses import dataclass
import importlib.util
import inspect
import json
import math
from pathlib import Path

import cv2
import numpy as np

from tesg_ros.errors import ConfigError, ImageEncodingError

PERSON = 'person'
VEHICLE = 'vehicle'
SCORED_CLASSES = (PERSON, VEHICLE)
INTERPOLATION = 'all-point interpolated precision (PASCAL VOC 2010+)'

# Lower-case class names of common detectors and data sets (COCO, FLIR ADAS, M3FD, LLVIP,
# KAIST) -> the normalised label. Anything else keeps the model's / data set's own name.
DEFAULT_LABEL_MAP = {
    'person': PERSON, 'people': PERSON, 'pedestrian': PERSON, 'human': PERSON,
    'car': VEHICLE, 'truck': VEHICLE, 'bus': VEHICLE, 'van': VEHICLE,
    'motorcycle': VEHICLE, 'motorbike': VEHICLE, 'motor': VEHICLE,
    'bicycle': VEHICLE, 'bike': VEHICLE, 'vehicle': VEHICLE,
}


def normalise_label(name, label_map=None):
    """Map a raw class name to 'person' / 'vehicle' / the name itself.

    label_map: {raw name (matched case-insensitively, surrounding spaces ignored): label};
    None uses :data:`DEFAULT_LABEL_MAP`. Names not in the map are returned unchanged.
    """
    mapping = DEFAULT_LABEL_MAP if label_map is None else label_map
    key = str(name).strip().lower()
    lowered = {str(raw).strip().lower(): label for raw, label in mapping.items()}
    return lowered.get(key, str(name))


@dataclass(frozen=True)
class Detection:
    """One detector output: ``box_xyxy`` float pixels, ``score`` (higher = surer), ``label``."""

    box_xyxy: tuple
    score: float
    label: str


@dataclass(frozen=True)
class GroundTruthBox:
    """One labelled object; ``ignore`` boxes (COCO ``iscrowd``) count neither as hit nor miss."""

    box_xyxy: tuple
    label: str
    ignore: bool = False


def check_bgr_image(image_bgr):
    """Return ``image_bgr`` if it is an H x W x 3 uint8 array, else raise ImageEncodingError."""
    if not isinstance(image_bgr, np.ndarray):
        raise ImageEncodingError(
            f'detector input must be a numpy array, got {type(image_bgr).__name__}')
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ImageEncodingError(
            'detector input must be H x W x 3 uint8 BGR, got '
            f'{image_bgr.dtype} {image_bgr.shape} (convert grey frames with '
            'cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))')
    if image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
        raise ImageEncodingError(f'detector input is empty: {image_bgr.shape}')
    return image_bgr


def _clip_box(box, width, height):
    x0, y0, x1, y1 = (float(v) for v in box)
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
            min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def _number(value, parameter, kind):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f'{parameter} must be a number, got {value!r}') from None
    if kind is float and not math.isfinite(number):
        raise ConfigError(f'{parameter} must be finite, got {value!r}')
    return number


class Detector(abc.ABC):
    """An object detector the evaluator can run on any image variant.

    ``name`` identifies the detector and its settings in result tables.
    """

    name = 'detector'

    @abc.abstractmethod
    def detect(self, image_bgr):
        """Detect objects in an H x W x 3 uint8 BGR image.

        Returns a list of :class:`Detection` with boxes in the input image's pixels.
        """


class HogPeopleDetector(Detector):
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs, INRIA people).

    win_stride: (x, y) step of the 64 x 128 window in pixels (smaller: slower, finer).
    padding: (x, y) pixels added around the image. scale: factor between pyramid levels
    (> 1). min_image_height: images lower than this are upscaled to it first (bilinear) because
    the detector only finds people at least ~96 pixels tall; 0 never upscales.
    hit_threshold: SVM margin a window must exceed. nms_iou_threshold: windows overlapping a
    higher-scoring one by more than this IoU are suppressed (cv2.dnn.NMSBoxes).
    group_threshold: OpenCV's own rectangle grouping (0 = off, NMS alone merges windows).
    trim_window_margin: the window contains a 16-pixel margin around a 32 x 96 person;
    True shrinks each box to that central part so it is comparable with tight labels.

    ``score`` is the SVM margin (unbounded, not a probability); ``label`` is 'person'.
    """

    # Fraction of the 64 x 128 window that is margin on each side (16 px / 64, 16 px / 128).
    WINDOW_MARGIN = (16.0 / 64.0, 16.0 / 128.0)

    def __init__(self, win_stride=(8, 8), padding=(8, 8), scale=1.05, min_image_height=512,
                 hit_threshold=0.0, nms_iou_threshold=0.45, group_threshold=0,
                 trim_window_margin=True):
        self.win_stride = self._pair(win_stride, 'win_stride', minimum=1)
        self.padding = self._pair(padding, 'padding', minimum=0)
        self.scale = _number(scale, 'scale', float)
        if not self.scale > 1.0:
            raise ConfigError(f'scale must be > 1 (pyramid step), got {scale}')
        self.min_image_height = _number(min_image_height, 'min_image_height', int)
        if self.min_image_height < 0:
            raise ConfigError(f'min_image_height must be >= 0, got {min_image_height}')
        self.hit_threshold = _number(hit_threshold, 'hit_threshold', float)
        self.nms_iou_threshold = _number(nms_iou_threshold, 'nms_iou_threshold', float)
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ConfigError(f'nms_iou_threshold must be in (0, 1], got {nms_iou_threshold}')
        self.group_threshold = _number(group_threshold, 'group_threshold', int)
        if self.group_threshold < 0:
            raise ConfigError(f'group_threshold must be >= 0, got {group_threshold}')
        self.trim_window_margin = bool(trim_window_margin)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.name = (f'hog_people(stride={self.win_stride[0]}x{self.win_stride[1]},'
                     f'scale={self.scale:g},min_h={self.min_image_height})')

    @staticmethod
    def _pair(value, parameter, minimum):
        try:
            first, second = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f'{parameter} must be two integers (x, y), got {value!r}') from None
        if first < minimum or second < minimum:
            raise ConfigError(f'{parameter} must be >= {minimum}, got {value!r}')
        return first, second

    def upscale_factor(self, image_height):
        """The factor (>= 1) an image of this height is enlarged by before detection."""
        if self.min_image_height and image_height < self.min_image_height:
            return self.min_image_height / image_height
        return 1.0

    def detect(self, image_bgr):
        """People in an H x W x 3 uint8 BGR image; boxes in its pixels, score = SVM margin."""
        image_bgr = check_bgr_image(image_bgr)
        height, width = image_bgr.shape[:2]
        factor = self.upscale_factor(height)
        work = image_bgr
        if factor != 1.0:
            work = cv2.resize(image_bgr, (round(width * factor), round(height * factor)),
                              interpolation=cv2.INTER_LINEAR)
        # Per-axis factors: rounding the upscaled size changes the aspect ratio slightly.
        to_input = np.array([width / work.shape[1], height / work.shape[0]] * 2)
        window_w, window_h = self._hog.winSize
        if work.shape[0] < window_h or work.shape[1] < window_w:
            return []  # no window fits (and OpenCV asserts on such images)
        rects, weights = self._hog.detectMultiScale(
            work, hitThreshold=self.hit_threshold, winStride=self.win_stride,
            padding=self.padding, scale=self.scale, groupThreshold=self.group_threshold)
        if len(rects) == 0:
            return []
        rects = np.asarray(rects, np.float64).reshape(-1, 4)
        scores = np.asarray(weights, np.float64).reshape(-1)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), self.hit_threshold,
                                self.nms_iou_threshold)
        detections = []
        for index in np.asarray(keep, np.int64).reshape(-1):
            x, y, w, h = rects[index] * to_input
            if self.trim_window_margin:
                margin_x, margin_y = self.WINDOW_MARGIN
                x, y = x + margin_x * w, y + margin_y * h
                w, h = w * (1.0 - 2.0 * margin_x), h * (1.0 - 2.0 * margin_y)
            box = _clip_box((x, y, x + w, y + h), width, height)
            detections.append(Detection(box, float(scores[index]), PERSON))
        detections.sort(key=lambda d: -d.score)
        return detections


def _read_json(path, parameter):
    try:
        return json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f'{parameter}: cannot read {path}: {error}') from None


def object_detection_model_types():
    """The ``model_type`` values transformers' ``AutoModelForObjectDetection`` can build."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES

    return sorted(MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES)


class TransformersDetector(Detector):
    """Any transformers object-detection model from a local directory.

    model_dir: a ``save_pretrained`` directory holding the model (config.json, weights) and its
    image processor (preprocessor_config.json). Both are loaded with transformers' auto classes
    (``AutoImageProcessor`` / ``AutoModelForObjectDetection.from_pretrained(...,
    local_files_only=True)``), so every family transformers can build for object detection
    works (DETR, Conditional / Deformable / DAB-DETR, YOLOS, RT-DETR / v2, D-FINE,
    Table Transformer, ...: :func:`object_detection_model_types`). Each frame goes through the
    image processor's ``__call__`` (resize, rescale, normalise, pad: the model's own settings)
    and ``post_process_object_detection``, as transformers' object-detection pipeline does
    (except that RT-DETR-style processors get the model config's ``use_focal_loss``). Without
    torchvision the processors run on their Pillow backend.

    threshold: minimum score in [0, 1) (the processor's class probability: softmax without the
    no-object class for DETR / YOLOS, sigmoid for the others). top_k: at most this many
    detections, best first; also passed to ``post_process_object_detection`` where it takes a
    ``top_k`` (Conditional / Deformable DETR, whose default is 100); None: the processor's own
    limit. label_map: see :func:`normalise_label`, applied to ``config.id2label``.
    device: torch device for the model ('cpu', 'cuda', 'cuda:1'). trust_remote_code: allow a
    model / processor whose code ships in ``model_dir`` (runs that code). parameter: the
    node/evaluator parameter holding model_dir, named in errors. Boxes are clipped to the image.
    """

    def __init__(self, model_dir, threshold=0.5, top_k=None, label_map=None, device='cpu',
                 parameter='model_dir', trust_remote_code=False):
        self.threshold = _number(threshold, 'threshold', float)
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f'threshold must be in [0, 1), got {threshold}')
        self.top_k = None if top_k is None else _number(top_k, 'top_k', int)
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f'top_k must be >= 1, got {top_k}')
        self.label_map = label_map
        self.trust_remote_code = bool(trust_remote_code)
        directory = Path(str(model_dir)).expanduser() if model_dir else None
        if directory is None or not directory.is_dir():
            raise ConfigError(f'{parameter}={str(model_dir)!r} is not a directory (expected a '
                              'transformers object-detection model saved with save_pretrained)')
        if not (directory / 'config.json').is_file():
            raise ConfigError(f'{parameter}={str(directory)!r} has no config.json '
                              '(not a transformers model directory)')
        import torch

        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as error:
            raise ConfigError(f'device {device!r} is not a torch device: {error}') from None
        config = self._load_config(directory, parameter)
        self.model_type = config.model_type
        self.image_processor = self._load_image_processor(directory, parameter)
        model = self._load_model(directory, config, parameter)
        try:
            self.model = model.to(self.device).eval()
        except (RuntimeError, TypeError, ValueError, AssertionError) as error:
            raise ConfigError(f'device {device!r} is not usable: {error}') from None
        self._post_process_options = self._post_process_keywords()
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        self._labels = {k: normalise_label(v, label_map) for k, v in self.id2label.items()}
        self.name = f'transformers:{self.model_type}:{directory.name}'

    def _load_config(self, directory, parameter):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING

        try:
            config = AutoConfig.from_pretrained(str(directory), local_files_only=True,
                                                trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
            if not self.trust_remote_code and 'trust_remote_code' in str(error):
                raise ConfigError(f'{parameter}: {directory} ships its own model code; pass '
                                  'trust_remote_code=True to run it if you trust it') from None
            raise ConfigError(f'{parameter}: cannot read the model config in {directory}: '
                              f'{error}') from None
        remote = 'AutoModelForObjectDetection' in (getattr(config, 'auto_map', None) or {})
        if type(config) not in MODEL_FOR_OBJECT_DETECTION_MAPPING and not (
                remote and self.trust_remote_code):
            hint = (' (its code ships with the model: pass trust_remote_code=True if you trust '
                    'it)' if remote else '')
            raise ConfigError(
                f'{parameter}: {directory} holds a {config.model_type!r} model, which is not a '
                f'transformers object detector{hint}; object-detection model types: '
                f'{", ".join(object_detection_model_types())}')
        backbone = getattr(config, 'backbone_config', None)
        timm_backbone = bool(getattr(config, 'use_timm_backbone', False)) or \
            getattr(backbone, 'model_type', None) == 'timm_backbone'
        if timm_backbone and importlib.util.find_spec('timm') is None:
            raise ConfigError(f'{parameter}: {directory} needs a timm backbone, and timm is '
                              'not installed (use a checkpoint with a transformers backbone, '
                              'e.g. revision "no_timm" of facebook/detr-resnet-50)')
        return config

    def _load_image_processor(self, directory, parameter):
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(
                str(directory), local_files_only=True, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError) as error:
            raise ConfigError(f'{parameter}: cannot build the image processor from '
                              f'{directory / "preprocessor_config.json"}: {error}') from None
        if not callable(getattr(processor, 'post_process_object_detection', None)):
            raise ConfigError(f'{parameter}: the image processor in {directory} '
                              f'({type(processor).__name__}) has no '
                              'post_process_object_detection (not an object-detection '
                              'processor)')
        return processor

    def _load_model(self, directory, config, parameter):
        from transformers import AutoModelForObjectDetection

        try:
            return AutoModelForObjectDetection.from_pretrained(
                str(directory), config=config, local_files_only=True,
                trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, ImportError, RuntimeError, KeyError, TypeError) as error:
            raise ConfigError(f'{parameter}: cannot load the model in {directory}: '
                              f'{error}') from None

    def _post_process_keywords(self):
        """Options of this processor's post_process_object_detection that we can set."""
        parameters = inspect.signature(
            self.image_processor.post_process_object_detection).parameters
        options = {}
        if 'top_k' in parameters and self.top_k is not None:
            options['top_k'] = self.top_k
        # RT-DETR-style processors default to sigmoid scores; follow the model's own setting.
        use_focal_loss = getattr(self.model.config, 'use_focal_loss', None)
        if 'use_focal_loss' in parameters and use_focal_loss is not None:
            options['use_focal_loss'] = bool(use_focal_loss)
        return options

    def label_name(self, class_id):
        """The normalised label of a model class id."""
        class_id = int(class_id)
        if class_id not in self._labels:
            self._labels[class_id] = normalise_label(str(class_id), self.label_map)
        return self._labels[class_id]

    def raw_detections(self, image_rgb):
        """The processor's result for one H x W x 3 uint8 RGB image, unclipped, on the CPU.

        Returns ``post_process_object_detection``'s dict for the image: 'scores' (N,) float,
        'labels' (N,) int64 class ids, 'boxes' (N, 4) float xyxy pixels of the input image.
        """
        import torch
        from PIL import Image

        height, width = image_rgb.shape[:2]
        try:
            inputs = self.image_processor(images=Image.fromarray(image_rgb),
                                          return_tensors='pt')
            inputs = {key: (value.to(self.device, dtype=self.model.dtype)
                            if value.is_floating_point() else value.to(self.device))
                      for key, value in inputs.items()}
            with torch.inference_mode():
                outputs = self.model(**inputs)
            result = self.image_processor.post_process_object_detection(
                outputs, threshold=self.threshold, target_sizes=[(height, width)],
                **self._post_process_options)[0]
        except (RuntimeError, ValueError, TypeError) as error:
            raise ImageEncodingError(f'{self.name} failed on a {height} x {width} image: '
                                     f'{error}') from error
        return {key: result[key].detach().cpu() for key in ('scores', 'labels', 'boxes')}

    def detect(self, image_bgr):
        """Objects in an H x W x 3 uint8 BGR image, scores in [0, 1], best first."""
        image_bgr = check_bgr_image(image_bgr)
        height, width = image_bgr.shape[:2]
        result = self.raw_detections(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        scores = result['scores'].double().numpy()
        order = np.argsort(-scores, kind='stable')[:self.top_k]
        class_ids = result['labels'].numpy()
        boxes = result['boxes'].double().numpy()
        return [Detection(_clip_box(boxes[i], width, height), float(scores[i]),
                          self.label_name(class_ids[i])) for i in order]


def run_detector(detector, images_bgr):
    """``detector.detect`` over a sequence of frames -> list (per frame) of detection lists."""
    return [detector.detect(image) for image in images_bgr]


# --- ground truth ---------------------------------------------------------------------------

def _xywh_to_xyxy(box, where):
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ConfigError(f'{where}: bbox must be 4 numbers [x, y, w, h], got {box!r}') from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ConfigError(f'{where}: bbox must be finite with w, h >= 0, got {box!r}')
    return (x, y, x + w, y + h)


def load_coco_labels(path, label_map=None):
    """COCO detection JSON -> {image file_name: [GroundTruthBox]}.

    Reads ``images`` (id, file_name), ``annotations`` (image_id, category_id, bbox
    [x, y, w, h] pixels, optional iscrowd / ignore) and ``categories`` (id, name). Category
    names go through :func:`normalise_label`; ``iscrowd`` or ``ignore`` objects become
    ``ignore=True``. Every listed image is a key, with [] when it has no annotations.
    """
    where = str(path)
    data = _read_json(path, 'coco labels')
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in
                                             ('images', 'annotations', 'categories')):
        raise ConfigError(f'{where}: a COCO file needs lists "images", "annotations" and '
                          '"categories"')
    try:
        categories = {int(c['id']): normalise_label(c['name'], label_map)
                      for c in data['categories']}
        names = {}
        for image in data['images']:
            file_name = str(image['file_name'])
            if file_name in names.values():
                raise ConfigError(f'{where}: image file_name {file_name!r} listed twice')
            names[int(image['id'])] = file_name
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f'{where}: malformed images/categories entry: {error!r}') from None
    labels = {name: [] for name in names.values()}
    for index, annotation in enumerate(data['annotations']):
        entry = f'{where}: annotations[{index}]'
        try:
            image_id, category_id = int(annotation['image_id']), int(annotation['category_id'])
            bbox = annotation['bbox']
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f'{entry}: malformed annotation: {error!r}') from None
        if image_id not in names:
            raise ConfigError(f'{entry}: unknown image_id {image_id}')
        if category_id not in categories:
            raise ConfigError(f'{entry}: unknown category_id {category_id}')
        ignore = bool(annotation.get('iscrowd', 0)) or bool(annotation.get('ignore', 0))
        labels[names[image_id]].append(
            GroundTruthBox(_xywh_to_xyxy(bbox, entry), categories[category_id], ignore))
    return labels


def read_class_names(path):
    """A YOLO class-names list from a text file (one name a line) or a data YAML (``names``).

    YAML ``names`` may be a list or an {id: name} mapping with ids 0..n-1.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f'class names: cannot read {path}: {error}') from None
    if path.suffix.lower() not in ('.yaml', '.yml'):
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        if not names or not all(names):
            raise ConfigError(f'class names: {path} has empty lines or no names')
        return names
    import yaml

    try:
        names = yaml.safe_load(text).get('names')
    except (yaml.YAMLError, AttributeError) as error:
        raise ConfigError(f'class names: {path} is not a YAML mapping: {error}') from None
    if isinstance(names, dict):
        if sorted(int(k) for k in names) != list(range(len(names))):
            raise ConfigError(f'class names: ids in {path} must be 0..{len(names) - 1}')
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not names:
        raise ConfigError(f'class names: {path} has no "names" list')
    return [str(name) for name in names]


def read_yolo_label_file(path, image_height, image_width, class_names, label_map=None):
    """One YOLO label file -> [GroundTruthBox] in pixels.

    Each non-empty line is ``class cx cy w h``: a class index into ``class_names`` and the box
    centre and size as fractions in [0, 1] of the image width/height.
    """
    boxes = []
    try:
        lines = Path(path).read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f'yolo labels: cannot read {path}: {error}') from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f'{path}:{number}'
        if len(fields) != 5:
            raise ConfigError(f'{where}: expected "class cx cy w h", got {line.strip()!r}')
        try:
            class_id = int(fields[0])
            centre_x, centre_y, box_w, box_h = (float(v) for v in fields[1:])
        except ValueError:
            raise ConfigError(f'{where}: not numbers: {line.strip()!r}') from None
        if not 0 <= class_id < len(class_names):
            raise ConfigError(f'{where}: class {class_id} outside the {len(class_names)} '
                              'class names')
        values = (centre_x, centre_y, box_w, box_h)
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ConfigError(f'{where}: coordinates must be normalised to [0, 1], '
                              f'got {line.strip()!r}')
        box = ((centre_x - box_w / 2) * image_width, (centre_y - box_h / 2) * image_height,
               (centre_x + box_w / 2) * image_width, (centre_y + box_h / 2) * image_height)
        boxes.append(GroundTruthBox(box, normalise_label(class_names[class_id], label_map)))
    return boxes


def load_yolo_labels(label_dir, image_sizes, class_names, label_map=None):
    """YOLO label directory -> {image file name: [GroundTruthBox]}.

    image_sizes: {image file name: (height, width)}; each image's labels are
    ``label_dir/<image stem>.txt``. A missing label file means the image has no objects (the
    YOLO convention for background images). class_names: list, or a path for
    :func:`read_class_names`.
    """
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise ConfigError(f'yolo labels: {label_dir} is not a directory')
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    labels = {}
    for name, (height, width) in image_sizes.items():
        label_path = label_dir / (Path(name).stem + '.txt')
        labels[name] = (read_yolo_label_file(label_path, height, width, class_names, label_map)
                        if label_path.is_file() else [])
    return labels


def ground_truth_for_images(labels, image_names):
    """Ground truth of each named image, in order: exact name first, then unique base name.

    labels: {file name: [GroundTruthBox]} from a loader; image_names: file names or paths.
    An image the labels do not list raises ConfigError (it is not assumed empty).
    """
    by_base = {}
    for key in labels:
        by_base.setdefault(Path(key).name, []).append(key)
    result = []
    for name in image_names:
        name = str(name)
        if name in labels:
            result.append(labels[name])
            continue
        candidates = by_base.get(Path(name).name, [])
        if len(candidates) != 1:
            problem = 'is not in' if not candidates else 'matches several images of'
            raise ConfigError(f'ground truth: image {name!r} {problem} the labels')
        result.append(labels[candidates[0]])
    return result


# --- scoring --------------------------------------------------------------------------------

def box_iou(boxes_a, boxes_b, over_first=False):
    """IoU matrix (N, M) float64 between xyxy boxes (N, 4) and (M, 4); 0 where union is 0.

    over_first: divide the intersection by the area of ``boxes_a`` instead of the union (how
    COCO matches detections to crowd / ignore regions).
    """
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0.0, None), axis=1)
    if over_first:
        union = np.broadcast_to(area_a[:, None], intersection.shape)
    else:
        union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_frame(detections, ground_truth, label, iou_threshold=0.5):
    """Greedy matching of one frame's ``label`` detections to its ground truth.

    Detections are taken in descending score (ties: input order); each takes the unmatched
    ground-truth box of the same label with the highest IoU, if that IoU >= iou_threshold
    (true positive), else it is a false positive. ``ignore`` boxes are tried last, with the
    detection's intersection over its own area in place of IoU (COCO's crowd rule), and any
    number of detections may fall in one; such detections are dropped (neither).
    Returns (scores float64 (K,), is_true_positive bool (K,), number of non-ignored
    ground-truth boxes), in descending score order.
    """
    detections = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
    truths = [g for g in ground_truth if g.label == label]
    # Real boxes are matched first so an ignore region never takes a real object's detection.
    truths.sort(key=lambda g: g.ignore)
    num_positives = sum(not g.ignore for g in truths)
    detection_boxes = [d.box_xyxy for d in detections]
    ious = box_iou(detection_boxes, [g.box_xyxy for g in truths])
    ignore = np.array([g.ignore for g in truths], bool)
    if ignore.any():
        ious[:, ignore] = box_iou(detection_boxes, [g.box_xyxy for g in truths if g.ignore],
                                  over_first=True)
    matched = np.zeros(len(truths), bool)
    scores, hits = [], []
    for row, detection in enumerate(detections):
        best, best_iou = -1, iou_threshold
        for column, truth in enumerate(truths):
            if matched[column] and not truth.ignore:
                continue
            if best >= 0 and truth.ignore and not truths[best].ignore:
                break
            if ious[row, column] >= best_iou:
                best, best_iou = column, ious[row, column]
        if best >= 0 and truths[best].ignore:
            continue
        if best >= 0:
            matched[best] = True
        scores.append(detection.score)
        hits.append(best >= 0)
    return np.asarray(scores, np.float64), np.asarray(hits, bool), num_positives


def average_precision(scores, is_true_positive, num_positives):
    """All-point interpolated AP (PASCAL VOC 2010+) of scored detections.

    The precision envelope (max precision at any recall >= r) is integrated over recall at
    every recall step. Sorts by descending score (stable). Returns (ap, precision, recall):
    precision and recall of all detections together; ap is NaN without positives, 0 without
    detections. precision is NaN without detections.
    """
    if num_positives == 0:
        return math.nan, (math.nan if len(scores) == 0 else 0.0), math.nan
    if len(scores) == 0:
        return 0.0, math.nan, 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
    hits = np.asarray(is_true_positive, bool)[order]
    true_positives = np.cumsum(hits)
    recall = true_positives / num_positives
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall_points = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall_points[1:] != recall_points[:-1])
    ap = float(np.sum((recall_points[steps + 1] - recall_points[steps]) * envelope[steps + 1]))
    return ap, float(precision[-1]), float(recall[-1])


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _check_frames(frames, parameter):
    if isinstance(frames, (str, bytes)) or not hasattr(frames, '__len__'):
        raise ConfigError(f'{parameter} must be a sequence (one detection list per frame)')
    for index, frame in enumerate(frames):
        if isinstance(frame, (str, bytes)) or not hasattr(frame, '__iter__'):
            raise ConfigError(f'{parameter}[{index}] must be a list of detections')
    return frames


def _count_stats(detections, label):
    scores = [d.score for d in detections if d.label == label]
    return len(scores), (float(np.mean(scores)) if scores else None)


def score_frames(detections_per_frame, ground_truth_per_frame=None, classes=SCORED_CLASSES,
                 iou_threshold=0.5):
    """Score one image variant: per-class AP pooled over frames, plus per-frame numbers.

    detections_per_frame: [[Detection]] per frame; ground_truth_per_frame: [[GroundTruthBox]]
    for the same frames, or None (then only counts and confidences). Returns a JSON-ready dict
    (undefined values are None)::

        {'num_frames', 'labelled', 'mean_ap' (over classes with ground truth),
         'classes': {label: {'ap', 'precision', 'recall', 'num_ground_truth',
                             'num_detections', 'true_positives', 'false_positives',
                             'mean_confidence', 'detections_per_frame'}},
         'frames': [{label: {'count', 'mean_confidence', 'ap', 'num_ground_truth'}}]}

    AP/precision/recall/TP/FP/num_ground_truth are None without ground truth; a frame's AP is
    None when it has no ground truth of that class.
    """
    iou_threshold = _number(iou_threshold, 'iou_threshold', float)
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f'iou_threshold must be in (0, 1], got {iou_threshold}')
    frames = _check_frames(detections_per_frame, 'detections')
    labelled = ground_truth_per_frame is not None
    if labelled:
        truths = _check_frames(ground_truth_per_frame, 'ground_truth')
        if len(truths) != len(frames):
            raise ConfigError(f'ground_truth has {len(truths)} frames, detections '
                              f'{len(frames)}')
    frame_rows = [{} for _ in frames]
    class_rows = {}
    for label in classes:
        all_scores, all_hits, positives = [], [], 0
        for index, detections in enumerate(frames):
            count, confidence = _count_stats(detections, label)
            row = {'count': count, 'mean_confidence': confidence, 'ap': None,
                   'num_ground_truth': None}
            if labelled:
                scores, hits, frame_positives = match_frame(detections, truths[index], label,
                                                            iou_threshold)
                all_scores.append(scores)
                all_hits.append(hits)
                positives += frame_positives
                row['ap'] = _nan_to_none(average_precision(scores, hits, frame_positives)[0])
                row['num_ground_truth'] = frame_positives
            frame_rows[index][label] = row
        every = [d for detections in frames for d in detections if d.label == label]
        summary = {
            'num_detections': len(every),
            'mean_confidence': float(np.mean([d.score for d in every])) if every else None,
            'detections_per_frame': len(every) / len(frames) if len(frames) else None,
            'ap': None, 'precision': None, 'recall': None, 'num_ground_truth': None,
            'true_positives': None, 'false_positives': None}
        if labelled:
            scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
            hits = np.concatenate(all_hits) if all_hits else np.zeros(0, bool)
            ap, precision, recall = average_precision(scores, hits, positives)
            summary.update(ap=_nan_to_none(ap), precision=_nan_to_none(precision),
                           recall=_nan_to_none(recall), num_ground_truth=positives,
                           true_positives=int(hits.sum()),
                           false_positives=int(len(hits) - hits.sum()))
        class_rows[label] = summary
    aps = [row['ap'] for row in class_rows.values() if row['ap'] is not None]
    return {'num_frames': len(frames), 'labelled': labelled,
            'mean_ap': float(np.mean(aps)) if aps else None,
            'classes': class_rows, 'frames': frame_rows}


def score_variants(variants, ground_truth_per_frame=None, classes=SCORED_CLASSES,
                   iou_threshold=0.5):
    """Score several image variants of the same frames with the same ground truth.

    variants: {variant name: [[Detection]] per frame}, e.g. {'fused': ..., 'ir': ...,
    'visible': ...}, all with the same number of frames. Returns a JSON-ready table::

        {'iou_threshold', 'interpolation', 'classes', 'num_frames', 'labelled',
         'variants': {name: score_frames(...) result}}
    """
    if not variants:
        raise ConfigError('variants is empty (expected {name: detections per frame})')
    lengths = {name: len(_check_frames(frames, f'variants[{name!r}]'))
               for name, frames in variants.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f'variants must cover the same frames, got frame counts {lengths}')
    table = {'iou_threshold': float(iou_threshold), 'interpolation': INTERPOLATION,
             'classes': list(classes), 'num_frames': next(iter(lengths.values())),
             'labelled': ground_truth_per_frame is not None, 'variants': {}}
    for name, frames in variants.items():
        table['variants'][name] = score_frames(frames, ground_truth_per_frame, classes,
                                               iou_threshold)
    return table


def format_table(table):
    """A Markdown summary of a :func:`score_variants` table: one row per variant.

    Labelled: AP per class and mAP; otherwise detections per frame and mean confidence.
    """
    classes = table['classes']

    def number(value):
        return '-' if value is None else f'{value:.3f}'

    if table['labelled']:
        header = ['variant'] + [f'AP50 {c}' for c in classes] + ['mAP50']
    else:
        header = ['variant'] + [f'{c} per frame' for c in classes] + \
            [f'{c} mean conf' for c in classes]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, result in table['variants'].items():
        rows = result['classes']
        if table['labelled']:
            cells = [number(rows[c]['ap']) for c in classes] + [number(result['mean_ap'])]
        else:
            cells = [number(rows[c]['detections_per_frame']) for c in classes] + \
                [number(rows[c]['mean_confidence']) for c in classes]
        lines.append('| ' + ' | '.join([name] + cells) + ' |')
    return '\n'.join(lines)
