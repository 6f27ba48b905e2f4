"""hermes-tiny's training sample: questions point at their evidence, and the attention
supervision teaches a head to look there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hermes.synthetic import by_shape, evidence, generate, quadrant_cells
from hermes.train_tiny import RETRIEVAL_HEADS, build_sample, new_backbone, retrieval_loss

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


def test_attention_supervision_teaches_a_head_where_to_look(setup):
    bb, _, sample = setup
    with torch.no_grad():
        out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                                attention_mask={"full_attention": sample.mask}, use_cache=False,
                                output_hidden_states=True)
    hidden = out.hidden_states[LAYER][0]  # (N, D) input of the supervised layer, held fixed
    attn = bb.language_model.layers[LAYER].self_attn
    params = [*attn.q_proj.parameters(), *attn.k_proj.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    first_loss, first_hit, _ = retrieval_loss(bb, sample, hidden, LAYER)
    for _ in range(60):
        loss, hit, _ = retrieval_loss(bb, sample, hidden, LAYER)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(first_loss.item()) and loss.item() < first_loss.item() / 2
    assert first_hit < 0.5 < hit


def test_readout_loss_teaches_the_head_to_bring_back_the_answer(setup):
    bb, _, sample = setup
    with torch.no_grad():
        out = bb.language_model(inputs_embeds=sample.embeds, position_ids=sample.positions,
                                attention_mask={"full_attention": sample.mask}, use_cache=False,
                                output_hidden_states=True)
    hidden = out.hidden_states[LAYER][0]
    attn = bb.language_model.layers[LAYER].self_attn
    assert sample.options.any(-1).sum() >= 5  # colour, shape and number questions have options
    opt = torch.optim.Adam([p for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj) for p in m.parameters()],
                           lr=1e-2)
    _, _, first = retrieval_loss(bb, sample, hidden, LAYER)
    for _ in range(60):
        loss, _, readout = retrieval_loss(bb, sample, hidden, LAYER)
        opt.zero_grad()
        (loss + readout).backward()
        opt.step()
    assert readout.item() < first.item() / 2
