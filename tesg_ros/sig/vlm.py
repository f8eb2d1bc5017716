# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Scene descriptions from a local vision-language model (transformers ``generate()``).

:class:`VlmDescriber` loads a Hugging Face model directory with ``local_files_only=True``
(``trust_remote_code`` stays off unless set) through ``AutoModelForImageTextToText`` and its
library processor (``AutoProcessor``: image processor + tokenizer, saved with the model), and is
a refresher backend: ``describer(visible, thermal) -> str``. Three prompt styles:

* **caption** - captioners (BLIP, GIT): an optional prompt is the caption's prefix
  ("a thermal photo of") and is removed from the answer.
* **task** - Florence-2: no chat template; the prompt is one of its caption task tokens
  (:data:`FLORENCE_CAPTION_TASKS`, default ``'<MORE_DETAILED_CAPTION>'``), which its processor
  expands. Florence-2 is an encoder-decoder: the output holds only the answer.
* **chat** - instruction VLMs (SmolVLM, Qwen2-VL, LLaVA, ...): the prompt is the user's question,
  sent with the image through the processor's chat template; the answer is what follows the
  prompt tokens.

Processors that bundle a video processor (SmolVLM, Qwen2-VL in transformers 5) need
torchvision to load even for still images, and SmolVLM's also num2words. Where that stops
``AutoProcessor``, the describer loads the library processor class without its video slot
(:func:`image_only_processor_class`: a subclass whose ``__init__`` has no ``video_processor``
argument, so ``ProcessorMixin`` neither loads nor type-checks one); its ``__call__`` is the
library's, so the model gets exactly the inputs (expanded image tokens, pixel values, grid,
token type ids) the full processor gives for a still image. Other families whose processor
cannot load raise a :class:`ConfigError` that names the missing package.
"""

import functools

from tesg_ros.errors import ConfigError
from tesg_ros.sig.images import (  # noqa: F401 (re-exported)
    check_image_source, compose_rgb, IMAGE_SOURCES)
from tesg_ros.sig.text_encoder import require_model_dir

CAPTIONER_TYPES = ('blip', 'git')
TASK_PROMPT_TYPES = ('florence2',)
FLORENCE_CAPTION_TASKS = ('<CAPTION>', '<DETAILED_CAPTION>', '<MORE_DETAILED_CAPTION>')
# Families whose processor loads without its video processor (image_only_processor_class).
IMAGE_ONLY_PROCESSOR_TYPES = ('qwen2_vl', 'smolvlm')
CAPTION, TASK, CHAT = 'caption', 'task', 'chat'
# What loading a model directory can raise besides ImportError (reported separately).
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)


@functools.cache
def image_only_processor_class(model_type):
    """The library processor of ``model_type`` without its video processor, or None.

    'qwen2_vl' -> a ``Qwen2VLProcessor`` subclass, 'smolvlm' -> a ``SmolVLMProcessor``
    subclass; any other type -> None. ``ProcessorMixin`` takes a processor's parts from the
    arguments of its ``__init__``, so these ``__init__`` methods leave ``video_processor`` out:
    ``from_pretrained`` then loads only the image processor (Pillow backend) and the tokenizer,
    plus the chat template and processor_config.json options. Tokenising, image-token expansion
    (``replace_image_token``) and the outputs are the library class's own code. Video input
    raises ValueError.
    """
    if model_type not in IMAGE_ONLY_PROCESSOR_TYPES:
        return None
    from transformers.processing_utils import ProcessorMixin

    if model_type == 'qwen2_vl':
        from transformers import Qwen2VLProcessor as library_class

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            # Qwen2VLProcessor passes (image, tokenizer, video) on; ProcessorMixin pairs them
            # with this class's attributes (image_processor, tokenizer) and drops the None.
            library_class.__init__(self, image_processor, tokenizer, None,
                                   chat_template=chat_template, **kwargs)
    else:
        from transformers import SmolVLMProcessor as library_class

        def __init__(self, image_processor, tokenizer, image_seq_len=169, chat_template=None,
                     **kwargs):
            # SmolVLMProcessor.__init__ minus its num2words check (num2words spells out video
            # frame counts only); the attributes are set as the library sets them.
            self.fake_image_token = getattr(tokenizer, 'fake_image_token',
                                            '<fake_token_around_image>')
            self.image_token = getattr(tokenizer, 'image_token', '<image>')
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = getattr(tokenizer, 'end_of_utterance_token',
                                                  '<end_of_utterance>')
            self.global_image_token = getattr(tokenizer, 'global_image_token', '<global-img>')
            self.image_seq_len = image_seq_len
            self.video_token = getattr(tokenizer, 'video_token', '<video>')
            ProcessorMixin.__init__(self, image_processor, tokenizer,
                                    chat_template=chat_template, **kwargs)
    chat_template_method = library_class.apply_chat_template
    if model_type == 'smolvlm':
        # SmolVLM's override only adds video defaults (and reads the video processor).
        chat_template_method = ProcessorMixin.apply_chat_template

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ValueError(f'{type(self).__name__} has no video processor: images only')
        return library_class.__call__(self, images=images, text=text, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        conversations, _ = self._normalize_conversations(conversation)
        if any(isinstance(part, dict) and part.get('type') == 'video'
               for messages in conversations for message in messages
               for part in (message.get('content') or [])):
            raise ValueError(f'{type(self).__name__} has no video processor: images only')
        return chat_template_method(self, conversation, *args, **kwargs)

    return type(f'ImageOnly{library_class.__name__}', (library_class,), {
        '__init__': __init__, '__call__': __call__, 'apply_chat_template': apply_chat_template,
        '__module__': __name__, '__doc__': f'{library_class.__name__} without video input.'})


def load_processor(directory, parameter, processor_class=None, trust_remote_code=False,
                   what='model', model_type=None):
    """The library processor (image processor + tokenizer) saved in a model directory.

    ``processor_class`` None uses ``AutoProcessor``; where that fails for want of a package
    (torchvision, num2words) and ``model_type`` has an :func:`image_only_processor_class`, that
    class is loaded instead. Raises :class:`ConfigError` naming ``parameter`` when the files are
    missing or unreadable, when a package the processor needs is not installed, or when the
    directory holds only a tokenizer or only an image processor.
    """
    if processor_class is None:
        from transformers import AutoProcessor as processor_class
    try:
        try:
            processor = processor_class.from_pretrained(
                directory, local_files_only=True, trust_remote_code=bool(trust_remote_code))
        except ImportError:
            image_only_class = image_only_processor_class(model_type)
            if image_only_class is None:
                raise
            processor = image_only_class.from_pretrained(directory, local_files_only=True)
    except ImportError as error:
        raise ConfigError(f'{parameter}: the processor of the {what} in {directory} needs a '
                          f'package that is not installed: {" ".join(str(error).split())}'
                          ) from error
    except _LOAD_ERRORS as error:
        raise ConfigError(f'{parameter}: cannot load the processor of the {what} in '
                          f'{directory}: {error}') from error
    missing = [name for name in ('image_processor', 'tokenizer')
               if getattr(processor, name, None) is None]
    if missing:
        raise ConfigError(
            f'{parameter}: {directory} has no complete processor (found '
            f'{type(processor).__name__}, missing {" and ".join(missing)}): save the model '
            'with its processor (processor.save_pretrained), e.g. preprocessor_config.json '
            'and the tokenizer files')
    return processor


class VlmDescriber:
    """Describe a frame pair with a local captioner, Florence-2 or an instruction VLM.

    path: model directory (config.json, weights, processor and tokenizer files).
    prompt: captioners - a caption prefix (None: unconditional); Florence-2 - one of
    :data:`FLORENCE_CAPTION_TASKS` (None: '<MORE_DETAILED_CAPTION>'); instruction VLMs - the
    question (None: :attr:`DEFAULT_QUESTION`).
    image: 'visible', 'infrared' or 'both' (side by side, visible on the left).
    max_new_tokens / num_beams: passed to ``generate()`` (greedy, no sampling).
    trust_remote_code: allow model code shipped in the directory (off by default).
    parameter: the settings prefix named in errors (``<parameter>.path`` ...).
    """

    DEFAULT_QUESTION = ('Describe this scene in one sentence: the people, vehicles and other '
                        'objects, where they are, and whether it is day or night.')
    DEFAULT_TASK = '<MORE_DETAILED_CAPTION>'

    def __init__(self, path, prompt=None, image='visible', max_new_tokens=40, num_beams=1,
                 device='cpu', trust_remote_code=False, parameter='semantics.vlm'):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        path_parameter = f'{parameter}.path'
        self.image = check_image_source(image, f'{parameter}.image')
        if int(max_new_tokens) < 1:
            raise ConfigError(f'{parameter}.max_new_tokens must be >= 1, got {max_new_tokens}')
        if int(num_beams) < 1:
            raise ConfigError(f'{parameter}.num_beams must be >= 1, got {num_beams}')
        directory = require_model_dir(path, path_parameter)
        remote = bool(trust_remote_code)
        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True,
                                                trust_remote_code=remote)
            model = AutoModelForImageTextToText.from_pretrained(
                directory, local_files_only=True, trust_remote_code=remote)
        except (ImportError, *_LOAD_ERRORS) as error:
            raise ConfigError(f'{path_parameter}: cannot load an image-text-to-text model from '
                              f'{directory}: {error}') from error
        self.model_type = config.model_type
        if self.model_type in CAPTIONER_TYPES:
            self.style = CAPTION
        elif self.model_type in TASK_PROMPT_TYPES:
            self.style = TASK
            prompt = prompt or self.DEFAULT_TASK
            if prompt not in FLORENCE_CAPTION_TASKS:
                raise ConfigError(
                    f'{parameter}.prompt: {self.model_type} takes a task prompt, one of '
                    f'{FLORENCE_CAPTION_TASKS} (a description), got {prompt!r}')
        else:
            self.style = CHAT
        self.processor = load_processor(directory, path_parameter, trust_remote_code=remote,
                                        what=f'{self.model_type} model',
                                        model_type=self.model_type)
        if self.style == CHAT and not getattr(self.processor, 'chat_template', None):
            raise ConfigError(
                f'{path_parameter}: the {self.model_type} processor in {directory} has no chat '
                'template (chat_template.jinja), which instruction VLMs need for the question')
        self.model = model.to(device).eval()
        self.model_id = str(directory)
        self.device = device
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self._torch = torch

    @property
    def is_captioner(self):
        return self.style == CAPTION

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def model_inputs(self, rgb):
        """The processor's output for one RGB picture (a BatchFeature on the model's device).

        Which leading output tokens repeat the prompt is :meth:`_answer_tokens`'s business.
        """
        if self.style == CAPTION:
            inputs = self.processor(images=[rgb], text=[self.prompt] if self.prompt else None,
                                    return_tensors='pt')
            inputs.pop('token_type_ids', None)  # BERT tokenizers add them; captioners refuse
            if self.prompt and self.model_type == 'git':
                # GIT continues the text after the prompt: drop the end-of-sequence token.
                inputs['input_ids'] = inputs['input_ids'][:, :-1]
                inputs['attention_mask'] = inputs['attention_mask'][:, :-1]
        elif self.style == TASK:
            inputs = self.processor(images=[rgb], text=[self.prompt], return_tensors='pt')
        else:
            question = self.prompt or self.DEFAULT_QUESTION
            messages = [{'role': 'user', 'content': [{'type': 'image'},
                                                     {'type': 'text', 'text': question}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self.processor(images=[rgb], text=[text], return_tensors='pt')
        inputs = inputs.to(self.device)
        inputs['pixel_values'] = inputs['pixel_values'].to(self.model.dtype)
        return inputs

    def _answer_tokens(self, inputs, output):
        if self.model.config.is_encoder_decoder or 'input_ids' not in inputs:
            return output[0]
        if self.model_type == 'blip':
            return output[0]  # BLIP's output starts with its own BOS, not the input ids
        return output[0, inputs['input_ids'].shape[1]:]

    def generate(self, visible, thermal=None):
        """Return the model's description (str) of the pair, from the configured image."""
        inputs = self.model_inputs(compose_rgb(visible, thermal, self.image))
        with self._torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                         num_beams=self.num_beams, do_sample=False)
        text = self.processor.decode(self._answer_tokens(inputs, output),
                                     skip_special_tokens=True).strip()
        if self.style == CAPTION and self.prompt:
            prompt_text = self.processor.decode(inputs['input_ids'][0],
                                                skip_special_tokens=True).strip()
            if text.startswith(prompt_text):
                text = text[len(prompt_text):].strip()
        return ' '.join(text.split())

    __call__ = generate
