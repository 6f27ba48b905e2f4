"""Example videos for the demo, the tests and the benchmarks.

    python -m hermes.examples            # rewrites assets/examples/*

- bouncing-shapes.mp4: coloured shapes bouncing on a grey field (engine benchmarks, CLI).
- shapestream-<seed>.mp4 + .json: ShapeStream streams rendered at 192 px, 10 fps, with
  their question lists (question, answer, time in seconds, category) for the app.

Deterministic (seeded), numpy only; written as H.264 mp4 (plays in browsers).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hermes.shapestream import generate
from hermes.video import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}


def bouncing_shapes(seconds: float = 12.0, fps: int = 10, size: tuple[int, int] = (160, 240), seed: int = 0
                    ) -> np.ndarray:
    """uint8 (T, H, W, 3): squares and discs of four colours bouncing; the background
    switches shade halfway through."""
    rng = np.random.default_rng(seed)
    height, width = size
    n = int(seconds * fps)
    yy, xx = np.mgrid[0:height, 0:width]
    shapes = [
        {"colour": np.array(c, np.uint8), "disc": i % 2 == 0, "r": int(rng.integers(10, 20)),
         "p": rng.uniform([20, 20], [height - 20, width - 20]), "v": rng.uniform(-4, 4, size=2)}
        for i, c in enumerate(COLOURS.values())
    ]
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        frame = frames[t]
        frame[:] = 110 if t < n // 2 else 60
        for s in shapes:
            s["p"] += s["v"]
            for axis, limit in enumerate((height, width)):
                if not s["r"] <= s["p"][axis] <= limit - s["r"]:
                    s["v"][axis] *= -1
                    s["p"][axis] = np.clip(s["p"][axis], s["r"], limit - s["r"])
            dy, dx = yy - s["p"][0], xx - s["p"][1]
            inside = dy**2 + dx**2 <= s["r"] ** 2 if s["disc"] else (abs(dy) <= s["r"]) & (abs(dx) <= s["r"])
            frame[inside] = s["colour"]
    return frames


EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
# seeds used neither in training (>= 1,000,000) nor in the accuracy study (0..N)
SHAPESTREAM_SEEDS = (901, 902, 903, 904, 905, 906, 907, 908)


def write_shapestream_example(seed: int, out_dir: Path = EXAMPLES, seconds: float = 64.0, fps: int = 10,
                              size: tuple[int, int] = (192, 192)) -> Path:
    """Write shapestream-<seed>.mp4 and its questions (.json, asked every 8 s)."""
    stream = generate(seed, seconds=seconds, fps=fps, size=size)
    video = write_video(out_dir / f"shapestream-{seed}.mp4", stream.frames, fps)
    questions = [{**asdict(q), "time": round(q.time, 3)} for q in stream.questions]
    meta = {"seed": seed, "seconds": seconds, "fps": fps, "size": list(size), "questions": questions,
            "events": [asdict(e) for e in stream.events]}
    video.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return video


def main() -> None:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    out = [write_video(EXAMPLES / "bouncing-shapes.mp4", bouncing_shapes(), fps=10)]
    out += [write_shapestream_example(seed) for seed in SHAPESTREAM_SEEDS]
    for path in out:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
