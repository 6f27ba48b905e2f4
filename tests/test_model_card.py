"""The app says honestly what its model can do (app.model_card): the card holds only what the
model's directory and the committed results measured, words a word-level model cannot read are
flagged, ground truth says when a question does not apply, suggestions are the ones that apply
now, and no text in the UI claims the paper's layer split for a model whose study does not show it."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest

from analysis.common import RESULTS, result_name
from app import model_card, render
from app.model_card import PAPER_FINDING, Measured, Truth
from app.session import Session
from app.settings import Settings
from hermes import shapestream
from hermes.backbones import BUNDLED_MODELS
from hermes.studies.mechanistic import Study, reading
from hermes.tokenizer import build_tokenizer

TINY = "hermes-tiny"
FIGURE = re.compile(r"\d\.\d{2,}|\d+(\.\d+)?\s*%")  # an accuracy or share: 0.962, 31%


# ---- what counts as claiming the paper's layer split ----------------------------------------
RECENT_WORDS = r"\b(newest|latest|recent|short-term|last frames)\b"
ANCHOR_WORDS = r"\b(anchors?|long-term|older|further back)\b"


def claims_paper_split(text: str) -> bool:
    """Does `text` state the paper's split as a finding: one clause pairing shallow layers with
    the newest frames and one pairing deep layers with anchors / older frames, in one sentence?
    The paper's finding quoted as the paper's (PAPER_FINDING) does not count."""
    text = text.replace(PAPER_FINDING, " ")
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text.lower()):
        clauses = re.split(r"[,;:()]|\bwhile\b|\bwhereas\b|\band\b|\bbut\b", sentence)
        shallow = any(re.search(r"\bshallow", c) and re.search(RECENT_WORDS, c) for c in clauses)
        deep = any(re.search(r"\bdeep", c) and re.search(ANCHOR_WORDS, c) for c in clauses)
        if shallow and deep:
            return True
    return False


@pytest.mark.parametrize("text, claim", [
    ("The HERMES paper reports shallow layers looking at the newest frames and deep layers at a few anchors; "
     "the Study tab measures whether the loaded model does.", True),  # the help text this issue replaced
    ("As in the paper, the shallow layers look mostly at the latest frames while the deep layers spread over "
     "older anchors: recency is the right memory for the first, attention for the last.", True),
    ("Unlike the paper's models, here the deep layers are the ones focused on the latest frames and the shallow "
     "layers look further back.", False),
    ("layers below are shallow (keep recent)", False),
    (f"*{PAPER_FINDING}*", False),
    ("Rows are decoder layers (0 = shallow, at the bottom), columns are moments of the video.", False),
])
def test_the_claim_detector_tells_a_stated_split_from_a_quoted_or_reversed_one(text, claim):
    assert claims_paper_split(text) is claim


# ---- the layer finding ------------------------------------------------------------------------
TIERS = ("shallow",) + ("middle",) * 7 + ("deep",) * 4


def measure(shares: list[float], tiers: tuple[str, ...] = TIERS) -> Measured:
    return Measured("m", tuple(shares), tiers, 40, 256, "a test")


SPLIT = [0.6] + [0.3] * 7 + [0.1] * 4  # shallow on the newest frames, deep further back
REVERSED = [0.08, 0.31, 0.1, 0.22, 0.19, 0.1, 0.32, 0.07, 0.5, 0.12, 0.19, 0.05]  # the committed hermes-tiny
FLAT = [0.2] * 12


@pytest.mark.parametrize("shares, tiers, split, says", [
    (SPLIT, TIERS, True, "shows the paper's split"),
    (REVERSED, TIERS, False, "does not show the split the paper reports"),
    (FLAT, TIERS, False, "does not show the split the paper reports"),
    (FLAT, ("middle",) * 12, None, "cannot be set against the paper's split"),
])
def test_the_finding_says_what_was_measured_and_quotes_the_paper_as_the_papers(shares, tiers, split, says):
    m = measure(shares, tiers)
    text = model_card.findings("m", m)
    assert model_card.paper_split(m) is split
    assert says in text and PAPER_FINDING in text
    assert claims_paper_split(text) is bool(split)  # the split is stated only where it was measured
    assert "40 questions" in text and "256 tokens per layer" in text and "a test" in text


def test_the_recency_bound_layers_are_named_with_their_measured_shares():
    text = model_card.findings("m", measure(REVERSED))
    assert "8 (deep, 50%), 6 (middle, 32%), 1 (middle, 31%), 3 (middle, 22%)" in text  # >= 20%, most first
    assert "shallow layer 0 8%" in text and "deep layers 8-11 22%" in text


def test_an_unmeasured_model_gets_no_figures_only_the_papers_finding_as_the_papers():
    text = model_card.findings("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", None)
    assert "not measured here" in text and PAPER_FINDING in text and not claims_paper_split(text)
    assert not FIGURE.search(text.replace(PAPER_FINDING, ""))


def study_of(shares: list[float], tiers: tuple[str, ...] = TIERS) -> Study:
    n = len(shares)
    return Study(heatmap=np.zeros((n, 4)), edges=np.array([0, 64, 128, 192, 256]), video_mass=np.ones(n),
                 recent_share=np.array(shares), entropy_bits=np.full(n, 5.0), anchor_frames=np.full(n, 8.0),
                 tokens_per_frame=16, n_questions=7, tiers=list(tiers))


@pytest.mark.parametrize("shares", [SPLIT, REVERSED, FLAT, [0.3] + [0.2] * 7 + [0.26] * 4])
def test_the_finding_and_the_study_tabs_reading_never_contradict_each_other(shares):
    study = study_of(shares)
    split = model_card.paper_split(model_card.measured(study, "m", "the Study tab"))
    assert ("As in the paper" in reading(study)) is split
    m = model_card.measured(study, "m", "the Study tab")
    assert (m.n_questions, m.budget, m.tiers) == (7, 256, TIERS)


def test_the_committed_study_is_read_as_measured():
    m = model_card.committed_study(TINY)
    with open(RESULTS / "mechanistic.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert m.recent_share == tuple(float(r["recent_share"]) for r in rows)
    assert m.tiers == tuple(r["tier"] for r in rows)
    assert m.n_questions == len(np.load(RESULTS / "mechanistic.npz")["profiles"]) and m.budget == 512


# ---- committed results: only those that name the model -----------------------------------------
@pytest.mark.parametrize("study", ["mechanistic", "accuracy"])
def test_committed_results_are_found_by_the_model_they_name(study):
    md = model_card.committed_result(study, TINY)
    assert md is not None and md.stem in (result_name(study, TINY, device="cpu"), result_name(study, TINY,
                                                                                               device="cuda"))
    assert model_card.committed_result(study, "llava-hf/llava-onevision-qwen2-0.5b-ov-hf") is None


@pytest.mark.parametrize("name, opening, found", [
    ("accuracy.md", "`python -m analysis.accuracy` with `hermes-tiny`, 2026", True),
    ("accuracy_quick.md", "`python -m analysis.accuracy --quick` with `hermes-tiny`, 2026", False),
    ("accuracy-other.md", "`python -m analysis.accuracy` with `other`, 2026", False),
    ("accuracy.md", "`python -m analysis.mechanistic` with `hermes-tiny`", False),
])
def test_a_result_counts_only_when_it_names_this_study_and_model_and_is_not_quick(tmp_path, name, opening, found):
    (tmp_path / name).write_text(f"# title\n\n{opening}\n")
    assert (model_card.committed_result("accuracy", TINY, tmp_path) is not None) is found


# ---- the card --------------------------------------------------------------------------------
def test_the_bundled_models_card_says_what_it_was_trained_on_what_it_reads_and_its_measured_accuracy():
    card = model_card.card(TINY)
    with open(RESULTS / "accuracy.csv", newline="") as f:
        full = next(r for r in csv.DictReader(f) if r["policy"] == "full")
    metrics = json.loads((BUNDLED_MODELS[TINY] / "hermes.json").read_text())["metrics"]
    assert "3.31M parameters" in card.summary and "trained on ShapeStream" in card.summary
    assert f"reads only its {len(build_tokenizer()) - 5} words" in card.summary  # minus the special tokens
    assert f"{float(full['all']):.3f} of held-out ShapeStream questions right" in card.summary
    assert "never measured" in card.summary
    assert f"all {metrics['all']:.3f}" in card.details  # the training's own held-out check
    assert "not a video LLM" in card.details  # its card's own words, quoted
    for template in shapestream.TEMPLATES:
        assert template.name in card.details
    assert "| hermes | 12.5% |" in card.details and "| full |" in card.details and "| chance |" in card.details
    assert "`happening`" not in card.details and "`circle`" in card.details  # its words, listed


@pytest.mark.parametrize("model, says", [
    ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "a general video LLM"),
    ("random-tiny", "random weights"),
])
def test_a_model_never_measured_here_is_said_to_be_so_with_no_figures(model, says):
    card = model_card.card(model)
    assert says in card.summary and ("Not measured here" in card.summary or "nothing but speed" in card.summary)
    assert not FIGURE.search(card.summary + card.details)


def test_a_local_directory_gets_only_what_it_holds(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    card = model_card.card(str(bare))
    assert "training data not stated" in card.summary and "No accuracy measured here" in card.summary
    assert not FIGURE.search(card.summary + card.details)
    copy = tmp_path / "copy"
    shutil.copytree(BUNDLED_MODELS[TINY], copy)
    card = model_card.card(str(copy))  # its own hermes.json and README, but no committed study names it
    assert "3.31M parameters" in card.summary and "Measured at training: 0.940" in card.summary
    assert "No committed mechanistic study names this model" in card.details


# ---- words a word-level model cannot read --------------------------------------------------------
def bpe_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(["what is happening in the video now"], trainers.BpeTrainer(special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


@pytest.mark.parametrize("question, tokenizer, unknown", [
    ("what is happening ?", "tiny", ["happening"]),
    ("hello", "tiny", ["hello"]),
    ("What colour is the Circle now?", "tiny", []),
    ("is the Bunny red ? the BUNNY , the bunny !", "tiny", ["bunny"]),
    ("where did the rabbit go ?", "tiny", ["where", "rabbit", "go"]),
    ("what is happening ?", "bpe", []),  # sub-word pieces spell any word
])
def test_words_outside_a_word_level_vocabulary_are_found(question, tokenizer, unknown):
    tok = build_tokenizer() if tokenizer == "tiny" else bpe_tokenizer()
    assert model_card.out_of_vocabulary(question, tok) == unknown


def test_the_unknown_words_note_names_them():
    assert model_card.unknown_words_note(TINY, []) == ""
    note = model_card.unknown_words_note(TINY, ["happening"])
    assert "“happening”" in note and "unknown token" in note and TINY in note


# ---- ground truth and suggestions ---------------------------------------------------------------
WORLD, _ = shapestream.world(901, 64.0)  # circle 0.62-27.24 blue; square 8.23-34.08; cross from 38.33


@pytest.mark.parametrize("question, t, truth", [
    ("what colour is the circle now ?", 5.0, Truth("blue")),
    ("how many shapes have appeared so far ?", 10.0, Truth("two")),
    ("what colour is the cross now ?", 12.0, Truth(None, "not applicable now: the cross has not appeared by 12.0 s")),
    ("what colour is the circle now ?", 30.0, Truth(None, "not applicable now: the circle is not on the screen at "
                                                         "30.0 s")),
    ("did the circle appear before the circle ?", 20.0, Truth(None, "not applicable now: it names the circle twice")),
    ("did the circle appear before the cross ?", 20.0, Truth(None, "not applicable now: the cross has not appeared "
                                                                   "by 20.0 s")),
    ("how many times did the triangle change colour ?", 60.0, Truth(None, "not applicable now: the triangle has not "
                                                                          "appeared by 60.0 s")),
    ("which shape appeared first ?", 0.2, Truth(None, "not applicable now: it has no answer from the frames up to "
                                                      "0.2 s")),
])
def test_ground_truth_says_not_applicable_now_when_the_question_does_not_apply(question, t, truth):
    assert model_card.ground_truth(WORLD, question, t) == truth


@pytest.mark.parametrize("world, question, note", [
    (WORLD, "what is happening ?", "not one of ShapeStream's question templates"),
    (None, "what colour is the circle now ?", "none for this video"),
])
def test_questions_without_a_ground_truth_say_why(world, question, note):
    truth = model_card.ground_truth(world, question, 10.0)
    assert truth.answer is None and note in truth.note


def test_suggestions_are_only_the_questions_that_apply_now():
    asked = ["what colour is the circle now ?", "what colour is the cross now ?", "which shape appeared first ?",
             "what colour is the circle now ?"]
    assert model_card.valid_questions(WORLD, asked, 10.0) == ["what colour is the circle now ?",
                                                              "which shape appeared first ?"]
    assert model_card.valid_questions(WORLD, asked, 40.0) == ["what colour is the cross now ?",
                                                              "which shape appeared first ?"]
    assert model_card.valid_questions(WORLD, asked, None) == []
    assert model_card.valid_questions(None, asked, 10.0) == []


# ---- the session and the chat ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def session() -> Session:
    s = Session(Settings())
    s.load_example("shapestream-901")
    s.advance(16.0)  # two chunks: memory up to 15.5 s (the cross appears at 38.33 s)
    return s


def test_the_sessions_suggestions_apply_at_the_newest_frame_in_memory(session):
    t = session.memory_time()
    offered = session.suggestions()
    assert offered and all(session.truth(q).answer is not None for q in offered)
    later = [q["question"] for q in session.source.suggestions if session.truth(q["question"]).answer is None]
    assert later and not set(later) & set(offered)  # the example does ask questions that only apply later
    assert t == 15.5


def test_a_question_that_does_not_apply_gets_no_verdict_and_says_why(session):
    *_, entry = session.ask("what colour is the cross now ?")
    assert entry["truth"] is None and entry["truth_note"].startswith("not applicable now: the cross has not appeared")
    shown = render.chat_messages([entry])[-1]["content"]
    assert "ground truth: not applicable now" in shown and "✓" not in shown and "✗" not in shown


def test_words_the_model_cannot_read_are_flagged_in_the_chat(session):
    assert session.unknown_words("what is happening ?") == ["happening"]
    *_, entry = session.ask("what is happening ?")
    shown = render.chat_messages([entry])[-1]["content"]
    assert "⚠️" in shown and "“happening”" in shown and "not one of ShapeStream's question templates" in shown
    *_, entry = session.ask("which shape appeared first ?")
    assert entry["notes"] == [] and entry["truth"] == "circle"


def test_the_study_tabs_run_is_the_measurement_the_finding_reports(session):
    study = session.study(budget=64, bins=8)
    m = session.studied
    assert m.model == TINY and m.n_questions == study.n_questions and m.budget == 64
    text = model_card.findings(m.model, m)
    assert "the Study tab on shapestream-901 up to 15.5 s" in text and f"{study.n_questions} questions" in text
    assert claims_paper_split(text) is bool(model_card.paper_split(m))


# ---- the acceptance test: no UI text claims a split the model's study does not show ----------------
def ui_texts(demo) -> list[str]:
    """Every text the built page shows: markdown, labels, infos, placeholders."""
    texts = []
    for component in demo.get_config_file()["components"]:
        props = component.get("props", {})
        texts += [props[k] for k in ("value", "label", "info", "placeholder") if isinstance(props.get(k), str)]
    return texts


@pytest.mark.parametrize("shares, claimed", [(None, None), (REVERSED, False), (FLAT, False), (SPLIT, True)])
def test_no_ui_text_claims_the_papers_layer_split_unless_the_models_study_shows_it(monkeypatch, shares, claimed):
    from app import ui

    if shares is not None:  # the loaded model's committed study, as measured (None: the one on disk)
        monkeypatch.setattr(model_card, "committed_study", lambda model, results=RESULTS: measure(shares))
    m = model_card.committed_study(ui.DEFAULTS.model)
    shows = bool(m is not None and model_card.paper_split(m))
    assert claimed is None or shows is claimed
    texts = ui_texts(ui.build()) + list(render.READ_ME.values())
    claims = [t for t in texts if claims_paper_split(t)]
    if not shows:
        assert claims == []
    else:  # the measured finding says so under the attention map, and nothing else restates it
        assert claims and all("measured" in t for t in claims)
    assert any(PAPER_FINDING in t for t in texts)  # the paper's finding is there, as the paper's
