"""Policies on small synthetic contexts with hand-computed keep-sets (12 tokens, budget 5), and
the `hermes` policy through the whole eviction (scores, tiers, smoothing, top-k, summary
tokens) against an independent re-statement of the released HERMES code's selection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hermes import eviction
from hermes.cache import PREFIX, SUMMARY, VIDEO, HermesCache
from hermes.config import HermesConfig
from hermes.errors import HermesError
from hermes.policies import LayerContext, Needs, available, get
from hermes.policies.base import keep_set, smooth_across_layers
from hermes.policies.hermes_policy import minmax, recency
from hermes.telemetry import Stopwatch

N = 12
ACC = np.array([5, 1, 9, 0, 3, 8, 2, 7, 4, 6, 1, 0], dtype=float)
SNAP = np.array([0, 0.9, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0])  # mean of the window rows


RELEASED = {"depth_span": "first_deep", "norm_eps": 1e-6, "summary_mode": "released"}  # the released code's choices


def released_hermes(**params):
    """The hermes policy with the released code's choices, spelt out so these tests keep checking
    the released formulas whatever the defaults are."""
    return get("hermes", **{**RELEASED, **params})


def test_hermes_defaults_are_the_released_codes():
    assert get("hermes") == released_hermes()
    assert HermesConfig().pseudo_query_style == "released"

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
    policy = released_hermes()
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
    scores = released_hermes().score(ctx(layer=0, attention=ATT))
    assert keep_set(scores, 5).tolist() == [7, 8, 9, 10, 11]


def test_hermes_deep_layers_keep_the_top_global_attention():
    scores = released_hermes().score(ctx(layer=10, attention=ATT))
    np.testing.assert_allclose(scores, minmax(ATT["global"], 1e-6))
    assert keep_set(scores, 5).tolist() == sorted(np.argsort(-ATT["global"])[:5].tolist())


DEPTHS = [  # L, layer, p by hand: (layer - first_middle) / (first_deep - first_middle), and the earlier span
    (12, 1, 0 / 7, 0 / 6), (12, 4, 3 / 7, 3 / 6), (12, 7, 6 / 7, 6 / 6),  # middle 1..7, first deep 8
    (24, 2, 0 / 14, 0 / 13), (24, 9, 7 / 14, 7 / 13), (24, 15, 13 / 14, 13 / 13),  # middle 2..15, deep 16
    (28, 2, 0 / 17, 0 / 16), (28, 12, 10 / 17, 10 / 16), (28, 18, 16 / 17, 16 / 16),  # middle 2..18, deep 19
]


@pytest.mark.parametrize("n_layers, layer, p, p_last_middle", DEPTHS)
def test_hermes_middle_depth_is_the_released_codes(n_layers, layer, p, p_last_middle):
    assert released_hermes().depth(layer, n_layers) == pytest.approx(p)
    assert released_hermes(depth_span="last_middle").depth(layer, n_layers) == pytest.approx(p_last_middle)
    alpha, k, query = released_hermes().weights(layer, n_layers)
    assert (alpha, k, query) == (pytest.approx(1 - 0.9 * p), pytest.approx(20 - 19.5 * p), "mixed")


@pytest.mark.parametrize("schedule, depth_span, layer, alpha, k", [
    ("code", "first_deep", 1, 1.0, 20.0),  # p = 0: pure recency
    ("code", "first_deep", 4, 1 - 0.9 * 3 / 7, 20 - 19.5 * 3 / 7),  # middle layers 1..7 of 12: p = (4 - 1) / 7
    ("code", "first_deep", 7, 1 - 0.9 * 6 / 7, 20 - 19.5 * 6 / 7),
    ("code", "last_middle", 4, 1 - 0.9 * 0.5, 20 - 19.5 * 0.5),  # p = (4 - 1) / 6
    ("code", "last_middle", 7, 1 - 0.9, 0.5),
    ("paper", "first_deep", 4, 1 - (0.75 - 0.6 * 3 / 7), 20 - 19.5 * 3 / 7),
    ("paper", "last_middle", 7, 1 - (0.75 - 0.6), 0.5),
])
def test_hermes_middle_scores_by_hand(schedule, depth_span, layer, alpha, k):
    scores = released_hermes(schedule=schedule, depth_span=depth_span).score(ctx(layer=layer, attention=ATT))
    d = (N - 1 - np.arange(N)) / (N - 1)
    r = np.exp(-k * d)
    r = (r - r.min()) / (r.max() - r.min() + 1e-6)
    a = (ATT["mixed"] - ATT["mixed"].min()) / (ATT["mixed"].max() - ATT["mixed"].min() + 1e-6)
    np.testing.assert_allclose(scores, alpha * r + (1 - alpha) * a)
    exact = released_hermes(schedule=schedule, depth_span=depth_span, norm_eps=0.0).score(
        ctx(layer=layer, attention=ATT))
    np.testing.assert_allclose(exact, alpha * minmax(np.exp(-k * d)) + (1 - alpha) * minmax(ATT["mixed"]))


def test_hermes_single_query_and_uniform_tier_ablations():
    single = released_hermes(query_mode="single")
    assert single.queries(12) == {"global"} and single.weights(4, 12)[2] == "global"
    uniform = released_hermes(tier_mode="uniform")
    assert {uniform.tier(i, 12) for i in range(12)} == {"middle"}
    assert uniform.depth(0, 12) == 0.0 and uniform.depth(11, 12) == 11 / 12
    assert released_hermes(tier_mode="uniform", depth_span="last_middle").depth(11, 12) == 1.0
    assert not any(uniform.summarize(i, 12) for i in range(12))
    assert released_hermes(smoothing=False).smoothing_lam(3, 12) == 0.0
    assert not released_hermes(summary=False).summarize(10, 12)
    assert released_hermes().fold_mode() == "released"
    assert released_hermes(summary_mode="first_folded").fold_mode() == "first_folded"


def test_recency_and_minmax():
    np.testing.assert_allclose(recency(3, 20.0), [np.exp(-20), np.exp(-10), 1.0])
    assert minmax(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]
    assert minmax(np.array([2.0, 2.0]), 1e-6).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(minmax(np.array([1.0, 2.0, 3.0]), 1e-6), [0, 1 / (2 + 1e-6), 2 / (2 + 1e-6)])


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
    ("hermes", {"depth_span": "last_deep"}, r"depth_span must be one of \('first_deep', 'last_middle'\)"),
    ("hermes", {"summary_mode": "oldest"}, r"summary_mode must be one of \('released', 'first_folded'\)"),
    ("hermes", {"norm_eps": -1e-6}, r"norm_eps must be a number in \[0, 1\]"),
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
    assert released_hermes().needs(12).queries == {"global", "mixed"}  # shallow layers read no query
    assert released_hermes(tier_mode="uniform").needs(12).queries == {"mixed"}
    assert released_hermes(query_mode="single").needs(12).queries == {"global"}
    h2o, snap = get("h2o").needs(12), get("snapkv", window=8).needs(12)
    assert h2o.accumulated and h2o.prefill_attention and not h2o.queries
    assert snap.observation_rows == 8 and snap.prefill_attention and not snap.accumulated


# ---- hermes against the released code, through the whole eviction ---------------------------------------------
#
# `released_keep` restates the selection of the released HERMES code (inference/llavaov_hermes.py,
# prune_kv_cache_by_attention) in torch float32 as it computes it: tiers at int(0.1 L) and int((1 - 0.3) L);
# recency exp(-k d) and attention min-max normalised with + 1e-6; shallow alpha 1, k 20 (local query); deep
# alpha 0 (global); middle p = (layer - first_middle) / (first_deep - first_middle), alpha 1 - 0.9 p,
# k 20 - 19.5 p (mixed); smoothing from the second-deepest layer up with 0.4 / 0.3 / 0.1 (deep / middle /
# shallow), F.interpolate where lengths differ; top-k of min(budget, n), budget - 1 in deep layers.
# `ReleasedStream` restates its cache update (_shrink_positions_and_rerotate_keys, lazy): it prunes once the
# first layer holds more than the budget with the prefix; a deep layer folds everything not kept (an
# earlier summary included) into a summary appended one position past its newest kept token, and every
# layer's next tokens follow its own newest token. Tokens carry their label in value channel 0, so a
# summary's channel 0 is the mean of what it folded: comparing values in cache order compares keep-sets,
# order and what every summary holds.

DH = 8


def rope(keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """RoPE re-rotation by per-token position deltas (the cache's RotateFn contract)."""
    half = keys.shape[-1] // 2
    angle = delta.float().view(-1, 1) * (1.0 / 100.0 ** (torch.arange(half, dtype=torch.float32) / half))
    cos, sin = torch.cat([angle.cos()] * 2, dim=-1), torch.cat([angle.sin()] * 2, dim=-1)
    return keys * cos + torch.cat((-keys[..., half:], keys[..., :half]), dim=-1) * sin


def released_keep(attention: dict[str, list[torch.Tensor]], n_layers: int, budget: int) -> tuple[list, list]:
    """Per layer the sorted indices it keeps, and whether it is a long-term (folding) layer."""
    short_end, long_start = int(n_layers * 0.1), int(n_layers * (1 - 0.3))
    raw, sizes, kinds = [], [], []
    for layer in range(n_layers):
        if layer < short_end:
            kind, att, alpha, k = "short", attention["local"][layer], 1.0, 20.0
        elif layer >= long_start:
            kind, att, alpha, k = "long", attention["global"][layer], 0.0, 0.0
        else:
            progress = (layer - short_end) / (long_start - short_end)
            kind, att, alpha, k = "mid", attention["mixed"][layer], 1.0 - 0.9 * progress, 20 - 19.5 * progress
        n = att.shape[0]
        t = torch.arange(n, dtype=torch.float32)
        rec = torch.exp(-k * (n - 1 - t) / max(n - 1, 1))
        att_norm = (att - att.min()) / (att.max() - att.min() + 1e-6)
        rec_norm = (rec - rec.min()) / (rec.max() - rec.min() + 1e-6)
        raw.append(att_norm * (1 - alpha) + rec_norm * alpha)
        sizes.append(min(max(0, budget - 1) if kind == "long" else budget, n))
        kinds.append(kind)
    refined = [s.clone() for s in raw]
    for i in range(n_layers - 2, -1, -1):
        gamma = {"long": 0.4, "mid": 0.3, "short": 0.1}[kinds[i]]
        above = refined[i + 1]
        if above.shape[0] != refined[i].shape[0]:
            above = F.interpolate(above.view(1, 1, -1), size=refined[i].shape[0], mode="linear",
                                  align_corners=False).view(-1)
        refined[i] = (1 - gamma) * refined[i] + gamma * above
    keep = [torch.sort(torch.topk(s, size, sorted=False).indices).values.tolist()
            for s, size in zip(refined, sizes, strict=True)]
    return keep, [kind == "long" for kind in kinds]


class ReleasedStream:
    """The released code's per-layer cache, non-prefix tokens only: keys, values, positions and
    which tokens are summaries."""

    def __init__(self, n_layers: int, prefix: int) -> None:
        self.prefix = prefix
        self.keys = [torch.zeros(0, DH) for _ in range(n_layers)]
        self.values = [torch.zeros(0, DH) for _ in range(n_layers)]
        self.positions = [torch.zeros(0, dtype=torch.long) for _ in range(n_layers)]
        self.summary = [torch.zeros(0, dtype=torch.bool) for _ in range(n_layers)]

    def append(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """A chunk; each layer's tokens follow its own newest token. `keys` are position-free:
        the layer holds them rotated to the positions they take."""
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            start = int(self.positions[layer][-1]) + 1 if len(self.positions[layer]) else self.prefix
            self.keys[layer] = torch.cat([self.keys[layer], rope(k, torch.arange(start, start + len(v)))])
            self.values[layer] = torch.cat([self.values[layer], v])
            self.positions[layer] = torch.cat([self.positions[layer], torch.arange(start, start + len(v))])
            self.summary[layer] = torch.cat([self.summary[layer], torch.zeros(len(v), dtype=torch.bool)])

    def prune(self, attention: dict[str, list[torch.Tensor]], budget: int) -> None:
        if self.prefix + len(self.values[0]) <= budget:
            return
        keep, long_term = released_keep(attention, len(self.values), budget)
        for layer, kept in enumerate(keep):
            kept = torch.tensor(kept, dtype=torch.long)
            pruned = torch.tensor(sorted(set(range(len(self.values[layer]))) - set(kept.tolist())), dtype=torch.long)
            k, v, pos, summary = self.keys[layer], self.values[layer], self.positions[layer], self.summary[layer]
            k_new, v_new, pos_new, summary_new = k[kept], v[kept], pos[kept], summary[kept]
            if long_term[layer] and len(pruned):
                at = (int(pos_new[-1]) if len(pos_new) else self.prefix - 1) + 1
                k_new = torch.cat([k_new, rope(k[pruned], at - pos[pruned]).mean(dim=0, keepdim=True)])
                v_new = torch.cat([v_new, v[pruned].mean(dim=0, keepdim=True)])
                pos_new, summary_new = torch.cat([pos_new, torch.tensor([at])]), torch.cat([summary_new,
                                                                                             torch.tensor([True])])
            self.keys[layer], self.values[layer] = k_new, v_new
            self.positions[layer], self.summary[layer] = pos_new, summary_new


class OurStream:
    """A HermesCache written through its public staging interface, evicted by hermes.eviction."""

    def __init__(self, n_layers: int, prefix: int) -> None:
        self.cache = HermesCache(n_layers, rope)
        self.write([torch.zeros(prefix, DH)] * n_layers, [torch.zeros(prefix, DH)] * n_layers, PREFIX)

    def write(self, keys: list[torch.Tensor], values: list[torch.Tensor], kind: int = VIDEO) -> None:
        n = len(values[0])
        positions = self.cache.next_positions(n)
        with self.cache.staged(positions, torch.zeros(n, dtype=torch.long), torch.full((n,), kind)):
            for layer, k, v in zip(self.cache.layers, keys, values, strict=True):
                layer.update(k.view(1, 1, n, DH), v.view(1, 1, n, DH))
        self.cache.advance(n)

    def evict(self, attention: dict[str, list[torch.Tensor]], budget: int, **params) -> None:
        prefix = self.cache.prefix_length
        full = {name: [np.concatenate([np.zeros(prefix), a.double().numpy()]) for a in per_layer]
                for name, per_layer in attention.items()}
        eviction.evict(self.cache, released_hermes(**params), budget, full, {}, 0, Stopwatch())

    def values(self, layer: int) -> torch.Tensor:
        lay = self.cache.layers[layer]
        return lay.values[0, 0, lay.evictable_index()]


def draw_attention(rng: np.random.Generator, style: str, n: int) -> torch.Tensor:
    """(n,) float32 attention of one query over n tokens: uniform noise, a few sharp peaks, or
    nearly flat (distinct values spanning ~1e-2 / n, where the + 1e-6 of the normalisation matters)."""
    if style == "random":
        a = rng.random(n)
    elif style == "flat":
        a = 1.0 + 1e-2 * rng.permutation(n) / n
    else:
        logits = rng.normal(0.0, 1.0, n)
        logits[rng.choice(n, size=max(1, n // 10), replace=False)] += 6.0
        a = np.exp(logits - logits.max())
    return torch.from_numpy((a / a.sum()).astype(np.float32))


def run_both(n_layers: int, style: str, budget: int, prefix: int, chunks: tuple[int, ...], seed: int) -> int:
    """Stream `chunks` through both caches with identical attention; compare every layer after
    every chunk. Returns how many layer-chunks were compared."""
    rng = np.random.default_rng(seed)
    ours, theirs, label, compared = OurStream(n_layers, prefix), ReleasedStream(n_layers, prefix), 1, 0
    for chunk, n_new in enumerate(chunks):
        values = [torch.from_numpy(rng.normal(size=(n_new, DH)).astype(np.float32)) for _ in range(n_layers)]
        for v in values:
            v[:, 0] = torch.arange(label, label + n_new, dtype=torch.float32)  # each token's label
        label += n_new
        keys = [torch.from_numpy(rng.normal(size=(n_new, DH)).astype(np.float32)) for _ in range(n_layers)]
        at = ours.cache.next_positions(n_new)
        ours.write([rope(k, at) for k in keys], values)  # keys as a forward writes them: at their positions
        theirs.append(keys, values)
        attention = {name: [draw_attention(rng, style, len(v)) for v in theirs.values]
                     for name in ("local", "global", "mixed")}
        theirs.prune(attention, budget)
        ours.evict(attention, budget)
        for layer in range(n_layers):
            where = f"chunk {chunk} layer {layer} (L={n_layers}, {style}, budget {budget})"
            lay = ours.cache.layers[layer]
            index = lay.evictable_index()
            torch.testing.assert_close(lay.values[0, 0, index], theirs.values[layer], msg=where)
            assert torch.equal(lay.kinds[index] == SUMMARY, theirs.summary[layer]), where
            positions = lay.positions
            assert bool((positions[1:] > positions[:-1]).all()) and positions.max() == ours.cache.next_position - 1
            # the same positions up to one shift per layer (RoPE is relative), so the same keys once shifted
            shift = positions[index] - theirs.positions[layer]
            assert bool((shift == shift[0]).all()), f"{where}: {positions[index]} vs {theirs.positions[layer]}"
            torch.testing.assert_close(lay.keys[0, 0, index], rope(theirs.keys[layer], shift), atol=1e-4, rtol=1e-4,
                                       msg=where)
            compared += 1
    return compared


KEEP_CASES = [  # L, attention, budget, prefix tokens, chunk sizes
    (12, "random", 24, 3, (30, 20, 20, 7)),
    (12, "peaked", 24, 3, (24, 16, 16, 16)),  # 24 = budget: the first prune folds one token per deep layer
    (24, "random", 40, 5, (48, 33, 33, 33)),
    (24, "peaked", 40, 5, (40, 9, 33, 60)),
    (28, "random", 64, 4, (70, 65, 65)),
    (28, "peaked", 64, 4, (64, 65, 10, 65)),
    (24, "flat", 40, 5, (48, 33, 33)),
]


@pytest.mark.parametrize("n_layers, style, budget, prefix, chunks", KEEP_CASES)
def test_hermes_keep_sets_equal_the_released_codes(n_layers, style, budget, prefix, chunks):
    assert run_both(n_layers, style, budget, prefix, chunks, seed=n_layers + budget) == n_layers * len(chunks)


@pytest.mark.parametrize("seed", range(7001, 7009))
def test_hermes_keep_sets_equal_the_released_codes_on_unseen_streams(seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.choice([12, 16, 24, 28, 32]))
    budget = int(rng.integers(6, 90))
    chunks = tuple(int(c) for c in rng.integers(1, 2 * budget, size=int(rng.integers(3, 7))))
    run_both(n_layers, str(rng.choice(["random", "peaked", "flat"])), budget, int(rng.integers(1, 8)), chunks, seed)


def written(stream: OurStream, n: int, label: int) -> None:
    values = [torch.arange(label, label + n, dtype=torch.float32).view(-1, 1).repeat(1, DH)] * len(stream.cache.layers)
    stream.write([torch.randn(n, DH) for _ in stream.cache.layers], values)


def peaked_at(lengths: list[int], newest: bool) -> dict[str, list[torch.Tensor]]:
    """Attention rising towards the newest token (or the oldest), every layer and query."""
    ramp = [torch.arange(1, n + 1, dtype=torch.float32) if newest else torch.arange(n, 0, -1, dtype=torch.float32)
            for n in lengths]
    return {name: ramp for name in ("local", "global", "mixed")}


def test_each_layer_continues_after_its_own_newest_token():
    stream = OurStream(12, prefix=2)
    written(stream, 20, 1)  # positions 2..21, next 22
    stream.evict(peaked_at(stream.cache.evictable_lengths(), newest=False), budget=8)
    deep = stream.cache.layers[10]  # the oldest 7 kept (2..8), the summary one past them (9) ...
    assert deep.kinds[-1] == SUMMARY and deep.values[0, 0, -1, 0].item() == pytest.approx(np.mean(range(8, 21)))
    assert deep.positions.tolist() == [0, 1, *range(14, 21), 21]  # ... moved on by 12: next tokens follow them
    assert stream.cache.layers[0].positions[-1] == 21 and stream.cache.next_position == 22
    written(stream, 3, 100)
    assert deep.positions[-4:].tolist() == [21, 22, 23, 24]


def test_a_summary_on_the_next_position_moves_its_layer_back_or_the_stream_on():
    stream = OurStream(12, prefix=2)
    written(stream, 20, 1)
    stream.evict(peaked_at(stream.cache.evictable_lengths(), newest=True), budget=8)
    deep = stream.cache.layers[10]  # the newest 7 kept (15..21), the summary one past them, on the next position
    assert deep.positions.tolist() == [0, 1, *range(14, 21), 21] and stream.cache.next_position == 22  # moved back
    stream = OurStream(12, prefix=2)
    written(stream, 20, 1)
    attention = peaked_at(stream.cache.evictable_lengths(), newest=True)
    for a in attention["global"]:
        a[0] = 1e3  # the oldest token too: the layer cannot move back past its prefix, so the stream moves on
    stream.evict(attention, budget=8)
    deep = stream.cache.layers[10]
    assert deep.positions.tolist() == [0, 1, 2, *range(16, 22), 22] and stream.cache.next_position == 23
    assert stream.cache.layers[0].positions[-1] == 22  # every other layer follows


def test_first_folded_mode_refolds_the_old_summary_at_the_smallest_position():
    stream = OurStream(12, prefix=2)
    written(stream, 20, 1)
    stream.evict(peaked_at(stream.cache.evictable_lengths(), newest=True), budget=8, summary_mode="first_folded")
    deep = stream.cache.layers[10]
    assert deep.positions[2:].tolist() == [2, *range(15, 22)] and deep.kinds[2] == SUMMARY
    assert deep.values[0, 0, 2, 0].item() == pytest.approx(np.mean(range(1, 14)))  # labels 1..13 folded
    assert stream.cache.next_position == 22
    written(stream, 4, 100)  # 12 tokens: the summary is no candidate, it is folded in again with the rest
    stream.evict(peaked_at(stream.cache.evictable_lengths(), newest=True), budget=8, summary_mode="first_folded")
    assert int((deep.kinds == SUMMARY).sum()) == 1 and deep.positions[2].item() == 2
    folded = [np.mean(range(1, 14)), 14, 15, 16, 17]  # the old summary (one token now) + the 4 oldest video
    assert deep.values[0, 0, 2, 0].item() == pytest.approx(np.mean(folded))


def test_an_old_summary_is_an_ordinary_candidate():
    stream = OurStream(12, prefix=2)
    written(stream, 20, 1)
    stream.evict(peaked_at(stream.cache.evictable_lengths(), newest=True), budget=8)
    deep = stream.cache.layers[10]
    counts = []
    for label, summary_attention in ((100, 0.0), (200, 1e3)):  # the summary least, then most attended
        written(stream, 4, label)
        attention = peaked_at(stream.cache.evictable_lengths(), newest=True)
        attention["global"] = [a.clone() for a in attention["global"]]
        old = (deep.kinds[deep.evictable_index()] == SUMMARY).nonzero().flatten()
        attention["global"][10][old] = summary_attention
        attention["global"][11][old] = summary_attention  # smoothing brings the layer above in
        stream.evict(attention, budget=8)
        counts.append(int((deep.kinds == SUMMARY).sum()))
        assert deep.kinds[-1] == SUMMARY and len(deep.evictable_index()) == 8
    assert counts == [1, 2]  # folded in with the rest, then kept beside the new one
