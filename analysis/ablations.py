"""Ablations: which parts of HERMES matter, measured on held-out ShapeStream with hermes-tiny.

    python -m analysis.ablations                 # 24 streams, 2 budgets, ~15 min on 2 cores
    python -m analysis.ablations --quick         # 3 streams, one budget, for tests and CI
    python -m analysis.ablations --replot        # redraw ablations.png from ablations.csv (no model runs)
    torchrun --nproc_per_node 2 -m analysis.ablations

The `hermes` policy with one switch changed at a time (a parameter of the `hermes` policy or,
for re-indexing, an engine setting; the app exposes them all), against the default, at
budgets of 12.5% and 25% of a stream's video tokens:

- no smoothing: layer scores are not blended with the layer below (`smoothing=False`);
- no summary: deep layers drop evicted tokens instead of folding them into one (`summary=False`);
- single query: the global pseudo-query scores every tier (`query_mode="single"`);
- one tier: every layer is a middle layer, one recency/attention schedule (`tier_mode="uniform"`);
- eager re-index: positions compacted after every eviction instead of lazily (`reindex="eager"`);

and this project's earlier behaviours, each a named option, where the default follows the
released HERMES code (issue 17):

- last-middle depth: middle-layer p divided by (last_middle - first_middle), reaching 1
  (`depth_span="last_middle"`);
- no norm eps: min-max normalisation without the released code's 1e-6 (`norm_eps=0`);
- first-folded summary: the summary at the smallest folded position, the earlier summary folded
  in again, gaps where a layer's newest tokens went (`summary_mode="first_folded"`);
- chat pseudo-queries: pseudo-queries rendered like a question through the chat template
  (`pseudo_query_style="chat"`, an engine setting);
- all four earlier: the defaults before issue 17.

Accuracy per category with its binomial standard error; writes ablations.md / .csv / .png
to --out. Differences smaller than about two standard errors are noise at this size.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from analysis import common
from analysis.accuracy import CATEGORIES, Run, Setting, held_out_streams, sweep
from hermes.backbones import load_backbone

FRACTIONS = (0.125, 0.25)
Pairs = tuple[tuple[str, object], ...]
VARIANTS: tuple[tuple[str, Pairs, Pairs], ...] = (  # (name, hermes policy parameters, engine config)
    ("default", (), ()),
    ("no smoothing", (("smoothing", False),), ()),
    ("no summary", (("summary", False),), ()),
    ("single query", (("query_mode", "single"),), ()),
    ("one tier", (("tier_mode", "uniform"),), ()),
    ("eager re-index", (), (("reindex", "eager"),)),
    ("last-middle depth", (("depth_span", "last_middle"),), ()),
    ("no norm eps", (("norm_eps", 0.0),), ()),
    ("first-folded summary", (("summary_mode", "first_folded"),), ()),
    ("chat pseudo-queries", (), (("pseudo_query_style", "chat"),)),
    ("all four earlier", (("depth_span", "last_middle"), ("norm_eps", 0.0), ("summary_mode", "first_folded")),
     (("pseudo_query_style", "chat"),)),
)


def settings(fractions: tuple[float, ...]) -> list[Setting]:
    return [Setting(name, "hermes", f, params=params, config=config) for f in fractions
            for name, params, config in VARIANTS]


def stderr(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def answered(r: Run) -> int:
    return sum(len(v) for v in r.hits.values())


def write(runs: list[Run], args: argparse.Namespace, n_streams: int) -> None:
    stem = common.stem(args, "ablations")
    common.write_csv(f"{stem}.csv", [[r.policy, r.fraction, answered(r), f"{r.accuracy():.4f}",
                                      *[f"{r.accuracy(c):.4f}" for c in CATEGORIES]] for r in runs],
                     ["variant", "budget_fraction", "n", "all", *CATEGORIES])
    rows = []
    for fraction in sorted({r.fraction for r in runs}):
        mine = [r for r in runs if r.fraction == fraction]
        base = next(r for r in mine if r.policy == "default")
        rows += [[f"{100 * fraction:g}%", r.policy, f"{r.accuracy():.3f} ± {stderr(r.accuracy(), answered(r)):.3f}",
                  *[f"{r.accuracy(c):.3f}" for c in CATEGORIES], f"{r.accuracy() - base.accuracy():+.3f}"]
                 for r in mine]
    lines = ["# HERMES ablations on held-out ShapeStream", "",
             f"`python -m analysis.ablations{' --quick' if args.quick else ''}` with `{args.model}`, "
             f"{common.today()}: {n_streams} held-out streams (the accuracy study's), policy `hermes`, "
             "one switch changed per row (the last: all four earlier behaviours at once); the default follows the "
             "released HERMES code. Accuracy ± one binomial standard error.", "",
             *common.table(["budget", "variant", "all", *CATEGORIES, "vs default"], rows)]
    common.write_markdown(f"{stem}.md", lines, echo=True)
    plot(points(runs), Path(f"{stem}.png"))


def points(runs: list[Run]) -> list[tuple[str, float, float, int]]:
    """(variant, budget fraction, accuracy, questions answered) of each run: what the figure draws."""
    return [(r.policy, r.fraction, r.accuracy(), answered(r)) for r in runs]


def plot(rows: list[tuple[str, float, float, int]], path: Path) -> None:
    """Accuracy of each variant (rows as `points` gives them), a bar per budget with its standard
    error; the legend sits above the axes, clear of the bars."""
    plt = common.pyplot()
    fractions = sorted({f for _, f, _, _ in rows})
    names = [name for name, *_ in VARIANTS if any(row[0] == name for row in rows)]
    by_key = {(name, f): (acc, n) for name, f, acc, n in rows}
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.4 * len(names)))
    width = 0.8 / len(fractions)
    for k, fraction in enumerate(fractions):
        acc = [by_key[name, fraction][0] for name in names]
        err = [stderr(*by_key[name, fraction]) for name in names]
        ax.barh(np.arange(len(names)) + k * width, acc, height=width, xerr=err, label=f"budget {100 * fraction:g}%")
    ax.set_yticks(np.arange(len(names)) + width * (len(fractions) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy, all questions (± 1 s.e.)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(fractions), frameon=False)
    common.save_figure(fig, path)


def replot(args: argparse.Namespace) -> None:
    """Redraw ablations.png from ablations.csv (no model runs)."""
    stem = common.stem(args, "ablations")
    with open(f"{stem}.csv") as fh:
        rows = [(row["variant"], float(row["budget_fraction"]), float(row["all"]), int(row["n"]))
                for row in csv.DictReader(fh)]
    plot(rows, Path(f"{stem}.png"))


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, quick="3 streams, budget 25% only")
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--replot", action="store_true", help="redraw ablations.png from ablations.csv")
    args = parser.parse_args(argv)
    if args.replot:
        replot(args)
        return
    if args.quick:
        args.streams = min(args.streams, 3)
    fractions = (0.25,) if args.quick else FRACTIONS
    streams = held_out_streams(args.streams)
    runs = sweep(load_backbone(args.model, device=args.device), streams, settings(fractions), desc="ablations")
    if runs is not None:
        write(runs, args, len(streams))


if __name__ == "__main__":
    main()
