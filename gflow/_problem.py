"""The mean-squared-error problem of a model on a dataset, simulated in one call."""

from __future__ import annotations

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


def mse_problem(model: AbstractModel, data: Dataset) -> tuple[Callable, dict[str, Callable]]:
    """The training loss L(model) = (1/2n) sum (f(x_k) - y_k)^2 and, when the dataset
    has a test split, a `test_loss` metric (same formula on the test points)."""
    _check(model, data)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def loss_fn(params):
        return mse_loss(params, x, y)

    metrics: dict[str, Callable] = {}
    if data.n_test:
        xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
        metrics["test_loss"] = lambda params: mse_loss(params, xt, yt)
    return loss_fn, metrics


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
    loss_fn, default_metrics = mse_problem(model, data)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
    kwargs.setdefault("residual_fn", mse_residual(model, data))
    return simulate(loss_fn, model, t1, metrics={**default_metrics, **(metrics or {})}, **kwargs)


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
    loss_fn, default_metrics = mse_problem(model, data)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
    return gradient_descent(
        loss_fn, model, dt, n_steps, metrics={**default_metrics, **(metrics or {})}, **kwargs
    )
