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
import csv
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from analysis import result_name, shard
from hermes.attention import select_keys
from hermes.backbones import Backbone, load_backbone
from hermes.cache import PREFIX, TEXT
from hermes.engine import StreamEngine, load_engine
from hermes.synthetic import generate
from hermes.telemetry import process_rss_mib

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("hermes", "full", "reprefill", "retrieval", "floor")
QUESTION = "what is on the screen now ?"
FPS = 2.0


@dataclass
class EffConfig:
    model: str = "hermes-tiny"
    frames: tuple[int, ...] = (16, 64, 256, 1024)
    budget: int = 512  # tokens per layer for hermes, retrieval's top-k and the floor
    repeats: int = 7
    chunk_frames: int = 16
    out: Path = RESULTS
    quick: bool = False


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
    """Seconds of one decode step: a one-token forward over the engine's cache (nothing written)."""
    token = engine.backbone.embed_ids(engine.backbone.question_ids(QUESTION)[-1:])
    sync()
    t0 = time.perf_counter()
    engine._forward(token, torch.tensor([engine.next_position]), torch.tensor([-1]), torch.tensor([TEXT]),
                    write=False)
    sync()
    return time.perf_counter() - t0


def ask_ttft(engine: StreamEngine) -> float:
    return engine.ask(QUESTION, max_new_tokens=1).ttft_s


def fetch_top(store: StreamEngine, budget: int, engine: StreamEngine) -> StreamEngine:
    """The cache retrieval decodes on: the prefix and the `budget` tokens of each layer of
    `store` the question attends to most, copied into `engine` (a scratch engine built once).
    Used for retrieval's decode step and memory; its TTFT comes from `retrieval_ttft`."""
    seen = store.attend(QUESTION)
    for i, (src, dst) in enumerate(zip(store.cache.layers, engine.cache.layers, strict=True)):
        prefix = np.flatnonzero(seen.kinds[i] == PREFIX)
        rest = np.flatnonzero(seen.kinds[i] != PREFIX)
        top = rest[np.argsort(-seen.attention[i][rest], kind="stable")[:budget]]
        index = torch.from_numpy(np.sort(np.concatenate([prefix, top])))
        dst.set_tokens(src.keys[..., index, :].clone(), src.values[..., index, :].clone(), src.meta(index))
    engine.next_position = store.next_position
    engine.frames_seen = store.frames_seen
    return engine


def retrieval_ttft(store: StreamEngine, budget: int) -> float:
    """The question prefilled over the whole store in one pass, each layer attending only to
    the prefix and its `budget` best-scored keys (ReKV-like), up to the first token."""
    with select_keys(budget, always=store.prefix_tokens):
        return ask_ttft(store)


def reprefill_ttft(backbone: Backbone, frames: np.ndarray, times: np.ndarray, chunk: int) -> float:
    """Encode and prefill every frame seen, then the question: all of it at question time."""
    t0 = time.perf_counter()
    engine = load_engine(backbone, policy="full", chunk_frames=chunk, record_question_attention=False)
    engine.ingest(frames, times)
    engine.flush()
    return time.perf_counter() - t0 + ask_ttft(engine)


def cell(method: str, n: int, engine: StreamEngine, ttft_s: float, extra_bytes: int = 0) -> Cell:
    tpot = timed_median(lambda: decode_step_s(engine), 15)
    return Cell(method, n, 1000 * ttft_s, 1000 * tpot,
                (engine.cache.nbytes() + extra_bytes) / 2**20, process_rss_mib(), max(engine.cache_lengths()))


def fits(backbone: Backbone, frames: int, chunk: int) -> bool:
    """Whether a cache without eviction holds `frames` frames (and a question) within the model's positions."""
    tokens = frames * backbone.tokens_per_frame + -(-frames // chunk)  # + one newline per chunk
    return tokens + 1024 < backbone.max_positions


def run_method(method: str, backbone: Backbone, frames: np.ndarray, times: np.ndarray, cfg: EffConfig) -> list[Cell]:
    """Every checkpoint of one method (checkpoints in increasing order)."""
    checkpoints = sorted(set(cfg.frames) | ({128} if max(cfg.frames) >= 128 else set()))
    cells = []
    if method == "floor":
        engine = load_engine(backbone, policy="fifo", budget=cfg.budget, chunk_frames=cfg.chunk_frames,
                             record_question_attention=False)
        fill = -(-cfg.budget // backbone.tokens_per_frame) + cfg.chunk_frames
        engine.ingest(frames[:fill], times[:fill])
        engine.flush()
        measured = cell(method, 0, engine, timed_median(lambda: ask_ttft(engine), cfg.repeats))
        return [replace(measured, frames=n) for n in checkpoints]  # the same cache whatever the stream
    if method == "reprefill":
        for n in checkpoints:
            if not fits(backbone, n, cfg.chunk_frames):
                break  # past the model's positions: no cell
            reps = max(1, min(cfg.repeats, int(64 * cfg.repeats / n)))  # long re-prefills: fewer repeats
            ttft = timed_median(lambda n=n: reprefill_ttft(backbone, frames[:n], times[:n], cfg.chunk_frames), reps)
            engine = load_engine(backbone, policy="full", chunk_frames=cfg.chunk_frames)
            engine.ingest(frames[:n], times[:n])
            engine.flush()
            cells.append(cell(method, n, engine, ttft))
        return cells
    policy, budget = ("hermes", cfg.budget) if method == "hermes" else ("full", None)
    engine = load_engine(backbone, policy=policy, budget=budget, chunk_frames=cfg.chunk_frames,
                         record_question_attention=False)
    scratch = load_engine(backbone, policy="full", record_question_attention=False)  # retrieval answers here
    done = 0
    for n in checkpoints:
        if n > len(frames):
            break
        if policy == "full" and not fits(backbone, n, cfg.chunk_frames):
            break  # past the model's positions: no cell
        engine.ingest(frames[done:n], times[done:n])
        engine.flush()
        done = n
        if method == "retrieval":
            ttft = timed_median(lambda: retrieval_ttft(engine, cfg.budget), cfg.repeats)
            cells.append(cell(method, n, fetch_top(engine, cfg.budget, scratch), ttft,
                              extra_bytes=engine.cache.nbytes()))
        else:
            cells.append(cell(method, n, engine, timed_median(lambda: ask_ttft(engine), cfg.repeats)))
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


def write(cells: list[Cell], cfg: EffConfig, backbone: Backbone, heads: dict) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / result_name("efficiency", cfg.model, cfg.quick)
    fields = list(Cell.__dataclass_fields__)
    with open(f"{stem}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        writer.writerows([[getattr(c, f) if not isinstance(getattr(c, f), float) else f"{getattr(c, f):.4f}"
                           for f in fields] for c in cells])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    lines = ["# Efficiency: TTFT and memory as the stream grows", "",
             f"`python -m analysis.efficiency{' --quick' if cfg.quick else ''}` with `{cfg.model}` "
             f"({backbone.n_layers} layers, {backbone.tokens_per_frame} tokens/frame) on {device}, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}. Budget {cfg.budget} tokens per layer (hermes, "
             f"retrieval top-k, floor); chunks of {cfg.chunk_frames} frames; TTFT = median of {cfg.repeats} asks "
             "after a warm-up (re-prefill: fewer at long streams).", "",
             "| method | frames | TTFT ms | ms / output token | KV MiB | RSS MiB | tokens / layer |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c.method} | {c.frames} | {c.ttft_ms:.2f} | {c.tpot_ms:.2f} | {c.kv_mib:.2f} | "
                     f"{c.rss_mib:.0f} | {c.cache_tokens} |")
    ran = sorted({c.frames for c in cells if c.method == "hermes"})
    lines += ["", "TTFT relative to hermes at the same number of frames:", "",
              "| frames | " + " | ".join(m for m in METHODS if m != "hermes") + " |", "|---" * len(METHODS) + "|"]
    for n in ran:
        base = lookup(cells, "hermes", n)
        row = [f"{lookup(cells, m, n) / base:.1f}x" if lookup(cells, m, n) is not None else "-"
               for m in METHODS if m != "hermes"]
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    lines += ["", "Headline:", "", "```json", json.dumps(heads, indent=1), "```"]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(cells, Path(f"{stem}.png"), f"{cfg.model}, budget {cfg.budget}/layer, {device}")
    print("\n".join(lines))


def plot(cells: list[Cell], path: Path, title: str) -> None:
    """Paper-style: TTFT and KV memory against frames seen, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: EffConfig) -> tuple[list[Cell], dict] | None:
    """Every method over one stream; methods shared out across torchrun processes. Returns
    (cells, headline) on rank 0, None elsewhere."""
    w = shard.world()
    if w.size > 1 and not torch.cuda.is_available() and w.main:
        print(f"warning: {w.size} processes time their methods at the same time on shared CPU cores; "
              "the timings are not comparable with a single process's", file=sys.stderr)
    backbone = load_backbone(cfg.model, device="cuda" if torch.cuda.is_available() else "cpu")
    n = max(cfg.frames)
    stream = generate(7, seconds=n / FPS, fps=FPS)
    frames, times = stream.frames[:n], stream.timestamps[:n]
    results = [(i, run_method(m, backbone, frames, times, cfg)) for i, m in shard.mine(list(METHODS), w)]
    merged = shard.gather(results, w)
    shard.close(w)
    if merged is None:
        return None
    cells = [c for part in merged for c in part]
    heads = headline(cells)
    write(cells, cfg, backbone, heads)
    print(json.dumps(heads))
    return cells, heads


def main(argv: list[str] | None = None) -> None:
    d = EffConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--frames", default=",".join(map(str, d.frames)), help="checkpoints, comma separated")
    parser.add_argument("--budget", type=int, default=d.budget)
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--out", type=Path, default=d.out)
    parser.add_argument("--quick", action="store_true", help="frames 16,64,256, 3 repeats")
    args = parser.parse_args(argv)
    frames = tuple(int(f) for f in args.frames.split(","))
    cfg = EffConfig(args.model, frames, args.budget, args.repeats, out=args.out, quick=args.quick)
    if cfg.quick:
        cfg.frames, cfg.repeats = tuple(f for f in cfg.frames if f <= 256) or (16, 64), min(cfg.repeats, 3)
    run(cfg)


if __name__ == "__main__":
    main()
