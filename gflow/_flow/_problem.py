"""`Problem`: one gradient-flow problem (loss, initial parameters, time scale, trainable
filter, data), built once and handed to the engine, the analyses and the experiments.

It is the single place where a model's own time scale and trainable layers are read
(`model_defaults`, used by `Problem.from_model` and by every front end that starts from a
model), so no module decides "the model's eta and trainable" again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax

from ._flatten import NO_ARGS, FlatProblem, flatten_problem

PyTree = Any


def model_defaults(model: Any) -> tuple[Any, Any]:
    """(eta, trainable) a model asks for: a gflow model's (or any object with `eta()` and
    `trainable()` methods, e.g. a stacked ensemble of gflow models) natural time scale and
    trainable layers; (1.0, None) for any other pytree (every floating leaf at eta = 1)."""
    eta_fn = getattr(model, "eta", None)
    trainable_fn = getattr(model, "trainable", None)
    if callable(eta_fn) and callable(trainable_fn):
        return eta_fn(), trainable_fn()
    return 1.0, None


class Problem(eqx.Module):
    """A gradient-flow problem  d theta/dt = -eta * grad L(theta), theta(0) from `params`.

    Fields:
        loss: params -> scalar L, or (params, args) -> L when the problem has `args`
            (diffrax's convention; data as `args` lets new data of the same shapes reuse
            the compiled solve).
        params: initial parameters, any pytree of arrays (equinox Modules included).
        eta: time scale, a positive scalar or a pytree like `params` (one scalar per leaf).
        trainable: None (every floating leaf), a callable filter, or a pytree of bools.
        args: the data passed to `loss`, the metrics and `residual` (absent: `has_args`
            is False and they take the params alone).
        metrics: name -> fn, recorded at the save times (same calling convention as
            `loss`).
        residual: optional residuals r with L = (1/2n)|r|^2 (for `solver="rosw"`).

    Build one with `Problem(loss, params, eta=..., ...)`, or from a gflow model and a
    dataset with `Problem.from_model(model, data, loss="mse")`; change a field with
    `problem.replace(params=...)`. Solve it with `gflow.solve(problem, t1, method=...)`;
    the analyses (`tangent_kernel`, `kernel_metrics`, `hessian_lambda_max`,
    `lambda_max_along`) take it in place of (model, eta, trainable).
    """

    loss: Callable = eqx.field(static=True)
    params: PyTree
    eta: Any
    trainable: Any
    args: Any
    has_args: bool = eqx.field(static=True)
    metric_items: tuple  # a pytree: Module metrics carry arrays (see SolveSpec.metrics)
    residual: Callable | None = eqx.field(static=True)

    def __init__(
        self,
        loss: Callable,
        params: PyTree,
        *,
        eta: Any = 1.0,
        trainable: Any = None,
        args: Any = NO_ARGS,
        metrics: Mapping[str, Callable] | None = None,
        residual: Callable | None = None,
    ):
        if not callable(loss):
            raise ValueError(
                f"loss: expected a function params -> scalar (or (params, args) -> scalar), "
                f"got {type(loss).__name__}."
            )
        if metrics is not None and not isinstance(metrics, Mapping):
            raise ValueError(
                f"metrics: expected a dict name -> function, got {type(metrics).__name__}."
            )
        for name, fn in (metrics or {}).items():
            if not isinstance(name, str) or not callable(fn):
                raise ValueError(
                    f"metrics: expected str name -> function, got {name!r} -> {type(fn).__name__}."
                )
        if residual is not None and not callable(residual):
            raise ValueError(f"residual: expected a function or None, got {type(residual)}.")
        self.loss = loss
        self.params = params
        self.eta = eta
        self.trainable = trainable
        self.has_args = args is not NO_ARGS
        self.args = args if self.has_args else None
        self.metric_items = tuple((metrics or {}).items())
        self.residual = residual

    @property
    def metrics(self) -> dict[str, Callable]:
        return dict(self.metric_items)

    @classmethod
    def from_model(
        cls,
        model: Any,
        data: Any,
        loss: str = "mse",
        *,
        metrics: Mapping[str, Callable] | None = None,
    ) -> Problem:
        """The training problem of a gflow model on a `Dataset`, at the model's natural
        time scale (`model.eta()`) with its trainable layers (`model.trainable()`).

        Arguments:
            model: a gflow model (k outputs for cross-entropy: `TwoLayer(..., outputs=k)`).
            data: a `Dataset` (its arrays become the problem's `args`).
            loss: "mse", "logistic" or "cross-entropy" (`gflow.LOSSES`).
            metrics: extra metrics fn(params) -> array.

        Recorded metrics: `test_loss` when the data has a test split and, for the
        classification losses, `train_accuracy` (and `test_accuracy`). An MSE problem
        carries its residuals (for `solver="rosw"`).
        """
        from .._problem import model_problem_parts

        loss_fn, all_metrics, args, residual = model_problem_parts(model, data, loss, metrics)
        eta, trainable = model_defaults(model)
        return cls(
            loss_fn,
            model,
            eta=eta,
            trainable=trainable,
            args=args,
            metrics=all_metrics,
            residual=residual,
        )

    def replace(self, **changes: Any) -> Problem:
        """A copy with some fields changed (loss, params, eta, trainable, args, metrics,
        residual); `args=gflow.NO_ARGS` removes the data."""
        fields = {
            "loss": self.loss,
            "params": self.params,
            "eta": self.eta,
            "trainable": self.trainable,
            "args": self.args if self.has_args else NO_ARGS,
            "metrics": self.metrics,
            "residual": self.residual,
        }
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(
                f"replace: unknown field(s) {unknown}; a Problem has {sorted(fields)}."
            )
        fields.update(changes)
        loss = fields.pop("loss")
        params = fields.pop("params")
        return Problem(loss, params, **fields)

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `simulate` / `gradient_descent` this problem fixes."""
        out: dict[str, Any] = {
            "eta": self.eta,
            "trainable": self.trainable,
            "metrics": self.metrics,
        }
        if self.has_args:
            out["args"] = self.args
        return out

    def value(self, params: PyTree | None = None) -> jax.Array:
        """L at `params` (default the initial parameters)."""
        p = self.params if params is None else params
        return self.loss(p, self.args) if self.has_args else self.loss(p)

    def flat(self, state: str = "flat") -> FlatProblem:
        """The flattened problem (`flatten_problem`): theta0, eta per entry, the field."""
        return flatten_problem(
            self.loss,
            self.params,
            eta=self.eta,
            trainable=self.trainable,
            state=state,
            **({"args": self.args} if self.has_args else {}),
        )
