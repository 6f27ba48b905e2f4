"""The app says honestly what its model can do (app.model_card): the card holds only what the
model's directory and the committed results measured, words a word-level model cannot read are
flagged, ground truth says when a question does not apply, suggestions are the ones that apply
now, and no text in the UI claims the paper's layer split for a model whose study does not show it."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.common import RESULTS, result_name
from app import model_card, render
from app.model_card import PAPER_FINDING, Measured, Truth
from app.session import Session
from app.settings import Settings
from app.study import span_text
from hermes import shapestream
from hermes.backbones import BUNDLED_MODELS, frames_for_tokens
from hermes.studies.mechanistic import MIN_QUESTIONS, SPLIT_MARGIN, Study, reading, split
from hermes.tokenizer import build_tokenizer
from tiny.card import hermes_settings

TINY = "hermes-tiny"
FIGURE = re.compile(r"\d\.\d{2,}|\d+(\.\d+)?\s*%")  # an accuracy or share: 0.962, 31%


# ---- what counts as claiming the paper's layer split ----------------------------------------
RECENT_WORDS = r"\b(newest|latest|recent|short-term|last frames)\b"
ANCHOR_WORDS = r"\b(anchors?|long-term|older|further back)\b"
SAYS_SO = r"\b(the paper's direction|shows the paper's split|as in the paper|here too)\b"  # "it agrees"


def claims_paper_split(text: str) -> bool:
    """Does `text` state the paper's split as a finding: say the measurement agrees with the
    paper, or pair, in one sentence, a clause of shallow layers with the newest frames and one of
    deep layers with anchors / older frames? The paper's finding quoted as the paper's
    (PAPER_FINDING) does not count."""
    text = text.replace(PAPER_FINDING, " ")
    if re.search(SAYS_SO, text.lower()):
        return True
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
    ("Shallow tier 60% on the newest 10% vs deep tier 10%: the paper's direction.", True),
    ("Shallow tier 8% on the newest 10% vs deep tier 21%: the reverse of the split the paper reports.", False),
    ("This measurement shows the paper's split: here too the shallow layers look most at the newest frames.", True),
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


@pytest.mark.parametrize("shares, tiers, questions, shows, says", [
    (SPLIT, TIERS, 40, True, "Shallow tier 60% on the newest 10% vs deep tier 10%: the paper's direction"),
    (REVERSED, TIERS, 40, False, "Shallow tier 8% on the newest 10% vs deep tier 22%: the reverse of the split the "
                                 "paper reports"),
    (FLAT, TIERS, 40, False, "Shallow tier 20% on the newest 10% vs deep tier 20%: within 5 points of each other, "
                             "so not the split the paper reports"),
    (SPLIT, TIERS, 1, False, "Shallow tier 60% on the newest 10% vs deep tier 10%, from 1 question: too few to "
                             "call a split either way"),
    (FLAT, ("middle",) * 12, 40, None, "cannot be set against the paper's split"),
])
def test_the_finding_states_the_tier_means_it_compares_and_quotes_the_paper_as_the_papers(shares, tiers, questions,
                                                                                          shows, says):
    m = Measured("m", tuple(shares), tiers, questions, 256, "a test")
    text = model_card.findings("m", m)
    assert model_card.paper_split(m) is shows
    assert says in text and PAPER_FINDING in text
    assert claims_paper_split(text) is bool(shows)  # the split is stated only where it was measured
    assert f"{questions} question" in text and "256 tokens per layer" in text and "a test" in text


def test_the_recency_bound_layers_are_named_with_their_measured_shares():
    text = model_card.findings("m", measure(REVERSED))
    assert "8 (deep, 50%), 6 (middle, 32%), 1 (middle, 31%), 3 (middle, 22%)" in text  # >= 20%, most first
    assert "shallow layer 0: 8%" in text and "deep layers 8-11: 22%" in text


def test_a_layer_never_measured_is_left_out_of_its_tiers_mean_and_said_to_be():
    shares = list(REVERSED)
    shares[9] = float("nan")  # no attention reached its video tokens (hermes.studies.mechanistic.layer_summary)
    text = model_card.findings("m", measure(shares))
    assert "nan" not in text.lower()
    assert f"deep layers 8-11: {np.mean([REVERSED[i] for i in (8, 10, 11)]):.0%}" in text
    assert "layer 9 left out" in text
    text = model_card.findings("m", measure([float("nan"), *REVERSED[1:]]))  # a whole tier unmeasured
    assert "nan" not in text.lower() and "shallow layer 0: not measured" in text
    assert "cannot be set against the paper's split" in text and not claims_paper_split(text)


def test_an_unmeasured_model_gets_no_figures_only_the_papers_finding_as_the_papers():
    text = model_card.findings("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", None)
    assert "not measured here" in text and PAPER_FINDING in text and not claims_paper_split(text)
    assert not FIGURE.search(text.replace(PAPER_FINDING, ""))


def study_of(shares: list[float], tiers: tuple[str, ...] = TIERS, n_questions: int = 7) -> Study:
    n = len(shares)
    return Study(heatmap=np.zeros((n, 4)), edges=np.array([0, 64, 128, 192, 256]), video_mass=np.ones(n),
                 recent_share=np.array(shares), entropy_bits=np.full(n, 5.0), anchor_frames=np.full(n, 8.0),
                 tokens_per_frame=16, n_questions=n_questions, tiers=list(tiers))


M = SPLIT_MARGIN


@pytest.mark.parametrize("shallow, deep, questions, verdict", [
    (0.6, 0.1, 40, "paper"),
    (0.1, 0.6, 40, "reversed"),
    (0.2, 0.2, 40, "none"),
    (0.2 + M + 0.01, 0.2, 40, "paper"),
    (0.2 + M - 0.01, 0.2, 40, "none"),  # inside the margin: no split either way
    (0.2, 0.2 + M - 0.01, 40, "none"),
    (0.2, 0.2 + M + 0.01, 40, "reversed"),
    (0.6, 0.1, MIN_QUESTIONS - 1, "few"),  # too few questions to call it
    (0.6, 0.1, 1, "few"),
    (0.6, 0.1, MIN_QUESTIONS, "paper"),
    (float("nan"), 0.1, 40, None),  # the shallow tier never measured
])
def test_the_one_split_judgement_compares_the_tier_means_with_a_margin_from_enough_questions(shallow, deep, questions,
                                                                                            verdict):
    shares = [shallow] + [0.3] * 7 + [deep] * 4
    assert split(shares, TIERS, questions) == verdict
    assert split(shares, ("middle",) * 12, questions) is None  # no shallow and deep tiers to compare
    assert split([shallow, float("nan"), deep], ("shallow", "deep", "deep"), questions) == verdict  # NaN left out


@pytest.mark.parametrize("questions, calls", [(1, False), (MIN_QUESTIONS - 1, False), (MIN_QUESTIONS, True)])
def test_the_study_tabs_reading_says_how_many_questions_and_calls_no_split_from_too_few(questions, calls):
    study = study_of(SPLIT)
    study.n_questions = questions
    text = reading(study)
    assert text.startswith(f"Over {questions} question{'s' if questions > 1 else ''} on a FIFO cache of 256 tokens")
    assert ("too few to call a split" in text) is not calls and claims_paper_split(text) is calls
    assert "shallow layer 0: 60%" in text and "deep layers 8-11: 10%" in text
    m = model_card.measured(study, "m", "the Study tab")
    assert (m.n_questions, m.budget, m.tiers) == (questions, 256, TIERS)
    study.asked = "local pseudo-query"  # the session's run when no question found the cache full
    text, finding = reading(study), model_card.findings("m", model_card.measured(study, "m", "the Study tab"))
    noun = "local pseudo-query" if questions == 1 else "local pseudo-queries"
    assert text.startswith(f"Over {questions} {noun} on")
    assert f"measured** by the Study tab: {questions} {noun} on" in finding
    assert "question" not in text and "question" not in finding.split("\n\n")[0]


@pytest.mark.parametrize("tokens, per_frame, newline, chunk, frames", [
    (514, 16, 1, 16, 32),  # hermes-tiny: two chunks of 16 frames and their newline
    (513, 16, 1, 16, 31),  # one token short of the second chunk's newline
    (256, 16, 1, 16, 15),  # the old default: 7.5 s at 2 fps
    (6272, 196, 0, 16, 32),  # LLaVA-OneVision's 32 frames, the paper's ~6K tokens
    (100, 196, 0, 16, 0),  # not one frame
])
def test_the_study_budget_is_said_in_the_frames_and_seconds_it_holds(tokens, per_frame, newline, chunk, frames):
    held = frames_for_tokens(tokens, chunk, lambda n: n * per_frame + newline)
    assert held == frames
    assert f"{tokens:,} tokens per layer hold the newest {frames} frames of m, {frames / 2:g} s at 2 fps" in span_text(
        tokens, held, 2.0, "m")


@pytest.mark.parametrize("shares", [REVERSED, FLAT])
def test_the_study_tabs_reading_of_a_study_without_the_split_claims_none(shares):
    assert not claims_paper_split(reading(study_of(shares, n_questions=40)))


def test_the_committed_study_is_read_as_measured():
    m = model_card.committed_study(TINY)
    with open(RESULTS / "mechanistic.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert m.recent_share == tuple(float(r["recent_share"]) for r in rows)
    assert m.tiers == tuple(r["tier"] for r in rows)
    assert m.n_questions == len(np.load(RESULTS / "mechanistic.npz")["profiles"]) and m.budget == 512


@pytest.mark.parametrize("studies, says", [
    ({"a": SPLIT, "b": REVERSED}, ["a: the paper's direction", "b: the reverse of the paper's split",
                                   "divide their memory differently"]),
    ({"a": REVERSED, "b": REVERSED}, ["a: the reverse", "b: the reverse", "The models agree"]),
    ({"a": FLAT, "b": None}, ["a: no split between shallow and deep", "| b | | not measured here |"]),
])
def test_the_two_models_layers_are_compared_from_their_measured_studies(monkeypatch, studies, says):
    monkeypatch.setattr(model_card, "committed_study",
                        lambda model, results=RESULTS: None if studies[model] is None else measure(studies[model]))
    text = model_card.compare_layers(list(studies))
    assert all(s in text for s in says), text
    assert claims_paper_split(text) is (SPLIT in studies.values())  # the split only where a study shows it
    if studies.get("a") is REVERSED:
        assert "| a | 12 | 40, 256 tokens | layer 0: 8% | layers 1-7: 19% | layers 8-11: 22% |" in text


def test_no_difference_between_models_is_claimed_from_a_study_too_small_to_call(monkeypatch):
    studies = {"a": measure(SPLIT), "b": Measured("b", tuple(REVERSED), TIERS, 1, 256, "a test")}
    monkeypatch.setattr(model_card, "committed_study", lambda model, results=RESULTS: studies[model])
    text = model_card.compare_layers(["a", "b"])
    assert "b: too few questions to call a split" in text
    assert "differently" not in text and "agree" not in text


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


def test_what_it_was_trained_on_and_can_answer_is_read_from_the_hermes_json_training_writes(tmp_path):
    directory = BUNDLED_MODELS[TINY]
    committed = json.loads((directory / "hermes.json").read_text())
    assert committed == hermes_settings(committed["layout"], committed["metrics"])  # exactly what tiny/card.py writes
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (copy / "hermes.json").write_text(json.dumps(dict(committed, trained_on="KineticsLite", answers=["is it red ?"])))
    card = model_card.card(str(copy))
    assert "trained on KineticsLite" in card.summary and "*is it red ?*" in card.details
    assert "Trained to answer 1 question template only (its hermes.json)" in card.details
    (copy / "hermes.json").write_text(json.dumps({k: v for k, v in committed.items() if k not in ("trained_on",
                                                                                                  "answers")}))
    card = model_card.card(str(copy))  # its README still says "trained ... on ShapeStream": prose is not parsed
    assert "training data not stated" in card.summary and "Trained to answer" not in card.details
    (copy / "hermes.json").write_text(json.dumps(dict(committed, base="smollm2-135m-instruct")))
    card = model_card.card(str(copy))  # a part on a base: its own parameters are only what was trained
    assert "3.31M parameters trained on top of the frozen smollm2-135m-instruct language model" in card.summary


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


@pytest.mark.parametrize("seed", [901, 3, 17])
def test_why_not_gives_a_reason_exactly_when_a_template_question_has_no_answer(seed):
    world, _ = shapestream.world(seed, 64.0)
    questions = [t.ask.format(*shapes) for t in shapestream.TEMPLATES
                 for shapes in itertools.product(shapestream.SHAPES, repeat=t.ask.count("{}"))]
    for t in np.arange(0.0, 64.0, 1.7):
        for q in questions:
            why = shapestream.why_not(world, q, float(t))
            assert (why is None) is (shapestream.answer(world, q, float(t)) is not None), (q, t, why)
    assert shapestream.why_not(world, "what is happening ?", 10.0) == ("it is not one of ShapeStream's question "
                                                                       "templates")


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
def strings(value) -> list[str]:
    """Every string inside a component's props (values, labels, infos, titles, choices, ...)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings(v)]
    return []


def ui_texts(demo) -> list[tuple[str | None, str]]:
    """Every text the built page can show, with the model it is about (None: the page itself):
    the page title and every string of every component (markdown, labels, infos, placeholders,
    choices, titles), render's how-to-reads, and the card and layer finding of every model the
    studio offers (what the page shows once one is loaded)."""
    from app import ui

    config = demo.get_config_file()
    texts = [config.get("title", "")] + [s for c in config["components"] for s in strings(c.get("props", {}))]
    owned = [(None, t) for t in texts + list(render.READ_ME.values())]
    for model in ui.SETTINGS.models:
        card = model_card.card(model)
        owned += [(model, t) for t in (card.summary, card.details,
                                       model_card.findings(model, model_card.committed_study(model)))]
    return owned


@pytest.mark.parametrize("shares", [None, REVERSED, FLAT, SPLIT])
def test_no_ui_text_claims_the_papers_layer_split_unless_the_models_study_shows_it(monkeypatch, shares):
    """None: the committed studies on disk (hermes-tiny's shows the reverse split; hermes-smol's
    shows the paper's or none, by its weights); otherwise every model's study measures `shares`."""
    from app import ui

    if shares is not None:
        monkeypatch.setattr(model_card, "committed_study", lambda model, results=RESULTS: measure(shares))
        monkeypatch.setattr(ui, "committed", lambda results=RESULTS, models=(): [])  # the figures on disk say otherwise
    shows = {}
    for model in ui.SETTINGS.models:
        m = model_card.committed_study(model)
        shows[model] = bool(m is not None and model_card.paper_split(m))
    if shares is not None:
        assert set(shows.values()) == {shares is SPLIT}
    else:
        assert shows[ui.DEFAULTS.model] is False  # hermes-tiny's committed study does not show it
    texts = ui_texts(ui.build())
    assert any("*Pseudo-query*" in t and "FIFO cache" in t for _, t in texts)  # the Study tab too
    claims = [(owner, t) for owner, t in texts if claims_paper_split(t)]
    assert bool(claims) is any(shows.values())  # the measured finding says so where a study shows it
    for owner, t in claims:  # ... and only there, as a measurement, about a model that shows it
        assert "measured" in t and "the paper's direction" in t, t
        if owner is not None:
            assert shows[owner], (owner, t)
        else:  # the page's own text (the Study tab's comparison) names the models
            assert all(f"{m}: the paper's direction" not in t for m in shows if not shows[m]), t
    assert any(PAPER_FINDING in t for _, t in texts)  # the paper's finding is there, as the paper's


def test_the_card_and_the_finding_follow_the_loaded_model_not_the_dropdown_before_apply():
    from app import ui

    config = ui.build().get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    label = {c["id"]: c.get("props", {}).get("label") for c in config["components"]}
    deps = {d["id"]: d for d in config["dependencies"]}

    def started_by(d: dict) -> list[dict]:  # the events this one runs after (.then), nearest first
        return [deps[d["trigger_after"]], *started_by(deps[d["trigger_after"]])] if d["trigger_after"] is not None \
            else []

    card_deps = [d for d in deps.values() if {"model-card", "attention-findings"} & {ids[o] for o in d["outputs"]}]
    assert card_deps and all(not d["inputs"] for d in card_deps)  # nothing read from the page: the session's model
    assert not [d for d in card_deps for target, _ in d["targets"] if label.get(target) == "model"]
    after = [[(e["api_name"], e["targets"]) for e in started_by(d)] for d in card_deps]
    assert any(name == "configure" for chain in after for name, _ in chain)  # after Apply
    assert any(targets[0][1] == "load" for chain in after for _, targets in chain)  # after the page loads


def test_the_handlers_give_the_loaded_models_card_finding_and_study_budget(session):
    from app import ui

    request = SimpleNamespace(session_hash=uuid.uuid4().hex, client=SimpleNamespace(host="127.0.0.1"), headers={})
    mine = ui.STORE.start(request.session_hash, "127.0.0.1")
    try:
        summary, details, finding, budget = ui.card_of(request)
        assert (summary, details) == tuple(vars(model_card.card(TINY)).values())
        assert finding == model_card.findings(TINY, model_card.committed_study(TINY))
        assert budget["value"] == 514 and budget["maximum"] == 2056  # 32 and 128 frames of hermes-tiny
        assert "514 tokens per layer hold the newest 32 frames of hermes-tiny, 16 s at 2 fps" in budget["info"]
        assert "200 tokens per layer hold the newest 12 frames" in ui.study_span(200, request)["info"]
        mine.studied = session.studied or Measured(TINY, SPLIT, TIERS, 40, 64, "the Study tab on x up to 9.0 s")
        assert ui.layer_findings(request) == model_card.findings(TINY, mine.studied)  # this session's run first
        assert "⚠️" in ui.study_span(float("nan"), request)["info"]
    finally:
        ui.STORE.free(request.session_hash)
