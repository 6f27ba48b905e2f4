"""Entry point of the demo: `python app.py` (what `make demo` runs).

Until the Gradio UI lands, it streams a bundled ShapeStream example through the engine on
the command line (hermes-tiny, policy hermes) and asks a few of the example's questions
along the way, printing the ground truth first; extra arguments are passed to
`python -m hermes run` (e.g. `python app.py --policy fifo`). Without the trained model
it falls back to random-tiny.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hermes.backbones import BUNDLED_MODELS
from hermes.cli import main

EXAMPLE = Path(__file__).resolve().parent / "assets" / "examples" / "shapestream-901.mp4"
CATEGORIES_SHOWN = ("perception", "backward", "counting", "order")


def demo_args() -> list[str]:
    meta = json.loads(EXAMPLE.with_suffix(".json").read_text())
    picked = {}
    for q in meta["questions"]:  # the latest question of each category
        if q["category"] in CATEGORIES_SHOWN:
            picked[q["category"]] = q
    print("ground truth (from the event log):")
    args = []
    for q in sorted(picked.values(), key=lambda q: q["time"]):
        print(f"  [{q['time']:.1f} s] {q['question']} -> {q['answer']}")
        args += ["--ask", q["question"], "--ask-at", str(q["time"] + 0.01)]
    model = "hermes-tiny" if (BUNDLED_MODELS["hermes-tiny"] / "config.json").exists() else "random-tiny"
    return ["run", str(EXAMPLE), "--model", model, "--policy", "hermes", "--budget", "256", "--fps", "2",
            "--max-new-tokens", "3", *args]


if __name__ == "__main__":
    sys.exit(main(demo_args() + sys.argv[1:]))
