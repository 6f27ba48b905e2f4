"""The policy interface: a dataclass with one scoring method, and a registry of them.

A policy sees one layer at a time through a ``LayerContext`` (the layer's evictable
tokens, oldest first) and returns one score per token; the engine keeps the
``budget`` highest-scoring tokens of each layer (ties go to the newer token) and the
prefix. Policies never run at question time.

    from hermes import policies

    @policies.register("newest-frames")
    @dataclass
    class NewestFrames(policies.Policy):
        def score(self, ctx):
            return ctx.frames.astype(float)

    policies.get("newest-frames")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from hermes.errors import HermesError


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
    attention: dict[str, np.ndarray] | None = None  # pseudo-query name -> (n,) attention, when recorded

    @property
    def n(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class Policy:
    """Base class. Subclasses are dataclasses whose fields are the policy's parameters."""

    name: ClassVar[str] = "base"
    evicts: ClassVar[bool] = True  # False: the policy never drops anything (``full``)

    def score(self, ctx: LayerContext) -> np.ndarray:
        """(n,) scores, higher = keep."""
        raise NotImplementedError

    def layer_budget(self, layer: int, n_layers: int, budget: int) -> int:
        """Tokens this layer may keep; uniform by default."""
        return budget

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_REGISTRY: dict[str, type[Policy]] = {}
P = TypeVar("P", bound=type[Policy])


def register(name: str) -> Callable[[P], P]:
    """Class decorator adding a policy to the registry under `name`."""

    def deco(cls: P) -> P:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Registered policy names, sorted."""
    return sorted(_REGISTRY)


def get(name: str | Policy, **params: Any) -> Policy:
    """Instantiate a policy by name with its parameters (an instance passes through)."""
    if isinstance(name, Policy):
        return name
    if name not in _REGISTRY:
        raise HermesError(f"unknown policy {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise HermesError(f"policy {name!r} has no parameter(s) {unknown}; it takes {sorted(known) or 'none'}")
    return cls(**params)
