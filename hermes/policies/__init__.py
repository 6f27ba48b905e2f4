"""Eviction policies: ``available()``, ``get(name, **params)``, ``register(name)``.

    policies.get("hermes", summary=False)       # parameters are the dataclass's fields, validated
    policies.policy_class("hermes")             # its fields and defaults (what a UI shows)

Built in: full, fifo (simple.py); uniform, streaming_llm, h2o, snapkv, pyramidkv
(peers.py); hermes (hermes_policy.py). See base.py for the interface.
"""

from hermes.policies import hermes_policy, peers, simple  # noqa: F401  (registers the built-ins)
from hermes.policies.base import LayerContext, Needs, Policy, available, get, policy_class, register, unregister
from hermes.policies.hermes_policy import Hermes

__all__ = ["Hermes", "LayerContext", "Needs", "Policy", "available", "get", "policy_class", "register",
           "unregister"]
