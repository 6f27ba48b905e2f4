"""The bundled model in use: load time and time to first token on a 128-frame stream.

    python -m analysis.bench_hermes_tiny

Loads `hermes.load_engine()` (hermes-tiny from assets/, policy hermes) in a fresh process
three times (cold start, median reported), streams a held-out 128-frame ShapeStream and
asks its questions; TTFT is the median over those questions. Writes
analysis/results/bench_hermes_tiny.md (or to --out); the last printed line is JSON.
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
from hermes.shapestream import generate, grade

ROOT = Path(__file__).resolve().parent.parent
LOAD_SNIPPET = ("import time; t = time.perf_counter(); import hermes; hermes.load_engine(); "
                "print(time.perf_counter() - t)")


def load_seconds() -> float:
    """Import + load in a fresh interpreter (what a user waits for)."""
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = common.parser(__doc__, model=None, device=None).parse_args(argv)
    loads = [load_seconds() for _ in range(3)]
    t0 = time.perf_counter()
    engine = hermes.load_engine()
    in_process = time.perf_counter() - t0
    stream = generate(7, seconds=64, fps=2)  # 128 frames, held-out seed
    engine.ingest(stream.frames, stream.timestamps)
    engine.flush()
    last = [q for q in stream.questions if q.time == stream.timestamps[-1]]
    answers = [engine.ask(q.question, max_new_tokens=2) for q in last]
    ttfts = [a.ttft_s for a in answers]
    correct = sum(grade(a.text, q.answer) for a, q in zip(answers, last, strict=True))
    headline = {
        "load_s_fresh_process_median": round(statistics.median(loads), 2),
        "load_s_in_process": round(in_process, 3),
        "frames": len(stream.frames),
        "ttft_ms_median": round(1000 * statistics.median(ttfts), 2),
        "ttft_ms_max": round(1000 * max(ttfts), 2),
        "questions": len(last),
        "correct": correct,
    }
    common.write_markdown(f"{common.stem(args, 'bench_hermes_tiny')}.md", [
        "# hermes-tiny in use", "",
        f"`python -m analysis.bench_hermes_tiny`, {common.today()}, {common.where()}.", "",
        *common.table(["measure", "value"], [
            ["`import hermes; hermes.load_engine()` in a fresh process (median of 3)",
             f"{headline['load_s_fresh_process_median']} s"],
            ["`load_engine()` in a warm process", f"{headline['load_s_in_process']} s"],
            [f"TTFT after {headline['frames']} frames, median / max over {len(last)} questions",
             f"{headline['ttft_ms_median']} / {headline['ttft_ms_max']} ms"],
            ["those questions answered correctly", f"{correct} / {len(last)}"]]),
    ])
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
