"""Conformance with transformers' own LLaVA-OneVision, on a shrunk copy of the real model.

A hub model cannot be downloaded here, so this builds one offline that has the real
llava-hf/llava-onevision-qwen2-0.5b-ov-hf structure at tiny sizes: SigLIP vision tower (patch
14, an odd patch grid pooled 2x2 with ceil, as 27x27 -> 14x14), Qwen2 decoder (GQA, RoPE theta
1e6, tied embeddings), the real anyres / video settings; a byte-level BPE tokenizer with
Qwen2's pre-tokenizer and special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, then
<image>, <video> added as the conversion script does); the hub's processor chat template in
chat_template.json and Qwen2-Instruct's text-only template in the tokenizer. It is saved in
save_pretrained layout and loaded with ``load_backbone(directory)``, the code path a hub model
takes. The reference is ``LlavaOnevisionForConditionalGeneration.forward(input_ids,
pixel_values_videos)`` with transformers' own attention, on input ids laid out as
``LlavaOnevisionProcessor`` lays them out (AutoProcessor itself needs torchvision).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    AutoTokenizer,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Tokenizer,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

import hermes
from hermes import HermesError
from hermes.backbones import (
    HERMES_JSON,
    NEWLINE_BEFORE_QUESTION,
    NEWLINE_PER_CHUNK,
    load_backbone,
    split_chat_template,
)
from hermes.cache import NEWLINE
from tests.conftest import make_engine, random_frames

# The processor chat template of llava-hf/llava-onevision-qwen2-*-hf: the `chat_template` string
# of transformers' src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py,
# which wrote the hub's chat_template.json. Message content is a list of parts.
HUB_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen2-Instruct's own (text-only) template, which the tokenizer brings along: no video in it.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "You are a helpful assistant.",
    "Describe the current scene in detail, focusing on specific objects, fine-grained actions, and spatial "
    "relationships.",
    "Summarize the video narrative, identifying main characters, key events, timeline changes, and the overall theme.",
    "What is on the screen now? Which shape appeared first? How many red circles have you seen so far?",
    "What colour was the square when the triangle left? Answer with one word.",
]
QUESTIONS = ["What is on the screen now?", "How many red circles have you seen so far?", "Describe it, briefly!"]
SYSTEM = "You are a helpful assistant."
SIZE, PATCH = 98, 14  # a 7x7 patch grid (odd, as the real 27x27), pooled to 4x4 = 16 tokens per frame


def qwen2_style_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE trained on a few sentences, with Qwen2's normaliser, pre-tokenizer and
    special tokens, and <image> / <video> added after them."""
    core = Tokenizer(BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    vocab = dict(core.get_vocab())
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(core.to_str())["model"]["merges"]]
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", extra_special_tokens=["<|im_start|>", "<|im_end|>"],
                         model_max_length=32768, errors="replace")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>")],
                   special_tokens=True)
    tok.chat_template = QWEN2_TEMPLATE
    return tok


def shrunk_config(tok: Qwen2Tokenizer) -> LlavaOnevisionConfig:
    """The real 0.5B config's structure (and its anyres / video settings) at tiny sizes."""
    ids = tok.convert_tokens_to_ids
    return LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": SIZE, "patch_size": PATCH,
                       "vision_use_head": False},
        text_config={"model_type": "qwen2", "vocab_size": 64 * math.ceil(len(tok) / 64), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "max_position_embeddings": 32768,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 6,
                     "initializer_range": 0.1,
                     "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>")},
        image_token_index=ids("<image>"), video_token_index=ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[SIZE * i, SIZE * j] for i in range(1, 7) for j in range(1, 7)],
        projector_hidden_act="gelu", multimodal_projector_bias=True, tie_word_embeddings=True,
        use_image_newline_parameter=True,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The shrunk model saved as a hub model is: weights, tokenizer, processor chat template."""
    out = tmp_path_factory.mktemp("llava-onevision-shrunk")
    tok = qwen2_style_tokenizer()
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(shrunk_config(tok))
    with torch.no_grad():  # the real newline is a trained vector, not ~0: make its position matter
        model.model.image_newline.normal_()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": HUB_TEMPLATE}))
    return out


@pytest.fixture(scope="module")
def real(model_dir):
    return load_backbone(str(model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(model_dir):
    """transformers' own model, loaded apart from the engine's, with its own attention."""
    return LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()


def messages(question: str, system: str | None = None) -> list[dict]:
    turn = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return [*turn, {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]


def processor_input_ids(tok, template: str, n_frames: int, question: str, system: str | None = None) -> list[int]:
    """input_ids as LlavaOnevisionProcessor builds them: the chat rendered, each <video> replaced by
    frames x pooled-tokens-per-frame + 1 video tokens (replace_video_token), then tokenised."""
    text = tok.apply_chat_template(messages(question, system), chat_template=template, tokenize=False,
                                   add_generation_prompt=True)
    num_image_tokens = (SIZE // PATCH) ** 2  # the processor's num_image_tokens (729 for the real model)
    pooled = math.ceil(int(math.sqrt(num_image_tokens)) / 2)
    text = text.replace("<video>", "<video>" * (n_frames * pooled * pooled + 1))
    return tok(text)["input_ids"]


@torch.no_grad()
def reference_logits(reference, real, frames, question: str) -> torch.Tensor:
    ids = processor_input_ids(real.tokenizer, HUB_TEMPLATE, len(frames), question)
    out = reference(input_ids=torch.tensor([ids]), pixel_values_videos=real.preprocess(frames).unsqueeze(0))
    return out.logits[0, -1].float()


def test_loaded_like_a_hub_model_with_transformers_layout(real):
    assert real.layout == NEWLINE_BEFORE_QUESTION and real.tokens_per_frame == 16
    assert real.prefix_text == "<|im_start|>user\n"  # no hermes.json: no system prompt
    assert real.question_text == ("\n", "<|im_end|>\n<|im_start|>assistant\n")
    frames, kinds = real.chunk_layout(4, 2)
    assert frames.tolist() == [4] * 16 + [5] * 16 and NEWLINE not in kinds.tolist()
    assert real.encode_frames(random_frames(2)).shape[1] == real.chunk_tokens(2) == 32
    lead = real.question_lead()
    assert torch.equal(lead[0, 0], real.model.model.image_newline)


@pytest.mark.parametrize("chunk_frames, n_frames", [(2, 6), (1, 4), (3, 7), (4, 8), (8, 8)])
def test_engine_matches_transformers_forward_for_any_chunking(real, reference, chunk_frames, n_frames):
    frames = random_frames(n_frames, height=60, width=80, seed=n_frames)
    engine = make_engine(real, "full", chunk_frames=chunk_frames)
    engine.ingest(frames)
    engine.flush()
    for question in QUESTIONS[:2]:
        want = reference_logits(reference, real, frames, question)
        got = engine.next_token_logits(question)
        assert (got - want).abs().max().item() <= 1e-4, (chunk_frames, question)


def test_a_newline_per_chunk_would_not_match(real, reference):
    """The check above can fail: hermes-tiny's layout on this model is off by far more than 1e-4."""
    frames = random_frames(6, height=60, width=80, seed=6)
    engine = make_engine(dataclasses.replace(real, layout=NEWLINE_PER_CHUNK), "full", chunk_frames=2)
    engine.ingest(frames)
    want = reference_logits(reference, real, frames, QUESTIONS[0])
    assert (engine.next_token_logits(QUESTIONS[0]) - want).abs().max().item() > 1e-3


def test_answer_removes_the_newline_with_the_question(real, reference):
    frames = random_frames(4, height=60, width=80, seed=3)
    engine = make_engine(real, "full", chunk_frames=2, max_new_tokens=4, repetition_penalty=1.0)
    engine.ingest(frames)
    lengths, position = engine.cache_lengths(), engine.next_position
    answer = engine.ask(QUESTIONS[0])
    assert engine.cache_lengths() == lengths == [4 * 16] * real.n_layers and engine.next_position == position
    ids = processor_input_ids(real.tokenizer, HUB_TEMPLATE, 4, QUESTIONS[0])
    with torch.no_grad():  # transformers' greedy decoding (no penalty) gives the same first token
        first = reference(input_ids=torch.tensor([ids]), pixel_values_videos=real.preprocess(frames).unsqueeze(0))
    assert answer.tokens and answer.tokens[0] == int(first.logits[0, -1].argmax())
    where = engine.attend(QUESTIONS[0])
    assert all(0.0 < float(layer.sum()) <= 1.0 + 1e-5 for layer in where.attention)


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("system", [None, SYSTEM])
def test_chat_template_split_is_token_identical(real, question, system):
    tok = real.tokenizer
    prefix, (before, after) = split_chat_template(tok, HUB_TEMPLATE, system)
    video = tok.convert_tokens_to_ids("<video>")
    ours = [*real.encode_text(prefix), video, *real.encode_text(before + question + after)]
    theirs = tok.apply_chat_template(messages(question, system), chat_template=HUB_TEMPLATE, tokenize=True,
                                     add_generation_prompt=True)["input_ids"]
    assert ours == theirs


def test_system_prompt_is_rendered_in_the_real_template(model_dir, tmp_path):
    """The hub template renders only text parts: a system prompt must go in as one."""
    prefix, _ = split_chat_template(AutoTokenizer.from_pretrained(model_dir), HUB_TEMPLATE, SYSTEM)
    assert prefix == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    for path in model_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / HERMES_JSON).write_text(json.dumps({"system_prompt": SYSTEM}))
    loaded = load_backbone(str(tmp_path), device="cpu")
    assert loaded.prefix_text == prefix and loaded.layout == NEWLINE_BEFORE_QUESTION
    template_drops_it = HUB_TEMPLATE.replace("{{ content['text'] }}{% endfor %}{% else %}",
                                             "{% if message['role'] == 'user' %}{{ content['text'] }}{% endif %}"
                                             "{% endfor %}{% else %}")
    with pytest.raises(HermesError, match="dropped the system prompt"):
        split_chat_template(loaded.tokenizer, template_drops_it, SYSTEM)


@pytest.mark.parametrize("template_file, content, message", [
    (None, None, "could not be rendered"),  # no processor template: the tokenizer's text-only one is refused
    ("chat_template.json", "{not json", "is not a processor chat template file"),
    ("chat_template.json", json.dumps({"template": HUB_TEMPLATE}), "has no 'chat_template' string"),
    ("chat_template.json", json.dumps({"chat_template": "{% for m in messages %}{{ m }"}), "could not be rendered"),
    ("chat_template.jinja", "{% for m in messages %}{{ m['role'] }}{% endfor %}", "no video placeholder"),
])
def test_missing_or_broken_template_is_a_clear_error(model_dir, tmp_path, template_file, content, message):
    for path in model_dir.iterdir():
        if path.name != "chat_template.json":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    if template_file:
        (tmp_path / template_file).write_text(content)
    with pytest.raises(HermesError, match=message):
        load_backbone(str(tmp_path), device="cpu")


def test_no_template_anywhere_is_a_clear_error(model_dir, tmp_path):
    for path in model_dir.iterdir():
        if path.name not in ("chat_template.json", "chat_template.jinja"):
            (tmp_path / path.name).write_bytes(path.read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(HermesError, match="has no chat template"):
        load_backbone(str(tmp_path), device="cpu")


def test_bfloat16_on_cpu_ingests_answers_and_reindexes(model_dir):
    engine = hermes.load_engine(str(model_dir), policy="hermes", budget=40, device="cpu", dtype="bfloat16",
                                chunk_frames=2, reindex="eager", max_new_tokens=3)
    assert engine.backbone.dtype == torch.bfloat16 and engine.stats()["dtype"] == "bfloat16"
    events = engine.ingest(random_frames(8, height=60, width=80))
    assert [e.layout for e in events] == [NEWLINE_BEFORE_QUESTION] * 4
    assert max(engine.cache_lengths()) <= 40 and engine.cache.max_position() < engine.frames_seen * 16
    answer = engine.ask(QUESTIONS[0])
    assert answer.tokens and torch.isfinite(engine.next_token_logits(QUESTIONS[1])).all()
