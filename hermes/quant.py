"""Weight-only int8 for the decoder's linear layers and its output head: what makes a small
decoder answer faster on a CPU, where one answer token costs a read of every decoder weight.

    from hermes.backbones import load_backbone
    bb = load_backbone("hermes-smol", quantize="int8")      # the app and the CLI: HERMES_QUANTIZE=int8

    from hermes.quant import quantize_decoder
    n = quantize_decoder(model)                              # in place: the number of layers replaced

Each ``nn.Linear`` of the language model (q/k/v/o and the MLP of every layer) and the output
head becomes an ``Int8Linear``: per-output-channel symmetric int8 weights and a float scale
(a quarter of float32's bytes). A few rows (a question, one decoded token) go through torch's
packed int8 kernel (``aten._weight_int8pack_mm``) with the activations rounded to bfloat16;
many rows (a chunk of frames being ingested) multiply by the same int8 weights dequantised to
the activations' dtype, which is faster there. Both paths hold the same int8 weights; the
kernel path also rounds the activations and the scale to bfloat16 (on float32 models). The
vision tower and the projector keep their weights: they run once per frame, not per answer
token.

What it costs in accuracy and what it saves in time are for analysis/accuracy.py and
analysis/bench_model.py to say: both take ``--quantize int8`` (results named ``*-int8``).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from hermes.errors import HermesError

QUANTIZE = ("none", "int8")
KERNEL_ROWS = 64  # at most this many rows: the packed int8 kernel; more: dequantised weights (faster there)


def resolve_quantize(quantize: str = "auto") -> str:
    """"auto" -> HERMES_QUANTIZE when set, else "none"; "none" / "int8" are checked and returned.
    (load_backbone defaults to "none": only the app and the CLI read the environment, so a
    study never measures int8 under the plain model's name.)"""
    source = ""
    if quantize == "auto":
        quantize, source = os.environ.get("HERMES_QUANTIZE", "").strip() or "none", " (from HERMES_QUANTIZE)"
    if quantize not in QUANTIZE:
        raise HermesError(f"quantize must be 'auto', {', '.join(repr(q) for q in QUANTIZE)}, "
                          f"got {quantize!r}{source}")
    return quantize


def describe(dtype: str, weights: str) -> str:
    """"float32", or "float32, int8 weights" when the decoder's weights are int8: how a model runs."""
    return f"{dtype}, int8 weights" if weights == "int8" else dtype


class Int8Linear(nn.Module):
    """A linear layer with per-output-channel int8 weights: y = (x @ w_int8.T) * scale + bias,
    in the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)  # (out,) float32; cast to the kernel's bfloat16 per call
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantised(self, dtype: torch.dtype) -> torch.Tensor:
        """The weights (out, in) the layer multiplies by, in `dtype`."""
        return self.weight_int8.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        rows = x.reshape(-1, self.in_features)  # (M, in)
        if len(rows) <= KERNEL_ROWS:
            kernel = torch.bfloat16 if x.dtype == torch.float32 else x.dtype  # its float32 path is ~30x slower here
            y = torch.ops.aten._weight_int8pack_mm(rows.to(kernel), self.weight_int8,
                                                  self.scale.to(kernel)).to(x.dtype)
        else:
            y = rows @ self.dequantised(x.dtype).T
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_decoder(model: nn.Module) -> int:
    """Replace every nn.Linear of a LLaVA-OneVision model's language model, and its output head,
    by an Int8Linear, in place (the head's tie to the input embeddings is cut: the embeddings keep
    their float weights). Returns the number of layers replaced (0 when it already was)."""
    if is_quantized(model):
        return 0
    language_model = model.model.language_model
    names = [name for name, m in language_model.named_modules() if isinstance(m, nn.Linear)]
    for name in names:  # one at a time, so each float layer can be freed as it is replaced
        parent_name, _, child = name.rpartition(".")
        parent = language_model.get_submodule(parent_name) if parent_name else language_model
        setattr(parent, child, Int8Linear(getattr(parent, child)))
    model.lm_head = Int8Linear(model.lm_head)
    return len(names) + 1


def is_quantized(model: nn.Module) -> bool:
    """Whether quantize_decoder was applied to `model`."""
    return isinstance(getattr(model, "lm_head", None), Int8Linear)
