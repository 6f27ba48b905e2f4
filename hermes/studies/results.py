"""What a study's result files are named, for the scripts that write them (analysis/) and the
Study tab that reads them (app/): one rule.

    from hermes.studies.results import DEFAULT_MODEL, result_name
    result_name("accuracy")                                  # "accuracy" (the default model, on CPU)
    result_name("accuracy", "hermes-smol", device="cpu")     # "accuracy-hermes-smol"
    result_name("mechanistic", "/models/ov", quick=True)     # "mechanistic-ov[-cuda]_quick"
"""

from __future__ import annotations

from pathlib import Path

from hermes.backbones import DEFAULT_MODEL, resolve_device


def result_name(study: str, model: str = DEFAULT_MODEL, quick: bool = False, device: str | None = None,
                quantize: str = "none") -> str:
    """study[-<model>][-int8][-cuda][_quick]: the default bundled model on CPU keeps the plain name,
    so results from another model, its int8 weights (hermes.quant) or a GPU sit beside the
    committed ones instead of replacing them. `device`: where the study ran (default: a GPU if
    one is visible, as device="auto" picks)."""
    name = study
    if model != DEFAULT_MODEL:
        name += "-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(model).name)
    if quantize != "none":
        name += "-" + quantize
    if (device or resolve_device("auto")).startswith("cuda"):
        name += "-cuda"
    return name + ("_quick" if quick else "")
