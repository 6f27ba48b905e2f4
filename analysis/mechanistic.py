"""Mechanistic study: where does each layer's question attention fall in a FIFO cache?

    python -m analysis.mechanistic                          # hermes-tiny on ShapeStream, ~1 min
    python -m analysis.mechanistic --model DIR --budget 1024 --questions 300
    python -m analysis.mechanistic --quick                  # a few questions, for tests and CI

The paper's first picture (HERMES, section 3), measured by hermes.studies.mechanistic (which
the app's Study tab runs on the session's stream): held-out ShapeStream streams go through a
FIFO cache of `budget` tokens per layer; at each question, once the cache is full, the
question's attention over the cached video tokens is summed per layer in bins of distance
from the newest video token, and averaged over N questions into a layer x distance heatmap
(log colour scale) with per layer `video_mass`, `recent_share`, `entropy_bits` and
`anchor_frames` (defined there).

Any model the engine loads works the same way (`--model` a local directory or hub id);
ShapeStream streams are rendered for it and their questions asked. Writes
mechanistic.png, mechanistic.csv (per-layer summary), mechanistic.npz (heatmap, bin edges,
per-question profiles) and mechanistic.md (table and a plain-language reading) to --out
(named mechanistic-<model>[-cuda] for another model or on a GPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from analysis import common
from hermes.backbones import load_backbone
from hermes.shapestream import generate
from hermes.studies.mechanistic import (
    RECENT,
    TOP_TOKENS,
    Study,
    distance_edges,
    hermes_tiers,
    reading,
    study_stream,
    summarise,
)

FPS = 2.0
SEEDS0 = 300  # held-out ShapeStream seeds for this study (training uses >= 1,000,000)
CHUNK = 16


def run(args: argparse.Namespace) -> Study:
    """Held-out ShapeStream streams until `args.questions` questions are measured."""
    backbone = load_backbone(args.model, device=args.device)
    tiers = hermes_tiers(backbone.n_layers)
    profiles: list[np.ndarray] = []
    summaries: list[np.ndarray] = []
    bar = tqdm(total=args.questions, desc="mechanistic", unit="question")
    seed = SEEDS0
    while len(profiles) < args.questions and seed < SEEDS0 + 10 * args.questions:
        stream = generate(seed, seconds=args.seconds, fps=FPS)
        seed += 1
        asked = [(q.time, q.question) for q in stream.questions]
        frames = zip(stream.frames, stream.timestamps, strict=True)
        p, s = study_stream(backbone, frames, asked, args.budget, args.bins, CHUNK,
                            limit=args.questions - len(profiles))
        profiles += p
        summaries += s
        bar.update(len(p))
    bar.close()
    return summarise(profiles, summaries, distance_edges(args.budget, args.bins), backbone.tokens_per_frame, tiers)


def write(study: Study, args: argparse.Namespace) -> None:
    stem = common.stem(args, "mechanistic")
    np.savez_compressed(f"{stem}.npz", heatmap=study.heatmap, edges=study.edges, profiles=study.profiles,
                        video_mass=study.video_mass, recent_share=study.recent_share,
                        entropy_bits=study.entropy_bits, anchor_frames=study.anchor_frames)
    head = ["layer", "tier", "video_mass", "recent_share", "entropy_bits", "anchor_frames"]
    rows = [[i, study.tiers[i] if study.tiers else "", f"{study.video_mass[i]:.4f}", f"{study.recent_share[i]:.4f}",
             f"{study.entropy_bits[i]:.3f}", f"{study.anchor_frames[i]:.2f}"] for i in range(len(study.heatmap))]
    common.write_csv(f"{stem}.csv", rows, head)
    lines = ["# Where each layer's question attention falls (FIFO cache)", "",
             f"`python -m analysis.mechanistic{' --quick' if args.quick else ''}` with `{args.model}`, budget "
             f"{args.budget} tokens per layer, {study.n_questions} questions on held-out ShapeStream streams of "
             f"{args.seconds:g} s at {FPS:g} fps.", "", f"![heatmap]({stem.name}.png)", "",
             reading(study), "", *common.table(head, rows)]
    common.write_markdown(f"{stem}.md", lines, echo=True)
    plot(study, Path(f"{stem}.png"), title=f"{args.model}, FIFO {args.budget} tokens/layer, "
                                           f"{study.n_questions} questions")


def plot(study: Study, path: Path, title: str = "") -> None:
    """The paper-style figure: log-scale heatmap layer x distance, and the per-layer summary."""
    from matplotlib.colors import LogNorm

    plt = common.pyplot()
    n_layers = len(study.heatmap)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.35 * n_layers + 2.2), gridspec_kw={"width_ratios": [3, 1.3]})
    floor = max(float(study.heatmap[study.heatmap > 0].min(initial=1e-6)), 1e-6)
    frames_back = study.edges / max(1, study.tokens_per_frame)
    im = ax.pcolormesh(frames_back, np.arange(n_layers + 1) - 0.5, np.maximum(study.heatmap, floor),
                       norm=LogNorm(vmin=floor, vmax=max(floor * 10, float(study.heatmap.max()))), cmap="magma")
    ax.set_xlabel("distance from the newest video token (frames back)")
    ax.set_ylabel("decoder layer (0 = shallowest)")
    ax.set_title(title or "question attention by distance")
    fig.colorbar(im, ax=ax, label="attention mass per bin (log)")
    layers = np.arange(n_layers)
    ax2.plot(study.recent_share, layers, marker="o", label="share on newest 10%")
    ax2.plot(study.anchor_frames / TOP_TOKENS, layers, marker="s", label=f"anchor frames / {TOP_TOKENS}")
    ax2.plot(study.video_mass, layers, marker="^", label="mass on video")
    ax2.axvline(RECENT, color="gray", linestyle=":", linewidth=1)
    ax2.set_ylim(ax.get_ylim())
    ax2.set_xlim(0, 1.02)
    ax2.set_xlabel("per layer")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax2.grid(alpha=0.3)
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, quick="24 questions on 40-s streams (< 1 min)")
    parser.add_argument("--budget", type=int, default=512, help="FIFO cache size, tokens per layer (video and "
                                                                "the per-chunk newline tokens)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--bins", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=64.0, help="ShapeStream stream length")
    args = parser.parse_args(argv)
    if args.quick:
        args.questions, args.seconds = min(args.questions, 24), min(args.seconds, 40.0)
    write(run(args), args)


if __name__ == "__main__":
    main()
