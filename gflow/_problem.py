"""The mean-squared-error problem of a model on a dataset, simulated in one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ._data._dataset import Dataset
from ._flow._simulate import gradient_descent, simulate
from ._flow._solution import Solution
from ._models._base import AbstractModel, mse_loss


def _check(model: Any, data: Any) -> None:
    if not isinstance(model, AbstractModel):
        raise ValueError(
            f"model: expected a gflow model (TwoLayer, MultiLayer, Linear), got {type(model)}."
        )
    if not isinstance(data, Dataset):
        raise ValueError(
            f"data: expected a gflow Dataset (make_synthetic, load_digits, from_arrays), "
            f"got {type(data)}."
        )
    if data.d != model.d:
        raise ValueError(
            f"data: inputs have d = {data.d} but the model expects d = {model.d}; "
            "build the model with the dataset's input dimension."
        )


def train_loss(model: AbstractModel, data: dict[str, jax.Array]) -> jax.Array:
    """(model, data arrays) -> L = (1/2n) sum_k (f(x_k) - y_k)^2 on the training split."""
    return mse_loss(model, data["x_train"], data["y_train"])


def train_residual(model: AbstractModel, data: dict[str, jax.Array]) -> jax.Array:
    """(model, data arrays) -> (n,) residuals f(x_k) - y_k on the training split, with
    `train_loss` = (1/2n)|r|^2 (for the Rosenbrock-W solver)."""
    return model(data["x_train"]) - data["y_train"]


def test_loss(model: AbstractModel, data: dict[str, jax.Array]) -> jax.Array:
    """The same formula on the test split."""
    return mse_loss(model, data["x_test"], data["y_test"])


@dataclasses.dataclass(frozen=True)
class ParamsOnly:
    """A metric fn(params) called as fn(params, args) (hashable: equal for the same fn, so
    the compiled solve is reused)."""

    fn: Callable

    def __call__(self, params: Any, args: Any) -> jax.Array:
        return self.fn(params)


def data_args(data: Dataset) -> dict[str, jax.Array]:
    """The dataset's arrays as the `args` of the MSE losses (x_train, y_train and, with a
    test split, x_test, y_test)."""
    out = {"x_train": jnp.asarray(data.x_train), "y_train": jnp.asarray(data.y_train)}
    if data.n_test:
        out.update(x_test=jnp.asarray(data.x_test), y_test=jnp.asarray(data.y_test))
    return out


def mse_parts(
    model: AbstractModel, data: Dataset
) -> tuple[Callable, dict[str, Callable], dict[str, jax.Array]]:
    """The MSE problem as `simulate(..., args=)` takes it: (loss_fn, metrics, args) with
    loss_fn(model, args) = (1/2n) sum (f(x_k) - y_k)^2, a `test_loss` metric (same
    formula on the test points) when the dataset has a test split, and args the data
    arrays. The functions are module-level, so repeated calls on data of the same shapes
    reuse one compiled solve."""
    _check(model, data)
    metrics: dict[str, Callable] = {"test_loss": test_loss} if data.n_test else {}
    return train_loss, metrics, data_args(data)


def mse_problem(model: AbstractModel, data: Dataset) -> tuple[Callable, dict[str, Callable]]:
    """The training loss L(model) = (1/2n) sum (f(x_k) - y_k)^2 and, when the dataset
    has a test split, a `test_loss` metric (same formula on the test points), as
    functions of the model alone (the data closed over). `simulate_mse` instead passes
    the data as `args` (`mse_parts`), which lets a later call on new data of the same
    shapes reuse the compiled solve."""
    loss, metrics, args = mse_parts(model, data)
    return (
        lambda params: loss(params, args),
        {k: (lambda params, fn=fn: fn(params, args)) for k, fn in metrics.items()},
    )


def _metrics(default: dict[str, Callable], extra: Mapping[str, Callable] | None) -> dict:
    return {**default, **{k: ParamsOnly(fn) for k, fn in (extra or {}).items()}}


def mse_residual(model: AbstractModel, data: Dataset) -> Callable:
    """The training residuals r(model) = f(x_k) - y_k, (n,): the MSE loss is
    (1/2n)|r|^2 (used by the Rosenbrock-W solver, `solver="rosw"`)."""
    _check(model, data)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def residual_fn(params):
        return params(x) - y

    return residual_fn


def simulate_mse(
    model: AbstractModel,
    data: Dataset,
    t1: float,
    *,
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    **kwargs: Any,
) -> Solution:
    """Simulate gradient flow on the MSE loss of `model` on `data`, at the model's
    natural time scale (`model.eta()`) and with its trainable layers (`model.trainable()`).

    Keyword arguments go to `simulate` (ts, solver, rtol, atol, loss_target, ...); pass
    `eta=` or `trainable=` to override the model's. A `test_loss` metric is recorded when
    the dataset has a test split. The training residuals are passed as `residual_fn`
    (for `solver="rosw"`).
    """
    loss_fn, default_metrics, args = mse_parts(model, data)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
    kwargs.setdefault("residual_fn", train_residual)
    return simulate(
        loss_fn, model, t1, metrics=_metrics(default_metrics, metrics), args=args, **kwargs
    )


def descend_mse(
    model: AbstractModel,
    data: Dataset,
    dt: float,
    n_steps: int,
    *,
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    **kwargs: Any,
) -> Solution:
    """Gradient descent on the same problem as `simulate_mse` (learning rate dt * eta)."""
    loss_fn, default_metrics, args = mse_parts(model, data)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
    return gradient_descent(
        loss_fn,
        model,
        dt,
        n_steps,
        metrics=_metrics(default_metrics, metrics),
        args=args,
        **kwargs,
    )
