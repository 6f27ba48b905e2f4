"""Backbones: LLaVA-OneVision through transformers, plus the pieces the engine needs from it.

A ``Backbone`` bundles the model, its tokenizer, frame preprocessing (no torchvision,
no AutoProcessor), the chat template split into the prefix ingested before the first
chunk and the per-question text around the question, and the model's pseudo-query texts.

    from hermes.backbones import load_backbone
    bb = load_backbone("random-tiny")            # seeded random weights, tiny architecture
    bb = load_backbone("path/to/saved/model")    # save_pretrained layout, safetensors
    bb = load_backbone("llava-hf/llava-onevision-qwen2-0.5b-ov-hf")  # where the hub is reachable

Names: "random-tiny" (tests, benchmarks), "random-ov-0.5b" (the real 0.5B architecture
with random weights, for timing only), "hermes-tiny" (the bundled trained model in
assets/models/hermes-tiny), a local directory, or a hub id.

Device and precision: ``device="auto"`` takes CUDA where present, else the CPU;
``dtype="auto"`` takes bfloat16 on CUDA (float16 where the GPU has no bfloat16) and float32
on the CPU. ``quantize="int8"`` holds the decoder's linear layers and output head in int8
(hermes.quant; the default is none). The environment variables HERMES_DEVICE / HERMES_DTYPE /
HERMES_QUANTIZE decide what "auto" means (the app and the CLI pass quantize="auto").

Layout (``Backbone.layout``): where the model's ``image_newline`` token goes.
"newline-before-question" is transformers' own layout (frames x tokens for the whole video,
then ONE newline, then the question): chunks are held without it, and the newline is placed
in front of every question (and removed with it), so any chunking gives transformers'
numbers: hub models and local directories get it. "newline-per-chunk" appends the newline to
every chunk: the layout hermes-tiny (and random-tiny, its architecture) was trained on. A
model directory may state its layout in hermes.json ("layout"); tiny.card writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoTokenizer,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from hermes.attention import ATTENTION_NAME
from hermes.cache import NEWLINE, VIDEO
from hermes.errors import HermesError
from hermes.quant import is_quantized, quantize_decoder, resolve_quantize
from hermes.tokenizer import VIDEO_TOKEN, build_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
# the one table of the models shipped in assets/models (the app's default first): name -> the command that trains it
TRAIN_COMMANDS = {"hermes-tiny": "python -m tiny.train", "hermes-smol": "python -m tiny.train --model smol"}
BUNDLED_MODELS = {name: REPO_ROOT / "assets" / "models" / name for name in TRAIN_COMMANDS}
DEFAULT_MODEL = next(iter(TRAIN_COMMANDS))  # what load_backbone and the app load unless told (plain result names)
HERMES_JSON = "hermes.json"  # optional per-model settings: system prompt, pseudo-query texts

# The paper's pseudo-query texts (DESIGN section 1), used for models that ship none.
DEFAULT_PSEUDO_QUERIES = {
    "local": "Describe the current scene in detail, focusing on specific objects, "
    "fine-grained actions, and spatial relationships.",
    "global": "Summarize the video narrative, identifying main characters, key events, "
    "timeline changes, and the overall theme.",
}
TINY_PSEUDO_QUERIES = {"local": "what is on the screen now ?", "global": "what happened in the whole video ?"}
TINY_SYSTEM_PROMPT = "you watch a video stream and answer ."
_QUESTION_SENTINEL = "\u2063QUESTION\u2063"

NEWLINE_PER_CHUNK, NEWLINE_BEFORE_QUESTION = "newline-per-chunk", "newline-before-question"
LAYOUTS = (NEWLINE_PER_CHUNK, NEWLINE_BEFORE_QUESTION)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def tokens_for_frames(n_frames: int, chunk_frames: int, chunk_tokens: Callable[[int], int]) -> int:
    """Tokens `n_frames` frames add to a cache when they arrive in chunks of `chunk_frames`, the
    last one partial; chunk_tokens(n): the tokens a chunk of n frames adds (``Backbone.chunk_tokens``)."""
    whole, rest = divmod(int(n_frames), chunk_frames)
    return whole * chunk_tokens(chunk_frames) + (chunk_tokens(rest) if rest else 0)


def frames_for_tokens(tokens: int, chunk_frames: int, chunk_tokens: Callable[[int], int]) -> int:
    """The most frames that arrive in chunks of `chunk_frames` and fit in `tokens` (the inverse
    of ``tokens_for_frames``): the frames a FIFO cache of `tokens` per layer holds."""
    whole, rest = divmod(int(tokens), chunk_tokens(chunk_frames))
    return whole * chunk_frames + max((n for n in range(1, chunk_frames) if chunk_tokens(n) <= rest), default=0)


def resolve_device(device: str = "auto") -> str:
    """"auto" (or HERMES_DEVICE, when set) -> "cuda" where a GPU is visible, else "cpu";
    "cpu", "cuda" and "cuda:N" are checked and returned as they are."""
    if device == "auto":
        device = os.environ.get("HERMES_DEVICE", "").strip() or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda"
                                           or (device.startswith("cuda:") and device[5:].isdigit())):
        raise HermesError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HermesError(f"device {device!r} was asked for, but torch sees no CUDA GPU here; use device='cpu' "
                          "or 'auto'")
    return device


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "cpu") -> torch.dtype:
    """"auto" (or HERMES_DTYPE, when set) -> bfloat16 on CUDA (float16 where the GPU has no
    bfloat16), float32 on the CPU; "float32" / "bfloat16" / "float16" or the torch dtype itself."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise HermesError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    if dtype == "auto":
        dtype = os.environ.get("HERMES_DTYPE", "").strip() or "auto"
    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32  # bfloat16 on this CPU: not measured faster and equally accurate
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise HermesError(f"dtype must be 'auto', {', '.join(repr(d) for d in DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def tiny_config(vocab_size: int) -> LlavaOnevisionConfig:
    """The hermes-tiny architecture: SigLIP 64 px / patch 8 (16 tokens per frame after
    2x2 pooling), Qwen2 decoder with 12 layers, hidden 128, 4 heads / 2 KV heads."""
    return LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 8,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 12,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "tie_word_embeddings": True,
        },
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )


def ov_05b_config() -> LlavaOnevisionConfig:
    """The architecture of llava-hf/llava-onevision-qwen2-0.5b-ov-hf (SigLIP-so400m 384 px,
    26 layers; Qwen2-0.5B, 24 layers), written out so it can be built offline."""
    return LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": 152000,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
        },
        tie_word_embeddings=True,
    )


@dataclass
class Backbone:
    """A loaded LLaVA-OneVision model with everything the engine needs around it."""

    name: str
    model: LlavaOnevisionForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    prefix_text: str  # chat text before the first video token
    question_text: tuple[str, str]  # chat text before / after the question
    pseudo_queries: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PSEUDO_QUERIES))
    layout: str = NEWLINE_PER_CHUNK  # where image_newline goes (module docstring)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    @property
    def n_layers(self) -> int:
        return self.model.config.text_config.num_hidden_layers

    @property
    def max_positions(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @property
    def tokens_per_frame(self) -> int:
        side = -(-(self.image_size // self.model.config.vision_config.patch_size) // 2)  # ceil(grid/2)
        return side * side

    @property
    def newline_per_chunk(self) -> bool:
        return self.layout == NEWLINE_PER_CHUNK

    def chunk_tokens(self, n_frames: int) -> int:
        """Tokens a chunk of n frames adds to the cache."""
        return n_frames * self.tokens_per_frame + int(self.newline_per_chunk)

    def tokens_for_frames(self, n_frames: int, chunk_frames: int) -> int:
        """Tokens `n_frames` frames add when they arrive in chunks of `chunk_frames` (a newline each
        in the newline-per-chunk layout)."""
        return tokens_for_frames(n_frames, chunk_frames, self.chunk_tokens)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def weights(self) -> str:
        """How the decoder's weights are held: "int8" (hermes.quant) or the model's dtype name."""
        return "int8" if is_quantized(self.model) else dtype_name(self.dtype)

    @property
    def stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        return {i for i in ids if i is not None and i != self.tokenizer.unk_token_id}

    def to(self, device: str, dtype: torch.dtype | None = None) -> Backbone:
        """Move (and optionally cast) the model in place; returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    # ---- text ---------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prefix_ids(self) -> list[int]:
        return self.encode_text(self.prefix_text)

    def question_ids(self, question: str) -> list[int]:
        before, after = self.question_text
        return self.encode_text(before + question + after)

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        """(n,) ids -> (1, n, D) input embeddings."""
        t = torch.tensor([ids], dtype=torch.long, device=self.device)
        return self.language_model.embed_tokens(t)

    def question_lead(self) -> torch.Tensor | None:
        """(1, 1, D): what goes in front of a question's ids, the model's image_newline, in the
        newline-before-question layout; None in newline-per-chunk (each chunk has its own)."""
        if self.newline_per_chunk:
            return None
        return self.model.model.image_newline.view(1, 1, -1).to(self.device, self.dtype)

    # ---- vision -------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) RGB -> normalised (T, 3, S, S) pixels: bicubic resize with
        antialiasing to the vision size, /255, then (x - mean) / std."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 1.0)
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(T, 3, S, S) -> (1, chunk_tokens(T), D): pooled frame tokens in frame order, then
        (newline-per-chunk) the image_newline token LLaVA-OV appends to every call.
        Differentiable (training uses it); the engine calls it under no_grad."""
        cfg = self.model.config
        out = self.model.model.get_video_features(
            pixel_values_videos=pixels.unsqueeze(0),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        feats = out.pooler_output  # (1, T * tokens_per_frame + 1, D): the newline last
        return feats if self.newline_per_chunk else feats[:, :-1]

    def chunk_layout(self, first_frame: int, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Source frame and kind of each token ``encode_pixels`` returns for n frames starting
        at stream frame `first_frame`: (chunk_tokens(n),) each; a newline counts as the chunk's
        last frame."""
        tpf = self.tokens_per_frame
        frames = torch.arange(first_frame, first_frame + n_frames).repeat_interleave(tpf)
        kinds = torch.full((n_frames * tpf,), VIDEO)
        if self.newline_per_chunk:
            frames = torch.cat([frames, torch.tensor([first_frame + n_frames - 1])])
            kinds = torch.cat([kinds, torch.tensor([NEWLINE])])
        return frames, kinds

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> (1, chunk_tokens(T), D), no gradients."""
        return self.encode_pixels(self.preprocess(frames))

    # ---- RoPE ---------------------------------------------------------------------------
    def rotate_keys(self, keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Re-rotate cached (post-RoPE) keys by a per-token position delta.

        keys (B, KV, n, Dh), delta (n,) long. RoPE rotations compose, so a key at position
        p rotated by (q - p) equals the key computed at position q."""
        rotary = self.language_model.rotary_emb
        cos, sin = rotary(keys, delta.to(keys.device).view(1, -1))  # (1, n, Dh) each
        scale = getattr(rotary, "attention_scaling", 1.0) or 1.0
        cos, sin = (cos / scale).unsqueeze(1), (sin / scale).unsqueeze(1)  # (1, 1, n, Dh)
        half = keys.shape[-1] // 2
        rotated_half = torch.cat((-keys[..., half:], keys[..., :half]), dim=-1)
        return keys * cos + rotated_half * sin


def split_chat_template(tokenizer: PreTrainedTokenizerBase, template: str | None, system_prompt: str | None
                        ) -> tuple[str, tuple[str, str]]:
    """Render a one-turn video chat and cut it at the video placeholder and the question.

    Returns (prefix, (before_question, after_question)). The prefix is ingested once
    before the first chunk; the question text is prefilled on top of the cache. Every
    message's content is a list of parts, as LLaVA-OneVision's template expects (it renders
    a plain-string content as nothing). A missing or broken template, or one that loses the
    video, the question or the system prompt, raises HermesError: there is no fallback."""
    if not template:
        raise HermesError("the model has no chat template (no chat_template.json or chat_template.jinja in its "
                          "directory, none in its tokenizer), so questions cannot be formatted")
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": _QUESTION_SENTINEL}]})
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as err:  # jinja2 syntax / runtime errors, or a template that raises
        raise HermesError(f"the model's chat template could not be rendered ({type(err).__name__}: {err})") from err
    if not isinstance(text, str) or VIDEO_TOKEN not in text or _QUESTION_SENTINEL not in text:
        raise HermesError("the model's chat template has no video placeholder ('<video>'), so it cannot take a stream")
    if system_prompt and system_prompt not in text:
        raise HermesError("the model's chat template dropped the system prompt (it renders no text part of a "
                          "system message)")
    prefix, rest = text.split(VIDEO_TOKEN, 1)
    if _QUESTION_SENTINEL not in rest:
        raise HermesError("the model's chat template puts the question before the video; a stream needs it after")
    before, after = rest.split(_QUESTION_SENTINEL, 1)
    return prefix, (before, after)


def read_settings(directory: Path | None) -> dict:
    """A model directory's hermes.json ({} when it has none); one that cannot be read raises HermesError."""
    if directory is None or not (directory / HERMES_JSON).is_file():
        return {}
    try:
        settings = json.loads((directory / HERMES_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HermesError(f"{directory / HERMES_JSON} could not be read: {err}") from err
    if not isinstance(settings, dict):
        raise HermesError(f"{directory / HERMES_JSON} must hold a JSON object")
    return settings


def bundled_ready(model: str) -> bool:
    """Can the bundled `model` load here: its folder is trained (config.json) and, for a
    committed part on a base (hermes-smol), the base is prepared (`make smol-base`)?"""
    directory = BUNDLED_MODELS[model]
    if not (directory / "config.json").is_file():
        return False
    try:
        base = read_settings(directory).get("base")
    except HermesError:  # unreadable hermes.json: loading would fail too, so it is not offered
        return False
    if not base:
        return True
    from hermes.smol import base_ready  # hermes.smol imports this module

    return base_ready(base)


def _directory_template(directory: Path | None) -> tuple[str | None, str]:
    """The chat template saved beside the model, found as transformers' processor finds it:
    the legacy processor file chat_template.json first, then chat_template.jinja; and where
    it came from."""
    if directory is None:
        return None, "the tokenizer"
    legacy, raw = directory / "chat_template.json", directory / "chat_template.jinja"
    if legacy.is_file():
        try:
            template = json.loads(legacy.read_text()).get("chat_template")
        except (OSError, ValueError, AttributeError) as err:
            raise HermesError(f"{legacy} is not a processor chat template file ({err})") from err
        if not isinstance(template, str) or not template:
            raise HermesError(f"{legacy} has no 'chat_template' string")
        return template, str(legacy)
    if raw.is_file():
        return raw.read_text(), str(raw)
    return None, "the tokenizer"


def _layout(settings: dict) -> str:
    """hermes.json's (or the defaults') "layout"; else transformers' own, newline-before-question."""
    layout = settings.get("layout", NEWLINE_BEFORE_QUESTION)
    if layout not in LAYOUTS:
        raise HermesError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def _finish(name: str, model: LlavaOnevisionForConditionalGeneration, tokenizer: PreTrainedTokenizerBase,
            directory: Path | None, defaults: dict) -> Backbone:
    settings = {**defaults, **read_settings(directory)}
    template, source = _directory_template(directory)
    try:
        prefix, question = split_chat_template(tokenizer, template or tokenizer.chat_template,
                                               settings.get("system_prompt"))
    except HermesError as err:
        raise HermesError(f"{name}: {err} (template from {source})") from err
    model.eval()
    return Backbone(
        name=name,
        model=model,
        tokenizer=tokenizer,
        prefix_text=prefix,
        question_text=question,
        pseudo_queries=dict(settings.get("pseudo_queries", DEFAULT_PSEUDO_QUERIES)),
        layout=_layout(settings),
    )


def _use_hermes_attention(model: LlavaOnevisionForConditionalGeneration) -> None:
    model.set_attn_implementation({"text_config": ATTENTION_NAME, "vision_config": "sdpa"})


def build_random(config: LlavaOnevisionConfig, seed: int = 0, name: str = "random",
                 layout: str = NEWLINE_PER_CHUNK) -> Backbone:
    """A backbone of the given architecture with seeded random weights and the project's tokenizer."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    _use_hermes_attention(model)
    tiny_defaults = {"system_prompt": TINY_SYSTEM_PROMPT, "pseudo_queries": TINY_PSEUDO_QUERIES, "layout": layout}
    return _finish(name, model, tokenizer, None, tiny_defaults)


def load_backbone(model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: str | torch.dtype = "auto",
                  seed: int = 0, quantize: str = "none") -> Backbone:
    """Load a backbone by name, local directory or hub id, on `device` in `dtype` (see the
    module docstring: "auto" by default); quantize="int8": the decoder's weights in int8
    (hermes.quant; "auto" reads HERMES_QUANTIZE)."""
    quantize = resolve_quantize(quantize)
    backbone = _load(model, resolve_device(device), dtype, seed)
    if quantize == "int8":
        quantize_decoder(backbone.model)
    return backbone


def _load(model: str, device: str, dtype: str | torch.dtype, seed: int) -> Backbone:
    dtype = resolve_dtype(dtype, device)
    if model == "random-tiny":
        return build_random(tiny_config(len(build_tokenizer())), seed=seed, name="random-tiny").to(device, dtype)
    if model == "random-ov-0.5b":  # the real architecture: transformers' layout
        return build_random(ov_05b_config(), seed=seed, name="random-ov-0.5b",
                            layout=NEWLINE_BEFORE_QUESTION).to(device, dtype)
    if model in BUNDLED_MODELS:
        directory = BUNDLED_MODELS[model]
        if not (directory / "config.json").is_file():
            raise HermesError(
                f"the bundled model {model!r} is not in {directory}; train it with "
                f"`{TRAIN_COMMANDS[model]}`, or use model='random-tiny'"
            )
        source = str(directory)
    else:
        directory = Path(model).expanduser()
        if directory.exists() and not (directory / "config.json").is_file():
            raise HermesError(f"{directory} is not a saved model directory (no config.json in it)")
        source = str(directory) if directory.exists() else model
        directory = directory if directory.exists() else None
    attn = {"text_config": ATTENTION_NAME, "vision_config": "sdpa"}
    base = read_settings(directory).get("base")
    if base:  # a committed part on a cached base (hermes-smol): hermes.smol joins them
        from hermes.smol import load_composite

        net, tokenizer = load_composite(directory, base, dtype, attn)
        return _finish(model, net.to(device), tokenizer, directory, {})
    try:
        net = LlavaOnevisionForConditionalGeneration.from_pretrained(
            source,
            dtype=dtype,
            attn_implementation=attn,
            use_safetensors=True,  # never unpickle weights
            trust_remote_code=False,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except OSError as err:
        raise HermesError(
            f"could not load model {model!r}: not a saved model directory, and the hub could not "
            f"provide it ({str(err).splitlines()[0]})"
        ) from err
    if directory is None:  # hub id: the processor's chat template is a separate file
        directory = _hub_snapshot_dir(source)
    defaults = {"layout": NEWLINE_PER_CHUNK} if model in BUNDLED_MODELS else {}  # trained that way
    return _finish(model, net.to(device), tokenizer, directory, defaults)


def _hub_snapshot_dir(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model, where its chat_template.json lives."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.jinja"]))
    except Exception:  # then only the tokenizer's template is known; without '<video>' it is refused
        return None

