"""Pseudo-queries: the texts HERMES asks after every chunk, and where a text looks in the cache.

    texts = pseudo_texts(backbone.pseudo_queries, last_exchange=("how many ?", "two"))
    per_layer = text_attention(backbone, cache, backbone.question_ids(texts["global"]))
    attention = pseudo_query_attention(backbone, cache, texts, {"global", "mixed"})

A text is rendered like a question (chat template) and run at the stream's next positions
without writing; its attention per cached token is the softmax mass its rows put there,
mean over heads and rows. This is the work that makes scoring happen at ingest time, so a
user's question never triggers it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hermes.attention import record_attention
from hermes.backbones import Backbone
from hermes.cache import HermesCache
from hermes.decode import run_text


def pseudo_texts(base: dict[str, str], last_exchange: tuple[str, str] | None = None) -> dict[str, str]:
    """local / global / mixed texts; after a question, conditioned on it and its answer."""
    texts = dict(base)
    if last_exchange:
        question, answer = last_exchange
        texts["local"] = f"Find recent details related to: {question}. {texts['local']}"
        texts["global"] = f"Context summary: Question: {question} Answer: {answer}. {texts['global']}"
    texts["mixed"] = f"{texts['local']}; {texts['global']}"
    return texts


def text_attention(backbone: Backbone, cache: HermesCache, ids: list[int]) -> list[np.ndarray]:
    """Per layer (len(layer),): the attention the text `ids`, asked now, puts on each cached
    token (mean over heads and its rows); nothing is written."""
    with record_attention() as rec:
        run_text(backbone, cache, ids, write=False)
    return [(rec.totals[i][: len(layer)] / len(ids)).cpu().numpy() for i, layer in enumerate(cache.layers)]


def pseudo_query_attention(backbone: Backbone, cache: HermesCache, texts: dict[str, str], names: Iterable[str]
                           ) -> dict[str, list[np.ndarray]]:
    """name -> per layer (len(layer),) attention of each named pseudo-query, one forward each."""
    return {name: text_attention(backbone, cache, backbone.question_ids(texts[name])) for name in sorted(names)}
