"""The Study tab's content: the analysis figures and their notes, read from disk, and what a
study budget covers.

    from app.study import committed, span_text
    for fig in committed():          # mechanistic, efficiency, accuracy, ablations
        fig.title, fig.png, fig.notes
    span_text(514, 32, fps=2.0, model="hermes-tiny")   # "514 tokens per layer hold the newest 32 frames ..."

Pure functions (no gradio, no tensors). A figure that was never generated has png None
and a note saying which command makes it (`make figures` makes them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hermes.studies.results import DEFAULT_MODEL, result_name

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
    model: str = DEFAULT_MODEL  # the model it was measured on
    stem: str = ""  # its result files' name (hermes.studies.results.result_name): STEM.png, STEM.md


def notes_of(md: str) -> str:
    """A result markdown file minus its title line and image links (the app shows the PNG itself)."""
    lines = [line for line in md.splitlines() if not line.startswith("# ") and not line.startswith("![")]
    return "\n".join(lines).strip()


def committed(results: Path = RESULTS, models: tuple[str, ...] = (DEFAULT_MODEL,)) -> list[Figure]:
    """Each committed CPU figure for each of `models`, figure by figure, named as the analysis
    scripts name them (hermes.studies.results.result_name: NAME for the default model,
    NAME-<model> for another). The first model's missing figure says which command makes it;
    another model's missing figure is left out."""
    out = []
    for name, title, command in FIGURES:
        for i, model in enumerate(models):
            stem = result_name(name, model, device="cpu")
            png, md = results / f"{stem}.png", results / f"{stem}.md"
            if png.exists() and md.exists():
                out.append(Figure(name, title, png, notes_of(md.read_text()), model, stem))
            elif i == 0:
                out.append(Figure(name, title, None, f"Not generated yet: run `{command}` (or `make figures`).", model,
                                  stem))
    return out


def span_text(tokens: int, frames: int, fps: float, model: str) -> str:
    """What a study budget covers, for the slider's help: the farthest back the study can see."""
    return (f"{tokens:,} tokens per layer hold the newest {frames} frames of {model}, {frames / fps:g} s at "
            f"{fps:g} fps: the farthest back the study sees. A question counts once the stream has filled it.")
