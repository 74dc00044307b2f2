"""What every gflow model provides: a forward pass on a batch, its natural time scale
eta (per layer), and which layers the flow trains."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

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

    # Hooks for the closed-form tangent kernel (gflow._analysis._structured) and the Schur
    # bound (_schur): the analyses ask the model, they never dispatch on its class. A
    # model without them gets the Jacobian (jvp/vjp) kernel, which is exact for any model.

    def kernel_layers(self) -> dict[str, str]:
        """Trained layer name -> its role in the closed-form kernel: "linear" (H gets
        eta X X^T), "inner" (the hidden layer's weights W: eta (F F^T) o (U U^T) w_scale)
        or "outer" (the output weights c: eta (S S^T) s_scale). Empty (the default): no
        closed form, the analyses use Jacobians."""
        return {}

    def kernel_factors(self, x: jax.Array) -> KernelFactors:
        """The factors of the closed-form kernel on inputs x (n, d) (see `KernelFactors`);
        only called when `kernel_layers()` is not empty."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form kernel.")


class KernelFactors(NamedTuple):
    """What the closed-form tangent kernel of a model with one trained dense hidden layer
    is made of, on n inputs: H = sum over trained layers of their term (`kernel_layers`).

    feats: (n, F) inputs of the dense layer (X, or the fixed features Phi).
    u: (n, m) c_i s'(pre_ik) of the hidden layer (None for a linear model).
    s: (n, m) s(pre_ik) (None for a linear model).
    w_scale: the factor of the inner term (m^-2a D^-2b). s_scale: of the outer (m^-2a).
    """

    feats: jax.Array
    u: jax.Array | None
    s: jax.Array | None
    w_scale: float
    s_scale: float


def derivative(s: Any, z: jax.Array) -> jax.Array:
    """Elementwise s'(z) by a forward-mode product with ones."""
    return jax.jvp(s, (z,), (jnp.ones_like(z),))[1]


def hidden_factors(
    s: Any, feats: jax.Array, pre: jax.Array, c: jax.Array, w_scale: float, s_scale: float
) -> KernelFactors:
    """`KernelFactors` of a hidden layer s(pre) with output weights c."""
    return KernelFactors(feats, derivative(s, pre) * c, s(pre), w_scale, s_scale)


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
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


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
