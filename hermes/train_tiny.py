"""Train hermes-tiny, the bundled LLaVA-OneVision-architecture model, on ShapeStream.

    python -m hermes.train_tiny                      # full run (see --vision-steps / --qa-steps)
    python -m hermes.train_tiny --qa-steps 50 --out /tmp/tiny   # a quick smoke run

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers.models.qwen2.modeling_qwen2 import rotate_half

from hermes.backbones import (
    BUNDLED_MODELS,
    HERMES_JSON,
    TINY_PSEUDO_QUERIES,
    TINY_SYSTEM_PROMPT,
    Backbone,
    build_random,
    tiny_config,
)
from hermes.synthetic import (
    CATEGORIES,
    COLOURS,
    EVENT_CLASSES,
    NUMBERS,
    QUADRANTS,
    SHAPES,
    Stream,
    by_shape,
    cell_labels,
    event_labels,
    evidence,
    generate,
    quadrant_cells,
    render,
    world,
)
from hermes.tokenizer import build_tokenizer

TRAIN_SEED0 = 1_000_000
CHUNK = 16
FPS = 2.0


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


class AuxHeads(torch.nn.Module):
    """Per-token shape and colour classifiers for the dense frame loss (training only).

    A frame token is scored against the language model's own word embeddings of the shape
    and colour names (plus a learned "nothing" vector each): frame tokens that show a red
    triangle are pulled towards embed("red") + embed("triangle"), which the question words
    and the tied output head can match directly."""

    def __init__(self, bb: Backbone) -> None:
        super().__init__()
        ids = [bb.tokenizer.convert_tokens_to_ids(w) for w in (*SHAPES, *COLOURS)]
        self.register_buffer("shape_ids", torch.tensor(ids[: len(SHAPES)]))
        self.register_buffer("colour_ids", torch.tensor(ids[len(SHAPES):]))
        hidden = bb.language_model.config.hidden_size
        self.none_shape = torch.nn.Parameter(torch.zeros(hidden))
        self.none_colour = torch.nn.Parameter(torch.zeros(hidden))
        self.register_buffer("quarters", torch.tensor(np.stack([quadrant_cells(q, 4) for q in QUADRANTS])),
                             persistent=False)  # (4, 4) token indices of each quarter

    def loss(self, tokens: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor, embed: torch.Tensor
             ) -> tuple[torch.Tensor, float]:
        """tokens (T, 16, D), labels (T, 16), embed (V, D) -> (loss, accuracy of both labels).

        Colour is scored per token; shape on the mean of each quarter's four tokens (a shape
        spans its quarter, and one token holds only a piece of its outline)."""
        quarters = self.quarters
        ls = tokens @ torch.cat([self.none_shape[None], embed[self.shape_ids]]).T  # (T, 16, 1 + shapes)
        lc = tokens @ torch.cat([self.none_colour[None], embed[self.colour_ids]]).T  # (T, 16, 1 + colours)
        ls = ls[:, quarters].mean(2)  # (T, 4, 1 + shapes)
        shapes = shapes[:, quarters[:, 0]]  # (T, 4)
        loss = F.cross_entropy(ls.flatten(0, 1), shapes.flatten()) + F.cross_entropy(lc.flatten(0, 1),
                                                                                     colours.flatten())
        acc = ((ls.argmax(-1) == shapes).float().mean() * (lc.argmax(-1) == colours).float().mean()).item()
        return loss, acc


class EventHeads(torch.nn.Module):
    """Linear probes on the decoder's hidden state of each frame token after `layer` layers,
    trained on ShapeStream's per-cell event labels (synthetic.event_labels; training only).

    They teach the decoder to write what happened in a frame (an appearance and its rank,
    a colour change and its rank) into that frame's own tokens, so a question later finds
    the evidence by attending to the moment it happened, and loses it when that moment is
    evicted."""

    WEIGHTS = (0.5, 0.5, 4.0, 4.0, 4.0)  # events are rare next to "nothing" and "steady"

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.event = torch.nn.Linear(hidden, len(EVENT_CLASSES))
        self.ordinal = torch.nn.Linear(hidden, len(SHAPES))
        self.change = torch.nn.Linear(hidden, 2)
        self.register_buffer("weights", torch.tensor(self.WEIGHTS))

    def loss(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """hidden (N, D) frame tokens, labels (N,) each -> (loss, accuracy on event cells)."""
        ev = self.event(hidden)
        loss = F.cross_entropy(ev, labels["event"], weight=self.weights)
        for name in ("ordinal", "change"):
            if (labels[name] != -100).any():
                loss = loss + F.cross_entropy(getattr(self, name)(hidden), labels[name], ignore_index=-100)
        rare = labels["event"] >= 2
        acc = (ev[rare].argmax(-1) == labels["event"][rare]).float().mean().item() if rare.any() else float("nan")
        return loss, acc


def new_backbone(seed: int) -> Backbone:
    bb = build_random(tiny_config(len(build_tokenizer())), seed=seed, name="hermes-tiny")
    return bb


def frame_tokens(bb: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """(T, 3, S, S) -> (T, tokens_per_frame, D) pooled projector output (newline dropped)."""
    return bb.encode_pixels(pixels)[0, :-1].view(pixels.shape[0], bb.tokens_per_frame, -1)


@dataclass
class Sample:
    embeds: torch.Tensor  # (1, N, D)
    positions: torch.Tensor  # (1, N)
    mask: torch.Tensor  # (1, 1, N, N) bool, True = may attend
    targets: torch.Tensor  # (N,) next-token targets, -100 where no loss
    frame_feats: torch.Tensor  # (T, tokens_per_frame, D)
    frame_index: torch.Tensor  # (T * tokens_per_frame,) sequence index of every frame token
    n_questions: int
    # per retrieval head: (rows (Q,) that predict an answer, (Q, N) bool: the tokens holding its evidence)
    evidence: list[tuple[torch.Tensor, torch.Tensor]]
    # per row of the first retrieval head: (Q, V) bool, the words its answer is chosen from
    # (colours, shapes or numbers; all False for yes/no questions, which need both heads)
    options: torch.Tensor
    # per retrieval head, per row: the appearance rank (0-3) of the object it must find, for
    # order questions ("did X appear before Y" compares two ranks); -100 elsewhere
    ranks: list[torch.Tensor]
    # (R,) every answer-predicting row, and (R, 2) the shapes its question names, first and
    # second (1 + SHAPES index, 0 = none)
    named_rows: torch.Tensor
    named: torch.Tensor
    named_at: torch.Tensor  # (R, 2) sequence index of each named shape's word, -1 = none


def build_sample(bb: Backbone, stream: Stream, device: torch.device) -> Sample:
    """One stream in the engine's layout + its questions appended, each masked to its time."""
    prefix_ids = bb.prefix_ids()
    pixels = bb.preprocess(stream.frames).to(device)
    parts = [bb.embed_ids(prefix_ids)]
    feats_all = []
    frame_index = []
    chunk_end = []  # sequence length after each chunk
    length = len(prefix_ids)
    for start in range(0, len(stream.frames), CHUNK):
        p = pixels[start:start + CHUNK]
        out = bb.encode_pixels(p)  # (1, T * tpf + 1, D): the engine's chunk layout
        parts.append(out)
        feats_all.append(out[0, :-1].view(p.shape[0], bb.tokens_per_frame, -1))
        frame_index.append(torch.arange(length, length + out.shape[1] - 1))
        length += out.shape[1]
        chunk_end.append((float(stream.timestamps[min(start + CHUNK, len(stream.frames)) - 1]), length))
    n_stream = length
    im_end = bb.tokenizer.convert_tokens_to_ids("<|im_end|>")
    targets = [-100] * n_stream
    positions = list(range(n_stream))
    blocks = []  # (start, end, visible stream length)
    frame_pos = torch.cat(frame_index).view(len(stream.frames), -1)  # (T, tokens_per_frame)
    grid = round(bb.tokens_per_frame ** 0.5)
    slots: list[list[tuple[int, list[int]]]] = [[] for _ in RETRIEVAL_HEADS]  # (row, evidence positions)
    options: list[list[int]] = []  # per row of slots[0]: the ids its answer is chosen from
    ranks: list[list[int]] = [[] for _ in RETRIEVAL_HEADS]  # per row of each slot
    named_rows, named, named_at = [], [], []
    appeared = [o.shape for o in sorted(stream.objects, key=lambda o: o.appear)]  # appearance ranks
    for q in stream.questions:
        visible = next(end for t, end in chunk_end if t >= q.time - 1e-6)
        answer = bb.encode_text(q.answer)
        assert len(answer) == 1, f"answer {q.answer!r} is not one token"
        ids = bb.question_ids(q.question) + answer
        start = len(targets)
        parts.append(bb.embed_ids(ids))
        # position j predicts ids[j + 1]: the last question token -> the answer -> end of turn
        targets += [-100] * (len(ids) - 2) + [answer[0], im_end]
        positions += list(range(visible, visible + len(ids)))
        blocks.append((start, start + len(ids), visible))
        # the shape words the question names, in order (the last id is the answer, not named)
        names = [(start + i, w) for i, w in enumerate(bb.tokenizer.convert_ids_to_tokens(ids[:-1])) if w in SHAPES]
        named_rows.append(start + len(ids) - 2)
        named.append([SHAPES.index(w) + 1 for _, w in names] + [0] * (2 - len(names)))
        named_at.append([i for i, _ in names] + [-1] * (2 - len(names)))
        for slot, rank, where in zip(slots, ranks, evidence(stream, q), strict=False):
            cells = [frame_pos[i, quadrant_cells(by_shape(stream.objects, shape).quadrant, grid)] if shape
                     else frame_pos[i] for i, shape in where]  # shape "" = the whole frame
            if cells:
                slot.append((start + len(ids) - 2, torch.cat(cells).tolist()))
                # an order question's evidence is one (frame, shape): the appearance of the shape it compares
                rank.append(appeared.index(where[0][1]) if q.category == "order" else -100)
                if slot is slots[0]:
                    options.append([bb.tokenizer.convert_tokens_to_ids(w) for w in answer_words(q.answer)])
    n = len(targets)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:n_stream, :n_stream] = torch.ones(n_stream, n_stream, dtype=torch.bool).tril()
    for start, end, visible in blocks:
        mask[start:end, :visible] = True
        mask[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
    where = []
    for slot in slots:
        hold = torch.zeros(len(slot), n, dtype=torch.bool)
        for k, (_, cols) in enumerate(slot):
            hold[k, cols] = True
        where.append((torch.tensor([row for row, _ in slot], dtype=torch.long, device=device), hold.to(device)))
    choose = torch.zeros(len(options), bb.language_model.config.vocab_size, dtype=torch.bool)
    for k, ids in enumerate(options):
        choose[k, ids] = True
    return Sample(torch.cat(parts, dim=1), torch.tensor([positions], device=device), mask[None, None].to(device),
                  torch.tensor(targets, device=device), torch.cat(feats_all), torch.cat(frame_index).to(device),
                  len(blocks), where, choose.to(device), [torch.tensor(r, dtype=torch.long, device=device)
                                                           for r in ranks],
                  torch.tensor(named_rows, dtype=torch.long, device=device),
                  torch.tensor(named, dtype=torch.long, device=device).view(-1, 2),
                  torch.tensor(named_at, dtype=torch.long, device=device).view(-1, 2))


RETRIEVAL_HEADS = (0, 2)  # one head per object a question is about; different KV heads


def answer_words(answer: str) -> tuple[str, ...]:
    """The words a ShapeStream answer is chosen from; () for yes/no (two objects compared)."""
    for group in (tuple(COLOURS), SHAPES, NUMBERS[:5]):
        if answer in group:
            return group
    return ()


class QuestionProbes(torch.nn.Module):
    """Linear probes on the question rows of the retrieval layer (training only).

    An order question ("did the X appear before the Y ?") needs one head to find X's
    appearance and the other Y's, and the two heads' outputs to say how early each was.
    hermes-tiny v4 put only 0.38 / 0.40 of the two heads' attention on their own object's
    appearance (head 0 put as much on Y's as on X's) and answered at chance: nothing told
    the question row which shape was named first. So:
    - `named`: the retrieval layer's input at every answer-predicting row must name the
      shapes its question names, first and second, as separate classes; the two heads'
      queries can then pick one each;
    - `rank`: for order questions, each retrieval head's output (after its slice of o_proj)
      must name the appearance rank of the object it found, so the comparison downstream
      has two ranks to compare."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.named = torch.nn.Linear(hidden, 2 * (1 + len(SHAPES)))
        self.rank = torch.nn.ModuleList(torch.nn.Linear(hidden, len(SHAPES)) for _ in RETRIEVAL_HEADS)

    def named_loss(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:
        """x (N, D) normed input of the retrieval layer -> cross-entropy on both named shapes."""
        logits = self.named(x[sample.named_rows]).view(-1, 1 + len(SHAPES))  # (R * 2, 1 + shapes)
        return F.cross_entropy(logits, sample.named.flatten())

    def rank_loss(self, k: int, out: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """out (Q, D) head k's output rows, ranks (Q,) -> cross-entropy where a rank applies."""
        if not (ranks != -100).any():
            return out.new_zeros(())
        return F.cross_entropy(self.rank[k](out), ranks, ignore_index=-100)


def head_attention(bb: Backbone, layer: int, x: torch.Tensor, sample: Sample, rows: torch.Tensor, head: int
                   ) -> torch.Tensor:
    """log attention (Q, N) of one head of decoder layer `layer` from `rows`, given the
    layer's normed input x (N, D), with the sample's positions and mask: what the fused
    attention computes, for one head, written out so it can be supervised."""
    attn = bb.language_model.layers[layer].self_attn
    cos, sin = bb.language_model.rotary_emb(x[None], sample.positions)  # (1, N, head_dim)
    cos, sin = cos[0], sin[0]
    n_heads = attn.config.num_attention_heads
    group = n_heads // attn.config.num_key_value_heads
    q = attn.q_proj(x[rows]).view(len(rows), n_heads, attn.head_dim)[:, head]  # (Q, head_dim)
    key = attn.k_proj(x).view(len(x), -1, attn.head_dim)[:, head // group]  # (N, head_dim)
    q = q * cos[rows] + rotate_half(q) * sin[rows]
    key = key * cos + rotate_half(key) * sin
    logits = (q @ key.T * attn.scaling).masked_fill(~sample.mask[0, 0, rows], float("-inf"))  # (Q, N)
    return logits.log_softmax(-1)


def head_output(bb: Backbone, layer: int, x: torch.Tensor, logp: torch.Tensor, head: int) -> torch.Tensor:
    """(Q, D): what one head adds to the residual stream, given its log attention (Q, N)."""
    attn = bb.language_model.layers[layer].self_attn
    group = attn.config.num_attention_heads // attn.config.num_key_value_heads
    values = attn.v_proj(x).view(len(x), -1, attn.head_dim)[:, head // group]  # (N, head_dim)
    w_o = attn.o_proj.weight[:, head * attn.head_dim:(head + 1) * attn.head_dim]  # (D, head_dim)
    return (logp.exp() @ values) @ w_o.T


def read_words(bb: Backbone, out: torch.Tensor, options: torch.Tensor) -> torch.Tensor:
    """(Q, D) head outputs -> (Q, V) word logits through the final norm and the tied
    embeddings, -inf outside each row's options (Q, V) bool."""
    return bb.model.lm_head(bb.language_model.norm(out)).masked_fill(~options, float("-inf"))


def retrieval_loss(bb: Backbone, sample: Sample, hidden: torch.Tensor, layer: int, readout: bool = True,
                   probes: QuestionProbes | None = None) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Attention supervision: at decoder layer `layer` (input hidden (N, D)), head
    RETRIEVAL_HEADS[k] of each answer-predicting row should put its attention on the tokens
    that hold the evidence for the k-th object its question is about (synthetic.evidence).
    Returns (-log attention mass on the evidence, share of rows whose top key is evidence,
    readout loss (zero when `readout` is off), question-probe loss (zero without `probes`)).

    It is the answer-only signal made dense: a question learns where to look directly,
    instead of through a softmax over thousands of frame tokens from one answer word. The
    readout loss asks the first head's own output, read through the final norm and the
    tied word embeddings, to name the answer among its options (colours, shapes or
    numbers): looking in the right place is no use if what the head brings back is not
    the answer. The probes (QuestionProbes) are what order questions need on top."""
    x = bb.language_model.layers[layer].input_layernorm(hidden)  # (N, D)
    losses, hits, read = [], [], hidden.new_zeros(())
    probe = probes.named_loss(x, sample) if probes is not None else hidden.new_zeros(())
    for k, ((rows, hold), head) in enumerate(zip(sample.evidence, RETRIEVAL_HEADS, strict=True)):
        if not len(rows):
            continue
        logp = head_attention(bb, layer, x, sample, rows, head)  # (Q, N)
        losses.append(-torch.logsumexp(logp.masked_fill(~hold, float("-inf")), -1))
        hits.append(hold.gather(1, logp.argmax(-1, keepdim=True)).float())
        if not readout and probes is None:
            continue
        out = head_output(bb, layer, x, logp, head)  # (Q, D)
        if probes is not None:
            probe = probe + probes.rank_loss(k, out, sample.ranks[k])
        if readout and k == 0 and sample.options.any():
            has = sample.options.any(-1)
            read = F.cross_entropy(read_words(bb, out[has], sample.options[has]), sample.targets[rows[has]])
    if not losses:
        return hidden.new_zeros(()), float("nan"), read, probe
    return torch.cat(losses).mean(), torch.cat(hits).mean().item(), read, probe


COPY_HEADS = (0, 2)  # at copy_layer: one head per shape a question names, first and second


def copy_loss(bb: Backbone, sample: Sample, hidden: torch.Tensor, layer: int) -> tuple[torch.Tensor, float]:
    """Attention supervision inside the question: at decoder layer `layer` (input hidden
    (N, D)), head COPY_HEADS[k] of each answer-predicting row should look at the k-th shape
    word its question names, and its output should name that shape. Returns (the mean, over
    rows and both terms, of -log attention on the word and of the readout cross-entropy;
    share of rows whose top key is the word).

    Why: trained on answers alone, hermes-tiny v4 never learned to carry the shape a
    question names to the row that answers it (a linear probe on that row reads the named
    shape at chance in every layer), so "what colour is the X now" was answered from
    whatever shape was on screen, and "did the X appear before the Y" at chance. The
    retrieval heads can only look for X once the row knows X."""
    x = bb.language_model.layers[layer].input_layernorm(hidden)  # (N, D)
    shape_ids = torch.tensor([bb.tokenizer.convert_tokens_to_ids(w) for w in SHAPES], device=x.device)
    options = torch.zeros(bb.language_model.config.vocab_size, dtype=torch.bool, device=x.device)
    options[shape_ids] = True
    losses, hits = [], []
    for k, head in enumerate(COPY_HEADS):
        has = sample.named[:, k] > 0
        if not has.any():
            continue
        rows, at = sample.named_rows[has], sample.named_at[has, k]  # (Q,), (Q,)
        logp = head_attention(bb, layer, x, sample, rows, head)  # (Q, N)
        words = read_words(bb, head_output(bb, layer, x, logp, head), options.expand(len(rows), -1))
        losses += [-logp.gather(1, at[:, None])[:, 0], F.cross_entropy(words, shape_ids[sample.named[has, k] - 1],
                                                                       reduction="none")]
        hits.append((logp.argmax(-1) == at).float())
    if not losses:
        return hidden.new_zeros(()), float("nan")
    return torch.cat(losses).mean(), torch.cat(hits).mean().item()


def qa_forward(bb: Backbone, sample: Sample) -> tuple[torch.Tensor, float, tuple]:
    """(answer loss, answer accuracy, hidden states: the input of every decoder layer, then
    the final output, each (1, N, D)) for one sample."""
    out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                            attention_mask={"full_attention": sample.mask}, use_cache=False,
                            output_hidden_states=True)
    logits = bb.model.lm_head(out.last_hidden_state[0])  # (N, V)
    # targets[i] is the token that should follow position i
    loss = F.cross_entropy(logits.float(), sample.targets, ignore_index=-100)
    hit = sample.targets != -100
    word = hit.clone()
    word[hit.nonzero().flatten()[1::2]] = False  # even hits: the answer words
    acc = (logits[word].argmax(-1) == sample.targets[word]).float().mean().item()
    return loss, acc, out.hidden_states


def dense_labels(stream: Stream, grid: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    shapes, colours = cell_labels(stream, grid)
    return torch.from_numpy(shapes).to(device), torch.from_numpy(colours).to(device)  # (T, grid * grid) each


def vision_batch(step: int, size: int, device: torch.device) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """`size` frames, each from its own training world at a random moment, and their dense
    labels: uint8 (B, H, W, 3), shapes and colours (B, 16). Independent frames (not runs of
    one stream) are what lets the vision tower learn shapes apart from their colours."""
    rng = np.random.default_rng([TRAIN_SEED0, step])
    frames, shapes, colours = [], [], []
    for i in range(size):
        objects, scenes = world(TRAIN_SEED0 + 7_919 * step + i, 64.0)
        t = float(rng.uniform(0.0, 64.0))
        one = Stream(0, 64.0, FPS, np.zeros((1, 64, 64, 3), np.uint8), np.array([t]), [], objects, scenes)
        frames.append(render(objects, scenes, t, (64, 64)))
        s, c = cell_labels(one, 4)
        shapes.append(s[0])
        colours.append(c[0])
    return (np.stack(frames), torch.from_numpy(np.stack(shapes)).to(device),
            torch.from_numpy(np.stack(colours)).to(device))


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def stream_seconds(step: int, cfg: TrainConfig, rng: random.Random) -> float:
    """Curriculum: short streams first, up to max_seconds by 40% of the QA steps."""
    grow = min(1.0, step / max(1, 0.4 * cfg.qa_steps))
    top = cfg.min_seconds + grow * (cfg.max_seconds - cfg.min_seconds)
    return CHUNK / FPS * rng.randint(int(cfg.min_seconds * FPS / CHUNK), max(1, int(top * FPS / CHUNK)))


@torch.no_grad()
def evaluate(bb: Backbone, seeds: range, device: torch.device, seconds: float = 48.0) -> dict[str, float]:
    """Answer accuracy per category with full-sequence forwards (no eviction)."""
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
            hits.setdefault(q.category, []).append(int(logits[i].argmax()) == int(sample.targets[i]))
    bb.model.train()
    result = {c: float(np.mean(v)) for c, v in sorted(hits.items())}
    result["all"] = float(np.mean([h for v in hits.values() for h in v]))
    return result


MODEL_CARD = """# hermes-tiny

A {params:.2f}M-parameter model of the LLaVA-OneVision architecture (SigLIP-style vision tower
64 px / patch 8, 2x2 pooling -> 16 tokens per frame; projector; Qwen2-style decoder with
12 layers, hidden 128, 4 heads / 2 KV heads), trained from scratch by HERMES Studio on
ShapeStream (hermes/synthetic.py) so the offline demo answers for real. Word-level tokenizer
and chat template built by the project (hermes/tokenizer.py); `hermes.json` holds its
system prompt and pseudo-query texts.

Trained with `{command}` on a 2-core CPU: {vision_steps} vision warm-up steps (vision tower +
projector on independent frames: colour per token, shape per quarter of the screen) then
{qa_steps} question-answering steps (one stream of 16-64 s at 2 fps per step, every question
at each chunk boundary, masked to its time), with auxiliary losses: the dense frame loss,
event probes on the decoder's layer-{event_layer} frame tokens (appearance, first appearance,
appearance rank, colour change and its rank), attention supervision of two heads of layer
{retrieval_layer} that must look, from the token that predicts the answer, at the frame tokens
holding the evidence (`hermes.synthetic.evidence`), and a readout loss (weight {readout}) that
asks the first of those heads' output to name the answer, copy supervision of two heads of
layer {copy_layer} that fetch the shape words a question names into the row that answers it,
and linear probes on that row (the named shapes; for order questions, the appearance rank
each retrieval head brings back). AdamW lr {lr}, seed {seed};
{minutes} minutes in the last run, {qa_done} QA steps done.

Accuracy with no eviction on held-out streams (seeds 200-239, 128 frames, full-sequence
forward, first answer token): {metrics}

It knows ShapeStream's four shapes and colours and its question templates only; it is a
teaching model, not a video LLM.
"""


def save_model(bb: Backbone, out: Path, metrics: dict, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bb.model.config.text_config._attn_implementation = None  # chosen again at load time
    bb.model.save_pretrained(out)
    bb.tokenizer.save_pretrained(out)
    (out / HERMES_JSON).write_text(json.dumps({"system_prompt": TINY_SYSTEM_PROMPT,
                                               "pseudo_queries": TINY_PSEUDO_QUERIES,
                                               "metrics": metrics}, indent=1))
    command = "python -m hermes.train_tiny" + (
        "" if (cfg.vision_steps, cfg.qa_steps) == (TrainConfig.vision_steps, TrainConfig.qa_steps)
        else f" --vision-steps {cfg.vision_steps} --qa-steps {cfg.qa_steps}")
    (out / "README.md").write_text(MODEL_CARD.format(
        params=sum(p.numel() for p in bb.model.parameters()) / 1e6, command=command, vision_steps=cfg.vision_steps,
        qa_steps=cfg.qa_steps, lr=cfg.lr, seed=cfg.seed, event_layer=cfg.event_layer,
        retrieval_layer=cfg.retrieval_layer, readout=cfg.readout_weight, copy_layer=cfg.copy_layer,
        minutes=metrics.get("train_minutes_this_run"), qa_done=metrics.get("qa_steps_done"),
        metrics=", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in (*CATEGORIES, "all"))))


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
            raise SystemExit(f"{ckpt} was written by train_tiny before v5 (no question probes) and cannot be "
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
        bar = tqdm(range(state["step"], cfg.vision_steps), desc="vision", initial=state["step"],
                   total=cfg.vision_steps)
        for step in bar:
            for group in opt_v.param_groups:
                group["lr"] = lr_at(step, cfg.vision_steps, cfg.vision_lr)
            frames, shapes, colours = vision_batch(step, cfg.vision_batch, device)
            tokens = frame_tokens(bb, bb.preprocess(frames).to(device))
            loss, acc = heads.loss(tokens, shapes, colours, embed.detach())
            opt_v.zero_grad()
            loss.backward()
            opt_v.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", cell_acc=f"{acc:.3f}")
            state["step"] = step + 1
            if (step + 1) % cfg.save_every == 0:
                checkpoint()
        state = {"stage": "qa", "step": 0, "log": state["log"] + [{"vision_cell_acc": acc}]}
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
    save_model(bb, cfg.out, metrics, cfg)
    print(json.dumps({"saved": str(cfg.out), **metrics}))
    return metrics


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--work", type=Path, default=defaults.work)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vision-steps", type=int, default=defaults.vision_steps)
    parser.add_argument("--qa-steps", type=int, default=defaults.qa_steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--vision-lr", type=float, default=defaults.vision_lr)
    parser.add_argument("--readout-weight", type=float, default=defaults.readout_weight)
    parser.add_argument("--probe-weight", type=float, default=defaults.probe_weight)
    parser.add_argument("--copy-weight", type=float, default=defaults.copy_weight)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--save-every", type=int, default=defaults.save_every)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--export-only", action="store_true", help="save the model from the checkpoint and stop")
    args = parser.parse_args()
    train(TrainConfig(**{k: v for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()
