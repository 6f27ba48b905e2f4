"""Loading backbones: random-tiny, a locally saved model directory (the hub code path), device
and precision, the token layout, errors. tests/test_conformance.py checks a shrunk real
LLaVA-OneVision against transformers."""

from __future__ import annotations

import json

import pytest
import torch

import hermes
from hermes import HermesError
from hermes.attention import record_attention
from hermes.backbones import (
    BUNDLED_MODELS,
    NEWLINE_BEFORE_QUESTION,
    NEWLINE_PER_CHUNK,
    load_backbone,
    resolve_device,
    resolve_dtype,
    split_chat_template,
)
from hermes.cache import NEWLINE
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
                                                      "pseudo_queries": {"local": "now ?", "global": "all ?"},
                                                      "layout": NEWLINE_PER_CHUNK}))
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


def test_random_tiny_keeps_its_trained_newline_per_chunk(backbone):
    assert backbone.layout == NEWLINE_PER_CHUNK and backbone.question_lead() is None
    frames, kinds = backbone.chunk_layout(3, 2)
    assert frames.tolist() == [3] * 16 + [4] * 17 and kinds.tolist()[-1] == NEWLINE
    assert backbone.chunk_tokens(2) == 33


@pytest.mark.skipif(not (BUNDLED_MODELS["hermes-tiny"] / "config.json").exists(), reason="bundled model absent")
def test_bundled_hermes_tiny_keeps_its_layout_by_name_and_by_path():
    assert load_backbone("hermes-tiny").layout == NEWLINE_PER_CHUNK
    assert load_backbone(str(BUNDLED_MODELS["hermes-tiny"])).layout == NEWLINE_PER_CHUNK


def test_a_directory_without_a_layout_gets_transformers_layout(backbone, tmp_path):
    backbone.model.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path))
    assert loaded.layout == NEWLINE_BEFORE_QUESTION
    frames = random_frames(2)
    torch.testing.assert_close(loaded.encode_frames(frames), backbone.encode_frames(frames)[:, :-1])
    assert torch.equal(loaded.question_lead()[0, 0], loaded.model.model.image_newline)
    (tmp_path / "hermes.json").write_text(json.dumps({"layout": "newline-sometimes"}))
    with pytest.raises(HermesError, match="layout must be one of"):
        load_backbone(str(tmp_path))


def test_auto_device_and_dtype(monkeypatch):
    monkeypatch.delenv("HERMES_DEVICE", raising=False)
    monkeypatch.delenv("HERMES_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(HermesError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda:0") == torch.float16
    assert resolve_dtype("float32", "cuda") == torch.float32 and resolve_dtype(torch.bfloat16) == torch.bfloat16


def test_environment_decides_what_auto_means(monkeypatch):
    monkeypatch.setenv("HERMES_DEVICE", "cpu")
    monkeypatch.setenv("HERMES_DTYPE", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cpu" and resolve_dtype("auto", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cpu") == torch.float32  # an explicit choice wins
    bb = load_backbone("random-tiny")
    assert (str(bb.device), bb.dtype) == ("cpu", torch.bfloat16)
    monkeypatch.setenv("HERMES_DTYPE", "float64")
    with pytest.raises(HermesError, match="dtype must be"):
        resolve_dtype("auto", "cpu")


@pytest.mark.parametrize("device, dtype, message", [
    ("tpu", "auto", "device must be"), ("cuda:x", "auto", "device must be"),
    ("cpu", "fp8", "dtype must be"), ("cpu", torch.int8, "dtype must be"),
])
def test_bad_device_or_dtype_is_refused(device, dtype, message):
    with pytest.raises(HermesError, match=message):
        load_backbone("random-tiny", device=device, dtype=dtype)


def test_engine_states_device_dtype_and_layout(backbone):
    engine = hermes.load_engine(backbone, policy="fifo", budget=64, chunk_frames=2)
    stats = engine.stats()
    assert (stats["device"], stats["dtype"], stats["layout"]) == ("cpu", "float32", NEWLINE_PER_CHUNK)
    assert engine.ingest(random_frames(2))[0].layout == NEWLINE_PER_CHUNK
    with pytest.raises(HermesError, match="a loaded Backbone already has them"):
        hermes.load_engine(backbone, device="cpu")


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
