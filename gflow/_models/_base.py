"""What every gflow model provides: a forward pass on a batch, its natural time scale
eta (per layer), and which layers the flow trains."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

SCALINGS_TWO_LAYER = ("mf", "ntk")
SCALINGS_MULTILAYER = ("mf", "mf-sqrt", "ntk")


class AbstractModel(eqx.Module):
    """A network f: R^d -> R (or R^k, `TwoLayer(outputs=k)`), applied to a batch x of
    shape (n, d)."""

    @abc.abstractmethod
    def __call__(self, x: jax.Array) -> jax.Array:
        """(n, d) -> (n,) (or (n, k) for k outputs)."""

    @abc.abstractmethod
    def layer_eta(self) -> dict[str, float]:
        """Field name -> time scale eta of that layer under this model's scaling."""

    @abc.abstractmethod
    def layer_trainable(self) -> dict[str, bool]:
        """Field name -> whether gradient flow moves that layer."""

    def eta(self) -> Any:
        """The natural time scale as a pytree like the model (one scalar per array leaf;
        frozen leaves get 1.0, which is never used). Pass it as `simulate(..., eta=)`."""
        return _per_field(self, self.layer_eta(), 1.0)

    def trainable(self) -> Any:
        """A pytree of bools like the model: True on the leaves gradient flow moves."""
        return _per_field(self, self.layer_trainable(), False)

    def trained_layers(self) -> list[str]:
        return [k for k, v in self.layer_trainable().items() if v]


def _per_field(model: eqx.Module, values: dict[str, Any], default: Any) -> Any:
    tree = jtu.tree_map(lambda _: default, model)
    for name, value in values.items():
        tree = eqx.tree_at(
            lambda t, name=name: getattr(t, name),
            tree,
            jtu.tree_map(lambda _, value=value: value, getattr(tree, name)),
        )
    return tree


def default_float() -> jnp.dtype:
    """float64 when jax_enable_x64 is on (gflow's default), else float32."""
    return jnp.zeros(()).dtype if jnp.zeros(()).dtype.kind == "f" else jnp.float32


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{field}: must be one of {list(choices)}, got {value!r}.")
    return value


def check_size(field: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}: must be an integer >= {minimum}, got {value!r}.")
    return value


def as_batch(x: jax.Array, d: int) -> jax.Array:
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x: expected shape (n, {d}), got {tuple(x.shape)}.")
    return x


def mse_loss(model: AbstractModel, x: jax.Array, y: jax.Array) -> jax.Array:
    """L = (1/2n) sum_k (f(x_k) - y_k)^2."""
    r = model(x) - y
    return 0.5 * jnp.mean(r**2)
