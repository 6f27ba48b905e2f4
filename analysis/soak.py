"""Soak test: a two-hour stream through the engine, memory and answers over time.

    python -m analysis.soak --hours 2 --fps 1      # the committed run (7,200 frames)
    python -m analysis.soak --quick                # a few minutes of stream, for tests

Streams one long ShapeStream world (rendered frame by frame, never held whole) through
hermes-tiny with the `hermes` policy and lazy re-indexing, asks the ShapeStream question
set every `--ask-every` seconds (ground truth from the event log), and records after
every chunk: process RSS, KV bytes, max position id and whether positions were re-indexed.
Writes analysis/results/soak.{md,csv,png} (or --out); the last printed line is JSON:
RSS growth after warm-up, KV bytes min/max after warm-up, re-index count, and accuracy
of the questions asked before and after the first re-index.
--quick also lowers the lazy re-index threshold so re-indexing happens within minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import hermes
from analysis import common
from hermes.backbones import load_backbone
from hermes.shapestream import grade, questions_at, render, world
from hermes.telemetry import process_rss_mib


def run(hours: float, fps: float, ask_every: float, budget: int, seed: int, reindex_after: int | None
        ) -> tuple[list[dict], list[dict]]:
    """reindex_after: re-index once positions pass this (default: the model's limit less the margin)."""
    seconds = hours * 3600
    objects, scenes = world(seed, seconds)
    backbone = load_backbone("hermes-tiny")
    extra = {"reindex_margin": backbone.max_positions - reindex_after} if reindex_after else {}
    engine = hermes.load_engine(backbone, policy="hermes", budget=budget, fps=fps, reindex="lazy", **extra)
    chunk = engine.config.chunk_frames
    rows, answers = [], []
    rng = np.random.default_rng([seed, 2])
    n = int(seconds * fps)
    next_ask = ask_every
    last_max = -1
    t0 = time.perf_counter()
    for start in tqdm(range(0, n, chunk), desc="soak", unit="chunk"):
        times = np.arange(start, min(start + chunk, n)) / fps
        frames = np.stack([render(objects, scenes, float(t), (64, 64)) for t in times])
        for event in engine.ingest(frames, times):
            reindexed = event.max_position < last_max
            last_max = event.max_position
            rows.append({"t_s": float(event.t_end), "wall_s": round(time.perf_counter() - t0, 2),
                         "rss_mib": round(process_rss_mib(), 1), "kv_bytes": event.kv_bytes,
                         "max_position": event.max_position, "reindexed": int(reindexed),
                         "tokens_per_layer": int(event.cache_lengths.max())})
        if engine.frames_seen and times[-1] + 1e-6 >= next_ask:
            t = float(times[-1])
            for q in questions_at(objects, t, rng):
                answer = engine.ask(q.question, max_new_tokens=2)
                answers.append({"t_s": t, "category": q.category, "question": q.question, "truth": q.answer,
                                "answer": answer.text,
                                "ttft_ms": round(answer.ttft_s * 1e3, 2),
                                "after_reindex": int(any(r["reindexed"] for r in rows))})
            next_ask += ask_every
    return rows, answers


def summarise(rows: list[dict], answers: list[dict], warmup_s: float) -> dict:
    warm = [r for r in rows if r["t_s"] >= warmup_s] or rows
    base = warm[0]["rss_mib"]
    def accuracy(after_reindex: int, category: str | None = None) -> tuple[int, float | None]:
        hits = [grade(a["answer"], a["truth"]) for a in answers if a["after_reindex"] == after_reindex
                and category in (None, a["category"])]
        return len(hits), (round(float(np.mean(hits)), 3) if hits else None)

    return {
        "stream_s": round(rows[-1]["t_s"], 1) if rows else 0.0,
        "chunks": len(rows),
        "rss_mib_after_warmup": base,
        "rss_mib_max": max(r["rss_mib"] for r in warm),
        "rss_growth_after_warmup": round((max(r["rss_mib"] for r in warm) - base) / base, 4),
        "kv_bytes_min_after_warmup": min(r["kv_bytes"] for r in warm),
        "kv_bytes_max_after_warmup": max(r["kv_bytes"] for r in warm),
        "reindex_events": sum(r["reindexed"] for r in rows),
        "questions_before_reindex": accuracy(0)[0],
        "accuracy_before_reindex": accuracy(0)[1],
        "questions_after_reindex": accuracy(1)[0],
        "accuracy_after_reindex": accuracy(1)[1],
        # "what is on the screen now" needs only recent frames: the cleanest before/after comparison
        "perception_accuracy_before_reindex": accuracy(0, "perception")[1],
        "perception_accuracy_after_reindex": accuracy(1, "perception")[1],
        "ttft_ms_median": round(float(np.median([a["ttft_ms"] for a in answers])), 2) if answers else None,
    }


def plot(rows: list[dict], path: Path) -> None:
    t = np.array([r["t_s"] for r in rows]) / 60
    fig, (ax1, ax2) = common.pyplot().subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(t, [r["rss_mib"] for r in rows], label="process RSS")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax2.plot(t, [r["kv_bytes"] / 2**20 for r in rows], label="KV cache", color="tab:orange")
    ax2.set_ylabel("KV cache (MiB)")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("stream time (min)")
    for r in rows:
        if r["reindexed"]:
            for ax in (ax1, ax2):
                ax.axvline(r["t_s"] / 60, color="grey", lw=0.8, ls="--")
    ax1.set_title("Memory over a long stream (dashed: positions re-indexed)")
    common.save_figure(fig, path)


def write(rows: list[dict], answers: list[dict], summary: dict, out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    common.write_csv(out / "soak.csv", rows)
    plot(rows, out / "soak.png")
    by_cat: dict[str, list[bool]] = {}
    for a in answers:
        by_cat.setdefault(a["category"], []).append(grade(a["answer"], a["truth"]))
    lines = [
        "# Soak: a long stream through hermes-tiny",
        "",
        f"`python -m analysis.soak --hours {args.hours} --fps {args.fps}`{' --quick' if args.quick else ''}: "
        f"{summary['stream_s']:.0f} s of one ShapeStream world at {args.fps} fps, policy hermes, budget {args.budget} "
        f"tokens per layer, lazy re-index; questions every {args.ask_every:.0f} s.",
        "",
        "![memory over time](soak.png)",
        "",
        *common.table(["measure", "value"], summary.items()),
        "",
        "Accuracy per category over the whole run: "
        + ", ".join(f"{c} {np.mean(v):.2f} ({len(v)})" for c, v in sorted(by_cat.items())),
    ]
    common.write_markdown(out / "soak.md", lines)


def main(argv: list[str] | None = None) -> dict:
    parser = common.parser(__doc__, model=None, device=None, quick="6 minutes of stream, early re-indexing")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--ask-every", type=float, default=300.0, help="seconds of stream between question sets")
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--warmup", type=float, default=600.0, help="stream seconds before RSS growth is measured")
    args = parser.parse_args(argv)
    reindex_after = None
    if args.quick:
        args.hours, args.ask_every, args.warmup = 0.1, 60.0, 120.0
        reindex_after = 2048
    rows, answers = run(args.hours, args.fps, args.ask_every, args.budget, args.seed, reindex_after)
    summary = summarise(rows, answers, args.warmup)
    write(rows, answers, summary, args.out, args)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
