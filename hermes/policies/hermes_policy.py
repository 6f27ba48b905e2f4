"""The HERMES policy: layers as a memory hierarchy (DESIGN section 1).

With L decoder layers: shallow = layers < int(shallow_ratio * L) (sensory memory: pure
recency), deep = layers >= int(deep_ratio * L) (long-term memory: attention of the global
pseudo-query, evicted tokens folded into one summary token), middle = the rest (working
memory: recency blended into attention of the mixed query as depth p grows).

Score of token i of n (oldest first): d_i = (n-1-i)/(n-1), r_i = exp(-k d_i), attention
a_i; both min-max normalised as (x - min) / (max - min + norm_eps); score = alpha r + (1 - alpha) a.
  shallow: alpha = 1, k = k_shallow
  deep:    alpha = 0, global query
  middle:  schedule "code":  alpha = 1 - alpha_drop p,  k = k_shallow - (k_shallow - k_deep_end) p
           schedule "paper": alpha = 1 - (w0 - gamma p), k as in "code"
Middle-layer depth (depth_span "first_deep", the released code's):
p = (layer - first_middle) / (first_deep - first_middle), from 0 up to below 1; "last_middle"
divides by (last_middle - first_middle) instead, so the last middle layer reaches p = 1.
The engine then smooths scores from the deepest layer up (lam per tier) and keeps the top
budget per layer (budget - 1 plus a new summary in deep layers).

Summary token and positions (summary_mode "released", the released code's): deep layers keep
the top budget - 1 of all their tokens, an earlier summary included (it is an ordinary
candidate, kept or folded by its score), and fold the rest into a new summary one position past
the newest kept token; every layer's next tokens follow its own newest token (see
hermes.eviction). "first_folded" (this project's earlier behaviour): the earlier summary is
always folded in again, the new one sits at the smallest folded position, and a layer whose
newest tokens were evicted keeps their positions as a gap before the next chunk.

Ablations: smoothing off, summary off, query_mode "single" (global query in every tier),
tier_mode "uniform" (one middle tier over all layers, p = layer / L, or layer / (L - 1) with
depth_span "last_middle"), and the two earlier behaviours above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hermes.errors import HermesError, check_choice, check_flag, check_number
from hermes.policies.base import FOLD_MODES, LayerContext, Policy, register

TIERS = ("shallow", "middle", "deep")
SCHEDULES = ("code", "paper")
QUERY_MODES = ("tiered", "single")
TIER_MODES = ("hierarchical", "uniform")
DEPTH_SPANS = ("first_deep", "last_middle")
SUMMARY_MODES = FOLD_MODES


def tier_bounds(n_layers: int, shallow_ratio: float, deep_ratio: float) -> tuple[int, int]:
    """(first middle layer, first deep layer)."""
    return int(shallow_ratio * n_layers), int(deep_ratio * n_layers)


def minmax(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """(x - min) / (max - min + eps): [0, 1] (just below 1 with eps > 0); a constant array becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    low, span = x.min(), x.max() - x.min()
    return (x - low) / (span + eps) if span + eps > 0 else np.zeros_like(x)


def recency(n: int, k: float) -> np.ndarray:
    """exp(-k d), d = (n-1-i)/(n-1): 1 for the newest token, exp(-k) for the oldest."""
    d = (n - 1 - np.arange(n)) / (n - 1) if n > 1 else np.zeros(n)
    return np.exp(-k * d)


@register("hermes")
@dataclass
class Hermes(Policy):
    """Hierarchical KV cache management (DESIGN section 1); the defaults are the released code's.

    shallow_ratio / deep_ratio: layers < int(shallow_ratio * L) are shallow, >= int(deep_ratio * L) deep.
    schedule: "code" (released code: middle alpha = 1 - alpha_drop * p, k = k_shallow - (k_shallow - k_deep_end) * p)
        or "paper" (attention weight w = w0 - gamma * p, k as in "code").
    depth_span: middle-layer p = (layer - first_middle) / (first_deep - first_middle) ("first_deep", released
        code) or / (last_middle - first_middle) ("last_middle", this project's earlier formula).
    norm_eps: added to the span in the min-max normalisation of recency and attention (released code: 1e-6).
    lams: cross-layer smoothing weight for (shallow, middle, deep) layers.
    smoothing / summary: ablation switches (cross-layer smoothing; deep-layer summary token).
    summary_mode: "released" (released code: the summary goes one position past the newest kept token, an
        earlier summary is an ordinary candidate, each layer continues after its own newest token) or
        "first_folded" (earlier: at the smallest folded position, the earlier summary always folded in again,
        gaps left where a layer's newest tokens went).
    query_mode: "tiered" (mixed / global per tier) or "single" (global query everywhere).
    tier_mode: "hierarchical" (three tiers) or "uniform" (one middle tier spanning all layers).
    """

    shallow_ratio: float = 0.1
    deep_ratio: float = 0.7
    schedule: str = "code"
    k_shallow: float = 20.0
    k_deep_end: float = 0.5
    alpha_drop: float = 0.9
    w0: float = 0.75
    gamma: float = 0.6
    depth_span: str = "first_deep"
    norm_eps: float = 1e-6
    lams: tuple[float, float, float] = (0.1, 0.3, 0.4)
    smoothing: bool = True
    summary: bool = True
    summary_mode: str = "released"
    query_mode: str = "tiered"
    tier_mode: str = "hierarchical"

    def __post_init__(self) -> None:
        for name in ("shallow_ratio", "deep_ratio", "alpha_drop", "w0", "gamma"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        if self.shallow_ratio > self.deep_ratio:
            raise HermesError(f"shallow_ratio ({self.shallow_ratio}) must be <= deep_ratio ({self.deep_ratio})")
        if self.w0 - self.gamma < 0:
            raise HermesError(f"w0 - gamma must be >= 0 so the attention weight stays in [0, 1], got {self.w0} - "
                              f"{self.gamma}")
        for name in ("k_shallow", "k_deep_end"):
            check_number(name, getattr(self, name), 0.0, 100.0)
        check_number("norm_eps", self.norm_eps, 0.0, 1.0)
        if not isinstance(self.lams, (tuple, list)) or len(self.lams) != 3:
            raise HermesError(f"lams must be three numbers (shallow, middle, deep) in [0, 1], got {self.lams!r}")
        for lam in self.lams:
            check_number("lams", lam, 0.0, 1.0)
        self.lams = tuple(float(x) for x in self.lams)
        for name, allowed in (("schedule", SCHEDULES), ("query_mode", QUERY_MODES), ("tier_mode", TIER_MODES),
                              ("depth_span", DEPTH_SPANS), ("summary_mode", SUMMARY_MODES)):
            check_choice(name, getattr(self, name), allowed)
        for name in ("smoothing", "summary"):
            check_flag(name, getattr(self, name))

    def tier(self, layer: int, n_layers: int) -> str:
        if self.tier_mode == "uniform":
            return "middle"
        first_middle, first_deep = tier_bounds(n_layers, self.shallow_ratio, self.deep_ratio)
        return "shallow" if layer < first_middle else "deep" if layer >= first_deep else "middle"

    def depth(self, layer: int, n_layers: int) -> float:
        """p: relative depth inside the middle tier, (layer - first) / (end - first) with first the
        tier's first layer and end the layer after its last ("first_deep": p < 1) or its last layer
        ("last_middle": the last middle layer has p = 1)."""
        first, end = (0, n_layers) if self.tier_mode == "uniform" else tier_bounds(
            n_layers, self.shallow_ratio, self.deep_ratio)
        if self.depth_span == "last_middle":
            end -= 1
        return (layer - first) / (end - first) if end > first else 0.0

    def weights(self, layer: int, n_layers: int) -> tuple[float, float, str | None]:
        """(alpha, k, query) of a layer: score = alpha * recency_k + (1 - alpha) * attention_query."""
        tier = self.tier(layer, n_layers)
        if tier == "shallow":
            return 1.0, self.k_shallow, None
        if tier == "deep":
            return 0.0, self.k_shallow, "global"
        p = self.depth(layer, n_layers)
        k = self.k_shallow - (self.k_shallow - self.k_deep_end) * p
        alpha = 1.0 - self.alpha_drop * p if self.schedule == "code" else 1.0 - (self.w0 - self.gamma * p)
        return alpha, k, "global" if self.query_mode == "single" else "mixed"

    def queries(self, n_layers: int) -> frozenset[str]:
        """The queries its tiers score with: global (deep), mixed (middle); shallow layers need none."""
        return frozenset(query for layer in range(n_layers) if (query := self.weights(layer, n_layers)[2]))

    def score(self, ctx: LayerContext) -> np.ndarray:
        alpha, k, query = self.weights(ctx.layer, ctx.n_layers)
        r = minmax(recency(ctx.n, k), self.norm_eps)
        if query is None or math.isclose(alpha, 1.0):
            return r
        a = minmax(ctx.attention[query], self.norm_eps)
        return alpha * r + (1.0 - alpha) * a

    def smoothing_lam(self, layer: int, n_layers: int) -> float:
        return self.lams[TIERS.index(self.tier(layer, n_layers))] if self.smoothing else 0.0

    def summarize(self, layer: int, n_layers: int) -> bool:
        return self.summary and self.tier(layer, n_layers) == "deep"

    def fold_mode(self) -> str:
        return self.summary_mode
