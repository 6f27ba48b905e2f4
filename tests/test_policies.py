"""Policies on small synthetic contexts with hand-computed keep-sets (12 tokens, budget 5)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hermes.cache import VIDEO
from hermes.errors import HermesError
from hermes.policies import LayerContext, Needs, available, get
from hermes.policies.base import keep_set, smooth_across_layers
from hermes.policies.hermes_policy import minmax, recency

N = 12
ACC = np.array([5, 1, 9, 0, 3, 8, 2, 7, 4, 6, 1, 0], dtype=float)
SNAP = np.array([0, 0.9, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0])  # mean of the window rows


def ctx(layer: int = 0, n_layers: int = 12, budget: int = 5, **kw) -> LayerContext:
    defaults = dict(positions=np.arange(100, 100 + N), frames=np.arange(N), kinds=np.full(N, VIDEO, np.int8),
                    frames_seen=N)
    return LayerContext(layer=layer, n_layers=n_layers, budget=budget, **{**defaults, **kw})


def window_rows(mean: np.ndarray) -> np.ndarray:
    """Two rows whose mean is `mean`."""
    return np.stack([mean * 1.5, mean * 0.5])


PEERS = [  # policy, params, budget, context extras, expected keep-set
    ("fifo", {}, 5, {}, [7, 8, 9, 10, 11]),
    ("fifo", {}, 1, {}, [11]),
    ("uniform", {}, 5, {}, [0, 4, 6, 8, 10]),  # levels: 0 > 8 > 4 > {2, 6, 10} newest first
    ("uniform", {}, 3, {}, [0, 4, 8]),
    ("uniform", {}, 2, {}, [0, 8]),
    ("streaming_llm", {"sinks": 2}, 5, {}, [0, 1, 9, 10, 11]),
    ("streaming_llm", {"sinks": 4}, 5, {}, [0, 1, 2, 3, 11]),
    ("h2o", {"recent": 0.0}, 5, {"accumulated": ACC}, [0, 2, 5, 7, 9]),
    ("h2o", {"recent": 0.4}, 5, {"accumulated": ACC}, [2, 5, 7, 10, 11]),
    # pooled [.9 .9 .9 0 0 .5 .5 .5 0 0 | window]: 1's neighbours come along (raw: [1, 6, 9, 10, 11])
    ("snapkv", {"window": 2, "kernel": 3}, 5, {"window_attention": window_rows(SNAP)}, [0, 1, 2, 10, 11]),
    ("snapkv", {"window": 2, "kernel": 3}, 6, {"window_attention": window_rows(SNAP)}, [0, 1, 2, 7, 10, 11]),
    ("snapkv", {"window": 2, "kernel": 1}, 5, {"window_attention": window_rows(SNAP)}, [1, 6, 9, 10, 11]),
    ("pyramidkv", {"window": 2, "kernel": 3}, 5, {"window_attention": window_rows(SNAP)}, [0, 1, 2, 10, 11]),
]


@pytest.mark.parametrize("name, params, budget, extra, expected", PEERS)
def test_peer_policy_keep_sets(name, params, budget, extra, expected):
    policy = get(name, **params)
    scores = policy.score(ctx(budget=budget, **extra))
    assert keep_set(scores, budget).tolist() == expected


def test_full_never_evicts():
    assert not get("full").evicts


@pytest.mark.parametrize("n_layers, budget", [(12, 5), (12, 256), (24, 4096), (28, 100)])
def test_pyramidkv_budgets_same_total_decreasing(n_layers, budget):
    budgets = get("pyramidkv").layer_budgets(n_layers, budget)
    assert sum(budgets) == n_layers * budget
    assert all(a >= b for a, b in itertools.pairwise(budgets)) and budgets[0] > budgets[-1] >= 1


def test_registry_lists_the_eight_builtins():
    assert {"full", "fifo", "uniform", "streaming_llm", "h2o", "snapkv", "pyramidkv", "hermes"} <= set(available())


# ---- hermes ---------------------------------------------------------------------------------------------------

TIERS = [  # L, shallow layers, deep layers (DESIGN: shallow < int(0.1 L), deep >= int(0.7 L))
    (12, [0], list(range(8, 12))),
    (24, [0, 1], list(range(16, 24))),
    (28, [0, 1], list(range(19, 28))),
]


@pytest.mark.parametrize("n_layers, shallow, deep", TIERS)
def test_hermes_tiers(n_layers, shallow, deep):
    policy = get("hermes")
    tiers = [policy.tier(i, n_layers) for i in range(n_layers)]
    assert [i for i, t in enumerate(tiers) if t == "shallow"] == shallow
    assert [i for i, t in enumerate(tiers) if t == "deep"] == deep
    assert all(t == "middle" for i, t in enumerate(tiers) if i not in shallow + deep)
    assert [policy.smoothing_lam(i, n_layers) for i in (shallow[0], deep[0])] == [0.1, 0.4]
    assert policy.smoothing_lam(shallow[-1] + 1, n_layers) == 0.3
    assert [policy.summarize(i, n_layers) for i in (shallow[0], shallow[-1] + 1, deep[0])] == [False, False, True]


RNG = np.random.default_rng(0)
ATT = {name: RNG.random(N) for name in ("local", "global", "mixed")}


def test_hermes_shallow_layers_keep_exactly_the_newest():
    scores = get("hermes").score(ctx(layer=0, attention=ATT))
    assert keep_set(scores, 5).tolist() == [7, 8, 9, 10, 11]


def test_hermes_deep_layers_keep_the_top_global_attention():
    scores = get("hermes").score(ctx(layer=10, attention=ATT))
    np.testing.assert_allclose(scores, minmax(ATT["global"]))
    assert keep_set(scores, 5).tolist() == sorted(np.argsort(-ATT["global"])[:5].tolist())


@pytest.mark.parametrize("schedule, layer, alpha, k", [
    ("code", 1, 1.0, 20.0),  # p = 0: pure recency
    ("code", 4, 1 - 0.9 * 0.5, 20 - 19.5 * 0.5),  # middle layers 1..7 of 12: p = (4 - 1) / 6
    ("code", 7, 1 - 0.9, 0.5),
    ("paper", 4, 1 - (0.75 - 0.6 * 0.5), 20 - 19.5 * 0.5),
    ("paper", 7, 1 - (0.75 - 0.6), 0.5),
])
def test_hermes_middle_scores_by_hand(schedule, layer, alpha, k):
    scores = get("hermes", schedule=schedule).score(ctx(layer=layer, attention=ATT))
    d = (N - 1 - np.arange(N)) / (N - 1)
    r = np.exp(-k * d)
    r = (r - r.min()) / (r.max() - r.min())
    a = (ATT["mixed"] - ATT["mixed"].min()) / (ATT["mixed"].max() - ATT["mixed"].min())
    np.testing.assert_allclose(scores, alpha * r + (1 - alpha) * a)


def test_hermes_single_query_and_uniform_tier_ablations():
    single = get("hermes", query_mode="single")
    assert single.queries(12) == {"global"} and single.weights(4, 12)[2] == "global"
    uniform = get("hermes", tier_mode="uniform")
    assert {uniform.tier(i, 12) for i in range(12)} == {"middle"}
    assert uniform.depth(0, 12) == 0.0 and uniform.depth(11, 12) == 1.0
    assert not any(uniform.summarize(i, 12) for i in range(12))
    assert get("hermes", smoothing=False).smoothing_lam(3, 12) == 0.0
    assert not get("hermes", summary=False).summarize(10, 12)


def test_recency_and_minmax():
    np.testing.assert_allclose(recency(3, 20.0), [np.exp(-20), np.exp(-10), 1.0])
    assert minmax(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]


def test_cross_layer_smoothing_by_hand_with_interpolation():
    s0, s1, s2 = np.zeros(3), np.array([1.0, 0, 0, 0, 1]), np.array([0.0, 1.0])
    out = smooth_across_layers([s0, s1, s2], [0.1, 0.3, 0.4])
    s1_hand = 0.7 * s1 + 0.3 * np.array([0, 0.25, 0.5, 0.75, 1.0])  # s2 stretched to 5 points
    np.testing.assert_allclose(out[1], s1_hand)
    np.testing.assert_allclose(out[0], 0.9 * s0 + 0.1 * s1_hand[[0, 2, 4]])  # 5 -> 3 points
    np.testing.assert_allclose(out[2], s2)  # the deepest layer is not smoothed


BAD_PARAMS = [  # policy, parameters, the field and range the error must name
    ("hermes", {"shallow_ratio": 3.0}, r"shallow_ratio must be a number in \[0, 1\], got 3.0"),
    ("hermes", {"deep_ratio": -0.1}, r"deep_ratio must be a number in \[0, 1\]"),
    ("hermes", {"shallow_ratio": 0.8, "deep_ratio": 0.2}, r"shallow_ratio \(0.8\) must be <= deep_ratio"),
    ("hermes", {"schedule": "nonsense"}, r"schedule must be one of \('code', 'paper'\), got 'nonsense'"),
    ("hermes", {"query_mode": "all"}, r"query_mode must be one of"),
    ("hermes", {"tier_mode": 3}, r"tier_mode must be one of"),
    ("hermes", {"k_shallow": float("nan")}, r"k_shallow must be a number in \[0, 100\]"),
    ("hermes", {"lams": (0.1, 0.2)}, r"lams must be three numbers"),
    ("hermes", {"lams": (0.1, 0.2, 2.0)}, r"lams must be a number in \[0, 1\]"),
    ("hermes", {"summary": "yes"}, r"summary must be True or False"),
    ("hermes", {"w0": 0.5, "gamma": 0.6}, r"w0 - gamma must be >= 0"),
    ("streaming_llm", {"sinks": -1}, r"sinks must be a whole number in \[0,"),
    ("streaming_llm", {"sinks": 2.5}, r"sinks must be a whole number"),
    ("h2o", {"recent": 1.5}, r"recent must be a number in \[0, 1\]"),
    ("snapkv", {"window": 0}, r"window must be a whole number in \[1, 4096\]"),
    ("snapkv", {"kernel": 0}, r"kernel must be a whole number in \[1,"),
    ("pyramidkv", {"beta": 0}, r"beta must be a number in \[1,"),
    ("pyramidkv", {"window": -3}, r"window must be a whole number"),
    ("fifo", {"window": 3}, r"policy 'fifo' has no parameter\(s\) \['window'\]"),
]


@pytest.mark.parametrize("name, params, message", BAD_PARAMS)
def test_policies_validate_their_own_parameters(name, params, message):
    with pytest.raises(HermesError, match=message):
        get(name, **params)


def test_needs_follow_from_what_a_policy_reads():
    assert get("fifo").needs(12) == Needs()
    assert get("hermes").needs(12).queries == {"global", "mixed"}  # shallow layers read no query
    assert get("hermes", tier_mode="uniform").needs(12).queries == {"mixed"}
    assert get("hermes", query_mode="single").needs(12).queries == {"global"}
    h2o, snap = get("h2o").needs(12), get("snapkv", window=8).needs(12)
    assert h2o.accumulated and h2o.prefill_attention and not h2o.queries
    assert snap.observation_rows == 8 and snap.prefill_attention and not snap.accumulated
