"""The baseline policies: ``full`` (never evicts) and ``fifo`` (sliding window)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hermes.policies.base import LayerContext, Policy, register


@register("full")
@dataclass
class Full(Policy):
    """No eviction: the upper bound every other policy is compared with."""

    evicts = False

    def score(self, ctx: LayerContext) -> np.ndarray:
        return np.ones(ctx.n)


@register("fifo")
@dataclass
class Fifo(Policy):
    """First in, first out: keep the newest tokens (the paper's mechanistic-study baseline)."""

    def score(self, ctx: LayerContext) -> np.ndarray:
        return ctx.positions.astype(np.float64)
