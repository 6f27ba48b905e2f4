"""Cache operations on a real cache filled by the engine: keep, fold, crop, rewind, bytes, and
every operation inherited from transformers' Cache / DynamicLayer (one table); re-indexing
many times in bf16 / fp16 without drift."""

from __future__ import annotations

import pytest
import torch

from hermes.backbones import load_backbone
from hermes.cache import META_BYTES, NEWLINE, PREFIX, SUMMARY, VIDEO, CacheMark, HermesCache, HermesLayer
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
    per_token += META_BYTES  # positions, frames, kinds, acc, origins; fp32 keeps no reference keys
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
    lengths = {len(layer.positions), len(layer.frames), len(layer.kinds), len(layer.acc), len(layer.origins)}
    return lengths == {n} and (not layer.is_initialized
                               or layer.keys.shape[-2] == layer.values.shape[-2] == layer.references.shape[-2] == n)


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


# ---- re-indexing without drift ---------------------------------------------------------
def written_cache(backbone, dtype: torch.dtype, n: int = 160, prefix: int = 4) -> tuple[HermesCache, torch.Tensor]:
    """A one-layer cache holding n keys written in `dtype` at positions 0..n-1 (frame = index,
    so a token is known by its frame), and those keys in fp32 as the model computed them."""
    cfg = backbone.language_model.config
    head_dim = backbone.language_model.layers[0].self_attn.head_dim
    raw = torch.randn(1, cfg.num_key_value_heads, n, head_dim, generator=torch.Generator().manual_seed(0)) * 3
    keys = backbone.rotate_keys(raw, torch.arange(n))
    cache = HermesCache(1, backbone.rotate_keys)
    kinds = torch.full((n,), VIDEO, dtype=torch.int8)
    kinds[:prefix] = PREFIX
    with cache.staged(torch.arange(n), torch.arange(n), kinds):
        cache.layers[0].update(keys.to(dtype), keys.to(dtype))
    cache.advance(n)
    return cache, keys


def reindex(cache: HermesCache, step: int, generator: torch.Generator) -> None:
    """One re-index; in turn: a shift far out, the shift back, one video token evicted and a compaction."""
    if step % 3 == 1:
        cache.shift(1000 + 37 * step)
    elif step % 3 == 2:
        cache.shift(-(1000 + 37 * (step - 1)))
    else:
        layer = cache.layers[0]
        video = (layer.kinds == VIDEO).nonzero().flatten()
        stays = torch.ones(len(layer), dtype=torch.bool)
        stays[video[torch.randint(len(video), (1,), generator=generator)]] = False
        layer.keep(stays.nonzero().flatten())
        cache.compact_all()


def relative_error(keys: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(norm of the error / norm of the keys, max abs error / max abs key)."""
    error = keys.float() - truth
    return (error.norm() / truth.norm()).item(), (error.abs().max() / truth.abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_two_hundred_reindexes_keep_the_key_error_of_one(backbone, dtype):
    """Keys re-indexed 200 times (and a summary folded halfway) stay as close to the keys
    computed directly at their final positions, in fp32, as after one re-index; re-rotating
    in place in `dtype` (the old way, replayed alongside) drifts far past that."""
    cache, keys32 = written_cache(backbone, dtype)
    layer, generator = cache.layers[0], torch.Generator().manual_seed(1)
    in_place, in_place_at = keys32.to(dtype), torch.arange(keys32.shape[-2])  # by frame
    summary = None  # (fp32 key, position) of the summary, computed from the fp32 keys it folds

    def truth() -> torch.Tensor:
        """Every token's key computed directly at its current position from fp32 keys."""
        out, written = torch.empty(layer.keys.shape), layer.frames >= 0
        frames = layer.frames[written]
        out[..., written, :] = backbone.rotate_keys(keys32[..., frames, :], layer.positions[written] - frames)
        if summary is not None:
            s = layer.kinds == SUMMARY
            out[..., s, :] = backbone.rotate_keys(summary[0], layer.positions[s] - summary[1])
        return out

    errors, in_place_errors = {}, {}
    for step in range(1, 201):
        if step == 100:
            folded = (layer.kinds == VIDEO).nonzero().flatten()[::20][:6]
            frames, at = layer.frames[folded], layer.positions[folded].min()
            layer.fold(folded)
            summary = backbone.rotate_keys(keys32[..., frames, :], at - frames).mean(dim=-2, keepdim=True), at
        reindex(cache, step, generator)
        written = layer.frames >= 0
        frames = layer.frames[written]
        in_place[..., frames, :] = backbone.rotate_keys(in_place[..., frames, :],
                                                        layer.positions[written] - in_place_at[frames])
        in_place_at[frames] = layer.positions[written]
        if step in (1, 50, 200):
            errors[step] = relative_error(layer.keys, truth())
            in_place_errors[step] = relative_error(in_place[..., frames, :], truth()[..., written, :])
    assert int((layer.kinds == SUMMARY).sum()) == 1 and all(in_step(layer) for layer in cache.layers)
    eps = torch.finfo(dtype).eps
    # two roundings at most (the written key, the cast after the fp32 rotation), whatever the count
    assert all(norm <= eps / 2 and largest <= eps for norm, largest in errors.values()), errors
    assert errors[50][0] <= 1.25 * errors[1][0] and errors[200][0] <= 1.25 * errors[1][0], errors
    assert in_place_errors[200][0] >= 5 * errors[200][0], (in_place_errors, errors)  # the test can tell


def test_fp32_reindexing_rotates_in_place_as_before(backbone):
    cache, keys32 = written_cache(backbone, torch.float32)
    layer = cache.layers[0]
    assert layer.references.data_ptr() == layer.keys.data_ptr()  # the keys are their own reference
    assert cache.nbytes() == len(layer) * (2 * keys32[0, :, 0].numel() * 4 + META_BYTES)
    for step in range(1, 201):
        keys, positions, frames = layer.keys.clone(), layer.positions.clone(), layer.frames.clone()
        reindex(cache, step, torch.Generator().manual_seed(step))
        stays = torch.isin(frames, layer.frames)  # exactly the rotation of the keys by the delta, as before
        assert torch.equal(layer.keys, backbone.rotate_keys(keys[..., stays, :], layer.positions - positions[stays]))
        assert torch.equal(layer.origins, layer.positions)
    truth = backbone.rotate_keys(keys32[..., layer.frames, :], layer.positions - layer.frames)
    assert max(relative_error(layer.keys, truth)) <= 1e-5


def test_bf16_cache_counts_its_reference_keys_and_copies_them(backbone):
    cache, keys32 = written_cache(backbone, torch.bfloat16)
    layer = cache.layers[0]
    per_token = 3 * keys32[0, :, 0].numel() * 2 + META_BYTES  # K, V and reference keys in bf16, metadata
    assert cache.nbytes() == len(layer) * per_token
    cache.shift(5000)
    copy = cache.gather([torch.arange(10, 40)])
    assert torch.equal(copy.layers[0].references, layer.references[..., 10:40, :])
    assert torch.equal(copy.layers[0].origins, torch.arange(10, 40)) and in_step(copy.layers[0])
    copy.shift(-5000)
    assert torch.equal(copy.layers[0].keys, keys32[..., 10:40, :].to(torch.bfloat16))  # back where written: exact


def test_a_bf16_engine_holds_every_key_one_rotation_from_its_reference():
    """Through the engine (hermes folds summaries; eager re-indexing moves every token every
    chunk), each key is its reference rotated once, in fp32, to where the token is now."""
    bf16 = load_backbone("random-tiny", seed=0, dtype=torch.bfloat16)
    engine = make_engine(bf16, "hermes", budget=40, chunk_frames=2, reindex="eager")
    engine.ingest(random_frames(12))
    layers = engine.cache.layers
    assert any(bool((layer.kinds == SUMMARY).any()) for layer in layers)
    for layer in layers:
        assert in_step(layer) and layer.keys.dtype == layer.references.dtype == torch.bfloat16
        assert bool((layer.origins != layer.positions).any())  # moved since written (or folded)
        moved = bf16.rotate_keys(layer.references.float(), layer.positions - layer.origins).to(torch.bfloat16)
        assert torch.equal(layer.keys, moved)
