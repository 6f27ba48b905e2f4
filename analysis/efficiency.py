"""Efficiency study: time to first token and memory as the stream grows, HERMES vs the alternatives.

    python -m analysis.efficiency                                   # hermes-tiny, ~4 min on 2 cores
    python -m analysis.efficiency --model DIR --frames 16,64,256 --budget 4096
    python -m analysis.efficiency --quick                           # < 1 min, for tests and CI
    torchrun --nproc_per_node 8 -m analysis.efficiency              # methods shared out over 8 GPUs

One ShapeStream stream is ingested up to each checkpoint (frames seen); there each method
answers the same question `--repeats` times (median reported, one warm-up ask excluded):

- `hermes`: the HERMES cache at `--budget` tokens per layer, reused as it is: a question
  is prefilled on top of it and nothing else happens at question time;
- `full`: no eviction, every token cached (memory and attention grow with the stream);
- `reprefill`: nothing cached, the offline-model baseline: at question time encode every
  frame seen and prefill it, then the question;
- `retrieval`: ReKV-like retrieval at question time: every chunk's KV is kept (on the
  model's device here, so no host-to-device copy is timed, which favours it); the question
  is prefilled over the whole store in one pass in which each layer scores all its keys with
  the question's own queries and attends only to the prefix and its top `--budget` keys
  (hermes.attention.select_keys); decoding then runs on the retrieved tokens;
- `floor`: the question alone prefilled on a cache that holds `--budget` tokens, the least
  any method with that budget can spend.

Per cell: TTFT (question arrival -> first token), time per output token (one decode step
over the cache the answer is decoded on), KV bytes held (retrieval: the whole store plus the
fetched cache) and process RSS after the asks (one process runs every method, so RSS
includes what earlier methods left; KV bytes is the clean memory figure). Writes
efficiency.md / .csv / .png to --out (named efficiency-<model>[-cuda] for another model or on
a GPU, e.g. `--model random-ov-0.5b`, the real LLaVA-OV-0.5B architecture with random
weights, which times the same as trained ones); the last printed line is a JSON object of headline
ratios (ttft_ratio_1024_16, speedup_vs_reprefill_256, speedup_vs_retrieval_256,
ttft_over_floor, kv_growth_128_1024), each computed from the largest checkpoints present
when the named ones were not run. Under torchrun the methods run at the same time: give each
process its own GPU; on a shared CPU the timings are not comparable (a warning says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from analysis import common, shard
from hermes.attention import select_keys
from hermes.backbones import Backbone, load_backbone
from hermes.cache import PREFIX
from hermes.decode import run_text
from hermes.engine import StreamEngine, load_engine
from hermes.shapestream import generate
from hermes.telemetry import process_rss_mib

METHODS = ("hermes", "full", "reprefill", "retrieval", "floor")
QUESTION = "what is on the screen now ?"
FPS = 2.0
CHUNK = 16


@dataclass
class Cell:
    method: str
    frames: int
    ttft_ms: float
    tpot_ms: float
    kv_mib: float
    rss_mib: float
    cache_tokens: int  # video, newline and summary tokens the question is answered on (largest layer)


def timed_median(fn: Callable[[], float], repeats: int) -> float:
    """Median of `repeats` calls after one warm-up; `fn` returns the seconds it measured."""
    fn()
    return statistics.median(fn() for _ in range(repeats))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def decode_step_s(engine: StreamEngine) -> float:
    """Seconds of one decode step: a one-token forward over the engine's cache (nothing written;
    the output projection is left out, as in the committed figures)."""
    token = engine.backbone.question_ids(QUESTION)[-1:]
    sync()
    t0 = time.perf_counter()
    run_text(engine.backbone, engine.cache, token, write=False)
    sync()
    return time.perf_counter() - t0


def ask_ttft(engine: StreamEngine) -> float:
    return engine.ask(QUESTION, max_new_tokens=1).ttft_s


def fetch_top(store: StreamEngine, budget: int) -> StreamEngine:
    """The cache retrieval decodes on: a fork of `store` holding the prefix and the `budget`
    tokens of each layer the question attends to most. Used for retrieval's decode step and
    memory; its TTFT comes from `retrieval_ttft`."""
    seen = store.attend(QUESTION)
    indices = []
    for attention, kinds in zip(seen.attention, seen.kinds, strict=True):
        prefix = np.flatnonzero(kinds == PREFIX)
        rest = np.flatnonzero(kinds != PREFIX)
        top = rest[np.argsort(-attention[rest], kind="stable")[:budget]]
        indices.append(torch.from_numpy(np.sort(np.concatenate([prefix, top]))))
    return store.fork(indices)


def retrieval_ttft(store: StreamEngine, budget: int) -> float:
    """The question prefilled over the whole store in one pass, each layer attending only to
    the prefix and its `budget` best-scored keys (ReKV-like), up to the first token."""
    with select_keys(budget, always=store.prefix_tokens):
        return ask_ttft(store)


def reprefill_ttft(backbone: Backbone, frames: np.ndarray, times: np.ndarray, chunk: int) -> float:
    """Encode and prefill every frame seen, then the question: all of it at question time."""
    t0 = time.perf_counter()
    engine = common.feed(load_engine(backbone, policy="full", chunk_frames=chunk, record_question_attention=False),
                         frames, times)
    return time.perf_counter() - t0 + ask_ttft(engine)


def cell(method: str, n: int, engine: StreamEngine, ttft_s: float, extra_bytes: int = 0) -> Cell:
    tpot = timed_median(lambda: decode_step_s(engine), 15)
    return Cell(method, n, 1000 * ttft_s, 1000 * tpot,
                (engine.cache.nbytes() + extra_bytes) / 2**20, process_rss_mib(), max(engine.cache_lengths()))


def fits(backbone: Backbone, frames: int, chunk: int) -> bool:
    """Whether a cache without eviction holds `frames` frames (and a question) within the model's positions."""
    return backbone.tokens_for_frames(frames, chunk) + 1024 < backbone.max_positions


def run_method(method: str, backbone: Backbone, frames: np.ndarray, times: np.ndarray,
               args: argparse.Namespace) -> list[Cell]:
    """Every checkpoint of one method (checkpoints in increasing order)."""
    checkpoints = sorted(n for n in set(args.frames) | ({128} if max(args.frames) >= 128 else set())
                         if n <= len(frames))  # a checkpoint past the stream would be mislabelled
    if method == "floor":
        engine = load_engine(backbone, policy="fifo", budget=args.budget, chunk_frames=CHUNK,
                             record_question_attention=False)
        fill = -(-args.budget // backbone.tokens_per_frame) + CHUNK
        common.feed(engine, frames[:fill], times[:fill])
        measured = cell(method, 0, engine, timed_median(lambda: ask_ttft(engine), args.repeats))
        return [replace(measured, frames=n) for n in checkpoints]  # the same cache whatever the stream
    cells = []
    if method == "reprefill":
        for n in checkpoints:
            if not fits(backbone, n, CHUNK):
                break  # past the model's positions: no cell
            reps = max(1, min(args.repeats, int(64 * args.repeats / n)))  # long re-prefills: fewer repeats
            ttft = timed_median(lambda n=n: reprefill_ttft(backbone, frames[:n], times[:n], CHUNK), reps)
            engine = common.feed(load_engine(backbone, policy="full", chunk_frames=CHUNK), frames[:n], times[:n])
            cells.append(cell(method, n, engine, ttft))
        return cells
    policy, budget = ("hermes", args.budget) if method == "hermes" else ("full", None)
    engine = load_engine(backbone, policy=policy, budget=budget, chunk_frames=CHUNK, record_question_attention=False)
    reached = []
    for n in checkpoints:
        if n > len(frames) or (policy == "full" and not fits(backbone, n, CHUNK)):
            break  # past the stream, or past the model's positions: no cell
        reached.append(n)
    for n in common.replay(engine, frames, times, [(times[n - 1], n) for n in reached]):
        if method == "retrieval":
            ttft = timed_median(lambda: retrieval_ttft(engine, args.budget), args.repeats)
            cells.append(cell(method, n, fetch_top(engine, args.budget), ttft, extra_bytes=engine.cache.nbytes()))
        else:
            cells.append(cell(method, n, engine, timed_median(lambda: ask_ttft(engine), args.repeats)))
    return cells


def lookup(cells: list[Cell], method: str, frames: int, attr: str = "ttft_ms") -> float | None:
    hit = [getattr(c, attr) for c in cells if c.method == method and c.frames == frames]
    return hit[0] if hit else None


def headline(cells: list[Cell]) -> dict:
    """The ratios the issue names, from the checkpoints that were run."""
    ran = sorted({c.frames for c in cells if c.method == "hermes"})
    if not ran:
        return {}
    lo, hi = ran[0], ran[-1]
    mid = 256 if 256 in ran else ran[len(ran) // 2]
    k0 = 128 if 128 in ran else ran[0]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    kv0, kv1 = lookup(cells, "hermes", k0, "kv_mib"), lookup(cells, "hermes", hi, "kv_mib")
    return {
        "ttft_ratio_1024_16": ratio(lookup(cells, "hermes", hi), lookup(cells, "hermes", lo)),
        "speedup_vs_reprefill_256": ratio(lookup(cells, "reprefill", mid), lookup(cells, "hermes", mid)),
        "speedup_vs_retrieval_256": ratio(lookup(cells, "retrieval", mid), lookup(cells, "hermes", mid)),
        "ttft_over_floor": ratio(lookup(cells, "hermes", hi), lookup(cells, "floor", hi)),
        "kv_growth_128_1024": None if kv0 is None or kv1 is None else round((kv1 - kv0) / kv0, 4),
        "frames": [lo, mid, hi],
    }


def write(cells: list[Cell], args: argparse.Namespace, backbone: Backbone, heads: dict) -> None:
    stem = common.stem(args, "efficiency")
    names = [f.name for f in fields(Cell)]
    common.write_csv(f"{stem}.csv", [[f"{v:.4f}" if isinstance(v, float) else v for v in (getattr(c, f) for f in names)]
                                     for c in cells], names)
    others = [m for m in METHODS if m != "hermes"]
    ratios = []
    for n in sorted({c.frames for c in cells if c.method == "hermes"}):
        base = lookup(cells, "hermes", n)
        ratios.append([n, *[f"{lookup(cells, m, n) / base:.1f}x" if lookup(cells, m, n) is not None else "-"
                            for m in others]])
    lines = ["# Efficiency: TTFT and memory as the stream grows", "",
             f"`python -m analysis.efficiency{' --quick' if args.quick else ''}` with `{args.model}` "
             f"({backbone.n_layers} layers, {backbone.tokens_per_frame} tokens/frame) on "
             f"{common.machine(args.device)}. "
             f"Budget {args.budget} tokens per layer (hermes, retrieval top-k, floor); chunks of {CHUNK} frames; "
             f"TTFT = median of {args.repeats} asks after a warm-up (re-prefill: fewer at long streams).", "",
             *common.table(["method", "frames", "TTFT ms", "ms / output token", "KV MiB", "RSS MiB", "tokens / layer"],
                           [[c.method, c.frames, f"{c.ttft_ms:.2f}", f"{c.tpot_ms:.2f}", f"{c.kv_mib:.2f}",
                             f"{c.rss_mib:.0f}", c.cache_tokens] for c in cells]),
             "", "TTFT relative to hermes at the same number of frames:", "",
             *common.table(["frames", *others], ratios),
             "", "Headline:", "", "```json", json.dumps(heads, indent=1), "```"]
    common.write_markdown(f"{stem}.md", lines, echo=True)
    plot(cells, Path(f"{stem}.png"), f"{args.model}, budget {args.budget}/layer, {common.where(args.device)}")


def plot(cells: list[Cell], path: Path, title: str) -> None:
    """Paper-style: TTFT and KV memory against frames seen, one line per method."""
    fig, axes = common.pyplot().subplots(1, 3, figsize=(15, 4))
    for method in METHODS:
        mine = sorted((c for c in cells if c.method == method), key=lambda c: c.frames)
        if not mine:
            continue
        style = {"linewidth": 2.5, "color": "black"} if method == "hermes" else {"linewidth": 1.2}
        x = [c.frames for c in mine]
        for ax, attr in zip(axes, ("ttft_ms", "tpot_ms", "kv_mib"), strict=True):
            ax.plot(x, [getattr(c, attr) for c in mine], marker="o", label=method, **style)
    for ax, label in zip(axes, ("time to first token (ms)", "time per output token (ms)", "KV cache (MiB)"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames seen")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    common.save_figure(fig, path)


def run(args: argparse.Namespace) -> tuple[list[Cell], dict] | None:
    """Every method over one stream; methods shared out across torchrun processes. Returns
    (cells, headline) on rank 0, None elsewhere."""
    w = shard.world()
    if w.size > 1 and not args.device.startswith("cuda") and w.main:
        print(f"warning: {w.size} processes time their methods at the same time on shared CPU cores; "
              "the timings are not comparable with a single process's", file=sys.stderr)
    backbone = load_backbone(args.model, device=args.device)
    n = max(args.frames)
    stream = generate(7, seconds=n / FPS, fps=FPS)
    frames, times = stream.frames[:n], stream.timestamps[:n]
    results = [(i, run_method(m, backbone, frames, times, args)) for i, m in shard.mine(list(METHODS), w)]
    merged = shard.gather(results, w)
    shard.close(w)
    if merged is None:
        return None
    cells = [c for part in merged for c in part]
    heads = headline(cells)
    write(cells, args, backbone, heads)
    print(json.dumps(heads))
    return cells, heads


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, device=common.default_device(), quick="frames 16,64,256, 3 repeats")
    parser.add_argument("--frames", default="16,64,256,1024", help="checkpoints, comma separated")
    parser.add_argument("--budget", type=int, default=512, help="tokens per layer for hermes, retrieval's top-k "
                                                                "and the floor")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    args.frames = tuple(int(f) for f in args.frames.split(","))
    if args.quick:
        args.frames, args.repeats = tuple(f for f in args.frames if f <= 256) or (16, 64), min(args.repeats, 3)
    run(args)


if __name__ == "__main__":
    main()
