"""Cache operations on a real cache filled by the engine: keep, fold, crop, rewind, bytes, and
every operation inherited from transformers' Cache / DynamicLayer (one table)."""

from __future__ import annotations

import pytest
import torch

from hermes.cache import NEWLINE, PREFIX, SUMMARY, VIDEO, CacheMark, HermesCache, HermesLayer
from hermes.errors import HermesError
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
    cache.layers[3].keep(idx)
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
    layer.fold(idx)
    assert len(layer) == n - 9
    assert layer.kinds[p].item() == SUMMARY and layer.positions[p].item() == positions.min().item()
    assert layer.frames[p].item() == -1
    want_k = backbone.rotate_keys(keys, positions.min() - positions).mean(dim=-2)
    torch.testing.assert_close(layer.keys[..., p, :], want_k)
    torch.testing.assert_close(layer.values[..., p, :], values.mean(dim=-2))
    assert bool((layer.positions[1:] > layer.positions[:-1]).all())  # still in position order
    # the summary is an ordinary token: folding again absorbs it
    layer.fold(torch.arange(p, p + 3))
    assert layer.kinds.tolist().count(SUMMARY) == 1 and len(layer) == n - 11


def test_crop_and_bytes(engine, backbone):
    cache = engine.cache
    cfg = backbone.language_model.config
    per_token = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4  # K + V, fp32
    assert cache.nbytes() == sum(cache.lengths()) * per_token
    lengths = [n - i for i, n in enumerate(cache.lengths())]
    cache.rewind(CacheMark(tuple(lengths), cache.next_position))
    assert cache.lengths() == lengths
    assert cache.nbytes() == sum(lengths) * per_token
    cache.crop(-3)  # transformers' meaning: the 3 newest tokens of every layer go
    assert cache.lengths() == [n - 3 for n in lengths]


def test_scratch_removes_what_was_written_inside_and_restores_the_next_position(engine, backbone):
    cache = engine.cache
    before = (cache.lengths(), cache.next_position, [layer.keys.clone() for layer in cache.layers])
    with cache.scratch():
        list(engine.ask_stream("what is on the screen now ?", max_new_tokens=3))  # nested scratch inside
        engine.peek([5, 6, 7])
        cache.advance(10)
    assert (cache.lengths(), cache.next_position) == before[:2]
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, before[2], strict=True))


def in_step(layer: HermesLayer) -> bool:
    """Keys, values and every metadata field describe the same tokens."""
    n = len(layer)
    lengths = {len(layer.positions), len(layer.frames), len(layer.kinds), len(layer.acc)}
    return lengths == {n} and (not layer.is_initialized or layer.keys.shape[-2] == layer.values.shape[-2] == n)


# (operation, what it does to a layer filled with n tokens) for every Cache / DynamicLayer method
# transformers may call; -1 = the operation refuses with a clear error
INHERITED = [
    ("layer.crop(-5)", lambda layer: layer.crop(-5), lambda n: n - 5),
    ("layer.crop(-n) empties", lambda layer: layer.crop(-len(layer)), lambda n: 0),
    ("layer.crop(0)", lambda layer: layer.crop(0), lambda n: n),
    ("layer.reset()", lambda layer: layer.reset(), lambda n: 0),
    ("layer.get_seq_length()", lambda layer: layer.get_seq_length(), lambda n: n),
    ("layer.offload() + prefetch()", lambda layer: (layer.offload(), layer.prefetch()), lambda n: n),
    ("layer.reorder_cache", lambda layer: layer.reorder_cache(torch.tensor([0])), lambda n: -1),
    ("layer.batch_repeat_interleave", lambda layer: layer.batch_repeat_interleave(2), lambda n: -1),
    ("layer.batch_select_indices", lambda layer: layer.batch_select_indices(torch.tensor([0])), lambda n: -1),
]
CACHE_OPS = [
    ("cache.crop(-5)", lambda cache: cache.crop(-5), lambda n: n - 5),
    ("cache.reset()", lambda cache: cache.reset(), lambda n: 0),
    ("cache.get_seq_length(3)", lambda cache: cache.get_seq_length(3), lambda n: n),
    ("cache.reorder_cache", lambda cache: cache.reorder_cache(torch.tensor([0])), lambda n: -1),
    ("cache.batch_repeat_interleave", lambda cache: cache.batch_repeat_interleave(2), lambda n: -1),
    ("cache.batch_select_indices", lambda cache: cache.batch_select_indices(torch.tensor([0])), lambda n: -1),
]


@pytest.mark.parametrize("name, op, length", INHERITED, ids=[row[0] for row in INHERITED])
def test_inherited_layer_operations_keep_metadata_in_step(engine, name, op, length):
    layer = engine.cache.layers[3]
    n = len(layer)
    if length(n) < 0:
        with pytest.raises(HermesError, match="batch size 1"):
            op(layer)
        assert len(layer) == n and in_step(layer)
        return
    result = op(layer)
    assert len(layer) == length(n) and in_step(layer)
    if name.startswith("layer.get_seq_length"):
        assert result == n
    if length(n) == n:  # nothing lost: the tokens are the ones the engine wrote
        assert torch.equal(layer.positions, torch.arange(n))


@pytest.mark.parametrize("name, op, length", CACHE_OPS, ids=[row[0] for row in CACHE_OPS])
def test_inherited_cache_operations_fan_out_and_keep_positions(engine, name, op, length):
    cache: HermesCache = engine.cache
    n = cache.lengths()[0]
    if length(n) < 0:
        with pytest.raises(HermesError, match="batch size 1"):
            op(cache)
        assert cache.lengths()[0] == n
        return
    position = cache.next_position
    result = op(cache)
    assert cache.lengths() == [length(n)] * len(cache.layers) and all(in_step(layer) for layer in cache.layers)
    # reset starts a new stream; anything else leaves the stream's next position (never reused)
    assert cache.next_position == (0 if name == "cache.reset()" else position)
    if name.startswith("cache.get_seq_length"):
        assert result == n



def test_forward_without_staged_metadata_is_refused(engine, backbone):
    with pytest.raises(RuntimeError, match="stage the new tokens"):
        backbone.language_model(inputs_embeds=backbone.embed_ids([5]), past_key_values=engine.cache,
                                attention_mask={"full_attention": None})
