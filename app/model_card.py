"""What the loaded model can do, said only from what was measured: its card, the words it
cannot read, the ground truth a question has now, and the layer finding under the attention map.

    from app import model_card
    card = model_card.card("hermes-tiny")            # .summary (one line), .details (markdown)
    model_card.out_of_vocabulary("what is happening ?", backbone.tokenizer)    # ["happening"]
    model_card.ground_truth(source.world, "what colour is the cross now ?", t=12.0)
    # Truth(answer=None, note="not applicable now: the cross has not appeared by 12.0 s")
    model_card.valid_questions(source.world, ["which shape appeared first ?", ...], t=12.0)
    m = model_card.committed_study("hermes-tiny")    # or model_card.measured(study, model, where)
    model_card.findings("hermes-tiny", m)            # the measured layer finding; the paper's quoted as the paper's

Everything here is read from the model's directory (hermes.json, where training writes what the
model was trained on and the templates it answers, tiny/card.py; README.md, quoted as written;
tokenizer.json; safetensors headers) and the committed results (analysis/results/*.md naming
the model they were measured on, and their csv/npz); a model with none of them gets "not
measured here", never a figure. Whether a study shows the paper's split is judged by
hermes.studies.mechanistic.split, why a question has no ground truth now by
hermes.shapestream.why_not; this module only words them. No gradio and no tensors: the session
and the UI call these and show the text.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.study import RESULTS
from hermes.backbones import BUNDLED_MODELS, HERMES_JSON, read_settings
from hermes.errors import HermesError
from hermes.shapestream import CATEGORIES, SHAPES, TEMPLATES, answer, template_of, why_not
from hermes.studies.mechanistic import (
    RECENT,
    Study,
    counted,
    layers_text,
    split,
    split_sentence,
    tier_layers,
    tier_mean,
)

PAPER_FINDING = ("The HERMES paper (arXiv 2601.14724, section 3) reports, for LLaVA-OneVision with a FIFO cache of "
                 "6K video tokens per layer over 300 questions: shallow layers attend mostly to the newest frames "
                 "(a short-term memory) and deep layers to a few anchor frames across the stream (a long-term "
                 "memory). That is the paper's finding on its models, not a measurement of this one.")
BOUND = 2 * RECENT  # a layer is recency-bound when twice an even share of its video attention is on the newest 10%
RANDOM_MODELS = ("random-tiny", "random-ov-0.5b")
_RESULT_LINE = re.compile(r"`python -m analysis\.(\w+)( --quick)?` with `([^`]+)`")


# ---- committed results -------------------------------------------------------------------
def committed_result(study: str, model: str, results: Path = RESULTS) -> Path | None:
    """The committed markdown of `study` (mechanistic, accuracy, ...) measured on `model`: the
    one whose opening line says "`python -m analysis.STUDY` with `MODEL`" (quick runs left out;
    the plain name first, then e.g. a GPU run). None when no committed result names the model."""
    for md in sorted(results.glob(f"{study}*.md"), key=lambda p: (len(p.stem), p.stem)):
        found = _RESULT_LINE.search(md.read_text(encoding="utf-8")[:1000])
        if found and found.group(1) == study and not found.group(2) and found.group(3) == model:
            return md
    return None


def _opening(md: Path) -> str:
    """A result's description: its first paragraph after the title."""
    paragraphs = [p.strip() for p in md.read_text(encoding="utf-8").split("\n\n")]
    return next((p for p in paragraphs if p and not p.startswith(("#", "!["))), "")


@dataclass(frozen=True)
class Measured:
    """A mechanistic study's per-layer recency, and where it was measured."""

    model: str
    recent_share: tuple[float, ...]  # per layer: share of its video attention on the newest 10% of tokens
    tiers: tuple[str, ...]  # per layer: "shallow", "middle", "deep" (HERMES' tiers)
    n_questions: int
    budget: int  # FIFO tokens per layer
    where: str  # markdown: which measurement (a committed file, or the Study tab on a stream)
    asked: str = "question"  # what was measured each time (Study.asked: "local pseudo-query" when one stood in)

    @property
    def share(self) -> np.ndarray:
        """(L,) float64 recent_share; NaN for a layer never measured."""
        return np.array(self.recent_share, dtype=np.float64)

    def tier_means(self) -> dict[str, str]:
        """tier -> "layers 0-2: 42%" (its layers and their mean share on the newest tokens), the
        tiers in HERMES' order; "not measured" for a tier no attention reached."""
        share = self.share
        return {name: f"{layers_text(idx)}: " + ("not measured" if np.isnan(x := tier_mean(share, idx)) else f"{x:.0%}")
                for name, idx in tier_layers(self.tiers).items()}


def measured(study: Study, model: str, where: str) -> Measured:
    """The numbers of a hermes.studies.mechanistic Study (e.g. the Study tab's run)."""
    return Measured(model, tuple(float(x) for x in study.recent_share), tuple(study.tiers), int(study.n_questions),
                    int(study.edges[-1]), where, study.asked)


def committed_study(model: str, results: Path = RESULTS) -> Measured | None:
    """The committed mechanistic study of `model` (its md, csv and npz), None when there is none."""
    md = committed_result("mechanistic", model, results)
    if md is None or not md.with_suffix(".csv").is_file() or not md.with_suffix(".npz").is_file():
        return None
    with md.with_suffix(".csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    data = np.load(md.with_suffix(".npz"))
    return Measured(model, tuple(float(r["recent_share"]) for r in rows), tuple(r["tier"] for r in rows),
                    len(data["profiles"]), int(data["edges"][-1]), f"the committed study (analysis/results/{md.name})")


def paper_split(m: Measured) -> bool | None:
    """Does the measurement show the paper's split, as hermes.studies.mechanistic.split judges it
    (the one judgement)? None without a measured shallow and deep tier; False when it shows
    another split, none, or rests on too few questions to call one."""
    verdict = split(m.recent_share, m.tiers, m.n_questions)
    return None if verdict is None else verdict == "paper"


def listed(items: list[str], most: int = 8) -> str:
    """The first `most` items, comma-separated, and how many more there are."""
    rest = len(items) - most
    return ", ".join(items[:most]) + (f" and {rest} more" if rest > 0 else "")


def recency_bound(share: np.ndarray) -> list[int]:
    """The layers with at least BOUND of their video attention on the newest tokens, most first
    (a NaN layer, never measured, is never bound)."""
    return [int(i) for i in np.argsort(-share, kind="stable") if share[i] >= BOUND]


def findings(model: str, m: Measured | None) -> str:
    """The layer finding for the text under the attention map (markdown): what `m` measured on
    `model`, or that nothing was; the paper's finding follows, quoted as the paper's."""
    if m is None:
        return (f"**{model}'s layers: not measured here.** No committed mechanistic study names this model; "
                "run the Study tab on a stream to measure where each of its layers looks.\n\n"
                f"*{PAPER_FINDING}*")
    share, tiers = m.share, np.array(m.tiers)
    bound = recency_bound(share)
    tier_of = [f"{i} ({tiers[i]}, {share[i]:.0%})" for i in bound]
    by_tier = "; ".join(f"{name} {text}" for name, text in m.tier_means().items())
    unmeasured = np.flatnonzero(np.isnan(share))
    lines = [f"**{model}'s layers, measured** by {m.where}: {counted(m.n_questions, m.asked)} on a FIFO cache of "
             f"{m.budget} tokens per layer. An even spread puts {RECENT:.0%} of a layer's video attention on the "
             f"newest {RECENT:.0%} of its tokens; "
             + (f"the layers with at least {BOUND:.0%} there are " + listed(tier_of) if bound else
                f"no layer puts {BOUND:.0%} or more there")
             + f". Mean per tier: {by_tier}"
             + (f" ({layers_text(unmeasured)} left out: no attention reached its video tokens, so never measured)"
                if len(unmeasured) else "") + ".",
             split_sentence(share, m.tiers, m.n_questions, m.asked)]
    return " ".join(lines) + f"\n\n*{PAPER_FINDING}*"


VERDICT_WORDS = {  # hermes.studies.mechanistic.split's verdicts, as the comparison words them
    "paper": "the paper's direction (shallow layers on the newest frames, deep layers further back)",
    "reversed": "the reverse of the paper's split (deep layers on the newest frames)",
    "none": "no split between shallow and deep layers",
    "few": "too few questions to call a split",
    None: "no shallow and deep tiers to set against each other",
}


def compare_layers(models: Iterable[str], results: Path = RESULTS) -> str:
    """Markdown for the Study tab and the README: the committed mechanistic studies of `models`
    side by side (per tier, the share of video attention on the newest 10% of tokens; the
    recency-bound layers; the verdict of hermes.studies.mechanistic.split), then what they
    show, worded from those verdicts alone. A model with no committed study is said to have none."""
    rows, verdicts = [], {}
    head = ("| model | layers | questions, FIFO budget | shallow | middle | deep | recency-bound layers (share) "
            "| split |")
    for model in models:
        m = committed_study(model, results)
        if m is None:
            rows.append(f"| {model} | | not measured here | | | | | |")
            continue
        share, means = m.share, m.tier_means()
        cells = [means.get(t, "") for t in ("shallow", "middle", "deep")]
        bound = recency_bound(share)
        verdicts[model] = split(m.recent_share, m.tiers, m.n_questions)
        rows.append(f"| {model} | {len(share)} | {m.n_questions}, {m.budget} tokens | " + " | ".join(cells)
                    + " | " + (listed([f"{i} ({share[i]:.0%})" for i in bound]) or "none") + " | "
                    + str(verdicts[model]) + " |")
    said = [f"{model}: {VERDICT_WORDS[v]}" for model, v in verdicts.items()]
    called = {v for v in verdicts.values() if v in ("paper", "reversed", "none")}  # verdicts a study could call
    if len(verdicts) > 1 and len(called) == len(set(verdicts.values())):  # every model's split was called
        said.append("The models divide their memory differently: which layers look at the newest frames depends "
                    "on the model, so the tiers a policy assigns should be checked on the model it runs"
                    if len(called) > 1 else "The models agree on this measurement")
    intro = (f"Per tier, the share of each layer's video attention on the newest {RECENT:.0%} of its cached tokens "
             f"(an even spread gives {RECENT:.0%}; recency-bound: {BOUND:.0%} or more), as measured by each model's "
             "committed mechanistic study (`python -m analysis.mechanistic --model MODEL`).")
    return "\n".join([intro, "", head, "|---" * 8 + "|", *rows, "", ". ".join(said) + "." if said else
                      "No model here has a committed mechanistic study."])


# ---- the model card ------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    summary: str  # one line of markdown, always shown
    details: str  # markdown: trained on, what it can answer, measured accuracy, its layers


def model_directory(model: str) -> Path | None:
    """The folder a model loads from (bundled name or local directory), None for a hub id or random weights."""
    if model in BUNDLED_MODELS:
        return BUNDLED_MODELS[model]
    path = Path(model).expanduser()
    return path if model not in RANDOM_MODELS and path.is_dir() else None


def parameter_count(directory: Path) -> int | None:
    """Parameters in the directory's safetensors files, read from their headers (no weights loaded)."""
    total, files = 0, sorted(directory.glob("*.safetensors"))
    for path in files:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 2**27:
                return None
            header = json.loads(f.read(size))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total if files else None


def vocabulary(directory: Path) -> list[str] | None:
    """The words of a word-level tokenizer (tokenizer.json), special tokens left out; None for
    any other tokenizer (sub-word pieces spell any word) or none."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("model", {}).get("type") != "WordLevel":
        return None
    special = {t["content"] for t in data.get("added_tokens", []) if t.get("special")}
    vocab = data["model"]["vocab"]
    return [w for w in sorted(vocab, key=vocab.get) if w not in special]


def _settings(directory: Path) -> dict:
    """The directory's hermes.json for its card; one that cannot be read says nothing (the model's load says why)."""
    try:
        return read_settings(directory)
    except HermesError:
        return {}


def _sentences(readme: str, pattern: str) -> list[str]:
    """The model card's (README.md's) sentences matching `pattern`, as written."""
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in readme.split("\n\n")
                  if p.strip() and not p.lstrip().startswith("#")]
    return [s.strip() for p in paragraphs for s in re.split(r"(?<=\.)\s+(?=[A-Z])", p) if re.search(pattern, s)]


def _table(md: str) -> list[dict[str, str]]:
    """The first markdown table of a result file, as rows keyed by its header."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    if len(lines) < 3:
        return []
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    head, rows = cells[0], []
    for row in cells[2:]:
        if row == head or all(set(c) <= set("-: ") for c in row):
            break  # the next table starts
        rows.append(dict(zip(head, row, strict=False)))
    return rows


def _accuracy(model: str, results: Path) -> tuple[str, str]:
    """(a summary phrase, a markdown block) from the committed accuracy study of `model`."""
    md = committed_result("accuracy", model, results)
    if md is None:
        return "", ""
    rows = [r for r in _table(md.read_text(encoding="utf-8")) if r.get("policy") in ("chance", "full", "hermes")]
    full = next((r for r in rows if r["policy"] == "full"), None)
    if full is None:
        return "", ""
    cats = [c for c in CATEGORIES if c in full]
    table = ["| policy | budget | all | " + " | ".join(cats) + " |", "|---" * (3 + len(cats)) + "|"]
    table += [f"| {r['policy']} | {r.get('budget', '')} | {r['all']} | " + " | ".join(r[c] for c in cats) + " |"
              for r in rows]
    chance = next((r for r in rows if r["policy"] == "chance"), None)
    phrase = f"{full['all']} of held-out ShapeStream questions right with a full cache" + (
        f" (chance {chance['all']})" if chance else "")
    return phrase, f"Measured by the accuracy study ({_opening(md)}):\n\n" + "\n".join(table)


def card(model: str, results: Path = RESULTS) -> Card:
    """The model card of `model` from its directory and the committed results; a model this
    project never measured is said to be so, with no figures."""
    directory = model_directory(model)
    accuracy, accuracy_block = _accuracy(model, results)
    layers = committed_study(model, results)
    layer_line = findings(model, layers).split("\n\n")[0] if layers else ""
    if model in RANDOM_MODELS:
        return Card(f"**{model}**: seeded random weights, for tests and timing. Its answers mean nothing; "
                    "nothing but speed is measured on it.",
                    f"**{model}** has random weights (hermes.backbones): it was never trained, so it cannot answer "
                    "anything. It reads the project's word-level vocabulary (hermes/tokenizer.py): words outside it "
                    "are flagged before you ask.")
    if directory is None:
        summary = (f"**{model}**: a general video LLM from the Hugging Face hub (LLaVA-OneVision family), not trained "
                   "by this project. " + (f"Measured here: {accuracy}." if accuracy else
                                          "Not measured here: this project has no accuracy figures for it."))
        details = [f"**{model}** was loaded by its hub id. What it was trained on and what it can answer are on its "
                   "own model card on the hub; this project states no figures of its own for it."]
        return Card(summary, "\n\n".join(x for x in (*details, accuracy_block, layer_line) if x))

    settings = _settings(directory)
    readme_path = directory / "README.md"
    readme = readme_path.read_text(encoding="utf-8") if readme_path.is_file() else ""
    words = vocabulary(directory)
    params = parameter_count(directory)
    trained = _sentences(readme, r"\btrained\b")
    knows = _sentences(readme, r"\bknows\b")
    on, answers = settings.get("trained_on"), settings.get("answers")  # written by training (tiny/card.py)
    on = on if isinstance(on, str) and on.strip() else None
    answers = [a for a in answers if isinstance(a, str)] if isinstance(answers, list) else []
    metrics = {k: v for k, v in settings.get("metrics", {}).items() if k in (*CATEGORIES, "all")}
    shapestream = bool(metrics) or bool(accuracy)

    base = settings.get("base") if isinstance(settings.get("base"), str) else None  # a part on a frozen base
    size = "" if not params else f"{params / 1e6:.2f}M parameters" + (
        f" trained on top of the frozen {base} language model" if base else "")
    facts = [size,
             f"trained on {on}" if on else "training data not stated in its directory",
             f"reads only its {len(words)} words" if words is not None else ""]
    summary = f"**{model}**: " + ", ".join(f for f in facts if f) + ". "
    if accuracy:
        summary += f"Measured: {accuracy}. "
    elif metrics.get("all") is not None:
        summary += f"Measured at training: {metrics['all']:.3f} of held-out ShapeStream questions right. "
    else:
        summary += "No accuracy measured here. "
    if shapestream:
        summary += "Answers to other questions, or about other videos, were never measured."

    said = f" Its card says: {' '.join(trained)}" if trained else ""
    details = [f"**Trained on.** {on} (its {HERMES_JSON}).{said}" if on else
               f"**Trained on.** Its directory does not say (no `trained_on` in its {HERMES_JSON}).{said}"]
    can = []
    if answers:
        category = {t.name: t.category for t in TEMPLATES}
        names = "; ".join(f"*{a}*" + (f" ({category[a]})" if a in category else "") for a in answers)
        x = f"; X is one of ShapeStream's shapes: {', '.join(SHAPES)}" if set(answers) & set(category) else ""
        can.append(f"Trained to answer {len(answers)} question template{'s' if len(answers) > 1 else ''} only "
                   f"(its {HERMES_JSON}{x}): {names}.")
    if knows:
        can.append("Its card says: " + " ".join(knows))
    if shapestream:
        can.append("Its accuracy was measured on ShapeStream's question templates only; on any other question or "
                   "video it still answers (" + ("with one of its words" if words is not None else
                                                 "in its decoder's own words") + "), with no measured accuracy.")
    if words is not None:
        can.append(f"Word-level tokenizer: a word outside its {len(words)} reaches it as `<unk>` (an unknown "
                   "token) and is flagged before you ask.")
    details.append("**What it can answer.** " + (" ".join(can) if can else "Not stated in its directory."))
    if words is not None:
        details.append(f"<details><summary>its {len(words)} words</summary>\n\n"
                       + " ".join(f"`{w}`" for w in words) + "\n\n</details>")
    acc = []
    if metrics:
        acc.append("At training (hermes.json, no eviction): "
                   + ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items()) + ".")
    acc += [accuracy_block] if accuracy_block else []
    details.append("**Measured accuracy.** " + ("\n\n".join(acc) if acc else "None measured here."))
    details.append(f"**Its layers.** {layer_line}" if layer_line else
                   "**Its layers.** No committed mechanistic study names this model.")
    return Card(summary.strip(), "\n\n".join(details))


# ---- questions -------------------------------------------------------------------------------
def out_of_vocabulary(question: str, tokenizer: object) -> list[str]:
    """The words of `question` a word-level tokenizer reads as its unknown token, in order,
    each once (lower-cased); [] for a sub-word tokenizer, which spells any word in pieces."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    unk = getattr(tokenizer, "unk_token_id", None)
    if backend is None or unk is None or type(backend.model).__name__ != "WordLevel":
        return []
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    words = [question[a:b].lower() for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
             if i == unk]
    return list(dict.fromkeys(words))


def unknown_words_note(model: str, words: list[str]) -> str:
    """The warning for words a model cannot read ("" when there are none)."""
    if not words:
        return ""
    quoted, one = ", ".join(f"“{w}”" for w in words), len(words) == 1
    word, reach, them = ("the word", "it reaches", "it") if one else ("the words", "they reach", "them")
    return (f"{model} does not know {word} {quoted}: {reach} the model as an unknown token, so its answer cannot be "
            f"about {them} (see the model card for the words it reads).")


@dataclass(frozen=True)
class Truth:
    """A question's ground truth at a time: the answer grade() checks, or why there is none."""

    answer: str | None
    note: str = ""  # shown instead of an answer ("not applicable now: ...")


def ground_truth(world: list | None, question: str, t: float) -> Truth:
    """The answer from a ShapeStream world's event log at time `t`, or why there is none: the
    video has no event log, the question is not one of ShapeStream's templates, or it does not
    apply now (hermes.shapestream.why_not says why: a shape not on screen, not appeared yet,
    named twice)."""
    if world is None:
        return Truth(None, "none for this video (only the ShapeStream examples carry an event log to check against)")
    if template_of(question) is None:
        return Truth(None, "none: not one of ShapeStream's question templates (see the model card)")
    why = why_not(world, question, t)
    return Truth(answer(world, question, t)[0]) if why is None else Truth(None, f"not applicable now: {why}")


def valid_questions(world: list | None, questions: Iterable[str], t: float | None) -> list[str]:
    """The questions (each once, in order) that have a ground truth at time `t`; none before
    anything is in memory (t None) or for a video without an event log."""
    if world is None or t is None:
        return []
    return [q for q in dict.fromkeys(questions) if ground_truth(world, q, t).answer is not None]
