"""Cache operations on a real cache filled by the engine: keep, fold, crop, bytes."""

from __future__ import annotations

import pytest
import torch

from hermes.cache import NEWLINE, PREFIX, SUMMARY, VIDEO
from tests.conftest import make_engine, random_frames


@pytest.fixture
def engine(backbone):
    e = make_engine(backbone, "full", chunk_frames=4)
    e.ingest(random_frames(8))
    return e


def test_layout_after_two_chunks(engine):
    layer = engine.cache.layers[0]
    p = engine.prefix_tokens
    assert layer.kinds[:p].tolist() == [PREFIX] * p
    assert layer.kinds.tolist().count(NEWLINE) == 2 and layer.kinds.tolist().count(VIDEO) == 8 * 16
    assert torch.equal(layer.positions, torch.arange(len(layer)))
    assert layer.frames[p:p + 16].tolist() == [0] * 16 and layer.frames[-1].item() == 7
    assert engine.cache_lengths() == [8 * 16 + 2] * 12


def test_keep_is_per_layer(engine):
    cache = engine.cache
    before = cache.layers[1].keys.clone()
    idx = torch.tensor([0, 5, 20, 40])
    cache.keep(3, idx)
    assert len(cache.layers[3]) == 4 and cache.layers[3].positions.tolist() == [0, 5, 20, 40]
    assert torch.equal(cache.layers[1].keys, before)
    assert cache.lengths()[3] == 4 and cache.lengths()[2] == engine.prefix_tokens + 130


def test_fold_makes_one_rope_aligned_summary_token(engine, backbone):
    cache = engine.cache
    layer = cache.layers[9]
    p = engine.prefix_tokens
    idx = torch.arange(p, p + 10)
    keys, values, positions = layer.keys[..., idx, :], layer.values[..., idx, :], layer.positions[idx]
    n = len(layer)
    cache.fold(9, idx)
    assert len(layer) == n - 9
    assert layer.kinds[p].item() == SUMMARY and layer.positions[p].item() == positions.min().item()
    assert layer.frames[p].item() == -1
    want_k = backbone.rotate_keys(keys, positions.min() - positions).mean(dim=-2)
    torch.testing.assert_close(layer.keys[..., p, :], want_k)
    torch.testing.assert_close(layer.values[..., p, :], values.mean(dim=-2))
    assert bool((layer.positions[1:] > layer.positions[:-1]).all())  # still in position order
    # the summary is an ordinary token: folding again absorbs it
    cache.fold(9, torch.arange(p, p + 3))
    assert layer.kinds.tolist().count(SUMMARY) == 1 and len(layer) == n - 11


def test_crop_and_bytes(engine, backbone):
    cache = engine.cache
    cfg = backbone.language_model.config
    per_token = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4  # K + V, fp32
    assert cache.nbytes() == sum(cache.lengths()) * per_token
    lengths = [n - i for i, n in enumerate(cache.lengths())]
    cache.crop(lengths)
    assert cache.lengths() == lengths
    assert cache.nbytes() == sum(lengths) * per_token


def test_forward_without_staged_metadata_is_refused(engine, backbone):
    with pytest.raises(RuntimeError, match="stage the new tokens"):
        backbone.language_model(inputs_embeds=backbone.embed_ids([5]), past_key_values=engine.cache,
                                attention_mask={"full_attention": None})
