# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Scene descriptions from a local vision-language model (transformers ``generate()``).

:class:`VlmDescriber` loads a Hugging Face model directory with ``local_files_only=True``
(``trust_remote_code`` stays off unless set) and is a refresher backend:
``describer(visible, thermal) -> str``.

* Captioners (BLIP, GIT) load through ``AutoModelForImageTextToText`` (which maps ``blip`` to
  BlipForConditionalGeneration and ``git`` to GitForCausalLM) with their tokenizer; an
  optional prompt is the caption's prefix ("a thermal photo of") and is removed from the
  answer.
* Instruction VLMs (LLaVA, SmolVLM, Qwen2-VL, ...) load through the same auto class with
  ``AutoProcessor``; the prompt is the user's question, sent through the processor's chat
  template.

Image preprocessing for captioners is done here with OpenCV from the directory's
preprocessor_config.json (resize, centre crop, rescale, normalise - the fields BLIP, CLIP, ViT
and SigLIP image processors use), because transformers' own image processors need Pillow or
torchvision, which this environment does not have. Instruction VLMs use their own processor
(image tiling, image tokens) and therefore need Pillow installed.
"""

import json

import cv2
import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.masks import to_bgr, to_unit_thermal
from tesg_ros.sig.text_encoder import load_tokenizer, require_model_dir

IMAGE_SOURCES = ('visible', 'infrared', 'both')
CAPTIONER_TYPES = ('blip', 'git')
# Image processors whose whole preprocessing is resize / crop / rescale / normalise.
SIMPLE_IMAGE_PROCESSORS = ('BlipImageProcessor', 'CLIPImageProcessor', 'ViTImageProcessor',
                           'SiglipImageProcessor')
# PIL resampling codes (as stored in preprocessor_config.json) -> OpenCV interpolation.
_PIL_TO_CV2 = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LANCZOS4, 2: cv2.INTER_LINEAR,
               3: cv2.INTER_CUBIC, 4: cv2.INTER_AREA, 5: cv2.INTER_LINEAR}


def check_image_source(image, parameter):
    """Return ``image`` if it is 'visible', 'infrared' or 'both', else raise ConfigError."""
    if image not in IMAGE_SOURCES:
        raise ConfigError(f'{parameter} must be one of {IMAGE_SOURCES}, got {image!r}')
    return image


def compose_rgb(visible, thermal, source):
    """The model's input picture: H x W x 3 RGB uint8 ('both': H x 2W x 3, visible left).

    visible: H x W x 3 BGR uint8 (or grey); thermal: H x W uint8 or float in [0, 1] (may be
    None when ``source`` is 'visible'), shown as grey.
    """
    if source in ('visible', 'both'):
        visible_rgb = cv2.cvtColor(to_bgr(visible), cv2.COLOR_BGR2RGB)
        if source == 'visible':
            return visible_rgb
    if thermal is None:
        raise ConfigError(f'image source {source!r} needs the thermal frame, got None')
    grey = np.round(to_unit_thermal(thermal) * 255.0).astype(np.uint8)
    thermal_rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if source == 'infrared':
        return thermal_rgb
    if thermal_rgb.shape != visible_rgb.shape:
        thermal_rgb = cv2.resize(thermal_rgb, visible_rgb.shape[1::-1],
                                 interpolation=cv2.INTER_LINEAR)
    return np.hstack([visible_rgb, thermal_rgb])


def _read_image_processor_config(directory, parameter):
    plain = directory / 'preprocessor_config.json'
    combined = directory / 'processor_config.json'
    try:
        if plain.is_file():
            return json.loads(plain.read_text(encoding='utf-8'))
        if combined.is_file():
            config = json.loads(combined.read_text(encoding='utf-8'))
            if isinstance(config.get('image_processor'), dict):
                return config['image_processor']
    except (OSError, ValueError) as error:
        raise ConfigError(f'{parameter}: unreadable image processor config in {directory}: '
                          f'{error}') from error
    raise ConfigError(f'{parameter}={str(directory)!r} has no preprocessor_config.json '
                      '(the image processor settings)')


class ImagePreprocessor:
    """Resize / centre-crop / rescale / normalise RGB images like a transformers processor.

    Built from preprocessor_config.json by :meth:`from_directory`; ``__call__(images)`` takes a
    list of H x W x 3 RGB uint8 arrays and returns a float32 torch tensor (N, 3, h, w).
    Downscaling uses area interpolation (PIL's resampling filters also average, OpenCV's
    bicubic does not), upscaling the configured filter; values therefore differ from the
    Pillow path by interpolation rounding only.
    """

    def __init__(self, size, resample=3, crop_size=None, rescale_factor=1.0 / 255.0,
                 image_mean=None, image_std=None):
        self.size = size
        self.resample = _PIL_TO_CV2.get(int(resample), cv2.INTER_CUBIC)
        self.crop_size = crop_size
        self.rescale_factor = float(rescale_factor)
        self.image_mean = None if image_mean is None else np.asarray(image_mean, np.float32)
        self.image_std = None if image_std is None else np.asarray(image_std, np.float32)

    @classmethod
    def from_directory(cls, directory, parameter):
        config = _read_image_processor_config(directory, parameter)
        kind = str(config.get('image_processor_type', '')).removesuffix('Fast')
        if kind not in SIMPLE_IMAGE_PROCESSORS:
            raise ConfigError(
                f'{parameter}: image processor {kind or "(unnamed)"} in {directory} is not one '
                f'of {SIMPLE_IMAGE_PROCESSORS} that tesg_ros preprocesses itself')
        size = config.get('size') if config.get('do_resize', True) else None
        if isinstance(size, int):
            size = {'height': size, 'width': size}
        crop = config.get('crop_size') if config.get('do_center_crop', False) else None
        if isinstance(crop, int):
            crop = {'height': crop, 'width': crop}
        rescale = config.get('rescale_factor', 1.0 / 255.0) if config.get('do_rescale', True) \
            else 1.0
        normalise = config.get('do_normalize', True)
        return cls(size=size, resample=config.get('resample', 3), crop_size=crop,
                   rescale_factor=rescale,
                   image_mean=config.get('image_mean') if normalise else None,
                   image_std=config.get('image_std') if normalise else None)

    def _resize(self, image):
        if not self.size:
            return image
        height, width = image.shape[:2]
        if 'height' in self.size and 'width' in self.size:
            target = (int(self.size['width']), int(self.size['height']))
        elif 'shortest_edge' in self.size:
            short = int(self.size['shortest_edge'])
            if height <= width:
                target = (int(width * short / height), short)
            else:
                target = (short, int(height * short / width))
        else:
            raise ConfigError(f'unsupported image processor size {self.size}')
        shrinking = target[0] < width and target[1] < height
        return cv2.resize(image, target,
                          interpolation=cv2.INTER_AREA if shrinking else self.resample)

    def _crop(self, image):
        if not self.crop_size:
            return image
        crop_h, crop_w = int(self.crop_size['height']), int(self.crop_size['width'])
        height, width = image.shape[:2]
        if height < crop_h or width < crop_w:
            pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
            image = cv2.copyMakeBorder(image, pad_h // 2, pad_h - pad_h // 2, pad_w // 2,
                                       pad_w - pad_w // 2, cv2.BORDER_CONSTANT, value=0)
            height, width = image.shape[:2]
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return image[top:top + crop_h, left:left + crop_w]

    def __call__(self, images):
        import torch

        batch = []
        for image in images:
            image = self._crop(self._resize(np.asarray(image)))
            pixels = image.astype(np.float32) * np.float32(self.rescale_factor)
            if self.image_mean is not None:
                pixels = (pixels - self.image_mean) / self.image_std
            batch.append(pixels.transpose(2, 0, 1))
        return torch.from_numpy(np.ascontiguousarray(np.stack(batch)))


class VlmDescriber:
    """Describe a frame pair with a local captioner or instruction VLM.

    path: model directory (config.json, weights, tokenizer / processor files).
    prompt: captioners - a caption prefix (None: unconditional); instruction VLMs - the
    question (None: a default asking for objects, people, vehicles and lighting).
    image: 'visible', 'infrared' or 'both' (side by side, visible on the left).
    max_new_tokens / num_beams: passed to ``generate()``.
    trust_remote_code: allow model code shipped in the directory (off by default).
    parameter: the settings prefix named in errors (``<parameter>.path`` ...).
    """

    DEFAULT_QUESTION = ('Describe this scene in one sentence: the people, vehicles and other '
                        'objects, where they are, and whether it is day or night.')

    def __init__(self, path, prompt=None, image='visible', max_new_tokens=40, num_beams=1,
                 device='cpu', trust_remote_code=False, parameter='semantics.vlm'):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        path_parameter = f'{parameter}.path'
        self.image = check_image_source(image, f'{parameter}.image')
        directory = require_model_dir(path, path_parameter)
        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True,
                                                trust_remote_code=bool(trust_remote_code))
            model = AutoModelForImageTextToText.from_pretrained(
                directory, local_files_only=True, trust_remote_code=bool(trust_remote_code))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f'{path_parameter}: cannot load an image-text-to-text model from '
                              f'{directory}: {error}') from error
        self.model = model.to(device).eval()
        self.model_type = config.model_type
        self.model_id = str(directory)
        self.device = device
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self._torch = torch
        self.is_captioner = self.model_type in CAPTIONER_TYPES
        if self.is_captioner:
            self.tokenizer = load_tokenizer(directory, path_parameter)
            self.preprocessor = ImagePreprocessor.from_directory(directory, path_parameter)
            self.processor = None
        else:
            from transformers import AutoProcessor
            try:
                self.processor = AutoProcessor.from_pretrained(
                    directory, local_files_only=True, trust_remote_code=bool(trust_remote_code))
            except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
                raise ConfigError(
                    f'{path_parameter}: cannot load the processor of the {self.model_type} '
                    f'model in {directory} (instruction VLM processors need Pillow): '
                    f'{error}') from error

    def _caption(self, rgb):
        pixel_values = self.preprocessor([rgb]).to(self.device, self.model.dtype)
        kwargs = dict(pixel_values=pixel_values, max_new_tokens=self.max_new_tokens,
                      num_beams=self.num_beams, do_sample=False)
        prompt_text = ''
        if self.prompt:
            tokens = self.tokenizer([self.prompt], return_tensors='pt')
            input_ids = tokens['input_ids']
            if self.model_type == 'git':
                # GIT continues the text after the prompt: no end-of-sequence token.
                input_ids = input_ids[:, :-1]
            kwargs['input_ids'] = input_ids.to(self.device)
            if self.model_type == 'blip':
                kwargs['attention_mask'] = tokens['attention_mask'].to(self.device)
            prompt_text = self.tokenizer.decode(input_ids[0], skip_special_tokens=True).strip()
        with self._torch.inference_mode():
            output = self.model.generate(**kwargs)
        text = self.tokenizer.decode(output[0], skip_special_tokens=True).strip()
        if prompt_text and text.startswith(prompt_text):
            text = text[len(prompt_text):].strip()
        return text

    def _instruct(self, rgb):
        question = self.prompt or self.DEFAULT_QUESTION
        messages = [{'role': 'user', 'content': [{'type': 'image'},
                                                 {'type': 'text', 'text': question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=[rgb], text=[text], return_tensors='pt').to(self.device)
        with self._torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                         num_beams=self.num_beams, do_sample=False)
        answer = output[0, inputs['input_ids'].shape[1]:]
        return self.processor.decode(answer, skip_special_tokens=True).strip()

    def generate(self, visible, thermal=None):
        """Return the model's description (str) of the pair, from the configured image."""
        rgb = compose_rgb(visible, thermal, self.image)
        if self.is_captioner:
            return self._caption(rgb)
        return self._instruct(rgb)

    __call__ = generate
