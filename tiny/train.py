"""Train hermes-tiny, the bundled LLaVA-OneVision-architecture model, on ShapeStream.

    python -m tiny.train                      # full run (see --vision-steps / --qa-steps)
    python -m tiny.train --qa-steps 50 --out /tmp/tiny   # a quick smoke run

CPU by default (a GPU is used when present), seeded, resumable (a checkpoint is written
to --work every --save-every steps and picked up on restart; checkpoints from before v5
cannot be resumed), with tqdm progress.

Two stages:
1. vision warm-up: vision tower + projector learn dense per-frame targets that ShapeStream
   knows exactly, on independent frames (each from its own world): the colour under each
   of the 4x4 tokens, and the shape in each quarter of the screen (scored on the mean of the
   quarter's four tokens), through heads tied to the words' embeddings;
2. question answering, end to end: each step is one stream laid out exactly as the engine
   lays it out (prefix, per chunk: 16 frame tokens per frame + one newline token), plus
   every question asked at a chunk boundary appended after it, each at the positions the
   engine would give it and masked to see only the stream up to its time (so one forward
   trains dozens of questions; answers are not fed to later questions). Loss: the answer
   word and the end-of-turn token after it, plus dense auxiliary losses: the frame loss
   above, event probes on layer-4 frame tokens (EventHeads), attention supervision
   (retrieval_loss): two heads of layer 6 learn to look from the token that predicts the
   answer at the tokens of the frame that holds the evidence, and a readout loss: the
   first head's own output must name the answer; copy supervision (copy_loss): two heads
   of layer 2 fetch the shape words the question names into the answering row; and
   QuestionProbes: that row must name those shapes at layer 6, and for order questions
   each retrieval head's output must name its object's appearance rank.

What made the difference (measured): with answer-only gradients the model learned counts
but never learned to find "the square" in the past; supervising where to look lifted shape
questions within minutes. And a 2-layer vision tower could not tell shapes apart while
their edges changed with every colour and background: black outlines on light
backgrounds took shape accuracy per quarter from ~50% to ~100%. Looking in the right place
was not enough either: the readout loss took the questions about the past from ~0.3 to ~0.5
(model-card eval, same steps). v4 still never learned to carry the shape a question names
("the circle") to the row that answers: a linear probe on that row read the named shape at
chance in every layer, so "what colour is the X now" was answered from whichever shape was
on screen and "did the X appear before the Y" at chance (each retrieval head put only ~0.4
of its attention on its own shape's appearance). Supervising two heads to fetch the words fixed the
routing within 25 steps; the copy loss and the probes are there for that.

Training streams use seeds from TRAIN_SEED0 on; evaluation uses seeds below it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hermes.backbones import BUNDLED_MODELS, Backbone, build_random, tiny_config
from hermes.shapestream import generate, grade
from hermes.tokenizer import build_tokenizer
from tiny.card import save_model
from tiny.heads import AuxHeads, EventHeads, QuestionProbes
from tiny.labels import dense_labels, event_labels
from tiny.losses import copy_loss, qa_forward, retrieval_loss
from tiny.samples import CHUNK, FPS, TRAIN_SEED0, build_sample, frame_tokens, vision_batch


@dataclass
class TrainConfig:
    out: Path = BUNDLED_MODELS["hermes-tiny"]
    work: Path = Path("runs/hermes-tiny")
    seed: int = 0
    vision_steps: int = 4000
    vision_batch: int = 48
    qa_steps: int = 3800
    lr: float = 2e-3
    vision_lr: float = 1e-3
    aux_weight: float = 1.0
    event_weight: float = 1.0
    event_layer: int = 4
    retrieval_weight: float = 1.0
    retrieval_layer: int = 6
    readout_weight: float = 1.0  # v3 + 450 steps: backward 0.36 -> 0.42 with it (model-card eval)
    probe_weight: float = 1.0  # QuestionProbes: which shape is named first / second, ranks for order
    copy_weight: float = 1.0  # copy_loss: the answering row fetches the shapes its question names
    copy_layer: int = 2
    min_seconds: float = 16.0
    max_seconds: float = 64.0
    save_every: int = 100
    eval_every: int = 500
    export_only: bool = False


def new_backbone(seed: int) -> Backbone:
    bb = build_random(tiny_config(len(build_tokenizer())), seed=seed, name="hermes-tiny")
    return bb


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def stream_seconds(step: int, cfg: TrainConfig, rng: random.Random) -> float:
    """Curriculum: short streams first, up to max_seconds by 40% of the QA steps."""
    grow = min(1.0, step / max(1, 0.4 * cfg.qa_steps))
    top = cfg.min_seconds + grow * (cfg.max_seconds - cfg.min_seconds)
    return CHUNK / FPS * rng.randint(int(cfg.min_seconds * FPS / CHUNK), max(1, int(top * FPS / CHUNK)))


def vision_stage(bb: Backbone, heads: torch.nn.Module, opt_v: torch.optim.Optimizer, embed: torch.Tensor,
                 cfg: TrainConfig, device: torch.device, state: dict, checkpoint: Callable[[], None]) -> dict:
    """Stage 1 of both trainers (hermes-tiny's and tiny.smol's): `cfg.vision_steps` batches of
    independent frames through the vision tower and projector, scored by the frame-loss heads
    against `embed` (the decoder's word embeddings). Updates state["step"] in place (so
    `checkpoint` saves progress) and returns the state that starts the question-answering stage."""
    bar = tqdm(range(state["step"], cfg.vision_steps), desc="vision", initial=state["step"], total=cfg.vision_steps)
    acc = float("nan")
    for step in bar:
        for group in opt_v.param_groups:
            group["lr"] = lr_at(step, cfg.vision_steps, cfg.vision_lr)
        frames, shapes, colours = vision_batch(step, cfg.vision_batch, device)
        tokens = frame_tokens(bb, bb.preprocess(frames).to(device))  # (B, tokens_per_frame, D)
        loss, acc = heads.loss(tokens, shapes, colours, embed)
        opt_v.zero_grad()
        loss.backward()
        opt_v.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", cell_acc=f"{acc:.3f}")
        state["step"] = step + 1
        if (step + 1) % cfg.save_every == 0:
            checkpoint()
    return {**state, "stage": "qa", "step": 0, "log": state["log"] + [{"vision_cell_acc": acc}]}


@torch.no_grad()
def evaluate(bb: Backbone, seeds: range, device: torch.device, seconds: float = 48.0) -> dict[str, float]:
    """Answer accuracy per category with full-sequence forwards (no eviction): the most likely
    first answer word, graded like every other answer (hermes.shapestream.grade)."""
    bb.model.eval()
    hits: dict[str, list[bool]] = {}
    for seed in seeds:
        stream = generate(seed, seconds=seconds, fps=FPS)
        sample = build_sample(bb, stream, device)
        out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                                attention_mask={"full_attention": sample.mask}, use_cache=False)
        logits = bb.model.lm_head(out.last_hidden_state[0])
        at = (sample.targets != -100).nonzero().flatten()[0::2]
        for q, i in zip(stream.questions, at.tolist(), strict=True):
            said = bb.tokenizer.convert_ids_to_tokens(int(logits[i].argmax()))  # one word per token
            hits.setdefault(q.category, []).append(grade(said, q.answer))
    bb.model.train()
    result = {c: float(np.mean(v)) for c, v in sorted(hits.items())}
    result["all"] = float(np.mean([h for v in hits.values() for h in v]))
    return result


def command(cfg: TrainConfig) -> str:
    """The command line that trains `cfg` (the model card names it)."""
    return "python -m tiny.train" + (
        "" if (cfg.vision_steps, cfg.qa_steps) == (TrainConfig.vision_steps, TrainConfig.qa_steps)
        else f" --vision-steps {cfg.vision_steps} --qa-steps {cfg.qa_steps}")


def train(cfg: TrainConfig) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    bb = new_backbone(cfg.seed).to(str(device))
    bb.model.set_attn_implementation({"text_config": "sdpa", "vision_config": "sdpa"})
    heads = AuxHeads(bb).to(device)
    events = EventHeads(bb.language_model.config.hidden_size).to(device)
    probes = QuestionProbes(bb.language_model.config.hidden_size).to(device)
    embed = bb.language_model.embed_tokens.weight
    vision_params = [*bb.model.model.vision_tower.parameters(), *bb.model.model.multi_modal_projector.parameters()]
    opt_v = torch.optim.AdamW([*vision_params, *heads.parameters()], lr=cfg.vision_lr, weight_decay=0.01)
    opt = torch.optim.AdamW([*bb.model.parameters(), *heads.parameters(), *events.parameters(),
                             *probes.parameters()], lr=cfg.lr, weight_decay=0.01)
    state = {"stage": "vision", "step": 0, "log": []}
    ckpt = cfg.work / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=True)  # plain tensors and numbers, no pickle
        if "probes" not in saved:
            raise SystemExit(f"{ckpt} was written by the trainer before v5 (no question probes) and cannot be "
                             "resumed; use another --work directory")
        bb.model.load_state_dict(saved["model"])
        heads.load_state_dict(saved["heads"])
        events.load_state_dict(saved["events"])
        probes.load_state_dict(saved["probes"])
        opt_v.load_state_dict(saved["opt_v"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"].cpu())  # saved on whatever device it ran
        print(f"resumed from {ckpt} at {state['stage']} step {state['step']}")

    def checkpoint() -> None:
        cfg.work.mkdir(parents=True, exist_ok=True)
        torch.save({"model": bb.model.state_dict(), "heads": heads.state_dict(),
                    "events": events.state_dict(), "probes": probes.state_dict(), "opt_v": opt_v.state_dict(),
                    "opt": opt.state_dict(), "state": state, "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state()}, ckpt)

    bb.model.train()
    start = time.time()
    if cfg.export_only:  # save the checkpoint as it is (e.g. a run stopped early)
        return finish(bb, cfg, device, start, state)
    if state["stage"] == "vision":
        state = vision_stage(bb, heads, opt_v, embed.detach(), cfg, device, state, checkpoint)
        checkpoint()
    bar = tqdm(range(state["step"], cfg.qa_steps), desc="qa", initial=state["step"], total=cfg.qa_steps)
    ema_acc = None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.qa_steps, cfg.lr)
        seconds = stream_seconds(step, cfg, rng)
        stream = generate(TRAIN_SEED0 + step, seconds=seconds, fps=FPS)
        sample = build_sample(bb, stream, device)
        loss, acc, states = qa_forward(bb, sample)
        hidden = states[cfg.event_layer][0, sample.frame_index]  # (T * tokens_per_frame, D)
        ret_loss, ret_acc, readout, probe = retrieval_loss(
            bb, sample, states[cfg.retrieval_layer][0], cfg.retrieval_layer, readout=cfg.readout_weight > 0,
            probes=probes if cfg.probe_weight > 0 else None)
        copy, copy_acc = copy_loss(bb, sample, states[cfg.copy_layer][0], cfg.copy_layer)
        shapes, colours = dense_labels(stream, 4, device)
        aux, cell_acc = heads.loss(sample.frame_feats, shapes, colours, embed)
        labels = {k: torch.from_numpy(v).to(device).view(-1) for k, v in event_labels(stream, 4).items()}
        ev_loss, ev_acc = events.loss(hidden, labels)
        opt.zero_grad()
        (loss + cfg.aux_weight * aux + cfg.event_weight * ev_loss
         + cfg.retrieval_weight * (ret_loss + cfg.readout_weight * readout + cfg.probe_weight * probe)
         + cfg.copy_weight * copy).backward()
        torch.nn.utils.clip_grad_norm_(bb.model.parameters(), 1.0)
        opt.step()
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{ema_acc:.3f}", cell=f"{cell_acc:.2f}", ev=f"{ev_acc:.2f}",
                        ret=f"{ret_acc:.2f}", copy=f"{copy_acc:.2f}", s=int(seconds))
        state["step"] = step + 1
        if (step + 1) % cfg.save_every == 0:
            checkpoint()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.qa_steps:
            metrics = evaluate(bb, range(100, 112), device)
            state["log"].append({"step": step + 1, "minutes": round((time.time() - start) / 60, 1), **metrics})
            tqdm.write(json.dumps(state["log"][-1]))
    checkpoint()
    return finish(bb, cfg, device, start, state)


def finish(bb: Backbone, cfg: TrainConfig, device: torch.device, start: float, state: dict) -> dict:
    """Evaluate on held-out streams and save the model directory."""
    metrics = evaluate(bb, range(200, 240), device, seconds=64.0)
    metrics["train_minutes_this_run"] = round((time.time() - start) / 60, 1)
    metrics["qa_steps_done"] = state["step"] if state["stage"] == "qa" else 0
    save_model(bb, cfg.out, metrics, cfg, command(cfg))
    print(json.dumps({"saved": str(cfg.out), **metrics}))
    return metrics


MODELS = ("tiny", "smol")  # --model: hermes-tiny (this module) or hermes-smol (tiny.smol)


def main(argv: list[str] | None = None) -> None:
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--model", choices=MODELS, default="tiny")
    chosen, argv = pick.parse_known_args(argv)
    if chosen.model == "smol":  # its own recipe and flags: python -m tiny.train --model smol --help
        from tiny.smol import main as smol_main

        return smol_main(argv)
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="tiny", help="which bundled model to train")
    for f in fields(TrainConfig):  # one flag per field, typed by its default
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help="save the model from the checkpoint and stop"
                                if f.name == "export_only" else None)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args(argv)
    train(TrainConfig(**{k: v for k, v in vars(args).items() if k != "model"}))


if __name__ == "__main__":
    main()
