"""Peer policies shipped for comparison: uniform, streaming_llm, h2o, snapkv, pyramidkv.

Each is adapted to streaming the same way: the engine calls it after every chunk on
each layer's video tokens (oldest first) and keeps the top ``budget``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hermes.errors import check_number
from hermes.policies.base import LayerContext, Policy, register

_MAX_LEVEL = 62  # 2-adic level given to frame 0 (divisible by every power of two)


def _two_adic_level(frames: np.ndarray) -> np.ndarray:
    """How many times 2 divides each frame index (frame 0 gets the top level)."""
    f = frames.astype(np.int64)
    level = np.zeros(f.shape, dtype=np.int64)
    level[f <= 0] = _MAX_LEVEL
    rest = f > 0
    lowbit = f[rest] & -f[rest]
    level[rest] = np.log2(lowbit).astype(np.int64)
    return level


@register("uniform")
@dataclass
class Uniform(Policy):
    """Evenly spaced frames, the streaming way: frames on the coarsest power-of-two grid
    (0, 2^j, 2*2^j, ...) rank first, so as the stream grows the kept frames thin out to a
    doubling stride; the budget left over goes to the next finer grid, newest first."""

    def score(self, ctx: LayerContext) -> np.ndarray:
        return _two_adic_level(ctx.frames).astype(np.float64)


@register("streaming_llm")
@dataclass
class StreamingLLM(Policy):
    """Attention sinks + recent window: the first `sinks` video tokens and the newest rest."""

    sinks: int = 4

    def __post_init__(self) -> None:
        check_number("sinks", self.sinks, 0, 1_000_000, whole=True)

    def score(self, ctx: LayerContext) -> np.ndarray:
        order = np.arange(ctx.n, dtype=np.float64)
        return np.where(order < self.sinks, ctx.n + order, order)


@register("h2o")
@dataclass
class H2O(Policy):
    """Heavy hitters: the tokens with the most attention received so far (summed over
    every chunk's queries), plus a recent window of `recent` x budget newest tokens."""

    recent: float = 0.5
    reads_accumulated = True

    def __post_init__(self) -> None:
        check_number("recent", self.recent, 0.0, 1.0)

    def score(self, ctx: LayerContext) -> np.ndarray:
        acc = np.asarray(ctx.accumulated, dtype=np.float64)
        n_recent = int(self.recent * ctx.budget)
        score = acc.copy()
        if n_recent:
            score[ctx.n - n_recent:] = acc.max(initial=0.0) + 1.0 + np.arange(n_recent)
        return score


@register("snapkv")
@dataclass
class SnapKV(Policy):
    """Attention of the chunk's last `window` queries (mean over them), max-pooled over
    `kernel` neighbouring tokens; the window itself is always kept."""

    window: int = 16
    kernel: int = 5

    def __post_init__(self) -> None:
        check_number("window", self.window, 1, 4096, whole=True)
        check_number("kernel", self.kernel, 1, 1025, whole=True)

    def observation_rows(self) -> int:
        return self.window

    def score(self, ctx: LayerContext) -> np.ndarray:
        att = np.asarray(ctx.window_attention, dtype=np.float64).mean(axis=0)  # (n,)
        pooled = _max_pool(att, self.kernel)
        w = min(self.window, ctx.n)
        pooled[ctx.n - w:] = pooled.max(initial=0.0) + 1.0
        return pooled


def _max_pool(x: np.ndarray, kernel: int) -> np.ndarray:
    """1-D max pooling, stride 1, same length (window clipped at the ends)."""
    half = kernel // 2
    padded = np.pad(x, half, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel)
    return windows.max(axis=1)


@register("pyramidkv")
@dataclass
class PyramidKV(SnapKV):
    """SnapKV scores with budgets shrinking linearly with depth: layer 0 keeps the most,
    the last layer budget / beta, and the layers together keep n_layers x budget."""

    beta: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("beta", self.beta, 1.0, 1e6)  # the last layer keeps budget / beta >= 1 tokens

    def layer_budgets(self, n_layers: int, budget: int) -> list[int]:
        total = n_layers * budget
        low = max(1.0, budget / self.beta)
        high = 2 * budget - low
        raw = np.linspace(high, low, n_layers) if n_layers > 1 else np.array([float(budget)])
        floors = np.floor(raw).astype(int)
        # largest remainders get the leftover tokens, so the total stays exact; sorting keeps
        # the budgets non-increasing with depth
        order = np.argsort(-(raw - floors), kind="stable")
        floors[order[: total - int(floors.sum())]] += 1
        return sorted((int(b) for b in floors), reverse=True)
