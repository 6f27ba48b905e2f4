"""The streaming engine against from-scratch references: chunked ingest, questions, per-layer
eviction, position re-indexing, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hermes.cache import VIDEO
from hermes.engine import StreamEngine
from tests.conftest import make_engine, random_frames
from tests.reference import full_logits, greedy_from_scratch, logits_over_layer_kv, stream_embeds

QUESTION = "what is on the screen now ?"


def peek_logits(engine: StreamEngine, ids: list[int]) -> torch.Tensor:
    """Next-token logits after `ids` on top of the engine's cache, leaving the cache as it is."""
    return engine.peek(ids).logits


def snapshot(engine: StreamEngine) -> list[tuple[torch.Tensor, ...]]:
    return [(layer.keys.clone(), layer.values.clone(), layer.positions.clone(), layer.frames.clone(),
             layer.kinds.clone()) for layer in engine.cache.layers]


@pytest.mark.parametrize("chunk_frames, n_frames", [(4, 10), (3, 9), (16, 5)])
def test_chunked_ingest_matches_one_forward_from_scratch(backbone, chunk_frames, n_frames):
    frames = random_frames(n_frames)
    engine = make_engine(backbone, "full", chunk_frames=chunk_frames)
    # Feed in uneven pieces: chunking must not depend on how frames arrive.
    engine.ingest(frames[:1])
    engine.ingest(frames[1:n_frames - 2])
    engine.ingest(frames[n_frames - 2:])
    engine.flush()
    ids = backbone.question_ids(QUESTION)
    got = peek_logits(engine, ids)
    embeds = torch.cat([stream_embeds(backbone, frames, chunk_frames), backbone.embed_ids(ids)], dim=1)
    want = full_logits(backbone, embeds)
    assert engine.frames_seen == n_frames
    assert (got - want).abs().max().item() <= 1e-4


def test_ask_matches_reprefill_and_leaves_cache_bit_identical(backbone):
    frames = random_frames(8, seed=1)
    engine = make_engine(backbone, "full", chunk_frames=4, max_new_tokens=8)
    engine.ingest(frames)
    before = snapshot(engine)
    answer = engine.ask(QUESTION)
    want = greedy_from_scratch(backbone, stream_embeds(backbone, frames, 4), backbone.question_ids(QUESTION),
                               max_new=8, penalty=engine.config.repetition_penalty)
    assert answer.tokens == want
    assert answer.text == backbone.tokenizer.decode(want, skip_special_tokens=True)
    assert 0 < answer.ttft_s <= answer.total_s
    after = snapshot(engine)
    assert len(after) == len(before)
    for b, a in zip(before, after, strict=True):
        for tb, ta in zip(b, a, strict=True):
            assert tb.shape == ta.shape and torch.equal(tb, ta)


def test_ask_stream_pieces_join_to_the_answer(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4, max_new_tokens=6)
    engine.ingest(random_frames(4, seed=2))
    pieces = list(engine.ask_stream(QUESTION))
    assert "".join(pieces) == engine.last_answer.text
    assert engine.ask(QUESTION).tokens == engine.last_answer.tokens  # asking twice: same cache, same answer


def test_per_layer_eviction_matches_hand_computed_attention(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    engine.ingest(random_frames(8, seed=3))
    ids = backbone.question_ids(QUESTION)
    before = peek_logits(engine, ids)
    rng = np.random.default_rng(0)
    for layer_idx, layer in enumerate(engine.cache.layers):
        video = engine.cache.layers[layer_idx].evictable_index()
        keep = rng.choice(video.numpy(), size=20 + 7 * layer_idx, replace=False)  # a different set per layer
        prefix = (layer.kinds != VIDEO).nonzero().flatten()
        prefix = prefix[prefix < engine.prefix_tokens]
        engine.cache.layers[layer_idx].keep(torch.cat([prefix, torch.from_numpy(keep)]))
    lengths = engine.cache.lengths()
    assert len(set(lengths)) == len(lengths)  # every layer now differs
    got = peek_logits(engine, ids)
    layer_kv = [(layer.keys, layer.values) for layer in engine.cache.layers]
    positions = engine.next_position + torch.arange(len(ids))
    want = logits_over_layer_kv(backbone, layer_kv, backbone.embed_ids(ids), positions)
    assert (got - want).abs().max().item() <= 1e-4
    assert (got - before).abs().max().item() > 1e-3  # eviction did change what the model sees


def test_reindexing_positions_with_rerotation_keeps_logits(backbone):
    # Move every cached token of every layer (and the next position) 20k positions on:
    # RoPE only sees distances, so with correct key re-rotation the logits must not move.
    engine = make_engine(backbone, "fifo", budget=100, chunk_frames=4)
    engine.ingest(random_frames(12, seed=4))
    ids = backbone.question_ids(QUESTION)
    before = peek_logits(engine, ids)
    shift = 20000
    engine.cache.shift(shift)
    after = peek_logits(engine, ids)
    rel = ((after - before).abs().max() / before.abs().max()).item()
    assert rel <= 1e-3


def test_compaction_gives_consecutive_positions_and_rerotated_keys(backbone):
    engine = make_engine(backbone, "fifo", budget=100, chunk_frames=4)
    engine.ingest(random_frames(12, seed=4))
    old = [(layer.positions.clone(), layer.keys.clone()) for layer in engine.cache.layers]
    engine.cache.compact_all()
    end = engine.prefix_tokens + 100
    assert engine.next_position == end
    for layer, (old_pos, old_keys) in zip(engine.cache.layers, old, strict=True):
        assert torch.equal(layer.positions[: engine.prefix_tokens], torch.arange(engine.prefix_tokens))
        assert torch.equal(layer.positions[engine.prefix_tokens:], torch.arange(end - 100, end))
        # un-rotating by the delta gives back the keys as they were computed at the old positions
        back = backbone.rotate_keys(layer.keys, old_pos - layer.positions)
        assert (back - old_keys).abs().max().item() <= 1e-4 * old_keys.abs().max().item() + 1e-6


def test_key_rerotation_equals_recomputation_far_out(backbone):
    attn = backbone.language_model.layers[0].self_attn
    x = torch.randn(1, 6, backbone.language_model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    k = attn.k_proj(x).view(1, 6, -1, attn.head_dim).transpose(1, 2)  # (1, KV, 6, Dh)
    rotary = backbone.language_model.rotary_emb
    old = torch.tensor([3, 50, 700, 4000, 12000, 20000])
    new = torch.tensor([30000, 29000, 5, 4001, 100, 20000])

    def at(pos):
        cos, sin = rotary(k, pos.view(1, -1))
        half = k.shape[-1] // 2
        return k * cos.unsqueeze(1) + torch.cat((-k[..., half:], k[..., :half]), -1) * sin.unsqueeze(1)

    with torch.no_grad():
        moved = backbone.rotate_keys(at(old), new - old)
    # fp32 RoPE angles at 30k positions carry ~1e-4 error either way (DESIGN section 4)
    assert (moved - at(new)).abs().max().item() <= 1e-3 * k.abs().max().item()


@pytest.mark.parametrize("mode", ["eager", "lazy"])
def test_reindex_modes(backbone, mode):
    # lazy with a margin that leaves only ~600 positions: compaction must kick in and bound positions
    margin = backbone.max_positions - 600 if mode == "lazy" else 1024
    engine = make_engine(backbone, "fifo", budget=120, chunk_frames=4, reindex=mode, reindex_margin=margin)
    for i in range(6):
        engine.ingest(random_frames(4, seed=10 + i))
        if mode == "eager":
            for layer in engine.cache.layers:
                assert torch.equal(layer.positions, torch.arange(len(layer)))
    assert engine.cache.max_position() < 600 + 65
    assert engine.cache_lengths() == [120] * backbone.n_layers


def test_fifo_bounds_memory_over_500_frames(backbone):
    budget = 300
    engine = make_engine(backbone, "fifo", budget=budget, chunk_frames=16)
    events = []
    for start in range(0, 500, 50):
        events += engine.ingest(random_frames(50, height=24, width=28, seed=start))
    events += engine.flush()
    assert engine.frames_seen == 500
    assert all(max(e.cache_lengths) <= budget for e in events)
    assert engine.cache_lengths() == [budget] * backbone.n_layers
    full = [e.kv_bytes for e in events if min(e.cache_lengths) == budget]
    assert len(full) >= 30 and len(set(full)) == 1
    # fifo keeps the newest tokens: layer 0 holds the last frames of the stream
    kept = engine.cache.layers[0].frames[engine.cache.layers[0].evictable_index()]
    assert kept.max().item() == 499 and kept.min().item() >= 500 - budget // backbone.tokens_per_frame - 1


def test_engine_counts_and_stats(backbone):
    engine = make_engine(backbone, "fifo", budget=50, chunk_frames=4)
    events = engine.ingest(random_frames(10), timestamps=np.arange(10) * 0.5)
    assert [e.first_frame for e in events] == [0, 4]
    assert (events[1].t_start, events[1].t_end) == (2.0, 3.5)
    assert events[0].evicted.tolist() == [4 * 16 + 1 - 50] * backbone.n_layers
    stats = engine.stats()
    assert stats["frames_seen"] == 8 and stats["pending_frames"] == 2 and stats["chunks"] == 2
    assert stats["kv_bytes"] == engine.cache.nbytes() > 0
    engine.reset()
    assert engine.frames_seen == 0 and engine.cache_lengths() == [0] * backbone.n_layers
    assert engine.cache.lengths() == [engine.prefix_tokens] * backbone.n_layers


def test_next_token_logits_is_the_first_answer_step_and_writes_nothing(backbone):
    engine = make_engine(backbone, "fifo", budget=40, chunk_frames=4, repetition_penalty=1.0, max_new_tokens=1)
    engine.ingest(random_frames(8))
    before, stats = snapshot(engine), engine.stats()
    logits = engine.next_token_logits(QUESTION)
    assert logits.shape == (backbone.model.config.text_config.vocab_size,) and logits.dtype == torch.float32
    assert not logits.requires_grad  # a plain tensor: no autograd graph kept alive
    assert all(all(torch.equal(x, y) for x, y in zip(b, a, strict=True)) for b, a in zip(before, snapshot(engine),
                                                                                          strict=True))
    assert engine.stats()["next_position"] == stats["next_position"]
    answer = engine.ask(QUESTION)
    assert answer.tokens == [int(logits.argmax())] or int(logits.argmax()) in backbone.stop_ids


def test_fork_copies_the_stream_and_a_subset_fork_answers_from_the_kept_tokens_only(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    engine.ingest(random_frames(8))
    twin = engine.fork()
    assert (twin.frames_seen, twin.chunks, twin.next_position) == (engine.frames_seen, engine.chunks,
                                                                  engine.next_position)
    torch.testing.assert_close(twin.next_token_logits(QUESTION), engine.next_token_logits(QUESTION))
    twin.ingest(random_frames(4, seed=3))  # the fork streams on; the source does not move
    assert (engine.frames_seen, twin.frames_seen) == (8, 12)
    p = engine.prefix_tokens
    keep = [torch.cat([torch.arange(p), torch.arange(p + 5 * i, p + 5 * i + 17)]) for i in range(backbone.n_layers)]
    subset = engine.fork(keep)
    hand = engine.fork()
    for layer, idx in zip(hand.cache.layers, keep, strict=True):
        layer.keep(idx)
    assert subset.cache.lengths() == hand.cache.lengths() == [p + 17] * backbone.n_layers
    torch.testing.assert_close(subset.next_token_logits(QUESTION), hand.next_token_logits(QUESTION))
    assert engine.cache.lengths() == [p + 130] * backbone.n_layers
