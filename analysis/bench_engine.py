"""Engine benchmark: ingest throughput and time to first token as the stream grows.

    python -m analysis.bench_engine            # ~2 min on a 2-core CPU
    python -m analysis.bench_engine --quick    # smaller run, for a smoke check

For random-tiny it streams 1024 frames with `fifo` at a fixed budget, asking the same
question after 16, 64, 256 and 1024 frames; TTFT is the median of several asks. The
headline budget is 256 tokens per layer (one 16-frame chunk), so the cache is already full
at the first checkpoint and the ratio isolates stream length; a 1024-token fifo run and a
`full` run (no eviction) are reported beside it. One more row streams a few frames through the real
LLaVA-OneVision-0.5B architecture (random weights, built offline from its config).
Writes analysis/results/bench_engine.md (--quick: bench_engine_quick.md, or to --out); the
last printed line is a JSON object with the headline figures (`ttft_ratio_1024_16`: fifo
TTFT after 1024 frames / after 16).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from analysis import common
from hermes.backbones import Backbone, load_backbone
from hermes.engine import load_engine
from hermes.examples import bouncing_shapes

QUESTION = "what is on the screen now ?"
CHECKPOINTS = (16, 64, 256, 1024)


def median_ttft(engine, repeats: int) -> float:
    engine.ask(QUESTION, max_new_tokens=1)  # warm-up after new frames
    return statistics.median(engine.ask(QUESTION, max_new_tokens=4).ttft_s for _ in range(repeats))


def stream_run(backbone: Backbone, policy: str, budget: int | None, frames: np.ndarray, checkpoints: tuple[int, ...],
               repeats: int) -> dict:
    """Ingest `frames` in order; at each checkpoint record TTFT, cache size, ingest rate so far."""
    engine = load_engine(backbone, policy=policy, budget=budget, chunk_frames=16, fps=2.0)
    engine.ask(QUESTION, max_new_tokens=2)  # warm-up
    rows, ingest_s, done = [], 0.0, 0
    for stop in checkpoints:
        t0 = time.perf_counter()
        engine.ingest(frames[done:stop], timestamps=np.arange(done, stop) / 2.0)
        engine.flush()
        ingest_s += time.perf_counter() - t0
        done = stop
        rows.append({
            "frames": stop,
            "ttft_ms": 1000 * median_ttft(engine, repeats),
            "cache_tokens_per_layer": max(engine.cache_lengths()),
            "kv_mib": engine.cache.nbytes() / 2**20,
            "ingest_fps": stop / ingest_s,
        })
    return {"policy": policy, "budget": budget, "rows": rows}


def real_arch_row(n_frames: int) -> dict:
    """A few frames through the real 0.5B architecture (random weights)."""
    t0 = time.perf_counter()
    backbone = load_backbone("random-ov-0.5b")
    build_s = time.perf_counter() - t0
    engine = load_engine(backbone, policy="fifo", budget=4096, chunk_frames=n_frames)
    frames = bouncing_shapes(seconds=n_frames, fps=1, size=(384, 384))
    t0 = time.perf_counter()
    event = engine.ingest(frames)[-1]
    ingest_s = time.perf_counter() - t0
    ttft = median_ttft(engine, 3)
    return {
        "model": "random-ov-0.5b",
        "frames": n_frames,
        "tokens_per_frame": backbone.tokens_per_frame,
        "build_s": build_s,
        "s_per_frame": ingest_s / n_frames,
        "encode_s_per_frame": event.timings["encode"] / n_frames,
        "ttft_ms": 1000 * ttft,
        "cache_tokens_per_layer": max(engine.cache_lengths()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def markdown(runs: list[dict], real: dict | None, headline: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        "# Engine benchmark",
        "",
        f"`python -m analysis.bench_engine{' --quick' if args.quick else ''}` on {common.machine()}. "
        "Model `random-tiny` (12 layers, 16 tokens/frame, fp32), chunks of 16 frames, TTFT = median of "
        f"{args.repeats} asks of the same question (question prefill + first greedy token).",
        "",
        *common.table(["policy", "budget", "frames", "cache tokens / layer", "KV MiB", "TTFT ms", "ingest frames/s"],
                      [[run["policy"], run["budget"] or "-", r["frames"], r["cache_tokens_per_layer"],
                        f"{r['kv_mib']:.2f}", f"{r['ttft_ms']:.2f}", f"{r['ingest_fps']:.0f}"]
                       for run in runs for r in run["rows"]]),
    ]
    if real:
        lines += [
            "",
            "## Real LLaVA-OneVision-0.5B architecture (random weights, built offline)",
            "",
            *common.table(["frames", "tokens/frame", "s/frame (ingest)", "vision encode s/frame", "TTFT ms",
                           "cache tokens / layer", "peak RSS GiB"],
                          [[real["frames"], real["tokens_per_frame"], f"{real['s_per_frame']:.2f}",
                            f"{real['encode_s_per_frame']:.2f}", f"{real['ttft_ms']:.0f}",
                            real["cache_tokens_per_layer"], f"{real['peak_rss_gib']:.1f}"]]),
        ]
    return [*lines, "", "Headline:", "", "```json", json.dumps(headline, indent=1), "```"]


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, model=None, device=None, quick="256 frames, no 0.5B row")
    parser.add_argument("--budget", type=int, default=256, help="headline fifo budget (tokens per layer)")
    parser.add_argument("--big-budget", type=int, default=1024, help="second fifo budget for comparison")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--real-frames", type=int, default=2, help="frames through the 0.5B architecture (0: skip)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    checkpoints = CHECKPOINTS[:3] if args.quick else CHECKPOINTS
    backbone = load_backbone("random-tiny")
    frames = bouncing_shapes(seconds=checkpoints[-1] / 10, fps=10, size=(64, 64))
    runs = [stream_run(backbone, "fifo", args.budget, frames, checkpoints, args.repeats),
            stream_run(backbone, "fifo", args.big_budget, frames, checkpoints, args.repeats),
            stream_run(backbone, "full", None, frames, checkpoints, args.repeats)]
    for run in runs:
        for r in run["rows"]:
            print(f"{run['policy']:5s} budget {run['budget'] or '-':>5} frames {r['frames']:5d}  "
                  f"cache {r['cache_tokens_per_layer']:6d}  "
                  f"TTFT {r['ttft_ms']:7.2f} ms  ingest {r['ingest_fps']:6.0f} frames/s")
    real = real_arch_row(args.real_frames) if args.real_frames and not args.quick else None
    if real:
        print(f"random-ov-0.5b: {real['s_per_frame']:.2f} s/frame, TTFT {real['ttft_ms']:.0f} ms, "
              f"peak RSS {real['peak_rss_gib']:.1f} GiB")
    fifo, big, full = ({r["frames"]: r for r in run["rows"]} for run in runs)
    last = checkpoints[-1]
    headline = {
        "model": "random-tiny",
        "budget": args.budget,
        f"ttft_ratio_{last}_16": round(fifo[last]["ttft_ms"] / fifo[16]["ttft_ms"], 3),
        "fifo_ttft_ms": {str(k): round(v["ttft_ms"], 2) for k, v in fifo.items()},
        f"ttft_ratio_{last}_16_budget_{args.big_budget}": round(big[last]["ttft_ms"] / big[16]["ttft_ms"], 3),
        "full_ttft_ms": {str(k): round(v["ttft_ms"], 2) for k, v in full.items()},
        "fifo_ingest_fps": round(fifo[last]["ingest_fps"], 1),
        "fifo_kv_mib_flat": len({round(v["kv_mib"], 6) for k, v in fifo.items() if k >= 64}) == 1,
    }
    if real:
        headline.update({"ov05b_s_per_frame": round(real["s_per_frame"], 2), "ov05b_ttft_ms": round(real["ttft_ms"]),
                         "ov05b_peak_rss_gib": round(real["peak_rss_gib"], 2)})
    common.write_markdown(f"{common.stem(args, 'bench_engine')}.md", markdown(runs, real, headline, args))
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
