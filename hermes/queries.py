"""Pseudo-queries: the texts HERMES asks after every chunk, and where a text looks in the cache.

    texts = pseudo_texts(backbone.pseudo_queries, last_exchange=("how many ?", "two"))
    per_layer = text_attention(backbone, cache, backbone.question_ids(texts["global"]))
    attention = pseudo_query_attention(backbone, cache, texts, {"global", "mixed"})

A pseudo-query runs at the stream's next positions without writing; its attention per cached
token is the softmax mass its rows put there, mean over heads and rows. This is the work that
makes scoring happen at ingest time, so a user's question never triggers it.

Two styles (``HermesConfig.pseudo_query_style``). "released", as the released HERMES code: the
text is tokenised as it is, without the chat template, and after a question both texts carry
"Question: Q Answer: A" (an answer's "X) " option markers removed). "chat", this project's
earlier behaviour: the text is rendered like a question (chat template) and the local text
carries the question only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import torch

from hermes.attention import record_attention
from hermes.backbones import Backbone
from hermes.cache import HermesCache
from hermes.decode import run_text


def pseudo_texts(base: dict[str, str], last_exchange: tuple[str, str] | None = None, style: str = "released"
                 ) -> dict[str, str]:
    """local / global / mixed texts; after a question, conditioned on it and its answer."""
    texts = dict(base)
    if last_exchange:
        question, answer = last_exchange
        if style == "released":
            answer = re.sub(r"[A-Z]\) ", "", answer)
        history = f"Question: {question} Answer: {answer}"
        texts["local"] = f"Find recent details related to: {history if style == 'released' else question}. " \
                         f"{base['local']}"
        texts["global"] = f"Context summary: {history}. {base['global']}"
    texts["mixed"] = f"{texts['local']}; {texts['global']}"
    return texts


def pseudo_query_ids(backbone: Backbone, text: str, style: str = "released") -> list[int]:
    """The ids a pseudo-query runs: the raw text ("released") or the text as a question ("chat")."""
    return backbone.encode_text(text) if style == "released" else backbone.question_ids(text)


def text_attention(backbone: Backbone, cache: HermesCache, ids: list[int], lead: torch.Tensor | None = None
                   ) -> list[np.ndarray]:
    """Per layer (len(layer),): the attention the text `ids` (after `lead`, see
    ``decode.run_text``), asked now, puts on each cached token (mean over heads and its rows);
    nothing is written."""
    rows = len(ids) + (0 if lead is None else lead.shape[1])
    with record_attention() as rec:
        run_text(backbone, cache, ids, write=False, lead=lead)
    return [(rec.totals[i][: len(layer)] / rows).cpu().numpy() for i, layer in enumerate(cache.layers)]


def pseudo_query_attention(backbone: Backbone, cache: HermesCache, texts: dict[str, str], names: Iterable[str],
                           style: str = "released") -> dict[str, list[np.ndarray]]:
    """name -> per layer (len(layer),) attention of each named pseudo-query, one forward each."""
    return {name: text_attention(backbone, cache, pseudo_query_ids(backbone, texts[name], style))
            for name in sorted(names)}
