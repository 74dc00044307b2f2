"""The training problem of a model on a dataset (mean-squared error, logistic or
cross-entropy loss), simulated in one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._data._dataset import Dataset
from ._flow._flatten import device_array
from ._flow._problem import Problem
from ._flow._simulate import gradient_descent
from ._flow._solution import Solution
from ._flow._solve import solve
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


class ParamsOnly(eqx.Module):
    """A metric fn(params) called as fn(params, args). A pytree: a plain fn is a leaf
    keyed by identity (the same fn reuses the compiled solve); an equinox Module fn (the
    analysis metrics) contributes its arrays as program arguments."""

    fn: Callable

    def __call__(self, params: Any, args: Any) -> jax.Array:
        return self.fn(params)


def data_args(data: Dataset, y_train: Any = None, y_test: Any = None) -> dict[str, jax.Array]:
    """The dataset's arrays as the `args` of the losses (x_train, y_train and, with a test
    split, x_test, y_test); `y_train` / `y_test` replace the dataset's targets (a
    classification loss's form of them, `_targets`)."""
    y_train = data.y_train if y_train is None else y_train
    out = {"x_train": device_array(data.x_train), "y_train": device_array(y_train)}
    if data.n_test:
        y_test = data.y_test if y_test is None else y_test
        out.update(x_test=device_array(data.x_test), y_test=device_array(y_test))
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
    """The default metrics plus `extra`: fn(params) wrapped as fn(params, args), except
    `OnSplit` metrics, which already read the data from args."""
    wrap = lambda fn: fn if isinstance(fn, OnSplit) else ParamsOnly(fn)  # noqa: E731
    return {**default, **{k: wrap(fn) for k, fn in (extra or {}).items()}}


def _outputs(f: jax.Array, y: jax.Array) -> jax.Array:
    return f


def split_predictions(split: str) -> OnSplit:
    """Save-time metric (model, data args) -> f(x_split), the model's outputs on a split
    of the problem's own data `args`. The loss (train) and test_loss metrics evaluate the
    model on the same argument buffers, so XLA computes each forward pass once per save
    time (a prediction metric with its own copy of the inputs costs a second pass)."""
    if split not in ("train", "test"):
        raise ValueError(f"split: must be 'train' or 'test', got {split!r}.")
    return OnSplit(_outputs, split)


def mse_residual(model: AbstractModel, data: Dataset) -> Callable:
    """The training residuals r(model) = f(x_k) - y_k, (n,): the MSE loss is
    (1/2n)|r|^2 (used by the Rosenbrock-W solver, `solver="rosw"`)."""
    _check(model, data)
    x, y = device_array(data.x_train), device_array(data.y_train)

    def residual_fn(params):
        return params(x) - y

    return residual_fn


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


@dataclasses.dataclass(frozen=True)
class OnSplit:
    """(model, data arrays) -> fn(model(x_split), y_split): a loss or metric on one split
    with the data as `args` (hashable: the compiled solve is reused for new data)."""

    fn: Callable
    split: str

    def __call__(self, model: AbstractModel, data: dict[str, jax.Array]) -> jax.Array:
        return self.fn(model(data[f"x_{self.split}"]), data[f"y_{self.split}"])


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
    x, y = device_array(data.x_train), device_array(y_train)
    classify = loss != "mse"

    def loss_fn(params):
        return fn(params(x), y)

    metrics: dict[str, Callable] = {}
    if classify:
        metrics["train_accuracy"] = lambda params: accuracy(params(x), y)
    if data.n_test:
        xt, yt = device_array(data.x_test), device_array(y_test)
        metrics["test_loss"] = lambda params: fn(params(xt), yt)
        if classify:
            metrics["test_accuracy"] = lambda params: accuracy(params(xt), yt)
    return loss_fn, metrics


def model_problem_parts(
    model: AbstractModel,
    data: Dataset,
    loss: str = "mse",
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
) -> tuple[Callable, dict[str, Callable], dict[str, jax.Array], Callable | None]:
    """(loss_fn, metrics, args, residual_fn) of `model` on `data` for `loss`, every
    function taking (params, args) with the data arrays as args (module-level objects,
    so a later problem on new data of the same shapes reuses the compiled solve).

    Metrics: `test_loss` with a test split; `train_accuracy` (and `test_accuracy`) for
    the classification losses; `metrics` (fn(params)) added. A scalar-output MSE
    problem carries its residuals (for `solver="rosw"`). Used by `Problem.from_model`.
    """
    _check(model, data)
    if loss not in LOSSES:
        raise ValueError(f"loss: must be one of {list(LOSSES)}, got {loss!r}.")
    if loss == "mse" and int(getattr(model, "outputs", 1)) == 1:
        loss_fn, default_metrics, args = mse_parts(model, data)
        return loss_fn, _metrics(default_metrics, metrics), args, train_residual
    y_train, y_test = _targets(model, data, loss)
    fn = get_loss(loss)
    args = data_args(data, y_train, y_test)
    classify = loss != "mse"
    default: dict[str, Callable] = (
        {"train_accuracy": OnSplit(accuracy, "train")} if classify else {}
    )
    if data.n_test:
        default["test_loss"] = OnSplit(fn, "test")
        if classify:
            default["test_accuracy"] = OnSplit(accuracy, "test")
    return OnSplit(fn, "train"), _metrics(default, metrics), args, None


def _model_problem(
    model: AbstractModel,
    data: Dataset,
    loss: str,
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None,
    kwargs: dict[str, Any],
) -> Problem:
    """`Problem.from_model`, with the overrides a front end accepts as keywords (eta,
    trainable, residual_fn) moved out of `kwargs` onto the problem."""
    prob = Problem.from_model(model, data, loss, metrics=metrics)
    changes = {k: kwargs.pop(k) for k in ("eta", "trainable") if k in kwargs}
    if "residual_fn" in kwargs:
        changes["residual"] = kwargs.pop("residual_fn")
    return prob.replace(**changes) if changes else prob


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
    `data`, at the model's natural time scale and with its trainable layers:
    `solve(Problem.from_model(model, data, loss), t1, **kwargs)`. The metrics of
    `loss_problem` are recorded (test loss, accuracies); `eta=`, `trainable=` override
    the model's."""
    return solve(_model_problem(model, data, loss, metrics, kwargs), t1, **kwargs)


def simulate_mse(
    model: AbstractModel,
    data: Dataset,
    t1: float,
    *,
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    **kwargs: Any,
) -> Solution:
    """Simulate gradient flow on the MSE loss of `model` on `data`, at the model's
    natural time scale (`model.eta()`) and with its trainable layers (`model.trainable()`):
    `solve(Problem.from_model(model, data), t1, **kwargs)`.

    Keyword arguments go to `simulate` (ts, solver, rtol, atol, loss_target, ...); pass
    `eta=` or `trainable=` to override the model's. A `test_loss` metric is recorded when
    the dataset has a test split. The training residuals are passed as `residual_fn`
    (for `solver="rosw"`).
    """
    return simulate_loss(model, data, t1, loss="mse", metrics=metrics, **kwargs)


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
    prob = _model_problem(model, data, "mse", metrics, kwargs)
    return gradient_descent(prob.loss, prob.params, dt, n_steps, **prob.call_kwargs(), **kwargs)
