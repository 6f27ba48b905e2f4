"""The registered attention: per-layer masks and recording of softmax rows."""

from __future__ import annotations

import torch

from hermes.attention import KeySelector, bottom_right_causal_mask, hermes_attention, record_attention, select_keys
from tests.conftest import make_engine, random_frames


def test_bottom_right_mask():
    assert bottom_right_causal_mask(2, 4, torch.device("cpu")).tolist() == [[True, True, True, False],
                                                                             [True, True, True, True]]


def test_recording_gives_each_layer_its_own_softmax_rows_and_changes_nothing(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    engine.ingest(random_frames(4))
    for layer_idx in range(backbone.n_layers):  # layers of different lengths
        engine.cache.layers[layer_idx].keep(torch.arange(engine.prefix_tokens + 10 + layer_idx))
    ids = backbone.question_ids("what is on the screen now ?")
    n = len(ids)
    plain = engine.peek(ids).hidden
    with record_attention() as rec:
        recorded = engine.peek(ids).hidden
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert sorted(rec.rows) == list(range(backbone.n_layers))
    for layer_idx, rows in rec.rows.items():
        k = engine.prefix_tokens + 10 + layer_idx + n
        assert rows.shape == (n, k)
        torch.testing.assert_close(rows.sum(-1), torch.ones(n))
        # query i cannot see the question tokens after it
        assert rows[0, k - n + 1:].abs().max().item() == 0.0
    assert engine.cache.lengths() == [engine.prefix_tokens + 10 + i for i in range(backbone.n_layers)]


class _Layer(torch.nn.Module):
    layer_idx = 0


def test_selected_keys_are_the_prefix_the_best_scored_and_the_queries_own():
    torch.manual_seed(0)
    query = torch.randn(1, 4, 3, 8)  # 4 heads, 2 KV heads, 3 new tokens
    key, value = torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8)  # 37 cached + the 3 new
    key[:, :, 20] = query[0, :, 0].reshape(2, 2, 8).sum(1) * 3  # key 20 matches the queries best
    picked_k, picked_v = KeySelector(top_k=5, always=2).pick(query, key, value, 8 ** -0.5)
    assert picked_k.shape == (1, 2, 2 + 5 + 3, 8)
    index = [int((key[0, 0] == k).all(-1).nonzero()) for k in picked_k[0, 0]]
    assert index[:2] == [0, 1] and index[-3:] == [37, 38, 39] and 20 in index[2:7]
    assert index == sorted(index)  # cache order kept
    assert torch.equal(picked_v[0, 0], value[0, 0, index])


def test_attention_with_retrieval_equals_attention_over_the_retrieved_keys():
    torch.manual_seed(1)
    query, key, value = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8)
    with select_keys(top_k=50):  # more than there is: nothing dropped
        same, _ = hermes_attention(_Layer(), query, key, value, None)
    torch.testing.assert_close(same, hermes_attention(_Layer(), query, key, value, None)[0])
    with select_keys(top_k=6, always=1):
        out, _ = hermes_attention(_Layer(), query, key, value, None)
    k2, v2 = KeySelector(6, 1).pick(query, key, value, 8 ** -0.5)
    torch.testing.assert_close(out, hermes_attention(_Layer(), query, k2, v2, None)[0])
    assert not torch.allclose(out, same)
