"""Activation functions by name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "erf": jsp.erf,
    "identity": lambda x: x,
    "sin": jnp.sin,
}


def get_activation(activation: str | Callable, field: str = "activation") -> Callable:
    """An activation from a name in `ACTIVATIONS` or a callable (returned as is)."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"{field}: unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} "
        "or pass a callable array -> array."
    )


def activation_name(activation: str | Callable) -> str:
    if isinstance(activation, str):
        return activation
    return getattr(activation, "__name__", repr(activation))
