"""Precision on this machine: seconds per frame, question latency and answer fidelity, fp32 vs bf16 (vs fp16).

    python -m analysis.bench_dtype                 # the real LLaVA-OV-0.5B architecture, ~3 minutes on 2 cores
    python -m analysis.bench_dtype --model hermes-smol --frames 32 --chunk 16   # why its TTFT is what it is
    python -m analysis.bench_dtype --quick         # random-tiny, seconds (tests use it)

For each dtype: load the model (random weights: they time as trained ones), ingest the same
frames in chunks through `full` (nothing evicted, so only the arithmetic differs), report
the median seconds per frame over the chunks after the first, then on that cache the
median TTFT of one question (its prefill and first token) and of one decode step (a
one-token forward, analysis.efficiency's), and the next-token logits of one question
compared with fp32's (max abs difference relative to fp32's largest logit, and
whether the top token agrees). This is the measurement behind `dtype="auto"` on a CPU: bf16
is chosen only where it is both faster and equally accurate. Writes bench_dtype-<model>.md.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from analysis import common
from analysis.efficiency import ask_ttft, decode_step_s, timed_median
from hermes.backbones import DTYPES, load_backbone
from hermes.engine import load_engine
from hermes.shapestream import generate

QUESTION = "what is on the screen now ?"
REPEATS = 5


def measure(model: str, device: str, dtype: torch.dtype, frames, times, chunk: int
            ) -> tuple[float, float, float, torch.Tensor]:
    """(median seconds per frame after the first chunk, median TTFT and decode-step seconds on
    that cache, fp32 next-token logits of QUESTION)."""
    engine = load_engine(model, policy="full", chunk_frames=chunk, device=device, dtype=dtype,
                         record_question_attention=False)
    per_frame = []
    for start in range(0, len(frames) - chunk + 1, chunk):
        t0 = time.perf_counter()
        engine.ingest(frames[start:start + chunk], times[start:start + chunk])
        per_frame.append((time.perf_counter() - t0) / chunk)
    ttft = timed_median(lambda: ask_ttft(engine), REPEATS)
    step = timed_median(lambda: decode_step_s(engine), REPEATS)
    return statistics.median(per_frame[1:] or per_frame), ttft, step, engine.next_token_logits(QUESTION).float().cpu()


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, model="random-ov-0.5b", quick="random-tiny, 8 frames")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.frames, args.chunk = "random-tiny", 8, 2
    probe = load_backbone(args.model)  # the vision size and the question's length, once
    side, question_tokens = probe.image_size, len(probe.question_ids(QUESTION)) + int(probe.question_lead() is not None)
    del probe
    stream = generate(7, seconds=max(16.0, args.frames / 2.0), fps=2.0, size=(side, side))
    frames, times = stream.frames[:args.frames], stream.timestamps[:args.frames]
    rows, ref = [], None
    for name in args.dtypes.split(","):
        seconds, ttft, step, logits = measure(args.model, args.device, DTYPES[name], frames, times, args.chunk)
        ref = logits if ref is None else ref
        rel = float((logits - ref).abs().max() / ref.abs().max())
        rows.append({"dtype": name, "s_per_frame": seconds, "ttft_ms": 1000 * ttft, "step_ms": 1000 * step,
                     "logit_rel_diff": rel,
                     "top_token_agrees": int(logits.argmax()) == int(ref.argmax())})
    base = rows[0]["s_per_frame"]
    lines = [f"# Precision on {common.where(args.device)}: `{args.model}`", "",
             f"`python -m analysis.bench_dtype{' --quick' if args.quick else ''}` with `{args.model}` on "
             f"{common.machine(args.device)}; "
             f"{args.frames} frames in chunks of {args.chunk} through `full`; seconds per frame = median over the "
             f"chunks after the first; then, on that cache, TTFT of `{QUESTION}` ({question_tokens} tokens with the "
             f"chat template) and one decode step (a one-token forward), medians of {REPEATS} after a warm-up; "
             "logits of the question against the first dtype's.", "",
             *common.table(["dtype", "s / frame", "speed vs " + rows[0]["dtype"], "TTFT ms", "decode step ms",
                            "max abs logit diff (relative)", "top token agrees"],
                           [[r["dtype"], f"{r['s_per_frame']:.3f}", f"{base / r['s_per_frame']:.2f}x",
                             f"{r['ttft_ms']:.1f}", f"{r['step_ms']:.1f}",
                             f"{r['logit_rel_diff']:.2e}", "yes" if r["top_token_agrees"] else "no"] for r in rows])]
    common.write_markdown(f"{common.stem(args, 'bench_dtype')}.md", lines, echo=True)
    print(json.dumps({r["dtype"]: round(r["s_per_frame"], 4) for r in rows}))


if __name__ == "__main__":
    main()
