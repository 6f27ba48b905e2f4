"""Accuracy vs memory budget, per policy and question category, on held-out ShapeStream.

    python -m analysis.accuracy                         # hermes-tiny, every policy, ~18 min on 2 cores
    python -m analysis.accuracy --streams 4 --quick     # smoke run
    python -m analysis.accuracy --model hermes-smol --streams 14 --policies full   # a headline on >= 500 questions
    python -m analysis.accuracy --benchmark bench.json --model DIR_OR_HUB_ID
    torchrun --nproc_per_node 2 -m analysis.accuracy    # streams shared out over 2 processes

ShapeStream mode: streams with seeds 0..N-1 (training uses seeds >= 1,000,000), 64-128
frames at 2 fps. Every policy runs at budgets of 12.5%, 25% and 50% of the stream's video
tokens, plus `full`. The engine ingests the stream chunk by chunk and answers each question
when the stream reaches its time (greedy, first word compared with the answer). Writes
analysis/results/accuracy.md, accuracy.csv and accuracy.png (or to --out; named
accuracy-<model>[-cuda] for another model or on a GPU). Started with
torchrun / accelerate launch, every (policy, budget, stream) unit goes to one process and
rank 0 merges them in order: the table is the one a single process writes.

Benchmark mode reads the unified streaming-benchmark schema, a JSON list of
{video_id, video_path, conversations: [{question, answer, choices?, end_time, task}]}, and
scores one policy/budget on it with any model the engine loads (a real LLaVA-OV where the
hub or a local copy is available).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis import common, shard
from hermes.backbones import Backbone, load_backbone
from hermes.engine import load_engine
from hermes.errors import HermesError
from hermes.policies import available
from hermes.shapestream import CATEGORIES, Question, chance_level, generate, grade, template_name
from hermes.video import read_video

FRACTIONS = (0.125, 0.25, 0.5)
FPS = 2.0
CHUNK = 16


@dataclass
class Run:
    policy: str
    fraction: float | None  # None: full
    hits: dict[str, list[bool]]
    templates: dict[str, list[bool]] | None = None  # template -> hits

    def accuracy(self, category: str | None = None) -> float:
        if isinstance(self.hits, Scores):
            return self.hits[category or "all"]
        values = [h for c, v in self.hits.items() if category in (None, c) for h in v]
        return float(np.mean(values)) if values else float("nan")


class Scores(dict):
    """Accuracies read back from accuracy.csv (category or "all" -> accuracy)."""


def run_stream(backbone: Backbone, stream, policy: str, fraction: float | None, hits: dict,
               templates: dict | None = None, policy_params: dict | None = None, **config: object) -> None:
    """Ingest one stream in chunks; answer each question when the stream reaches its time.
    `policy_params`: the policy's parameters, `config`: HermesConfig fields (the ablations
    switch both)."""
    n = len(stream.frames)  # the stream's video tokens, in the model's layout (a newline per chunk or none)
    video_tokens = backbone.tokens_for_frames(n, CHUNK)
    budget = None if fraction is None else max(8, int(fraction * video_tokens))
    engine = load_engine(backbone, policy=policy, budget=budget, chunk_frames=CHUNK, fps=FPS, max_new_tokens=2,
                         record_question_attention=False, policy_params=policy_params, **config)
    for q in common.replay(engine, stream.frames, stream.timestamps, [(q.time, q) for q in stream.questions]):
        hits[q.category].append(grade(engine.ask(q.question).text, q.answer))
        if templates is not None:
            templates[template_name(q.question)].append(hits[q.category][-1])


def held_out_streams(n: int, size: tuple[int, int] = (64, 64)) -> list:
    rng = np.random.default_rng(12345)
    return [generate(seed, seconds=float(rng.choice([32, 40, 48, 56, 64])), fps=FPS, size=size) for seed in range(n)]


def chance_levels(questions: list[Question]) -> tuple[dict, dict]:
    chance = {c: float(np.mean([chance_level(q.question) for q in questions if q.category == c])) for c in CATEGORIES}
    return chance, {c: sum(q.category == c for q in questions) for c in CATEGORIES}


def replot(args: argparse.Namespace) -> None:
    """Redraw accuracy.png from accuracy.csv (no model runs)."""
    stem = common.stem(args, study_name(args))
    with open(f"{stem}.csv") as fh:
        runs = [Run(row["policy"], None if row["policy"] == "full" else float(row["budget_fraction"]),
                    Scores({k: float(v) for k, v in row.items() if k not in ("policy", "budget_fraction")}))
                for row in csv.DictReader(fh)]
    questions = [q for s in held_out_streams(args.streams, size=(2, 2)) for q in s.questions]
    plot(runs, chance_levels(questions)[0], Path(f"{stem}.png"))


@dataclass(frozen=True)
class Setting:
    """One row of a sweep: a policy at a budget, with policy parameters and engine config
    (HermesConfig) overrides as (name, value) pairs."""

    label: str
    policy: str
    fraction: float | None
    params: tuple[tuple[str, object], ...] = ()
    config: tuple[tuple[str, object], ...] = ()


def sweep(backbone: Backbone, streams: list, settings: list[Setting], desc: str = "accuracy") -> list[Run] | None:
    """Every setting on every stream, (setting, stream) units shared out across torchrun
    processes; rank 0 gets one Run per setting (others None)."""
    w = shard.world()
    units = [(a, b) for a in range(len(settings)) for b in range(len(streams))]
    results = []
    for index, (a, b) in tqdm(shard.mine(units, w), desc=desc, unit="stream", disable=not w.main):
        hits: dict[str, list[bool]] = defaultdict(list)
        templates: dict[str, list[bool]] = defaultdict(list)
        st = settings[a]
        run_stream(backbone, streams[b], st.policy, st.fraction, hits, templates, dict(st.params), **dict(st.config))
        results.append((index, (dict(hits), dict(templates))))
    merged = shard.gather(results, w)
    shard.close(w)
    if merged is None:
        return None
    runs = []
    for a, st in enumerate(settings):
        hits, templates = defaultdict(list), defaultdict(list)
        for (unit_a, _), (h, t) in zip(units, merged, strict=True):
            if unit_a == a:
                for key, values in h.items():
                    hits[key] += values
                for key, values in t.items():
                    templates[key] += values
        runs.append(Run(st.label, st.fraction, dict(hits), dict(templates)))
    return runs


def shapestream(args: argparse.Namespace) -> None:
    backbone = load_backbone(args.model, device=args.device, quantize=args.quantize)
    streams = held_out_streams(args.streams)
    questions = [q for s in streams for q in s.questions]
    configs = [("full", None)] + [(p, f) for p in available() if p != "full" for f in FRACTIONS]
    if args.policies:  # a subset, e.g. `full` alone on more streams for a model's headline figure
        unknown = sorted(set(args.policies) - set(available()))
        if unknown:
            raise HermesError(f"unknown policies {', '.join(unknown)}; choose from {', '.join(available())}")
        configs = [(p, f) for p, f in configs if p in args.policies]
    if args.quick:
        configs = [("full", None), ("fifo", 0.25), ("hermes", 0.25)]
    runs = sweep(backbone, streams, [Setting(p, p, f) for p, f in configs])
    if runs is None:
        return
    chance, counts = chance_levels(questions)
    write_results(runs, chance, counts, args, len(streams), len(questions), questions)


def template_table(runs: list[Run], questions: list[Question]) -> list[str]:
    """Markdown rows: accuracy per question template for `full` and every policy at the
    smallest budget (where eviction shows), with the template's chance level."""
    fraction = min((r.fraction for r in runs if r.fraction is not None), default=None)
    shown = [r for r in runs if r.templates and (r.fraction is None or r.fraction == fraction)]
    if not shown:
        return []
    by_template = defaultdict(list)
    for q in questions:
        by_template[template_name(q.question)].append(q)
    names = [r.policy if r.fraction is None else f"{r.policy} {100 * r.fraction:g}%" for r in shown]
    rows = []
    for name, qs in by_template.items():
        chance = np.mean([chance_level(q.question) for q in qs])
        cells = [f"{np.mean(r.templates[name]):.3f}" if r.templates.get(name) else "-" for r in shown]
        rows.append([name, qs[0].category, len(qs), f"{chance:.3f}", *cells])
    return ["", "Per question template (the weakest rows say what limits the model):", "",
            *common.table(["template", "category", "n", "chance", *names], rows)]


def study_name(args: argparse.Namespace) -> str:
    """accuracy, or accuracy_<policies> for a subset (beside the full sweep, never replacing it)."""
    return "accuracy" + ("_" + "+".join(args.policies) if args.policies else "")


def write_results(runs: list[Run], chance: dict, counts: dict, args: argparse.Namespace, n_streams: int,
                  n_questions: int, questions: list[Question] | None = None) -> None:
    stem = common.stem(args, study_name(args))
    common.write_csv(f"{stem}.csv", [[r.policy, r.fraction if r.fraction is not None else 1.0, f"{r.accuracy():.4f}",
                                      *[f"{r.accuracy(c):.4f}" for c in CATEGORIES]] for r in runs],
                     ["policy", "budget_fraction", "all", *CATEGORIES])
    rows = [["chance", "-", f"{np.average(list(chance.values()), weights=list(counts.values())):.3f}",
             *[f"{chance[c]:.3f}" for c in CATEGORIES]]]
    for r in runs:
        budget = "100% (full)" if r.fraction is None else f"{100 * r.fraction:g}%"
        rows.append([r.policy, budget, f"{r.accuracy():.3f}", *[f"{r.accuracy(c):.3f}" for c in CATEGORIES]])
    lines = [
        "# Accuracy vs budget on held-out ShapeStream",
        "",
        f"`python -m analysis.accuracy{' --quick' if args.quick else ''}"
        f"{' --policies ' + ','.join(args.policies) if args.policies else ''}{common.quantize_flag(args)}` "
        f"with `{args.model}`, "
        f"{common.today()}: {n_streams} held-out streams (seeds 0-{n_streams - 1}; training uses "
        f"seeds >= 1,000,000), 64-128 frames at 2 fps, {n_questions} questions "
        f"({', '.join(f'{c} {counts[c]}' for c in CATEGORIES)}). Budget = share of the stream's video tokens "
        "kept per layer; chunks of 16 frames; answers are greedy, first word compared.",
        "",
        *common.table(["policy", "budget", "all", *CATEGORIES], rows),
        *template_table(runs, questions or []),
    ]
    common.write_markdown(f"{stem}.md", lines, echo=True)
    plot(runs, chance, Path(f"{stem}.png"))


def plot(runs: list[Run], chance: dict, path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(CATEGORIES) + 1, figsize=(4 * (len(CATEGORIES) + 1), 3.6), sharey=True)
    full = next((r for r in runs if r.policy == "full"), None)
    for ax, category in zip(axes, (None, *CATEGORIES), strict=True):
        for policy in sorted({r.policy for r in runs if r.policy != "full"}):
            points = sorted((r.fraction, r.accuracy(category)) for r in runs if r.policy == policy)
            style = {"linewidth": 2.5, "color": "black"} if policy == "hermes" else {"linewidth": 1.2}
            ax.plot([100 * x for x, _ in points], [y for _, y in points], marker="o", label=policy, **style)
        if full:
            ax.axhline(full.accuracy(category), color="gray", linestyle="--", label="full")
        if category:
            ax.axhline(chance[category], color="red", linestyle=":", label="chance")
        ax.set_title(category or "all questions")
        ax.set_xlabel("budget (% of video tokens)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([12.5, 25, 50], ["12.5", "25", "50"])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    fig.legend(*axes[-1].get_legend_handles_labels(), fontsize=8, loc="center right")  # beside the panels
    fig.tight_layout(rect=(0, 0, 0.93, 1))  # room for the legend on the right, covering no panel
    common.save_figure(fig, path, tight=False)


def load_benchmark(path: str | Path) -> list[dict]:
    """Read a unified-schema benchmark file, checking the fields each entry needs."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HermesError(f"cannot read benchmark file {path}: {err}") from err
    if not isinstance(entries, list):
        raise HermesError(f"{path}: expected a JSON list of videos")
    base = Path(path).resolve().parent
    for i, entry in enumerate(entries):
        for key in ("video_id", "video_path", "conversations"):
            if key not in entry:
                raise HermesError(f"{path}: entry {i} has no {key!r}")
        for j, conv in enumerate(entry["conversations"]):
            for key in ("question", "answer", "end_time"):
                if key not in conv:
                    raise HermesError(f"{path}: entry {i} conversation {j} has no {key!r}")
        video = Path(entry["video_path"])
        entry["video_path"] = str(video if video.is_absolute() else base / video)
    return entries


def format_question(conv: dict) -> str:
    choices = conv.get("choices")
    if not choices:
        return conv["question"]
    letters = "ABCDEFGH"
    return conv["question"] + " " + " ".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))


def correct(conv: dict, text: str) -> bool:
    """Multiple choice: the letter or the choice text; open answers: the first word."""
    answer, said = str(conv["answer"]).strip().lower(), text.strip().lower()
    choices = [str(c).strip().lower() for c in conv.get("choices") or []]
    if choices:
        letters = "abcdefgh"
        idx = choices.index(answer) if answer in choices else letters.find(answer) if len(answer) == 1 else -1
        return idx >= 0 and (said[:1] == letters[idx] or said.startswith(choices[idx]))
    return grade(said, answer)


def benchmark(args: argparse.Namespace) -> None:
    entries = load_benchmark(args.benchmark)
    backbone = load_backbone(args.model, device=args.device, quantize=args.quantize)
    hits: dict[str, list[bool]] = defaultdict(list)
    for entry in tqdm(entries, desc="videos"):
        frames, times = read_video(entry["video_path"], args.fps)
        engine = load_engine(backbone, policy=args.policy, budget=args.budget, chunk_frames=CHUNK, fps=args.fps,
                             max_new_tokens=args.max_new_tokens, record_question_attention=False)
        asked = [(float(conv["end_time"]), conv) for conv in entry["conversations"]]
        for conv in common.replay(engine, frames, times, asked):
            text = engine.ask(format_question(conv)).text if engine.frames_seen else ""
            hits[conv.get("task", "all")].append(correct(conv, text))
    every = [h for v in hits.values() for h in v]
    rows = [[task, len(values), f"{np.mean(values):.3f}"] for task, values in sorted(hits.items())]
    rows.append(["all", len(every), f"{np.mean(every) if every else float('nan'):.3f}"])
    weights = "" if args.quantize == "none" else f", {args.quantize} weights"
    lines = [f"# {Path(args.benchmark).name}: `{args.model}`{weights}, policy {args.policy}, budget {args.budget}",
             "", *common.table(["task", "questions", "accuracy"], rows)]
    suffix = "" if args.quantize == "none" else f"-{args.quantize}"
    out = Path(args.out) if args.out else common.RESULTS / f"benchmark_{Path(args.benchmark).stem}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    common.write_markdown(out, lines, echo=True)


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, out=None, quick="full, fifo and hermes at 25% only", quantize=True)
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--replot", action="store_true", help="redraw accuracy.png from accuracy.csv")
    parser.add_argument("--policies", type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
                        help="ShapeStream mode: only these policies (comma-separated, e.g. full), written as "
                             "accuracy_<policies>")
    parser.add_argument("--benchmark", help="unified-schema JSON file: score it instead of ShapeStream")
    parser.add_argument("--policy", default="hermes", help="benchmark mode: policy")
    parser.add_argument("--budget", type=int, default=None, help="benchmark mode: tokens per layer")
    parser.add_argument("--fps", type=float, default=0.5, help="benchmark mode: sampling rate")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, help="result folder (benchmark mode: result file); default "
                                                 "analysis/results")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark(args)
        return
    args.out = args.out or common.RESULTS
    if args.replot:
        replot(args)
    else:
        shapestream(args)


if __name__ == "__main__":
    main()
