"""The linear model, for closed-form tests."""

from __future__ import annotations

import equinox as eqx
import jax

from . import _init as random_init
from ._base import AbstractModel, KernelFactors, as_batch, check_size, default_float


class Linear(AbstractModel):
    """f(x) = w . x, w (d,): the linear model, for closed-form tests. eta = 1."""

    w: jax.Array
    d: int = eqx.field(static=True)

    def __init__(self, d: int, *, key: jax.Array, scale: float = 1.0):
        self.d = check_size("d", d)
        self.w = scale * random_init.normal(key, (d,), default_float())

    def __call__(self, x: jax.Array) -> jax.Array:
        return as_batch(x, self.d) @ self.w

    def layer_eta(self) -> dict[str, float]:
        return {"w": 1.0}

    def layer_trainable(self) -> dict[str, bool]:
        return {"w": True}

    def kernel_layers(self) -> dict[str, str]:
        return {"w": "linear"}

    def kernel_factors(self, x: jax.Array) -> KernelFactors:
        return KernelFactors(as_batch(x, self.d), None, None, 1.0, 1.0)
