"""Property-based tests (hypothesis): any sequence of ingest / flush / ask, under any policy,
budget, chunk size and re-index mode (evictions, summary folds and re-indexing happen along
the way), keeps the cache's invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes.cache import META_BYTES, VIDEO, keeps_reference
from hermes.policies import available
from tests.conftest import make_engine, random_frames

OPS = st.lists(st.one_of(st.tuples(st.just("ingest"), st.integers(1, 6)), st.tuples(st.just("flush")),
                         st.tuples(st.just("ask"))), min_size=1, max_size=8)


def snapshot(cache) -> list[tuple[torch.Tensor, ...]]:
    return [(layer.keys.clone(), layer.values.clone(), layer.positions.clone(), layer.frames.clone(),
             layer.kinds.clone()) for layer in cache.layers if layer.is_initialized]


def check_invariants(engine, budget: int, layer_budgets: np.ndarray | None) -> None:
    """layer_budgets: what the policy gave each layer at the last chunk (pyramidkv gives
    shallow layers more and deep layers less than `budget`, the same in total)."""
    cache = engine.cache
    held_all = engine.cache_lengths()
    if engine.policy.name != "full" and layer_budgets is not None:
        assert all(h <= b for h, b in zip(held_all, layer_budgets, strict=True)), (held_all, layer_budgets)
        assert sum(held_all) <= budget * len(held_all) + len(held_all)  # rounding: at most one token a layer
    expected_bytes = 0
    for layer in cache.layers:
        n = len(layer)
        assert np.all(np.diff(layer.positions.numpy()) > 0), "positions must strictly increase"
        assert len(layer.frames) == len(layer.kinds) == len(layer.acc) == len(layer.origins) == n
        assert layer.keys.shape[-2] == layer.values.shape[-2] == layer.references.shape[-2] == n
        video = layer.kinds == VIDEO
        assert torch.all(layer.frames[video] >= 0) and torch.all(layer.frames[video] < engine.frames_seen)
        if not keeps_reference(layer.keys.dtype):  # fp32: the keys are their own reference
            assert torch.equal(layer.origins, layer.positions)
        kv_heads_dim = layer.keys.shape[1] * layer.keys.shape[-1]
        key_copies = 3 if keeps_reference(layer.keys.dtype) else 2  # K, V (and reference keys)
        expected_bytes += n * (key_copies * kv_heads_dim * layer.keys.element_size() + META_BYTES)
    assert cache.nbytes() == expected_bytes


@pytest.mark.timeout(600)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, policy=st.sampled_from(available()), budget=st.integers(8, 48), chunk=st.integers(1, 4),
       reindex=st.sampled_from(["lazy", "eager"]), seed=st.integers(0, 2**16))
def test_any_sequence_of_operations_keeps_the_cache_invariants(backbone, ops, policy, budget, chunk, reindex, seed):
    max_pos = backbone.language_model.config.max_position_embeddings
    engine = make_engine(backbone, policy, budget=budget, chunk_frames=chunk, reindex=reindex,
                         reindex_margin=max_pos - 40, max_new_tokens=2)  # lazy mode re-indexes early too
    frames = random_frames(40, 16, 16, seed=seed)
    t = 0
    layer_budgets = None
    for op in ops:
        if op[0] in ("ingest", "flush"):
            if op[0] == "ingest":
                events = engine.ingest(frames[t:t + op[1]], np.arange(t, t + op[1]) * 0.5)
                t += op[1]
            else:
                events = engine.flush()
            if events:
                layer_budgets = events[-1].layer_budgets
        elif engine.frames_seen:
            before = snapshot(engine.cache)
            engine.ask("what is on the screen now ?")
            after = snapshot(engine.cache)
            assert len(before) == len(after)
            assert all(torch.equal(a, b) for x, y in zip(before, after, strict=True)
                       for a, b in zip(x, y, strict=True)), "ask() must leave the cache bit-identical"
        check_invariants(engine, budget, layer_budgets)
