"""Eviction policies: ``available()``, ``get(name, **params)``, ``register(name)``.

See hermes/policies/base.py for the interface.
"""

from hermes.policies import simple  # noqa: F401  (registers the built-in policies)
from hermes.policies.base import LayerContext, Policy, available, get, register

__all__ = ["LayerContext", "Policy", "available", "get", "register"]
