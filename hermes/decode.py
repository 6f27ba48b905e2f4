"""The decoder on top of the cache: one forward, greedy decoding, incremental detokenisation.

    hidden = run_text(backbone, cache, ids, write=False)   # (1, n, D), nothing written
    window = append_chunk(backbone, cache, feats, frames, kinds, rows=16)  # a chunk, its last attention rows
    with cache.scratch():                                  # the question and answer vanish after
        for token in greedy(backbone, cache, ids, max_new=16, penalty=1.1):
            ...
    detok = Detokenizer(tokenizer); piece = detok.add(token)

Nothing here scores, evicts or re-encodes: this is all a question costs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from hermes.attention import record_attention
from hermes.backbones import Backbone
from hermes.cache import TEXT, HermesCache


@dataclass
class Answer:
    """A decoded answer and its timing."""

    text: str
    tokens: list[int] = field(default_factory=list)
    ttft_s: float = 0.0  # question arrival -> first decoded token
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else 0.0


@torch.no_grad()
def run_decoder(backbone: Backbone, cache: HermesCache, embeds: torch.Tensor, positions: torch.Tensor,
                frames: torch.Tensor, kinds: torch.Tensor, write: bool = True) -> torch.Tensor:
    """Run the decoder over (1, n, D) embeddings at `positions` on top of the cache -> (1, n, D)
    hidden states; with write=False the cache is left as it was."""
    with cache.staged(positions, frames, kinds, write=write):
        out = backbone.language_model(
            inputs_embeds=embeds,
            position_ids=positions.view(1, -1).to(embeds.device),
            past_key_values=cache,
            attention_mask={"full_attention": None},
            use_cache=True,
        )
    return out.last_hidden_state


def run_text(backbone: Backbone, cache: HermesCache, ids: list[int], write: bool, kind: int = TEXT,
             lead: torch.Tensor | None = None) -> torch.Tensor:
    """Text tokens at the stream's next positions -> (1, n, D) hidden; `write` keeps them
    (and advances the stream's positions). `lead`: (1, m, D) embeddings placed before the ids
    (``Backbone.question_lead()``: the image_newline in front of a question); n counts them."""
    embeds = backbone.embed_ids(ids) if lead is None else torch.cat([lead, backbone.embed_ids(ids)], dim=1)
    n = embeds.shape[1]
    hidden = run_decoder(backbone, cache, embeds, cache.next_positions(n),
                         torch.full((n,), -1), torch.full((n,), kind), write=write)
    if write:
        cache.advance(n)
    return hidden


@dataclass
class Peek:
    """What a text placed after the stream would produce, nothing written."""

    hidden: torch.Tensor  # (n, D) last hidden states of its rows
    logits: torch.Tensor  # (V,) fp32 logits of the token after its last row


def append_chunk(backbone: Backbone, cache: HermesCache, feats: torch.Tensor, frames: torch.Tensor,
                 kinds: torch.Tensor, rows: int = 0) -> dict[int, torch.Tensor]:
    """Append a chunk's (1, n, D) features to every layer at the next positions. With `rows`,
    record the attention the chunk's queries put on each token (added to each layer's
    ``acc``) and return layer -> its last `rows` attention rows (r, k)."""
    n = feats.shape[1]
    positions = cache.next_positions(n)
    if not rows:
        run_decoder(backbone, cache, feats, positions, frames, kinds)
        cache.advance(n)
        return {}
    with record_attention(keep_rows=rows) as rec:
        run_decoder(backbone, cache, feats, positions, frames, kinds)
    cache.advance(n)
    for layer_idx, layer in enumerate(cache.layers):
        layer.add_attention(rec.totals[layer_idx].cpu())
    return rec.rows


@torch.no_grad()
def next_logits(backbone: Backbone, hidden: torch.Tensor) -> torch.Tensor:
    """(1, n, D) hidden -> (V,) fp32 logits of the token after the last row."""
    return backbone.model.lm_head(hidden[:, -1]).float()[0]


def penalise(logits: torch.Tensor, seen: set[int], penalty: float) -> torch.Tensor:
    """Repetition penalty (as transformers' and the released HERMES code's): divide positive,
    multiply negative logits of the `seen` tokens."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(seen), dtype=torch.long)
    vals = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def greedy(backbone: Backbone, cache: HermesCache, ids: list[int], max_new: int, penalty: float,
           lead: torch.Tensor | None = None) -> Iterator[int | None]:
    """Prefill `ids` at the next positions, then decode greedily with repetition penalty.
    Yields token ids; None once a stop token is chosen (the first yield is the first token).
    Writes into the cache: run it inside ``cache.scratch()``, or between ``cache.mark()`` and
    ``cache.rewind(mark)`` when the tokens are read across calls (as ``StreamEngine.ask_stream``).

    As in the released HERMES code, the penalty falls on the tokens generated so far only
    (never on the question and its chat template, so the first token is unpenalised), and
    never on a stop token."""
    seen: set[int] = set()
    hidden = run_text(backbone, cache, ids, write=True, lead=lead)  # lead: see run_text
    for step in range(max_new):
        token = int(penalise(next_logits(backbone, hidden), seen - backbone.stop_ids, penalty).argmax())
        if token in backbone.stop_ids:
            yield None
            return
        yield token
        seen.add(token)
        if step + 1 < max_new:
            hidden = run_text(backbone, cache, [token], write=True)


class Detokenizer:
    """Token ids in, text pieces out: a piece is released once it decodes to whole characters."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.shown = ""

    def add(self, token: int) -> str:
        """The new text `token` completes ("" while a character is still incomplete)."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not text.startswith(self.shown) or text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)
