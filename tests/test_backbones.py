"""Loading backbones: random-tiny, a locally saved model directory (the hub code path), errors."""

from __future__ import annotations

import json

import pytest
import torch

from hermes import HermesError
from hermes.attention import record_attention
from hermes.backbones import BUNDLED_MODELS, load_backbone, split_chat_template
from hermes.tokenizer import build_tokenizer
from tests.conftest import random_frames


def test_random_tiny_has_three_tiers_and_16_tokens_per_frame(backbone):
    assert backbone.n_layers >= 12
    assert backbone.tokens_per_frame == 16
    feats = backbone.encode_frames(random_frames(3))
    assert feats.shape == (1, 3 * 16 + 1, backbone.language_model.config.hidden_size)


def test_preprocess_resizes_any_frame_to_the_vision_size(backbone):
    pixels = backbone.preprocess(random_frames(2, height=90, width=160))
    assert pixels.shape == (2, 3, 64, 64)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_random_tiny_is_seeded(backbone):
    again = load_backbone("random-tiny", seed=0)
    other = load_backbone("random-tiny", seed=1)
    frames = random_frames(2)
    assert torch.equal(again.encode_frames(frames), backbone.encode_frames(frames))
    assert not torch.equal(other.encode_frames(frames), backbone.encode_frames(frames))


def test_saved_directory_loads_through_the_pretrained_path(backbone, tmp_path):
    backbone.model.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "hermes.json").write_text(json.dumps({"system_prompt": "you watch a video stream .",
                                                      "pseudo_queries": {"local": "now ?", "global": "all ?"}}))
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    loaded = load_backbone(str(tmp_path))
    with record_attention() as rec:  # only the registered hermes attention records
        loaded.language_model(inputs_embeds=loaded.embed_ids([5, 6]), use_cache=False)
    assert sorted(rec.totals) == list(range(loaded.n_layers))
    assert loaded.pseudo_queries == {"local": "now ?", "global": "all ?"}
    assert loaded.prefix_text.endswith("<|im_start|>user\n") and "you watch a video stream ." in loaded.prefix_text
    frames = random_frames(2)
    torch.testing.assert_close(loaded.encode_frames(frames), backbone.encode_frames(frames))
    ids = backbone.question_ids("what is on the screen now ?")
    assert loaded.question_ids("what is on the screen now ?") == ids
    with torch.no_grad():
        a = loaded.language_model(inputs_embeds=loaded.embed_ids(ids)).last_hidden_state
        b = backbone.language_model(inputs_embeds=backbone.embed_ids(ids)).last_hidden_state
    torch.testing.assert_close(a, b)


def test_chat_template_split_around_video_and_question():
    tok = build_tokenizer()
    prefix, (before, after) = split_chat_template(tok, tok.chat_template, "be brief .")
    assert prefix == "<|im_start|>system\nbe brief .<|im_end|>\n<|im_start|>user\n"
    assert (before, after) == ("\n", "<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("template, message", [
    (None, "has no chat template"),
    ("{% for m in messages %}{{ m['role'] }}{% endfor %}", "no video placeholder"),
])
def test_chat_template_errors(template, message):
    with pytest.raises(HermesError, match=message):
        split_chat_template(build_tokenizer(), template, None)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(HermesError, match="not a saved model directory"):
        load_backbone(str(tmp_path))
    with pytest.raises(HermesError, match="could not load model 'nobody/no-such-model'"):
        load_backbone("nobody/no-such-model")


@pytest.mark.skipif((BUNDLED_MODELS["hermes-tiny"] / "config.json").exists(), reason="bundled model present")
def test_missing_bundled_model_says_how_to_get_it():
    with pytest.raises(HermesError, match=r"python -m tiny\.train"):
        load_backbone("hermes-tiny")


def test_real_05b_architecture_builds_offline():
    from hermes.backbones import ov_05b_config

    cfg = ov_05b_config()
    assert (cfg.text_config.num_hidden_layers, cfg.text_config.hidden_size) == (24, 896)
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size) == (384, 14)
    # 27x27 patches pooled 2x2 (ceil) -> 14x14 = 196 tokens per frame, as in the paper
    assert (-(-(384 // 14) // 2)) ** 2 == 196
