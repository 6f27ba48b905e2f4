"""Command line: stream a video file through the engine and ask questions along the way.

    python -m hermes run VIDEO --model random-tiny --policy fifo --budget 512 --fps 2 \\
        --ask "what is on the screen now ?" --ask-at 10 --ask "what happened ?"

--device / --dtype default to "auto": CUDA in bfloat16 (float16 where the GPU has no
bfloat16) when torch sees a GPU, else the CPU in float32; --quantize int8 holds the decoder's
weights in int8 (hermes.quant). HERMES_DEVICE / HERMES_DTYPE / HERMES_QUANTIZE decide what
"auto" means.

Each --ask is answered once the stream reaches its --ask-at time (seconds; questions
without one are asked at the end). Prints every answer with its time to first token and
the final per-layer cache lengths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from hermes.backbones import DTYPES, dtype_name
from hermes.config import HermesConfig
from hermes.engine import load_engine
from hermes.errors import HermesError
from hermes.policies import available
from hermes.quant import QUANTIZE, describe
from hermes.video import iter_frames, probe

DEFAULTS = HermesConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hermes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="stream a video through the engine and ask questions")
    run.add_argument("video", help="video file (mp4, webm, mkv, ...)")
    run.add_argument("--model", default="hermes-tiny", help="hermes-tiny, random-tiny, a model directory or a hub id")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="precision (default auto)")
    run.add_argument("--quantize", default="auto", choices=["auto", *QUANTIZE],
                     help="int8: the decoder's weights in int8 (default auto: none)")
    run.add_argument("--policy", default="hermes", help=f"eviction policy ({', '.join(available())})")
    run.add_argument("--budget", type=int, default=None, help="video tokens kept per layer (default: no limit)")
    run.add_argument("--fps", type=float, default=DEFAULTS.fps, help="frames sampled per second of video")
    run.add_argument("--chunk-frames", type=int, default=DEFAULTS.chunk_frames, help="frames per ingested chunk")
    run.add_argument("--ask", action="append", default=[], help="a question (repeatable)")
    run.add_argument("--ask-at", action="append", type=float, default=[],
                     help="stream time in seconds for the matching --ask (repeatable)")
    run.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    return parser


def _schedule(questions: Sequence[str], times: Sequence[float]) -> list[tuple[float, str]]:
    if len(times) > len(questions):
        raise HermesError(f"{len(times)} --ask-at values for {len(questions)} --ask questions")
    padded = list(times) + [float("inf")] * (len(questions) - len(times))
    return sorted(zip(padded, questions, strict=True), key=lambda pair: pair[0])


def run(args: argparse.Namespace) -> int:
    schedule = _schedule(args.ask, args.ask_at)
    info = probe(args.video)
    engine = load_engine(args.model, policy=args.policy, budget=args.budget, device=args.device, dtype=args.dtype,
                         quantize=args.quantize, fps=args.fps, chunk_frames=args.chunk_frames,
                         max_new_tokens=args.max_new_tokens)
    total = int(info.duration_s * args.fps) + 1 if info.duration_s else None
    backbone = engine.backbone
    print(f"model {backbone.name} on {backbone.device} in {describe(dtype_name(backbone.dtype), backbone.weights)} "
          f"({backbone.layout}) | "
          f"policy {engine.policy.name} | budget {args.budget} | "
          f"{info.width}x{info.height} {info.codec} at {args.fps:g} fps")

    def answer_due(now: float) -> None:
        while schedule and schedule[0][0] <= now:
            at, question = schedule.pop(0)
            engine.flush()
            answer = engine.ask(question)
            when = f"{at:.1f} s" if at != float("inf") else f"end, {engine.last_time or 0.0:.1f} s"
            tqdm.write(f"[{when}] Q: {question}\n         A: {answer.text!r}  (TTFT {answer.ttft_s * 1000:.1f} ms, "
                       f"{len(answer.tokens)} tokens)")

    with tqdm(total=total, unit="frame", desc="ingest") as bar:
        for frame, t in iter_frames(args.video, args.fps):
            answer_due(t - 1e-9)
            engine.ingest(frame[None], [t])
            bar.update(1)
    engine.flush()
    answer_due(float("inf"))
    stats = engine.stats()
    print(f"frames {stats['frames_seen']} | chunks {stats['chunks']} | KV {stats['kv_bytes'] / 2**20:.2f} MiB | "
          f"max position {stats['max_position']}")
    print("cache lengths per layer:", " ".join(str(n) for n in engine.cache_lengths()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except HermesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
