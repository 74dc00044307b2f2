"""The training problem of a model on a dataset (mean-squared error, logistic or
cross-entropy loss), simulated in one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._data._dataset import Dataset
from ._flow._simulate import gradient_descent, simulate
from ._flow._solution import Solution
from ._models._base import AbstractModel, mse_loss
from ._models._losses import LOSSES, accuracy, get_loss, one_hot


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


def _targets(model: AbstractModel, data: Dataset, loss: str) -> tuple[Any, Any]:
    """(train, test) targets in the form `loss` takes, after checking that the model's
    outputs and the labels fit the loss."""
    if loss not in LOSSES:
        raise ValueError(f"loss: must be one of {list(LOSSES)}, got {loss!r}.")
    k = int(getattr(model, "outputs", 1))
    classes = data.classes
    if loss == "cross-entropy":
        if classes is None or k != classes:
            raise ValueError(
                f"loss: 'cross-entropy' needs class labels and one model output per class; "
                f"the data has classes = {classes}, the model {k} outputs. Use "
                "load_digits(task='classes', classes=k) and TwoLayer(..., outputs=k)."
            )
        return data.y_train, data.y_test
    if loss == "logistic":
        labels = np.concatenate([data.y_train, data.y_test])
        if k != 1 or not np.all(np.abs(labels) == 1.0):
            raise ValueError(
                f"loss: 'logistic' needs one output and labels +-1 (the model has {k} "
                "outputs); use a binary task (load_digits task 'parity' or 'small-large') "
                "or 'cross-entropy' for several classes."
            )
        return data.y_train, data.y_test
    if k == 1:
        return data.y_train, data.y_test
    if classes != k:
        raise ValueError(
            f"loss: 'mse' with {k} model outputs needs class labels with {k} classes (fitted "
            f"as one-hot rows); the data has classes = {classes}."
        )
    return one_hot(data.y_train, k), one_hot(data.y_test, k)


def loss_problem(
    model: AbstractModel, data: Dataset, loss: str = "mse"
) -> tuple[Callable, dict[str, Callable]]:
    """The training loss of `model` on `data` and its save-time metrics.

    Arguments:
        model: a gflow model (k outputs for cross-entropy: `TwoLayer(..., outputs=k)`).
        data: a `Dataset`. loss: "mse", "logistic" or "cross-entropy" (`gflow.LOSSES`).

    Returns:
        (loss_fn, metrics): loss_fn(params) = L of the loss's formula (`mse`, `logistic`,
        `cross_entropy`) on the training points; metrics has `test_loss` when there is a
        test split and, for the classification losses, `train_accuracy` (and
        `test_accuracy`).
    """
    _check(model, data)
    y_train, y_test = _targets(model, data, loss)
    fn = get_loss(loss)
    x, y = jnp.asarray(data.x_train), jnp.asarray(y_train)
    classify = loss != "mse"

    def loss_fn(params):
        return fn(params(x), y)

    metrics: dict[str, Callable] = {}
    if classify:
        metrics["train_accuracy"] = lambda params: accuracy(params(x), y)
    if data.n_test:
        xt, yt = jnp.asarray(data.x_test), jnp.asarray(y_test)
        metrics["test_loss"] = lambda params: fn(params(xt), yt)
        if classify:
            metrics["test_accuracy"] = lambda params: accuracy(params(xt), yt)
    return loss_fn, metrics


def simulate_loss(
    model: AbstractModel,
    data: Dataset,
    t1: float,
    *,
    loss: str = "mse",
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    **kwargs: Any,
) -> Solution:
    """Simulate gradient flow on `loss` ("mse", "logistic", "cross-entropy") of `model` on
    `data`, at the model's natural time scale and with its trainable layers, as
    `simulate_mse` does (which is `simulate_loss(..., loss="mse")`). The metrics of
    `loss_problem` are recorded (test loss, accuracies)."""
    loss_fn, default_metrics = loss_problem(model, data, loss)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
    return simulate(loss_fn, model, t1, metrics={**default_metrics, **(metrics or {})}, **kwargs)


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
    the dataset has a test split.
    """
    loss_fn, default_metrics = mse_problem(model, data)
    kwargs.setdefault("eta", model.eta())
    kwargs.setdefault("trainable", model.trainable())
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
