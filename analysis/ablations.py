"""Ablations: which parts of HERMES matter, measured on held-out ShapeStream with hermes-tiny.

    python -m analysis.ablations                 # 24 streams, 2 budgets, ~5 min on 2 cores
    python -m analysis.ablations --quick         # 3 streams, one budget, for tests and CI
    torchrun --nproc_per_node 2 -m analysis.ablations

The `hermes` policy with one switch changed at a time (each a HermesConfig field the app
also exposes), against the default, at budgets of 12.5% and 25% of a stream's video tokens:

- no smoothing: layer scores are not blended with the layer below (`smoothing=False`);
- no summary: deep layers drop evicted tokens instead of folding them into one (`summary=False`);
- single query: the global pseudo-query scores every tier (`query_mode="single"`);
- one tier: every layer is a middle layer, one recency/attention schedule (`tier_mode="uniform"`);
- eager re-index: positions compacted after every eviction instead of lazily (`reindex="eager"`).

Accuracy per category with its binomial standard error; writes ablations.md / .csv / .png
to --out. Differences smaller than about two standard errors are noise at this size.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from analysis import result_name
from analysis.accuracy import CATEGORIES, Run, Setting, held_out_streams, sweep
from hermes.backbones import load_backbone

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.125, 0.25)
VARIANTS: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = (
    ("default", ()),
    ("no smoothing", (("smoothing", False),)),
    ("no summary", (("summary", False),)),
    ("single query", (("query_mode", "single"),)),
    ("one tier", (("tier_mode", "uniform"),)),
    ("eager re-index", (("reindex", "eager"),)),
)


def settings(fractions: tuple[float, ...]) -> list[Setting]:
    return [Setting(name, "hermes", f, config) for f in fractions for name, config in VARIANTS]


def stderr(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def write(runs: list[Run], args: argparse.Namespace, n_streams: int) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / result_name("ablations", args.model, args.quick)
    with open(f"{stem}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["variant", "budget_fraction", "n", "all", *CATEGORIES])
        for r in runs:
            n = sum(len(v) for v in r.hits.values())
            cats = [f"{r.accuracy(c):.4f}" for c in CATEGORIES]
            writer.writerow([r.policy, r.fraction, n, f"{r.accuracy():.4f}", *cats])
    lines = ["# HERMES ablations on held-out ShapeStream", "",
             f"`python -m analysis.ablations{' --quick' if args.quick else ''}` with `{args.model}`, "
             f"{time.strftime('%Y-%m-%d')}: {n_streams} held-out streams (the accuracy study's), policy `hermes`, "
             "one switch changed per row. Accuracy ± one binomial standard error.", "",
             "| budget | variant | all | " + " | ".join(CATEGORIES) + " | vs default |",
             "|---" * (4 + len(CATEGORIES)) + "|"]
    for fraction in sorted({r.fraction for r in runs}):
        rows = [r for r in runs if r.fraction == fraction]
        base = next(r for r in rows if r.policy == "default")
        for r in rows:
            n = sum(len(v) for v in r.hits.values())
            cats = [f"{r.accuracy(c):.3f}" for c in CATEGORIES]
            delta = r.accuracy() - base.accuracy()
            lines.append(f"| {100 * fraction:g}% | {r.policy} | {r.accuracy():.3f} ± {stderr(r.accuracy(), n):.3f} | "
                         + " | ".join(cats) + f" | {delta:+.3f} |")
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(runs, Path(f"{stem}.png"))
    print("\n".join(lines))


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r.fraction for r in runs})
    names = [name for name, _ in VARIANTS if any(r.policy == name for r in runs)]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(fractions)
    for k, fraction in enumerate(fractions):
        acc, err = [], []
        for name in names:
            r = next(r for r in runs if r.policy == name and r.fraction == fraction)
            n = sum(len(v) for v in r.hits.values())
            acc.append(r.accuracy())
            err.append(stderr(r.accuracy(), n))
        ax.barh(np.arange(len(names)) + k * width, acc, height=width, xerr=err, label=f"budget {100 * fraction:g}%")
    ax.set_yticks(np.arange(len(names)) + width * (len(fractions) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy, all questions (± 1 s.e.)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hermes-tiny")
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="3 streams, budget 25% only")
    args = parser.parse_args(argv)
    if args.quick:
        args.streams = min(args.streams, 3)
    fractions = (0.25,) if args.quick else FRACTIONS
    streams = held_out_streams(args.streams)
    runs = sweep(load_backbone(args.model), streams, settings(fractions), desc="ablations")
    if runs is not None:
        write(runs, args, len(streams))


if __name__ == "__main__":
    main()
