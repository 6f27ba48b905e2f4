"""The Study tab's committed content: the analysis figures and their notes, read from disk.

    from app.study import committed
    for fig in committed():          # mechanistic, efficiency, accuracy, ablations
        fig.title, fig.png, fig.notes

Pure file reading (no gradio, no tensors). A figure that was never generated has png None
and a note saying which command makes it (`make figures` makes them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "analysis" / "results"
FIGURES = (
    ("mechanistic", "Where each layer's question attention falls (FIFO cache)", "python -m analysis.mechanistic"),
    ("efficiency", "Time to first token and memory as the stream grows", "python -m analysis.efficiency"),
    ("accuracy", "Accuracy vs memory budget, every policy", "python -m analysis.accuracy"),
    ("ablations", "HERMES ablations: one switch at a time", "python -m analysis.ablations"),
)


@dataclass
class Figure:
    name: str
    title: str
    png: Path | None
    notes: str  # markdown: the result file without its title and image lines


def notes_of(md: str) -> str:
    """A result markdown file minus its title line and image links (the app shows the PNG itself)."""
    lines = [line for line in md.splitlines() if not line.startswith("# ") and not line.startswith("![")]
    return "\n".join(lines).strip()


def committed(results: Path = RESULTS) -> list[Figure]:
    out = []
    for name, title, command in FIGURES:
        png, md = results / f"{name}.png", results / f"{name}.md"
        if png.exists() and md.exists():
            out.append(Figure(name, title, png, notes_of(md.read_text())))
        else:
            out.append(Figure(name, title, None, f"Not generated yet: run `{command}` (or `make figures`)."))
    return out
