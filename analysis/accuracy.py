"""Accuracy vs memory budget, per policy and question category, on held-out ShapeStream.

    python analysis/accuracy.py                         # hermes-tiny, every policy, ~5 min
    python analysis/accuracy.py --streams 4 --quick     # smoke run
    python analysis/accuracy.py --benchmark bench.json --model DIR_OR_HUB_ID

ShapeStream mode: streams with seeds 0..N-1 (training uses seeds >= 1,000,000), 64-128
frames at 2 fps. Every policy runs at budgets of 12.5%, 25% and 50% of the stream's video
tokens, plus `full`. The engine ingests the stream chunk by chunk and answers each question
when the stream reaches its time (greedy, first word compared with the answer). Writes
analysis/results/accuracy.md, accuracy.csv and accuracy.png.

Benchmark mode reads the unified streaming-benchmark schema, a JSON list of
{video_id, video_path, conversations: [{question, answer, choices?, end_time, task}]}, and
scores one policy/budget on it with any model the engine loads (a real LLaVA-OV where the
hub or a local copy is available).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hermes.backbones import Backbone, load_backbone
from hermes.engine import load_engine
from hermes.errors import HermesError
from hermes.policies import available
from hermes.synthetic import CATEGORIES, COLOURS, SHAPES, Question, generate
from hermes.video import read_video

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.125, 0.25, 0.5)
FPS = 2.0
CHUNK = 16


def n_options(q: Question) -> int:
    """How many answers the question's template allows (for the chance level)."""
    if q.answer in ("yes", "no"):
        return 2
    if q.answer in COLOURS:
        return len(COLOURS)
    if q.answer in SHAPES:
        return len(SHAPES)
    if "change colour" in q.question:
        return 3  # zero, one, two
    if "on the screen now" in q.question:
        return len(SHAPES) + 1  # zero..four
    return len(SHAPES)  # one..four appeared so far


def first_word(text: str) -> str:
    words = text.strip().lower().replace(".", " ").split()
    return words[0] if words else ""


def template(question: str) -> str:
    """The question with its shape names replaced by X: one row per ShapeStream template."""
    return re.sub("|".join(SHAPES), "X", question)


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
               templates: dict | None = None) -> None:
    """Ingest one stream in chunks; answer each question when the stream reaches its time."""
    video_tokens = len(stream.frames) * backbone.tokens_per_frame + -(-len(stream.frames) // CHUNK)
    budget = None if fraction is None else max(8, int(fraction * video_tokens))
    engine = load_engine(backbone, policy=policy, budget=budget, chunk_frames=CHUNK, fps=FPS, max_new_tokens=2,
                         record_question_attention=False)
    by_time = defaultdict(list)
    for q in stream.questions:
        by_time[q.time].append(q)
    done = 0
    for t in sorted(by_time):
        upto = int(np.searchsorted(stream.timestamps, t, side="right"))
        engine.ingest(stream.frames[done:upto], stream.timestamps[done:upto])
        engine.flush()
        done = upto
        for q in by_time[t]:
            hits[q.category].append(first_word(engine.ask(q.question).text) == q.answer)
            if templates is not None:
                templates[template(q.question)].append(hits[q.category][-1])


def held_out_streams(n: int, size: tuple[int, int] = (64, 64)) -> list:
    rng = np.random.default_rng(12345)
    return [generate(seed, seconds=float(rng.choice([32, 40, 48, 56, 64])), fps=FPS, size=size) for seed in range(n)]


def chance_levels(questions: list[Question]) -> tuple[dict, dict]:
    chance = {c: float(np.mean([1 / n_options(q) for q in questions if q.category == c])) for c in CATEGORIES}
    return chance, {c: sum(q.category == c for q in questions) for c in CATEGORIES}


def replot(args: argparse.Namespace) -> None:
    """Redraw accuracy.png from accuracy.csv (no model runs)."""
    suffix = "_quick" if args.quick else ""
    with (RESULTS / f"accuracy{suffix}.csv").open() as fh:
        runs = [Run(row["policy"], None if row["policy"] == "full" else float(row["budget_fraction"]),
                    Scores({k: float(v) for k, v in row.items() if k not in ("policy", "budget_fraction")}))
                for row in csv.DictReader(fh)]
    questions = [q for s in held_out_streams(args.streams, size=(2, 2)) for q in s.questions]
    plot(runs, chance_levels(questions)[0], RESULTS / f"accuracy{suffix}.png")


def shapestream(args: argparse.Namespace) -> None:
    backbone = load_backbone(args.model)
    streams = held_out_streams(args.streams)
    questions = [q for s in streams for q in s.questions]
    configs = [("full", None)] + [(p, f) for p in available() if p != "full" for f in FRACTIONS]
    if args.quick:
        configs = [("full", None), ("fifo", 0.25), ("hermes", 0.25)]
    runs = []
    bar = tqdm(total=len(configs) * len(streams), desc="accuracy", unit="stream")
    for policy, fraction in configs:
        hits: dict[str, list[bool]] = defaultdict(list)
        templates: dict[str, list[bool]] = defaultdict(list)
        for stream in streams:
            run_stream(backbone, stream, policy, fraction, hits, templates)
            bar.update(1)
        runs.append(Run(policy, fraction, dict(hits), dict(templates)))
        bar.set_postfix(last=f"{policy}@{fraction}: {runs[-1].accuracy():.3f}")
    bar.close()
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
        by_template[template(q.question)].append(q)
    names = [r.policy if r.fraction is None else f"{r.policy} {100 * r.fraction:g}%" for r in shown]
    lines = ["", "Per question template (the weakest rows say what limits the model):", "",
             "| template | category | n | chance | " + " | ".join(names) + " |", "|" + "---|" * (4 + len(names))]
    for name, qs in by_template.items():
        chance = np.mean([1 / n_options(q) for q in qs])
        cells = [f"{np.mean(r.templates[name]):.3f}" if r.templates.get(name) else "-" for r in shown]
        lines.append(f"| {name} | {qs[0].category} | {len(qs)} | {chance:.3f} | " + " | ".join(cells) + " |")
    return lines


def write_results(runs: list[Run], chance: dict, counts: dict, args: argparse.Namespace, n_streams: int,
                  n_questions: int, questions: list[Question] | None = None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    with (RESULTS / f"accuracy{suffix}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["policy", "budget_fraction", "all", *CATEGORIES])
        for r in runs:
            writer.writerow([r.policy, r.fraction if r.fraction is not None else 1.0, f"{r.accuracy():.4f}",
                             *[f"{r.accuracy(c):.4f}" for c in CATEGORIES]])
    head = ["policy", "budget", "all", *CATEGORIES]
    lines = [
        "# Accuracy vs budget on held-out ShapeStream",
        "",
        f"`python analysis/accuracy.py{' --quick' if args.quick else ''}` with `{args.model}`, "
        f"{time.strftime('%Y-%m-%d')}: {n_streams} held-out streams (seeds 0-{n_streams - 1}; training uses "
        f"seeds >= 1,000,000), 64-128 frames at 2 fps, {n_questions} questions "
        f"({', '.join(f'{c} {counts[c]}' for c in CATEGORIES)}). Budget = share of the stream's video tokens "
        "kept per layer; chunks of 16 frames; answers are greedy, first word compared.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        "| chance | - | " + f"{np.average(list(chance.values()), weights=list(counts.values())):.3f} | "
        + " | ".join(f"{chance[c]:.3f}" for c in CATEGORIES) + " |",
    ]
    for r in runs:
        budget = "100% (full)" if r.fraction is None else f"{100 * r.fraction:g}%"
        lines.append(f"| {r.policy} | {budget} | {r.accuracy():.3f} | "
                     + " | ".join(f"{r.accuracy(c):.3f}" for c in CATEGORIES) + " |")
    lines += template_table(runs, questions or [])
    (RESULTS / f"accuracy{suffix}.md").write_text("\n".join(lines) + "\n")
    plot(runs, chance, RESULTS / f"accuracy{suffix}.png")
    print("\n".join(lines))


def plot(runs: list[Run], chance: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    return first_word(said) == first_word(answer)


def benchmark(args: argparse.Namespace) -> None:
    entries = load_benchmark(args.benchmark)
    backbone = load_backbone(args.model)
    hits: dict[str, list[bool]] = defaultdict(list)
    for entry in tqdm(entries, desc="videos"):
        frames, times = read_video(entry["video_path"], args.fps)
        engine = load_engine(backbone, policy=args.policy, budget=args.budget, chunk_frames=CHUNK, fps=args.fps,
                             max_new_tokens=args.max_new_tokens, record_question_attention=False)
        done = 0
        for conv in sorted(entry["conversations"], key=lambda c: float(c["end_time"])):
            upto = int(np.searchsorted(times, float(conv["end_time"]), side="right"))
            if upto > done:
                engine.ingest(frames[done:upto], times[done:upto])
                engine.flush()
                done = upto
            text = engine.ask(format_question(conv)).text if engine.frames_seen else ""
            hits[conv.get("task", "all")].append(correct(conv, text))
    lines = [f"# {Path(args.benchmark).name}: `{args.model}`, policy {args.policy}, budget {args.budget}", "",
             "| task | questions | accuracy |", "|---|---|---|"]
    for task, values in sorted(hits.items()):
        lines.append(f"| {task} | {len(values)} | {np.mean(values):.3f} |")
    every = [h for v in hits.values() for h in v]
    lines.append(f"| all | {len(every)} | {np.mean(every) if every else float('nan'):.3f} |")
    out = Path(args.out) if args.out else RESULTS / f"benchmark_{Path(args.benchmark).stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hermes-tiny")
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="full, fifo and hermes at 25% only")
    parser.add_argument("--replot", action="store_true", help="redraw accuracy.png from accuracy.csv")
    parser.add_argument("--benchmark", help="unified-schema JSON file: score it instead of ShapeStream")
    parser.add_argument("--policy", default="hermes", help="benchmark mode: policy")
    parser.add_argument("--budget", type=int, default=None, help="benchmark mode: tokens per layer")
    parser.add_argument("--fps", type=float, default=0.5, help="benchmark mode: sampling rate")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", help="benchmark mode: result file")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark(args)
    elif args.replot:
        replot(args)
    else:
        shapestream(args)


if __name__ == "__main__":
    main()
