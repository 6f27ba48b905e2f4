"""Benchmarks and studies; each script says how to run it and writes to analysis/results/."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_MODEL = "hermes-tiny"


def result_name(study: str, model: str, quick: bool) -> str:
    """study[-<model>][-cuda][_quick]: the bundled model on CPU keeps the plain name, so results
    from another model or a GPU sit beside the committed ones instead of replacing them."""
    name = study
    if model != DEFAULT_MODEL:
        name += "-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(model).name)
    if torch.cuda.is_available():
        name += "-cuda"
    return name + ("_quick" if quick else "")
