"""Eviction: cut every layer of the cache back to its budget, as the policy scores it.

    result = evict(cache, policy, budget=256, attention=..., window=..., frames_seen=..., watch=watch)
    result.budgets, result.evicted        # (L,) tokens each layer may keep / lost this time

One entry point, four steps: per-layer budgets from the policy; a score for every evictable
token of every layer (the policy sees one layer at a time through a ``LayerContext``);
cross-layer smoothing from the deepest layer up; the cut, keeping the top ``budget`` per
layer and, where the policy says so, folding the rest into one summary token. Prefix
tokens are never candidates.

Folding and positions follow ``policy.fold_mode()``. "released" (the released HERMES code,
inference/llavaov_hermes.py): a summarizing layer holding more than budget - 1 tokens keeps its
top budget - 1 (an earlier summary competes like any token) and folds the rest into a new
summary one position past the newest token that stays; and every layer's next tokens follow its
own newest token. The layers here share the stream's next position, so that last part is done
by moving each layer's non-prefix tokens (keys re-rotated, ``HermesLayer.set_positions``) until
its newest token sits just before the next position: RoPE is relative, so what any later token
sees is the released code's, except the distance to the prefix, which here grows with the
stream instead of shrinking by what each layer evicted from its newest end. "first_folded"
(this project's earlier behaviour): a layer over budget keeps budget - 1 tokens that are not
summaries and folds the rest, the earlier summary included, into a summary at the smallest
folded position; a layer whose newest tokens were evicted keeps their positions as a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hermes.cache import PREFIX, SUMMARY, HermesCache, HermesLayer
from hermes.errors import HermesError
from hermes.policies import LayerContext, Policy
from hermes.policies.base import FOLD_MODES, keep_set, smooth_across_layers
from hermes.telemetry import Stopwatch


@dataclass
class Eviction:
    """What one eviction did."""

    budgets: list[int] | None  # (L,) tokens each layer may keep; None: no limit
    evicted: np.ndarray  # (L,) tokens each layer lost (net of a new summary token)


def layer_budgets(policy: Policy, n_layers: int, budget: int | None) -> list[int] | None:
    """The policy's per-layer budgets, checked; None when nothing is evicted."""
    if not policy.evicts or budget is None:
        return None
    budgets = list(policy.layer_budgets(n_layers, budget))
    if len(budgets) != n_layers or min(budgets) < 1:
        raise HermesError(f"policy {policy.name!r} gave layer budgets {budgets}; need {n_layers} numbers >= 1")
    return budgets


def evict(cache: HermesCache, policy: Policy, budget: int | None, attention: dict[str, list[np.ndarray]],
          window: dict[int, torch.Tensor], frames_seen: int, watch: Stopwatch) -> Eviction:
    """Score every layer, smooth across layers, cut each layer to its budget.

    attention: pseudo-query name -> per layer (len(layer),) attention; window: layer -> (w, k)
    attention rows of the chunk's last queries (empty when the policy reads none). Times
    "score" and "evict" on `watch`."""
    n_layers = len(cache.layers)
    with watch.lap("evict"):
        budgets = layer_budgets(policy, n_layers, budget)
        evicted = np.zeros(n_layers, dtype=np.int64)
        index = [layer.evictable_index() for layer in cache.layers]
        if budgets is not None:
            mode = policy.fold_mode()
            if mode not in FOLD_MODES:
                raise HermesError(f"policy {policy.name!r} gave fold mode {mode!r}; need one of {FOLD_MODES}")
            folds = [policy.summarize(i, n_layers) for i in range(n_layers)]
            limits = [cut_above(b, fold, mode) for b, fold in zip(budgets, folds, strict=True)]
    if budgets is None or all(len(idx) <= limit for idx, limit in zip(index, limits, strict=True)):
        return Eviction(budgets, evicted)
    with watch.lap("score"):
        scores = [score_layer(policy, cache.layers[i], i, n_layers, budgets[i], index[i], attention, window,
                              frames_seen) for i in range(n_layers)]
        scores = smooth_across_layers(scores, [policy.smoothing_lam(i, n_layers) for i in range(n_layers)])
    with watch.lap("evict"):
        for i, layer in enumerate(cache.layers):
            if len(index[i]) > limits[i]:
                evicted[i] = cut_layer(layer, index[i], scores[i], budgets[i], folds[i], mode)
        if mode == "released":
            follow_newest(cache)
    return Eviction(budgets, evicted)


def cut_above(budget: int, fold: bool, mode: str) -> int:
    """A layer holding more evictable tokens than this is cut: budget, or budget - 1 for a
    layer that folds in the "released" mode (the released code cuts it to budget - 1 and
    adds a summary even when it holds exactly budget)."""
    return budget - 1 if fold and mode == "released" else budget


def follow_newest(cache: HermesCache) -> None:
    """Move each layer's non-prefix tokens so that its newest one sits at next_position - 1
    (the released code continues every layer after its own newest token). A layer whose
    summary landed on the next position moves back by one where that does not reach its
    prefix; otherwise the stream moves on instead."""
    rest = [layer.kinds != PREFIX for layer in cache.layers]
    newest = [int(layer.positions[r].max()) if bool(r.any()) else None for layer, r in zip(cache.layers, rest,
                                                                                          strict=True)]

    def room_below(layer, r, by: int) -> bool:  # the layer's oldest token can move down `by` past its prefix
        prefix = layer.positions[~r]
        return not bool(prefix.numel()) or int(layer.positions[r].min()) - by > int(prefix.max())

    over = [(layer, r, top) for layer, r, top in zip(cache.layers, rest, newest, strict=True)
            if top is not None and top >= cache.next_position]
    if not all(room_below(layer, r, top + 1 - cache.next_position) for layer, r, top in over):
        cache.advance(max(top for *_, top in over) + 1 - cache.next_position)
    for layer, r, top in zip(cache.layers, rest, newest, strict=True):
        if top is not None and (delta := cache.next_position - 1 - top):
            positions = layer.positions.clone()
            positions[r] += delta
            layer.set_positions(positions)


def score_layer(policy: Policy, layer: HermesLayer, layer_idx: int, n_layers: int, budget: int, index: torch.Tensor,
                attention: dict[str, list[np.ndarray]], window: dict[int, torch.Tensor], frames_seen: int
                ) -> np.ndarray:
    """(n,) checked scores of one layer's evictable tokens at `index`."""
    idx = index.numpy()
    ctx = LayerContext(
        layer=layer_idx, n_layers=n_layers, budget=budget, positions=layer.positions[index].numpy(),
        frames=layer.frames[index].numpy(), kinds=layer.kinds[index].numpy(), frames_seen=frames_seen,
        attention={name: per_layer[layer_idx][idx] for name, per_layer in attention.items()} or None,
        accumulated=layer.acc[index].numpy() if policy.reads_accumulated else None,
        window_attention=window[layer_idx][:, : len(layer)][:, index].cpu().numpy() if window else None,
    )
    scores = np.asarray(policy.score(ctx), dtype=np.float64).reshape(-1)
    if scores.shape != (len(idx),):
        raise HermesError(f"policy {policy.name!r} returned {scores.shape} scores for {len(idx)} tokens")
    if not np.isfinite(scores).all():
        raise HermesError(f"policy {policy.name!r} returned scores that are not finite numbers")
    return scores


def cut_layer(layer: HermesLayer, index: torch.Tensor, scores: np.ndarray, budget: int, summarize: bool,
              mode: str = "released") -> int:
    """Keep the top-scoring evictable tokens of one layer; with `summarize`, keep budget - 1 and
    fold the rest into a new summary token, placed as `mode` says (see the module docstring).
    Returns how many tokens the layer lost (net of the summary)."""
    n = len(index)
    candidates = np.arange(n)
    refold = summarize and mode == "first_folded"
    if refold:  # the earlier summary is no candidate: it is folded in again
        candidates = candidates[layer.kinds[index].numpy() != SUMMARY]
    keep = candidates[keep_set(scores[candidates], budget - 1 if summarize else budget)]
    drop = torch.from_numpy(np.setdiff1d(np.arange(n), keep))
    kept_positions = layer.positions[index[torch.from_numpy(keep)]]  # positions are unique in a layer
    stays = (layer.kinds == PREFIX) | torch.isin(layer.positions, kept_positions)
    if summarize and len(drop):
        at = None  # "first_folded": at the smallest folded position
        if not refold and bool(stays.any()):
            at = int(layer.positions[stays].max()) + 1  # one past the newest token that stays
        layer.fold(index[drop], at=at)
        stays = (layer.kinds == PREFIX) | (layer.kinds == SUMMARY) | torch.isin(layer.positions, kept_positions)
    layer.keep(stays.nonzero().flatten())
    return n - len(layer.evictable_index())
