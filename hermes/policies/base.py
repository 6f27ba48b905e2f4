"""The policy interface: a dataclass with one scoring method, and a registry of them.

A policy sees one layer at a time through a ``LayerContext`` (the layer's evictable
tokens, oldest first) and returns one score per token; the engine keeps the
``budget`` highest-scoring tokens of each layer (ties go to the newer token) and the
prefix. Policies never run at question time.

A policy owns its parameters: they are the dataclass fields, with their defaults, and
``__post_init__`` validates them (``HermesError`` naming the field and its range).

What the engine records for a policy follows from what the policy declares it reads
(``needs()``, derived, never set by hand): ``queries(n_layers)`` (the pseudo-queries its
scores read, ``ctx.attention``), ``observation_rows()`` (the chunk's last query rows,
``ctx.window_attention``) and ``reads_accumulated`` (attention received so far,
``ctx.accumulated``). Other hooks, all with defaults: ``layer_budgets()``,
``smoothing_lam()`` (cross-layer smoothing, deepest layer first), ``summarize()`` (fold
evicted tokens into one summary token) and ``fold_mode()`` (where it goes), ``tier()`` (a
label for telemetry).

    from hermes import policies

    @policies.register("newest-frames")
    @dataclass
    class NewestFrames(policies.Policy):
        def score(self, ctx):
            return ctx.frames.astype(float)

    policies.get("newest-frames")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from hermes.errors import HermesError

FOLD_MODES = ("released", "first_folded")  # what Policy.fold_mode() may return


@dataclass(frozen=True)
class LayerContext:
    """What a policy may look at for one layer; arrays are (n,) over evictable tokens, oldest first."""

    layer: int
    n_layers: int
    budget: int
    positions: np.ndarray  # int64 RoPE positions
    frames: np.ndarray  # int64 source frame index, -1 for summary tokens
    kinds: np.ndarray  # int8 kind codes (hermes.cache)
    frames_seen: int  # stream progress: frames ingested so far
    attention: dict[str, np.ndarray] | None = None  # pseudo-query name -> (n,) attention (mean over heads, rows)
    accumulated: np.ndarray | None = None  # (n,) attention received from every chunk's queries so far
    window_attention: np.ndarray | None = None  # (w, n) attention rows of the chunk's last w queries

    @property
    def n(self) -> int:
        return int(self.positions.shape[0])


@dataclass(frozen=True)
class Needs:
    """What the engine must record after a chunk for a policy to score it."""

    queries: frozenset[str] = frozenset()  # pseudo-queries to run ("local", "global", "mixed")
    observation_rows: int = 0  # last query rows of the chunk's prefill to keep
    accumulated: bool = False  # attention every token has received so far

    @property
    def prefill_attention(self) -> bool:
        """Whether the chunk's prefill must record its attention."""
        return self.accumulated or self.observation_rows > 0


@dataclass
class Policy:
    """Base class. Subclasses are dataclasses whose fields are the policy's parameters."""

    name: ClassVar[str] = "base"
    evicts: ClassVar[bool] = True  # False: the policy never drops anything (``full``)
    reads_accumulated: ClassVar[bool] = False  # its scores read ctx.accumulated

    def score(self, ctx: LayerContext) -> np.ndarray:
        """(n,) scores, higher = keep."""
        raise NotImplementedError

    def layer_budgets(self, n_layers: int, budget: int) -> list[int]:
        """Tokens each layer may keep; uniform by default."""
        return [budget] * n_layers

    def queries(self, n_layers: int) -> frozenset[str]:
        """Pseudo-queries its scores read after each chunk (of "local", "global", "mixed")."""
        return frozenset()

    def observation_rows(self) -> int:
        """How many of the chunk's last query rows to record (``window_attention``)."""
        return 0

    def smoothing_lam(self, layer: int, n_layers: int) -> float:
        """Weight of the (smoothed) layer above in this layer's scores; 0 = no smoothing."""
        return 0.0

    def summarize(self, layer: int, n_layers: int) -> bool:
        """Fold this layer's evicted tokens into one summary token (keeping budget - 1)."""
        return False

    def fold_mode(self) -> str:
        """How ``summarize`` layers fold, and where each layer's next tokens go (hermes.eviction):
        "released" (the released HERMES code: the new summary one position past the newest kept
        token, an earlier summary an ordinary candidate, every layer continuing after its own newest
        token) or "first_folded" (the summary at the smallest folded position, an earlier summary
        always folded in again, one next position for all layers, gaps where newest tokens went)."""
        return "first_folded"

    def tier(self, layer: int, n_layers: int) -> str:
        """A label for the layer's role, shown in telemetry."""
        return "all"

    def needs(self, n_layers: int) -> Needs:
        """What the engine records for this policy, derived from what it reads."""
        return Needs(frozenset(self.queries(n_layers)), int(self.observation_rows()), self.reads_accumulated)

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_REGISTRY: dict[str, type[Policy]] = {}
P = TypeVar("P", bound=type[Policy])


def register(name: str) -> Callable[[P], P]:
    """Class decorator adding a policy to the registry under `name`."""

    def deco(cls: P) -> P:
        if not callable(cls.needs) or "n_layers" not in inspect.signature(cls.queries).parameters:
            raise HermesError(f"policy {name!r}: declare what it reads with queries(self, n_layers), "
                              "observation_rows(self) and reads_accumulated; needs() is derived from them")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def unregister(name: str) -> None:
    """Remove a policy from the registry (a user's experiment, a test's)."""
    policy_class(name)
    del _REGISTRY[name]


def available() -> list[str]:
    """Registered policy names, sorted."""
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    """The registered class of a policy name (its fields are its parameters and defaults)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise HermesError(f"unknown policy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def get(name: str | Policy, **params: Any) -> Policy:
    """Instantiate a policy by name with its parameters (an instance passes through)."""
    if isinstance(name, Policy):
        return name
    cls = policy_class(name)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise HermesError(f"policy {name!r} has no parameter(s) {unknown}; it takes {sorted(known) or 'none'}")
    return cls(**params)


def keep_set(scores: np.ndarray, budget: int) -> np.ndarray:
    """Indices (sorted) of the `budget` highest scores; ties go to the newer (higher) index."""
    n = len(scores)
    order = np.lexsort((-np.arange(n), -np.asarray(scores, dtype=np.float64)))
    return np.sort(order[:budget])


def resize(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of a score vector to length n, ends aligned."""
    if len(x) == n:
        return x
    if len(x) == 1 or n == 1:
        return np.full(n, float(np.mean(x)))
    return np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, len(x)), x)


def smooth_across_layers(scores: list[np.ndarray], lams: list[float]) -> list[np.ndarray]:
    """From the second-deepest layer up: s_l = (1 - lam_l) s_l + lam_l resize(s_{l+1}),
    using the already smoothed s_{l+1}."""
    out = list(scores)
    for i in range(len(out) - 2, -1, -1):
        if lams[i]:
            out[i] = (1 - lams[i]) * out[i] + lams[i] * resize(out[i + 1], len(out[i]))
    return out
