"""The registered attention: per-layer masks and recording of softmax rows."""

from __future__ import annotations

import torch

from hermes.attention import bottom_right_causal_mask, record_attention
from hermes.cache import TEXT
from tests.conftest import make_engine, random_frames


def test_bottom_right_mask():
    assert bottom_right_causal_mask(2, 4, torch.device("cpu")).tolist() == [[True, True, True, False],
                                                                             [True, True, True, True]]


def test_recording_gives_each_layer_its_own_softmax_rows_and_changes_nothing(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    engine.ingest(random_frames(4))
    for layer_idx in range(backbone.n_layers):  # layers of different lengths
        engine.cache.keep(layer_idx, torch.arange(engine.prefix_tokens + 10 + layer_idx))
    ids = backbone.question_ids("what is on the screen now ?")
    n = len(ids)
    args = (backbone.embed_ids(ids), engine.next_position + torch.arange(n), torch.full((n,), -1),
            torch.full((n,), TEXT))
    plain = engine._forward(*args, write=False)
    with record_attention() as rec:
        recorded = engine._forward(*args, write=False)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert sorted(rec.rows) == list(range(backbone.n_layers))
    for layer_idx, rows in rec.rows.items():
        k = engine.prefix_tokens + 10 + layer_idx + n
        assert rows.shape == (n, k)
        torch.testing.assert_close(rows.sum(-1), torch.ones(n))
        # query i cannot see the question tokens after it
        assert rows[0, k - n + 1:].abs().max().item() == 0.0
    assert engine.cache.lengths() == [engine.prefix_tokens + 10 + i for i in range(backbone.n_layers)]
