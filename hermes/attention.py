"""Attention for caches whose layers hold different numbers of tokens, with optional recording.

The stock transformers mask is built once from layer 0's cache length; once layers evict
different tokens that mask is wrong for every other layer. ``hermes_attention`` builds its
own bottom-right causal mask per call (the q new queries are the last q of the k keys,
every cached key is visible to them) and handles grouped-query attention.

When a recorder is active (``with record_attention() as rec:``), every layer also stores
the softmax rows of the current queries over its keys, averaged over heads:
``rec.rows[layer_idx]`` (the last ``keep_rows`` rows, or all: (r, k)) and
``rec.totals[layer_idx]`` (every row summed: (k,), the attention each key received).
The recorder travels in a ContextVar because ``generate()`` and the model's forward
reject unknown kwargs.

``with select_keys(top_k, always):`` turns every layer into retrieval at question time, the
ReKV-like baseline of analysis.efficiency: the current queries score the layer's cached keys
(softmax of q.k, summed over heads and rows), and attention runs over the first ``always``
keys (the prefix), the ``top_k`` best of the rest and the queries' own keys only. One pass,
layer by layer, as ReKV retrieves; nothing in the cache changes.

Registered with transformers as ``ATTENTION_NAME``; select it with
``model.set_attn_implementation({"text_config": ATTENTION_NAME, "vision_config": "sdpa"})``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION_NAME = "hermes"


@dataclass
class AttentionRecorder:
    """Softmax rows per layer, float32, mean over heads: rows[layer] (r, k), totals[layer] (k,)."""

    keep_rows: int | None = None  # keep only the last r query rows (None: all)
    rows: dict[int, torch.Tensor] = field(default_factory=dict)
    totals: dict[int, torch.Tensor] = field(default_factory=dict)

    def add(self, layer_idx: int, probs: torch.Tensor) -> None:
        """probs (B, H, q, k) -> mean over batch and heads."""
        mean = probs.mean(dim=(0, 1))  # (q, k)
        self.totals[layer_idx] = mean.sum(dim=0)
        self.rows[layer_idx] = mean if self.keep_rows is None else mean[-self.keep_rows:]


_RECORDER: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar("hermes_recorder", default=None)


@dataclass(frozen=True)
class KeySelector:
    """Retrieval at question time: attend to the prefix, the top_k scored keys and the queries' own."""

    top_k: int
    always: int = 0  # leading keys always kept (the prefix)

    def pick(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H, q, Dh), key/value (B, KV, k, Dh) -> the kept keys/values, in cache order."""
        q_len, k_len = query.shape[2], key.shape[2]
        past = k_len - q_len  # cached keys; the last q_len are the queries' own
        if past - self.always <= self.top_k:
            return key, value
        b, kv, dh = key.shape[0], key.shape[1], key.shape[3]
        grouped = query.reshape(b, kv, -1, dh)  # (B, KV, G * q, Dh): heads of one KV group together
        logits = grouped @ key[:, :, self.always:past].transpose(-1, -2) * scale  # (B, KV, G * q, past - always)
        scores = logits.float().softmax(-1).sum(dim=(0, 1, 2))  # (past - always,)
        top = scores.topk(self.top_k).indices.sort().values + self.always
        device = key.device
        index = torch.cat([torch.arange(self.always, device=device), top, torch.arange(past, k_len, device=device)])
        return key[:, :, index], value[:, :, index]


_SELECTOR: contextvars.ContextVar[KeySelector | None] = contextvars.ContextVar("hermes_selector", default=None)


@contextlib.contextmanager
def record_attention(keep_rows: int | None = None) -> Iterator[AttentionRecorder]:
    """Record every decoder layer's attention rows during the forwards run inside."""
    recorder = AttentionRecorder(keep_rows=keep_rows)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)


@contextlib.contextmanager
def select_keys(top_k: int, always: int = 0) -> Iterator[KeySelector]:
    """Inside, every decoder layer attends only to its retrieved keys (see the module docstring)."""
    selector = KeySelector(top_k, always)
    token = _SELECTOR.set(selector)
    try:
        yield selector
    finally:
        _SELECTOR.reset(token)


def bottom_right_causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(q, k) bool, True = may attend: query i sees keys j <= i + (k - q)."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def hermes_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, q, Dh)
    key: torch.Tensor,  # (B, KV, k, Dh)
    value: torch.Tensor,  # (B, KV, k, Dh)
    attention_mask: torch.Tensor | None,  # ignored: layer-0-shaped, see module docstring
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention over this layer's own keys; returns ((B, q, H, Dh), None)."""
    selector = _SELECTOR.get()
    if selector is not None:
        key, value = selector.pick(query, key, value, scaling if scaling is not None else query.shape[-1] ** -0.5)
    q_len, k_len = query.shape[2], key.shape[2]
    if k_len < q_len:
        raise RuntimeError(f"attention got {q_len} queries but only {k_len} keys")
    groups = query.shape[1] // key.shape[1]
    mask = bottom_right_causal_mask(q_len, k_len, query.device) if q_len > 1 else None
    recorder = _RECORDER.get()
    if recorder is None:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scaling, enable_gqa=groups > 1
        )  # (B, H, q, Dh)
        return out.transpose(1, 2).contiguous(), None
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)  # (B, H, k, Dh)
        value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale  # (B, H, q, k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    recorder.add(int(module.layer_idx), probs)
    out = torch.matmul(probs.to(value.dtype), value)  # (B, H, q, Dh)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, hermes_attention)
