"""Partially trained multi-layer network: fixed random features, trained
second-to-last layer, fixed (by default) output layer."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _init as random_init
from ._activations import get_activation
from ._base import (
    SCALINGS_MULTILAYER,
    AbstractModel,
    KernelFactors,
    as_batch,
    check_choice,
    check_size,
    default_float,
    hidden_factors,
)

# (a, b): output exponent m^-a, middle exponent D^-b.
_EXPONENTS = {"mf": (1.0, 1.0), "mf-sqrt": (1.0, 0.5), "ntk": (0.5, 0.5)}


class MultiLayer(AbstractModel):
    """f(x) = m^-a sum_i c_i s( D^-b sum_j W_ij h_j(x) ),  h(x) = fixed random features.

    Features (depth - 2 fixed layers of width D):
        h^1(x) = phi(Z_1 x),  h^k(x) = phi(D^-1/2 Z_k h^{k-1}(x)),  h = h^{depth-2}.
    Scalings (docs/paper.md): "mf" a = b = 1; "mf-sqrt" a = 1, b = 1/2; "ntk" a = b = 1/2.

    Shapes: Z[0] (D, d), Z[k>0] (D, D) fixed; W (m, D) trained; c (m,) fixed unless
    `train_output`. Input x (n, d) -> output (n,). Init: every entry N(0, 1).

    Time convention: eta_W = m D ("mf"), m ("mf-sqrt"), 1 ("ntk"), so that the tangent
    kernel of W is O(1); eta_c = m^(2a - 1) (m for a = 1, 1 for a = 1/2).
    """

    Z: tuple[jax.Array, ...]
    W: jax.Array
    c: jax.Array
    d: int = eqx.field(static=True)
    D: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    activation: str | Callable = eqx.field(static=True)
    feature_activation: str | Callable = eqx.field(static=True)
    train_output: bool = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        D: int,
        m: int,
        *,
        depth: int = 3,
        activation: str | Callable = "tanh",
        feature_activation: str | Callable = "relu",
        scaling: str = "mf",
        train_output: bool = False,
        key: jax.Array,
    ):
        self.d = check_size("d", d)
        self.D = check_size("features", D)
        self.m = check_size("width", m)
        self.depth = check_size("depth", depth, 3)
        self.scaling = check_choice("scaling", scaling, SCALINGS_MULTILAYER)
        get_activation(activation)
        get_activation(feature_activation, "feature_activation")
        self.activation = activation
        self.feature_activation = feature_activation
        self.train_output = bool(train_output)
        dtype = default_float()
        keys = random_init.split(key, depth)
        shapes = [(D, d)] + [(D, D)] * (depth - 3)
        self.Z = tuple(random_init.normal(k, s, dtype) for k, s in zip(keys, shapes, strict=False))
        self.W = random_init.normal(keys[-2], (m, D), dtype)
        self.c = random_init.normal(keys[-1], (m,), dtype)

    @property
    def exponents(self) -> tuple[float, float]:
        return _EXPONENTS[self.scaling]

    def features(self, x: jax.Array) -> jax.Array:
        """(n, d) -> (n, D): the fixed random features h(x)."""
        phi = get_activation(self.feature_activation)
        h = phi(as_batch(x, self.d) @ self.Z[0].T)
        for Z in self.Z[1:]:
            h = phi(h @ Z.T / jnp.sqrt(self.D))
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = self.exponents
        s = get_activation(self.activation)
        pre = self.features(x) @ self.W.T / self.D**b
        return s(pre) @ self.c / self.m**a

    def layer_eta(self) -> dict[str, float]:
        a, _ = self.exponents
        eta_w = {"mf": float(self.m * self.D), "mf-sqrt": float(self.m), "ntk": 1.0}
        return {"W": eta_w[self.scaling], "c": float(self.m) ** (2 * a - 1)}

    def layer_trainable(self) -> dict[str, bool]:
        return {"Z": False, "W": True, "c": self.train_output}

    def kernel_layers(self) -> dict[str, str]:
        return {"W": "inner", **({"c": "outer"} if self.train_output else {})}

    def kernel_factors(self, x: jax.Array) -> KernelFactors:
        a, b = self.exponents
        s = get_activation(self.activation)
        feats = self.features(x)
        pre = feats @ self.W.T / self.D**b
        norm = 1.0 / self.m ** (2 * a)
        return hidden_factors(s, feats, pre, self.c, norm / self.D ** (2 * b), norm)
