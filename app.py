"""Entry point of the demo: `python app.py` (what `make demo` runs).

Until the Gradio UI lands, it streams the bundled example video through the engine on the
command line and answers two questions along the way; extra arguments are passed to
`python -m hermes run` (e.g. `python app.py --policy full`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hermes.cli import main

EXAMPLE = Path(__file__).resolve().parent / "assets" / "examples" / "bouncing-shapes.mp4"
DEMO_ARGS = [
    "run", str(EXAMPLE), "--model", "random-tiny", "--policy", "fifo", "--budget", "256", "--fps", "4",
    "--chunk-frames", "8", "--ask", "what is on the screen now ?", "--ask-at", "6",
    "--ask", "what happened in the whole video ?",
]

if __name__ == "__main__":
    sys.exit(main(DEMO_ARGS + sys.argv[1:]))
