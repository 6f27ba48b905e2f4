"""Reference computations from scratch, independent of the engine's cache and attention function."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from hermes.attention import ATTENTION_NAME
from hermes.backbones import Backbone


@contextlib.contextmanager
def stock_attention(backbone: Backbone) -> Iterator[None]:
    """Run the language model with transformers' own SDPA attention and causal mask."""
    lm = backbone.language_model
    lm.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        lm.set_attn_implementation(ATTENTION_NAME)


def stream_embeds(backbone: Backbone, frames: np.ndarray, chunk_frames: int) -> torch.Tensor:
    """(1, n, D): prefix tokens, then each chunk's frame tokens + newline, as the engine lays them out."""
    parts = [backbone.embed_ids(backbone.prefix_ids())]
    for start in range(0, len(frames), chunk_frames):
        parts.append(backbone.encode_frames(frames[start:start + chunk_frames]))
    return torch.cat(parts, dim=1)


@torch.no_grad()
def full_logits(backbone: Backbone, embeds: torch.Tensor) -> torch.Tensor:
    """Next-token logits (V,) after one cache-free forward over positions 0..n-1."""
    with stock_attention(backbone):
        out = backbone.language_model(inputs_embeds=embeds, use_cache=False)
    return backbone.model.lm_head(out.last_hidden_state[:, -1]).float()[0]


@torch.no_grad()
def greedy_from_scratch(backbone: Backbone, embeds: torch.Tensor, question_ids: list[int], max_new: int,
                        penalty: float) -> list[int]:
    """Greedy decoding by re-running the whole sequence for every token (no cache); the penalty
    falls on the generated tokens only (the released HERMES code's)."""
    seq = torch.cat([embeds, backbone.embed_ids(question_ids)], dim=1)
    seen, out = set(), []
    for _ in range(max_new):
        logits = full_logits(backbone, seq)
        idx = torch.tensor(sorted(seen), dtype=torch.long)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
        token = int(logits.argmax())
        if token in backbone.stop_ids:
            break
        out.append(token)
        seen.add(token)
        seq = torch.cat([seq, backbone.embed_ids([token])], dim=1)
    return out


@torch.no_grad()
def logits_over_layer_kv(backbone: Backbone, layer_kv: list[tuple[torch.Tensor, torch.Tensor]],
                         embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Decoder written out by hand: new tokens attend to each layer's given keys/values
    (post-RoPE) plus themselves causally. Returns next-token logits (V,)."""
    lm = backbone.language_model
    cos, sin = lm.rotary_emb(embeds, positions.view(1, -1))
    h = embeds
    q_len = embeds.shape[1]
    for layer, (past_k, past_v) in zip(lm.layers, layer_kv, strict=True):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(1, q_len, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, q_len, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(1, q_len, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys = torch.cat([past_k, k], dim=2).repeat_interleave(attn.num_key_value_groups, dim=1)
        values = torch.cat([past_v, v], dim=2).repeat_interleave(attn.num_key_value_groups, dim=1)
        n_past = past_k.shape[2]
        scores = q @ keys.transpose(-1, -2) * attn.scaling  # (1, H, q, n_past + q)
        allowed = torch.ones(q_len, n_past + q_len, dtype=torch.bool)
        allowed[:, n_past:] = torch.ones(q_len, q_len, dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = (scores.softmax(-1) @ values).transpose(1, 2).reshape(1, q_len, -1)
        h = h + attn.o_proj(out)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return backbone.model.lm_head(lm.norm(h)[:, -1]).float()[0]
