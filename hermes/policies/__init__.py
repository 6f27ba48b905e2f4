"""Eviction policies: ``available()``, ``get(name, **params)``, ``register(name)``.

Built in: full, fifo (simple.py); uniform, streaming_llm, h2o, snapkv, pyramidkv
(peers.py); hermes (hermes_policy.py). See base.py for the interface.
"""

from hermes.policies import hermes_policy, peers, simple  # noqa: F401  (registers the built-ins)
from hermes.policies.base import LayerContext, Policy, available, get, register

__all__ = ["LayerContext", "Policy", "available", "get", "register"]
