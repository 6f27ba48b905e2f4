"""Policies inside the engine: summary folding, re-indexing modes, nothing runs at question
time, bounded memory for every policy, telemetry events."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hermes
from hermes import decode, eviction, policies, queries
from hermes.cache import PREFIX, SUMMARY
from hermes.config import HermesConfig
from hermes.engine import StreamEngine
from tests.conftest import random_frames
from tests.test_engine import QUESTION, peek_logits, snapshot


def engine_for(backbone, policy: str, budget: int | None, policy_params: dict | None = None, **config
               ) -> StreamEngine:
    return hermes.load_engine(backbone, policy=policy, budget=budget, policy_params=policy_params,
                              **{"chunk_frames": 4, **config})


@pytest.mark.parametrize("mode", ["released", "first_folded"])
def test_deep_layers_hold_budget_minus_one_plus_a_summary_of_the_evicted(backbone, monkeypatch, mode):
    engine = engine_for(backbone, "hermes", 40, {"summary_mode": mode})
    before = {}
    real_evict = eviction.evict

    def spy(cache, *args):
        before.clear()
        before.update({i: (layer.keys.clone(), layer.values.clone(), layer.positions.clone())
                       for i, layer in enumerate(cache.layers)})
        return real_evict(cache, *args)

    monkeypatch.setattr(eviction, "evict", spy)
    engine.ingest(random_frames(4))  # 65 video tokens > 40: the first eviction, no summary yet
    for i, layer in enumerate(engine.cache.layers):
        video = layer.evictable_index()
        n_summary = int((layer.kinds == SUMMARY).sum())
        assert len(video) == 40
        if engine.policy.summarize(i, backbone.n_layers):
            assert n_summary == 1
            keys, values, positions = before[i]
            s = (layer.kinds == SUMMARY).nonzero().item()
            # which tokens stayed: values are never touched, so match them (positions may have moved)
            same = (values[0, 0][:, None, :] == layer.values[0, 0][None, :, :]).all(dim=-1)  # (before, after)
            gone = ~same.any(dim=1) & (torch.arange(len(positions)) >= engine.prefix_tokens)
            assert int(gone.sum()) == 65 - 39
            before_pos, after_pos = positions[same.any(dim=1)], layer.positions[same.any(dim=0)]
            moved = after_pos - before_pos  # the kept tokens, in order
            stays = layer.positions[torch.arange(len(layer)) != s]
            # released code: one past the newest kept token (last in the layer, which then moved on so that it
            # sits just before the next position); earlier: the smallest folded position, nothing moves
            target = layer.positions[s] if mode == "released" else positions[gone].min()
            if mode == "released":
                assert target == stays.max() + 1 == engine.next_position - 1 and s == len(layer) - 1
                assert len(set(moved[engine.prefix_tokens:].tolist())) == 1 and not moved[:engine.prefix_tokens].any()
            else:
                assert layer.positions[s] == target and s == int((stays < target).sum()) and not moved.any()
            want_k = backbone.rotate_keys(keys[..., gone, :], target - positions[gone]).mean(dim=-2)
            torch.testing.assert_close(layer.keys[..., s, :], want_k)
            torch.testing.assert_close(layer.values[..., s, :], values[..., gone, :].mean(dim=-2))
        else:
            assert n_summary == 0
        assert layer.positions.max() < engine.next_position
    engine.ingest(random_frames(8, seed=5))  # later evictions: an earlier summary competes (or is folded in again)
    for i, layer in enumerate(engine.cache.layers):
        n_summary = int((layer.kinds == SUMMARY).sum())
        if not engine.policy.summarize(i, backbone.n_layers):
            assert n_summary == 0
        elif mode == "first_folded":
            assert n_summary == 1
        else:
            assert 1 <= n_summary <= 3 and layer.kinds[-1] == SUMMARY  # the newest summary sits last
        assert len(layer.evictable_index()) == 40
        assert len(torch.unique(layer.positions)) == len(layer) and layer.positions.max() < engine.next_position


def test_summary_off_keeps_plain_top_k(backbone):
    engine = engine_for(backbone, "hermes", 40, {"summary": False})
    engine.ingest(random_frames(8))
    assert all(int((layer.kinds == SUMMARY).sum()) == 0 for layer in engine.cache.layers)
    assert engine.cache_lengths() == [40] * backbone.n_layers


def test_lazy_keeps_positions_eager_compacts_and_both_agree_without_eviction(backbone):
    lazy = engine_for(backbone, "hermes", 60)
    eager = engine_for(backbone, "hermes", 60, reindex="eager")
    frames = random_frames(8, seed=2)
    lazy.ingest(frames)
    eager.ingest(frames)
    p = lazy.prefix_tokens
    lazy_video = lazy.cache.layers[0].positions[p:]
    assert lazy_video.min().item() > p  # original positions: the gap left by evicted tokens stays
    for layer in eager.cache.layers:
        assert torch.equal(layer.positions, torch.arange(len(layer)))
    # no eviction: both modes must give the same next-step logits
    a, b = engine_for(backbone, "hermes", 500), engine_for(backbone, "hermes", 500, reindex="eager")
    a.ingest(frames)
    b.ingest(frames)
    ids = backbone.question_ids(QUESTION)
    la, lb = peek_logits(a, ids), peek_logits(b, ids)
    assert ((la - lb).abs().max() / la.abs().max()).item() <= 1e-3


def test_lazy_compacts_past_the_threshold(backbone):
    engine = engine_for(backbone, "hermes", 60, reindex_margin=backbone.max_positions - 200)
    engine.ingest(random_frames(12))
    assert engine.cache.max_position() < 200 + 65
    video = engine.cache.layers[0].positions[engine.prefix_tokens:]
    assert torch.equal(video, torch.arange(video[0].item(), video[0].item() + 60))


class CountingPolicy:
    """Wraps a policy and counts every method call the engine makes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if callable(value):
            def counted(*args, **kwargs):
                self.calls += 1
                return value(*args, **kwargs)
            return counted
        return value


@pytest.mark.parametrize("ask", ["ask", "ask_stream"])
def test_questions_run_no_policy_and_no_pseudo_query(backbone, monkeypatch, ask):
    counting = CountingPolicy(policies.get("hermes"))
    engine = StreamEngine(backbone, counting, HermesConfig(budget=40, chunk_frames=4, max_new_tokens=4))
    pseudo = []
    real = queries.pseudo_query_attention
    monkeypatch.setattr(queries, "pseudo_query_attention", lambda *args: pseudo.append(1) or real(*args))
    engine.ingest(random_frames(8))
    assert counting.calls > 0 and len(pseudo) == 2
    counting.calls, pseudo[:] = 0, []
    before = snapshot(engine)
    if ask == "ask":
        engine.ask(QUESTION)
    else:
        list(engine.ask_stream(QUESTION))
    assert counting.calls == 0 and pseudo == []
    for b, a in zip(before, snapshot(engine), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(b, a, strict=True))


@pytest.mark.parametrize("style", ["released", "chat"])
def test_pseudo_queries_are_conditioned_on_the_last_exchange(backbone, monkeypatch, style):
    engine = engine_for(backbone, "hermes", 40, max_new_tokens=2, pseudo_query_style=style)
    assert "Context summary" not in engine.pseudo_texts()["global"]
    engine.ingest(random_frames(4))
    answer = engine.ask("how many red circles ?")
    texts = engine.pseudo_texts()
    history = f"Question: how many red circles ? Answer: {answer.text}"
    assert texts["global"].startswith(f"Context summary: {history}.")
    if style == "released":  # as the released code: the local text carries the whole exchange too
        assert texts["local"] == f"Find recent details related to: {history}. {backbone.pseudo_queries['local']}"
    else:
        assert texts["local"] == f"Find recent details related to: how many red circles ?. " \
                                 f"{backbone.pseudo_queries['local']}"
    assert texts["mixed"] == f"{texts['local']}; {texts['global']}"
    seen = []
    real = queries.text_attention
    monkeypatch.setattr(queries, "text_attention", lambda bb, cache, ids, *rest: seen.append(ids) or
                        real(bb, cache, ids, *rest))
    engine.ingest(random_frames(4, seed=3))
    render = backbone.encode_text if style == "released" else backbone.question_ids  # raw text / chat template
    assert seen == [render(texts["global"]), render(texts["mixed"])]


def test_released_follow_up_texts_drop_option_markers():
    texts = queries.pseudo_texts({"local": "L", "global": "G"}, ("which one ?", "B) the red one"))
    assert texts["local"] == "Find recent details related to: Question: which one ? Answer: the red one. L"
    chat = queries.pseudo_texts({"local": "L", "global": "G"}, ("which one ?", "B) the red one"), style="chat")
    assert chat["global"] == "Context summary: Question: which one ? Answer: B) the red one. G"


@pytest.mark.parametrize("policy", ["fifo", "uniform", "streaming_llm", "h2o", "snapkv", "pyramidkv", "hermes"])
def test_every_policy_bounds_memory_over_300_frames_and_still_answers(backbone, policy):
    budget = 96
    engine = engine_for(backbone, policy, budget, chunk_frames=16)
    events = []
    for start in range(0, 300, 100):
        events += engine.ingest(random_frames(100, height=24, width=24, seed=start))
    events += engine.flush()
    assert engine.frames_seen == 300
    budgets = engine.policy.layer_budgets(backbone.n_layers, budget)
    assert sum(budgets) == budget * backbone.n_layers
    for event in events:
        assert all(n <= b for n, b in zip(event.cache_lengths, budgets, strict=True))  # summary included
    if policy != "pyramidkv":
        assert max(engine.cache_lengths()) <= budget
    answer = engine.ask(QUESTION, max_new_tokens=3)
    assert answer.tokens and answer.ttft_s > 0


def test_chunk_events_carry_the_telemetry(backbone):
    engine = engine_for(backbone, "hermes", 40)
    event = engine.ingest(random_frames(8))[-1]
    L = backbone.n_layers
    assert event.tiers[0] == "shallow" and event.tiers[-1] == "deep"
    assert event.frame_ids.tolist() == list(range(8))
    assert set(event.attention) == {"global", "mixed"}  # what its tiers score with (shallow layers: none)
    assert event.attention["global"].shape == (L, 8) and np.all(event.attention["global"] >= 0)
    assert event.kept.shape == (L, 8) and event.kept.sum(axis=1).tolist() == [40 - s for s in event.summary]
    assert [bool(s) for s in event.summary] == [t == "deep" for t in event.tiers]  # an old summary may stay too
    assert event.evicted.tolist() == [65 + 40 - 40] * L
    for key in ("encode", "prefill", "pseudo", "score", "evict", "telemetry", "total"):
        assert event.timings[key] >= 0
    assert event.kv_bytes == engine.cache.nbytes()
    json.dumps(event.to_dict())  # JSON-ready
    engine.ask(QUESTION, max_new_tokens=2)
    q = engine.questions[-1]
    assert q.attention.shape == (L, len(q.frame_ids)) and np.all(q.attention >= 0)
    assert np.all(q.attention.sum(axis=1) <= 1 + 1e-5)
    json.dumps(q.to_dict())


def test_telemetry_queries_for_policies_without_attention(backbone):
    engine = engine_for(backbone, "fifo", 40, telemetry_queries=("global",))
    event = engine.ingest(random_frames(4))[-1]
    assert set(event.attention) == {"global"}
    both = engine_for(backbone, "hermes", 40, telemetry_queries=("local",)).ingest(random_frames(4))[-1]
    assert set(both.attention) == {"local", "global", "mixed"}


def test_policy_parameters_reach_the_hermes_policy_and_not_the_config(backbone):
    engine = engine_for(backbone, "hermes", 40, {"summary": False, "schedule": "paper", "lams": (0.0, 0.2, 0.5)})
    assert (engine.policy.summary, engine.policy.schedule, engine.policy.lams) == (False, "paper", (0.0, 0.2, 0.5))
    with pytest.raises(hermes.HermesError, match=r"unknown config option\(s\) \['summary'\].*policy_params"):
        hermes.load_engine(backbone, policy="hermes", budget=40, summary=False)


def test_prefix_is_never_evicted(backbone):
    for name in ("fifo", "hermes", "h2o"):
        engine = engine_for(backbone, name, 20)
        engine.ingest(random_frames(8))
        for layer in engine.cache.layers:
            assert int((layer.kinds == PREFIX).sum()) == engine.prefix_tokens
    assert "hermes" in policies.available()


def test_greedy_penalises_generated_tokens_only_and_never_the_stop_token(backbone, monkeypatch):
    """Repetition penalty as the released code: on the tokens generated so far, not on the question
    or its chat template (which holds the stop token <|im_end|>)."""
    engine = engine_for(backbone, "full", None)
    engine.ingest(random_frames(4))
    ids = backbone.question_ids("how many red circles ?")
    (stop,) = backbone.stop_ids
    asked, other = ids[2], 150  # "red", from the question; a token from neither
    assert stop in ids and other not in ids
    steps = [{asked: 10.0, other: 9.5},  # first token: nothing is penalised yet, so the question's "red" wins
             {asked: 10.0, other: 9.5},  # "red" was generated: 10 / 1.1 < 9.5
             {stop: 10.0, asked: 9.9, other: 9.6}]  # the stop token is in the template: still not penalised
    logits = iter(steps)

    def crafted(bb, hidden):
        out = torch.full((len(backbone.tokenizer),), -5.0)
        for token, value in next(logits).items():
            out[token] = value
        return out

    monkeypatch.setattr(decode, "next_logits", crafted)
    with engine.cache.scratch():
        tokens = list(decode.greedy(backbone, engine.cache, ids, max_new=5, penalty=1.1))
    assert tokens == [asked, other, None]
    assert decode.penalise(torch.tensor([2.0, -2.0, 1.0]), {0, 1}, 1.1).tolist() == pytest.approx([2 / 1.1, -2.2, 1.0])
