"""GPU readiness: the real LLaVA-OneVision-0.5B architecture on a lent accelerator, in one short run.

    python -m analysis.gpu_check                 # on a GPU: random-ov-0.5b, bf16, about 5 minutes on one H200
    python -m analysis.gpu_check --quick         # anywhere: random-tiny, fp32, a few seconds (tests use it)

Random weights time the same as trained ones. Measures, on one stream of ShapeStream frames:
- ingest: frames per second through the `hermes` policy (encode + prefill + pseudo-queries
  + eviction), median over the chunks after the first;
- TTFT of the same question at budgets of 2K / 4K / 6K tokens per layer (the paper's script
  uses 6000), once the stream has filled every budget;
- TTFT and memory against frames seen for hermes, full, re-prefill and retrieval at query
  time (analysis.efficiency's methods, the same code);
- peak accelerator memory over the whole run.
Writes gpu_check-<model>[-cuda][_quick].md / .csv under --out; the last printed line is a JSON
object of the headline figures. Nothing here needs a GPU to run; on a CPU it is just slow
(use --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from analysis import common, efficiency
from hermes.backbones import load_backbone, resolve_dtype
from hermes.engine import load_engine
from hermes.shapestream import generate


def peak_mib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0


def ingest_fps(backbone, frames, times, budget: int) -> tuple[float, list[float]]:
    """Frames per second through hermes at `budget`, median over the chunks after the first
    (which pays for warm-up); also every chunk's seconds."""
    engine = load_engine(backbone, policy="hermes", budget=budget, chunk_frames=efficiency.CHUNK,
                         record_question_attention=False)
    efficiency.sync()
    seconds = []
    for start in range(0, len(frames) - efficiency.CHUNK + 1, efficiency.CHUNK):
        t0 = time.perf_counter()
        engine.ingest(frames[start:start + efficiency.CHUNK], times[start:start + efficiency.CHUNK])
        efficiency.sync()
        seconds.append(time.perf_counter() - t0)
    steady = seconds[1:] or seconds
    return efficiency.CHUNK / statistics.median(steady), seconds


def ttft_at_budgets(backbone, frames, times, budgets: list[int], repeats: int) -> dict[int, float]:
    """Median TTFT (ms) of the question on a hermes cache of each budget, after the whole stream."""
    out = {}
    for budget in budgets:
        engine = common.feed(load_engine(backbone, policy="hermes", budget=budget, chunk_frames=efficiency.CHUNK,
                                         record_question_attention=False), frames, times)
        out[budget] = 1000 * efficiency.timed_median(lambda e=engine: efficiency.ask_ttft(e), repeats)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, model="random-ov-0.5b", device=common.default_device(),
                           quick="random-tiny in fp32, 32 frames, budgets 64/128/256")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float16 where bf16 is unsupported, "
                                                        "float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--frames", type=int, default=128, help="stream length; checkpoints are 16, 64 and this")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.model, args.frames, args.repeats = "random-tiny", 32, 1
    dtype = resolve_dtype(args.dtype, args.device)
    dtype_name = str(dtype).removeprefix("torch.")
    budgets = [64, 128, 256] if args.quick else [2048, 4096, 6144]
    t_start = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    backbone = load_backbone(args.model, device=args.device, dtype=dtype)
    side = backbone.image_size  # frames at the vision size: the one resize is not what is timed
    stream = generate(7, seconds=args.frames / efficiency.FPS, fps=efficiency.FPS, size=(side, side))
    frames, times = stream.frames[:args.frames], stream.timestamps[:args.frames]
    fps, chunk_s = ingest_fps(backbone, frames, times, budgets[-1])
    ttft = ttft_at_budgets(backbone, frames, times, budgets, args.repeats)
    eff_args = argparse.Namespace(frames=tuple(sorted({n for n in (16, 64) if n < args.frames} | {args.frames})),
                                  budget=budgets[1],
                                  repeats=args.repeats)
    cells = [c for m in efficiency.METHODS for c in efficiency.run_method(m, backbone, frames, times, eff_args)]
    heads = {"model": args.model, "device": common.where(args.device), "dtype": dtype_name,
             "ingest_frames_per_s": round(fps, 2), "ttft_ms_by_budget": {b: round(v, 2) for b, v in ttft.items()},
             "peak_memory_mib": round(peak_mib(args.device), 1), "seconds": round(time.perf_counter() - t_start, 1)}
    stem = common.stem(args, "gpu_check")
    common.write_csv(f"{stem}.csv", [[c.method, c.frames, f"{c.ttft_ms:.3f}", f"{c.tpot_ms:.3f}", f"{c.kv_mib:.3f}"]
                                     for c in cells], ["method", "frames", "ttft_ms", "tpot_ms", "kv_mib"])
    lines = [
        f"# GPU readiness: `{args.model}` in {dtype_name}", "",
        f"`python -m analysis.gpu_check{' --quick' if args.quick else ''}` on {common.machine(args.device)}; "
        f"{backbone.n_layers} layers, {backbone.tokens_per_frame} tokens/frame, {args.frames} frames at "
        f"{efficiency.FPS:g} fps in chunks of {efficiency.CHUNK}; random weights (they time as trained ones). "
        f"Whole run {heads['seconds']} s.", "",
        f"- ingest through `hermes` (budget {budgets[-1]}): **{fps:.2f} frames/s** (median chunk "
        f"{statistics.median(chunk_s[1:] or chunk_s):.3f} s, first chunk {chunk_s[0]:.3f} s)",
        f"- peak accelerator memory: **{heads['peak_memory_mib']:.0f} MiB**" if cuda else
        "- peak accelerator memory: not measured (CPU run)", "",
        "TTFT after the whole stream, hermes, median of the asks:", "",
        *common.table(["budget (tokens / layer)", "frames it holds", "TTFT ms"],
                      [[b, f"{b / backbone.tokens_per_frame:.1f}", f"{v:.2f}"] for b, v in ttft.items()]),
        "", f"TTFT and memory against frames seen (budget {budgets[1]}; analysis.efficiency's methods):", "",
        *common.table(["method", "frames", "TTFT ms", "ms / output token", "KV MiB"],
                      [[c.method, c.frames, f"{c.ttft_ms:.2f}", f"{c.tpot_ms:.2f}", f"{c.kv_mib:.2f}"]
                       for c in cells]),
        "", "```json", json.dumps(heads, indent=1), "```",
    ]
    common.write_markdown(f"{stem}.md", lines, echo=True)
    print(json.dumps(heads))


if __name__ == "__main__":
    main()
