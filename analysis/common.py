"""What every analysis script shares: the results folder and result names, markdown tables,
CSV, figures, the common command-line arguments and the "ingest up to t, then ask" replay.

    from analysis import common

    parser = common.parser(__doc__, quick="3 streams, one budget")   # --model --device --out --quick
    args = parser.parse_args(argv)
    stem = common.stem(args, "ablations")        # results/ablations[-<model>][-cuda][_quick], folder made
    common.write_csv(f"{stem}.csv", rows, head)
    common.write_markdown(f"{stem}.md", ["# Title", "", *common.table(head, rows)])
    plt = common.pyplot()
    fig, ax = plt.subplots()
    common.save_figure(fig, f"{stem}.png")
    for q in common.replay(engine, frames, timestamps, [(q.time, q) for q in questions]):
        engine.ask(q.question)
    common.feed(engine, frames, timestamps)      # ingest all of it and flush

Every script runs from the repository root as `python -m analysis.NAME` and writes to
analysis/results/ unless told `--out`.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from hermes.backbones import resolve_device
from hermes.quant import QUANTIZE
from hermes.studies.replay import feed, replay
from hermes.studies.results import DEFAULT_MODEL, result_name

__all__ = ["DEFAULT_MODEL", "RESULTS", "cpu_name", "default_device", "feed", "machine", "parser", "pyplot", "replay",
           "result_name", "save_figure", "stem", "table", "today", "where", "write_csv", "write_markdown"]

RESULTS = Path(__file__).resolve().parent / "results"


def default_device() -> str:
    """What device="auto" means here: HERMES_DEVICE when set, else "cuda" where a GPU is visible, else "cpu"."""
    return resolve_device("auto")


def stem(args: argparse.Namespace, study: str) -> Path:
    """args.out / result_name(study, args.model, args.quick, args.device), the folder created;
    add the suffix (f"{stem}.csv"). Without args.model no model is named; without args.device
    the study ran on the CPU."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out / result_name(study, getattr(args, "model", DEFAULT_MODEL), getattr(args, "quick", False),
                             getattr(args, "device", "cpu"), getattr(args, "quantize", "none"))


def parser(doc: str | None, *, model: str | None = DEFAULT_MODEL, device: str | None = "auto",
           out: Path | None = RESULTS, quick: str | None = None, quantize: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph of the script's docstring, with the
    arguments every study takes: --model (None: no such argument), --device, --out (a folder),
    given its help text, --quick, and with `quantize`, --quantize (for the studies that load
    the model with it: hermes.quant)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    if model is not None:
        p.add_argument("--model", default=model, help="hermes-tiny, random-tiny, random-ov-0.5b, a local model "
                                                       "directory or a hub id")
    if device is not None:
        p.add_argument("--device", default=default_device() if device == "auto" else device,
                       help="where the model runs: cpu, cuda, cuda:1, ... (default: a GPU if one is visible)")
    if out is not None:
        p.add_argument("--out", type=Path, default=out, help=f"result folder (default {out})")
    if quantize:
        p.add_argument("--quantize", choices=QUANTIZE, default="none",
                       help="int8: the decoder's weights in int8 (hermes.quant); results named *-int8")
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick.replace("%", "%%"))  # argparse formats help
    return p


def quantize_flag(args: argparse.Namespace) -> str:
    """" --quantize int8" when the study ran with it, else "": for a result's command line."""
    quantize = getattr(args, "quantize", "none")
    return "" if quantize == "none" else f" --quantize {quantize}"


# The widest first: cpu_name() names only the first one a CPU has.
VECTOR_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 with bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name and its widest vector units, "Intel(R) Xeon(R) Processor, AVX-512":
    timings differ 2-3x between the machines this project runs on, so a result names its CPU.
    `cpuinfo`: the text of /proc/cpuinfo (read when None; platform.processor() where it is absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    widest = next((label for flag, label in VECTOR_UNITS if flag in flags), None)
    return ", ".join(filter(None, [fields.get("model name") or platform.machine(), widest]))


def where(device: str = "cpu") -> str:
    """The processor a timing ran on: a GPU's name, or
    "x86_64 CPU (Intel(R) Xeon(R) Processor, AVX-512), 2 threads"."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU ({cpu_name()}), {torch.get_num_threads()} threads"


def machine(device: str = "cpu") -> str:
    """For a result's header: "x86_64 CPU (<its name>, AVX-512), 2 threads, torch 2.x, 2026-01-31"."""
    return f"{where(device)}, torch {torch.__version__}, {today()}"


def today() -> str:
    return time.strftime("%Y-%m-%d")


def table(head: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """Markdown lines: the header, the |---| rule, one line per row (cells as str())."""
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_markdown(path: str | Path, lines: Sequence[str], echo: bool = False) -> None:
    """The lines, one newline at the end; `echo` prints them too."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    Path(path).write_text(text)
    if echo:
        print(text, end="")


def write_csv(path: str | Path, rows: Sequence[Sequence[object]] | Sequence[dict],
              head: Sequence[str] | None = None) -> None:
    """Rows of cells under `head`, or dicts (head: the first one's keys)."""
    with Path(path).open("w", newline="") as fh:
        if head is None:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
        else:
            writer = csv.writer(fh)
            writer.writerow(head)
        writer.writerows(rows)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> None:
    """tight_layout (unless the caller laid the figure out), save as PNG, close."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
