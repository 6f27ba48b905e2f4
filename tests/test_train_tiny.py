"""hermes-tiny's training sample: questions point at their evidence, and the attention
supervision teaches a head to look there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hermes.synthetic import SHAPES, by_shape, evidence, generate, quadrant_cells
from hermes.train_tiny import (
    RETRIEVAL_HEADS,
    build_sample,
    copy_loss,
    new_backbone,
    retrieval_loss,
)

LAYER = 6


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bb = new_backbone(0)
    bb.model.set_attn_implementation({"text_config": "sdpa", "vision_config": "sdpa"})
    stream = generate(1_000_003, seconds=24.0)
    with torch.no_grad():
        sample = build_sample(bb, stream, torch.device("cpu"))
    return bb, stream, sample


@pytest.fixture(scope="module")
def states(setup):
    """The input of every decoder layer (then the final output), each (1, N, D), from one
    forward of the untrained model over the sample."""
    bb, _, sample = setup
    with torch.no_grad():
        return bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                                 attention_mask={"full_attention": sample.mask}, use_cache=False,
                                 output_hidden_states=True).hidden_states


def test_each_question_row_predicts_its_answer_and_points_at_its_evidence_frames(setup):
    bb, stream, sample = setup
    answer_rows = (sample.targets != -100).nonzero().flatten()[0::2].tolist()  # rows that predict answer words
    frame_of = {int(p): i // bb.tokens_per_frame for i, p in enumerate(sample.frame_index)}
    grid = round(bb.tokens_per_frame**0.5)
    expected = [[] for _ in RETRIEVAL_HEADS]
    for q, row in zip(stream.questions, answer_rows, strict=True):
        for slot, where in zip(expected, evidence(stream, q), strict=False):
            slot.append((row, where))
    for (rows, hold), slot in zip(sample.evidence, expected, strict=True):
        assert rows.tolist() == [row for row, _ in slot]
        for k, (row, where) in enumerate(slot):
            cols = hold[k].nonzero().flatten().tolist()
            assert all(c in frame_of and c < row for c in cols)  # frame tokens before the question
            assert {frame_of[c] for c in cols} == {i for i, _ in where}
            quarters = [quadrant_cells(by_shape(stream.objects, s).quadrant, grid) for _, s in where if s]
            assert len(cols) == sum(map(len, quarters)) + bb.tokens_per_frame * sum(1 for _, s in where if not s)


def test_attention_supervision_teaches_a_head_where_to_look(setup, states):
    bb, _, sample = setup
    hidden = states[LAYER][0]  # (N, D) input of the supervised layer, held fixed
    attn = bb.language_model.layers[LAYER].self_attn
    params = [*attn.q_proj.parameters(), *attn.k_proj.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    first_loss, first_hit, _, _ = retrieval_loss(bb, sample, hidden, LAYER)
    for _ in range(60):
        loss, hit, _, _ = retrieval_loss(bb, sample, hidden, LAYER)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(first_loss.item()) and loss.item() < first_loss.item() / 2
    assert first_hit < 0.5 < hit


def test_readout_loss_teaches_the_head_to_bring_back_the_answer(setup, states):
    bb, _, sample = setup
    hidden = states[LAYER][0]
    attn = bb.language_model.layers[LAYER].self_attn
    assert sample.options.any(-1).sum() >= 5  # colour, shape and number questions have options
    opt = torch.optim.Adam([p for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj) for p in m.parameters()],
                           lr=1e-2)
    _, _, first, _ = retrieval_loss(bb, sample, hidden, LAYER)
    for _ in range(60):
        loss, _, readout, _ = retrieval_loss(bb, sample, hidden, LAYER)
        opt.zero_grad()
        (loss + readout).backward()
        opt.step()
    assert readout.item() < first.item() / 2


def test_question_rows_know_the_shapes_they_name_and_order_questions_their_ranks(setup):
    bb, stream, sample = setup
    answer_rows = (sample.targets != -100).nonzero().flatten()[0::2].tolist()
    assert sample.named_rows.tolist() == answer_rows
    order = [o.shape for o in sorted(stream.objects, key=lambda o: o.appear)]
    asked = {"order": 0, "named": 0}
    table = bb.language_model.embed_tokens.weight
    for q, named, at in zip(stream.questions, sample.named.tolist(), sample.named_at.tolist(), strict=True):
        words = [w for w in q.question.replace("?", "").split() if w in SHAPES]
        assert named == [SHAPES.index(w) + 1 for w in words] + [0] * (2 - len(words))
        for w, i in zip(words, at, strict=False):
            word = table[bb.tokenizer.convert_tokens_to_ids(w)]
            assert torch.equal(sample.embeds[0, i], word)  # the word itself sits at that index
        assert at[len(words):] == [-1] * (2 - len(words))
        asked["named"] += bool(words)
    for (rows, _), ranks in zip(sample.evidence, sample.ranks, strict=True):
        assert len(ranks) == len(rows)
        for row, rank in zip(rows.tolist(), ranks.tolist(), strict=True):
            q = stream.questions[answer_rows.index(row)]
            if q.category != "order":
                assert rank == -100
                continue
            asked["order"] += 1
            first, second = (w for w in q.question.split() if w in SHAPES)
            shape = first if ranks is sample.ranks[0] else second
            assert rank == order.index(shape)
            assert (q.answer == "yes") == (order.index(first) < order.index(second))
    assert asked["order"] >= 2 and asked["named"] >= 5


def test_copy_supervision_teaches_the_answering_row_to_fetch_the_named_shapes(setup, states):
    bb, _, sample = setup
    layer = 2
    hidden = states[layer][0]
    attn = bb.language_model.layers[layer].self_attn
    opt = torch.optim.Adam([p for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj) for p in m.parameters()],
                           lr=1e-2)
    first, first_hit = copy_loss(bb, sample, hidden, layer)
    for _ in range(60):
        loss, hit = copy_loss(bb, sample, hidden, layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() / 2
    assert first_hit < 0.5 < hit
