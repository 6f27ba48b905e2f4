"""One training sample of hermes-tiny: a ShapeStream stream laid out exactly as the engine lays
it out, plus every question appended after it, each masked to see the stream up to its time.

    from tiny.samples import build_sample
    sample = build_sample(backbone, generate(1_000_003, seconds=24.0), torch.device("cpu"))
    sample.embeds, sample.positions, sample.mask, sample.targets   # one forward trains every question

Also the vision warm-up's batches (vision_batch: independent frames and their dense labels)
and the constants both stages share (chunk, frame rate, the first training seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hermes.backbones import Backbone
from hermes.shapestream import (
    COLOURS,
    NUMBERS,
    SHAPES,
    Question,
    Stream,
    by_shape,
    evidence,
    template_of,
    world,
)
from hermes.shapestream_render import render
from tiny.labels import cell_labels, quadrant_cells

TRAIN_SEED0 = 1_000_000  # training streams use seeds from here on; evaluation uses seeds below it
CHUNK = 16
FPS = 2.0
RETRIEVAL_HEADS = (0, 2)  # one head per object a question is about; different KV heads


def readout_words(question: Question) -> tuple[str, ...]:
    """The words the first retrieval head's readout chooses the answer among: the word group its
    template's answers come from (every colour, every shape, or the numbers zero to four); ()
    for yes/no questions, which compare two objects and need both heads."""
    options = set(template_of(question.question)[0].options)
    for group in (tuple(COLOURS), SHAPES, NUMBERS[:5]):
        if options <= set(group):
            return group
    return ()


def frame_tokens(bb: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """(T, 3, S, S) -> (T, tokens_per_frame, D) pooled projector output, without the chunk's
    newline in either layout (newline-per-chunk models return one; the other layout does not)."""
    feats = bb.encode_pixels(pixels)[0]  # (T * tokens_per_frame [+ 1], D)
    return feats[: pixels.shape[0] * bb.tokens_per_frame].view(pixels.shape[0], bb.tokens_per_frame, -1)


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
                    options.append([bb.tokenizer.convert_tokens_to_ids(w) for w in readout_words(q)])
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
