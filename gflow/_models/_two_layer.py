"""Two-layer network under mean-field or NTK scaling."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax

from . import _init as random_init
from ._activations import get_activation
from ._base import (
    SCALINGS_TWO_LAYER,
    AbstractModel,
    KernelFactors,
    as_batch,
    check_choice,
    check_size,
    default_float,
    hidden_factors,
)


class TwoLayer(AbstractModel):
    """f(x) = m^-a sum_{i=1..m} c_i s(w_i . x),  a = 1 ("mf") or 1/2 ("ntk").

    Shapes: W (m, d) first layer, c (m,) output layer; input x (n, d) -> output (n,).
    With `outputs=k > 1` (e.g. k classes for cross-entropy) c is (m, k) and the output
    (n, k): f_a(x) = m^-a sum_i c_ia s(w_i . x).
    Init: W_ij ~ N(0, 1), c_i ~ N(0, 1) (use inputs with |x| ~ 1).

    Time convention (docs/paper.md): d theta/dt = -eta grad L with eta = m under "mf" (each
    neuron moves O(1) in O(1) time) and eta = 1 under "ntk"; `eta()` returns it per layer.
    Either layer can be frozen (`train_first`, `train_second`).
    """

    W: jax.Array
    c: jax.Array
    d: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    activation: str | Callable = eqx.field(static=True)
    train_first: bool = eqx.field(static=True)
    train_second: bool = eqx.field(static=True)
    outputs: int = eqx.field(static=True, default=1)

    def __init__(
        self,
        d: int,
        m: int,
        *,
        activation: str | Callable = "tanh",
        scaling: str = "mf",
        train_first: bool = True,
        train_second: bool = True,
        outputs: int = 1,
        key: jax.Array,
    ):
        self.d = check_size("d", d)
        self.m = check_size("width", m)
        self.scaling = check_choice("scaling", scaling, SCALINGS_TWO_LAYER)
        get_activation(activation)
        self.activation = activation
        if not (train_first or train_second):
            raise ValueError(
                "train_first/train_second: both layers are frozen, nothing would move; "
                "train at least one."
            )
        self.train_first = bool(train_first)
        self.train_second = bool(train_second)
        self.outputs = check_size("outputs", outputs)
        kw, kc = random_init.split(key, 2)
        dtype = default_float()
        self.W = random_init.normal(kw, (m, d), dtype)
        self.c = random_init.normal(kc, (m,) if outputs == 1 else (m, outputs), dtype)

    @property
    def exponent(self) -> float:
        return 1.0 if self.scaling == "mf" else 0.5

    def pre_activations(self, x: jax.Array) -> jax.Array:
        """(n, d) -> (n, m): w_i . x_k."""
        return as_batch(x, self.d) @ self.W.T

    def __call__(self, x: jax.Array) -> jax.Array:
        s = get_activation(self.activation)
        return s(self.pre_activations(x)) @ self.c / self.m**self.exponent

    def layer_eta(self) -> dict[str, float]:
        value = float(self.m) if self.scaling == "mf" else 1.0
        return {"W": value, "c": value}

    def layer_trainable(self) -> dict[str, bool]:
        return {"W": self.train_first, "c": self.train_second}

    def kernel_layers(self) -> dict[str, str]:
        roles = {"W": "inner", "c": "outer"}
        return {k: roles[k] for k, v in self.layer_trainable().items() if v}

    def kernel_factors(self, x: jax.Array) -> KernelFactors:
        scale = 1.0 / self.m ** (2 * self.exponent)
        s = get_activation(self.activation)
        return hidden_factors(s, x, self.pre_activations(x), self.c, scale, scale)
