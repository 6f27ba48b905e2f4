"""hermes-tiny's training (tiny/): dense labels, the training sample (questions point at their
evidence), the attention supervision teaches a head to look there, the diagnostics, and the
engine package never imports the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hermes.shapestream import COLOURS, NUMBERS, SHAPES, TEMPLATES, by_shape, evidence, generate
from tiny import diagnostics
from tiny.labels import cell_labels, event_labels, quadrant_cells
from tiny.losses import copy_loss, retrieval_loss
from tiny.samples import RETRIEVAL_HEADS, build_sample, readout_words
from tiny.train import TrainConfig, command, new_backbone

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


def test_event_labels_mark_each_appearance_and_colour_change_once_per_object():
    stream = generate(5, seconds=48.0)
    labels = event_labels(stream, 4)
    frames_with = {k: set(np.nonzero((labels["event"] == k).any(1))[0]) for k in (2, 3, 4)}
    appear_frames = frames_with[2] | frames_with[3]
    visible = [o for o in stream.objects if o.appear < stream.timestamps[-1]]
    assert len(appear_frames) == len({int(np.ceil(o.appear * stream.fps - 1e-9)) for o in visible})
    assert len(frames_with[3]) == 1  # exactly one first shape
    assert set(np.unique(labels["ordinal"])) <= {-100, 0, 1, 2, 3}
    assert ((labels["ordinal"] != -100) == (labels["event"] >= 2) & (labels["event"] <= 3)).all()
    assert ((labels["change"] != -100) == (labels["event"] == 4)).all()


def test_cell_labels_name_the_whole_object_in_each_cell_of_its_quarter():
    stream = generate(8, seconds=48.0)
    shapes, colours = cell_labels(stream, 4)
    for i, t in enumerate(stream.timestamps):
        frame = stream.frames[i]
        for o in stream.objects:
            cells = quadrant_cells(o.quadrant, 4)
            if o.visible(float(t)):
                assert (shapes[i, cells] == SHAPES.index(o.shape) + 1).all()
                y, x = int((o.quadrant[0] - 0.25) * 64), int((o.quadrant[1] - 0.25) * 64)
                quarter = frame[y:y + 32, x:x + 32].reshape(-1, 3)
                assert (quarter == COLOURS[o.colour_at(float(t))]).all(-1).any()  # its colour is on screen there
            else:
                assert (shapes[i, cells] == 0).all() and (colours[i, cells] == 0).all()


def test_readout_words_are_the_word_group_of_each_templates_answers():
    groups = {"what colour": tuple(COLOURS), "which shape": SHAPES, "how many": NUMBERS[:5], "did the": ()}
    for q in generate(3, seconds=64.0, size=(8, 8)).questions:
        words = readout_words(q)
        assert words == next(g for start, g in groups.items() if q.question.startswith(start))
        assert q.answer in words or q.answer in ("yes", "no")


def test_the_default_command_is_the_one_the_model_card_names():
    assert command(TrainConfig()) == "python -m tiny.train"
    assert command(TrainConfig(qa_steps=50)) == "python -m tiny.train --vision-steps 4000 --qa-steps 50"
    card = (Path(__file__).resolve().parent.parent / "assets" / "models" / "hermes-tiny" / "README.md")
    if card.exists():
        assert "`python -m tiny.train`" in card.read_text()


def test_tiny_diagnostics_cover_every_template_and_the_probe_cannot_read_what_the_row_does_not_hold():
    summary, per_layer, chance = diagnostics.diagnose("hermes-tiny", streams=3, seconds=32.0, layer=6)
    assert set(summary) == {t.name for t in TEMPLATES}  # every ShapeStream template
    order = summary["did the X appear before the X ?"]
    assert "mass1" in order and "readout" not in order  # two objects to find, nothing to name
    assert all(0.0 <= cols["mass0"][0] <= 1.0 for cols in summary.values())
    assert len(per_layer) == 13  # the embeddings, then every decoder layer's output
    # at the embeddings every answering row of a slot holds the same word ("assistant"): a probe can only
    # name one shape per slot there, which is what chance means
    assert per_layer[0] <= chance + 1e-6
    assert max(per_layer) > chance  # the bundled model carries the named shape somewhere
