"""A bundled model in use: load time, ingest speed and time to first token on a 128-frame stream.

    python -m analysis.bench_model                        # hermes-tiny, about 1 minute
    python -m analysis.bench_model --model hermes-smol    # a few minutes
    python -m analysis.bench_model --model hermes-smol --quantize int8   # its decoder in int8 (hermes.quant)

Loads `hermes.load_engine(model)` in a fresh process three times (cold start: import + load,
median reported). Then, in this process, with policy hermes at the studio's default budget (32
frames, `--budget-frames`), it streams a held-out 128-frame ShapeStream at 2 fps one 16-frame
chunk at a time, timing each chunk's ingest (it keeps up with 2 fps when every chunk takes
less than its 8 s of video), and asks the questions whose time is the stream's end; TTFT is
the median over them. Writes
analysis/results/bench_model[-<model>][-int8].md (or to --out); the last printed line is JSON.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import hermes
from analysis import common
from hermes.backbones import load_backbone
from hermes.shapestream import generate, grade

ROOT = Path(__file__).resolve().parent.parent
FPS, CHUNK = 2.0, 16


def load_seconds(model: str, quantize: str) -> float:
    """Import + load in a fresh interpreter (what a user waits for)."""
    snippet = (f"import time; t = time.perf_counter(); import hermes; "
               f"hermes.load_engine({model!r}, quantize={quantize!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = common.parser(__doc__, device=None, quantize=True)
    parser.add_argument("--budget-frames", type=int, default=32, help="the hermes cache's budget in frames (whole "
                        "chunks; the studio's default is 32)")
    args = parser.parse_args(argv)
    loads = [load_seconds(args.model, args.quantize) for _ in range(3)]
    t0 = time.perf_counter()
    backbone = load_backbone(args.model, quantize=args.quantize)
    in_process = time.perf_counter() - t0
    budget = backbone.tokens_for_frames(args.budget_frames // CHUNK * CHUNK, CHUNK)  # whole chunks
    engine = hermes.load_engine(backbone, budget=budget, chunk_frames=CHUNK)
    stream = generate(7, seconds=64, fps=FPS)  # 128 frames, held-out seed
    chunk_s = []  # wall seconds to ingest each 16-frame chunk (8 s of video at 2 fps)
    for start in range(0, len(stream.frames), CHUNK):
        t = time.perf_counter()
        engine.ingest(stream.frames[start:start + CHUNK], stream.timestamps[start:start + CHUNK])
        chunk_s.append(time.perf_counter() - t)
    engine.flush()
    last = [q for q in stream.questions if q.time == stream.timestamps[-1]]
    answers = [engine.ask(q.question, max_new_tokens=2) for q in last]
    ttfts = [a.ttft_s for a in answers]
    correct = sum(grade(a.text, q.answer) for a, q in zip(answers, last, strict=True))
    video_s = CHUNK / FPS
    headline = {
        "model": args.model,
        "weights": backbone.weights,
        "budget_tokens": budget,
        "load_s_fresh_process_median": round(statistics.median(loads), 2),
        "load_s_in_process": round(in_process, 3),
        "frames": len(stream.frames),
        "ingest_s_per_chunk_median": round(statistics.median(chunk_s), 3),
        "ingest_s_per_chunk_max": round(max(chunk_s), 3),
        "keeps_up_with_2fps": max(chunk_s) < video_s,
        "ttft_ms_median": round(1000 * statistics.median(ttfts), 2),
        "ttft_ms_max": round(1000 * max(ttfts), 2),
        "questions": len(last),
        "correct": correct,
    }
    common.write_markdown(f"{common.stem(args, 'bench_model')}.md", [
        f"# {args.model} in use", "",
        f"`python -m analysis.bench_model --model {args.model}{common.quantize_flag(args)}`, {common.today()}, "
        f"{common.where()}; decoder weights: {backbone.weights}.", "",
        *common.table(["measure", "value"], [
            [f"`import hermes; hermes.load_engine({args.model!r}, quantize={args.quantize!r})` in a fresh process "
             "(median of 3)",
             f"{headline['load_s_fresh_process_median']} s"],
            ["`load_backbone()` in a warm process", f"{headline['load_s_in_process']} s"],
            [f"ingest of one {CHUNK}-frame chunk ({video_s:g} s of video at {FPS:g} fps), median / max over "
             f"{len(chunk_s)} chunks, policy hermes at {args.budget_frames} frames ({budget} tokens per layer)",
             f"{headline['ingest_s_per_chunk_median']} / {headline['ingest_s_per_chunk_max']} s "
             f"({'keeps up with' if headline['keeps_up_with_2fps'] else 'falls behind'} {FPS:g} fps)"],
            [f"TTFT after {headline['frames']} frames, median / max over {len(last)} questions",
             f"{headline['ttft_ms_median']} / {headline['ttft_ms_max']} ms"],
            ["those questions answered correctly", f"{correct} / {len(last)}"]]),
    ])
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
