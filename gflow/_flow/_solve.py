"""One front door: `solve(problem, t1, method=...)`, with the flow, gradient descent and
GD's modified flow as strategies of the same engine (diffrax's way: one call, the method
an object).

    gflow.solve(problem, 40.0)                                   # the gradient flow
    gflow.solve(problem, 40.0, method=gflow.GradientDescent(dt=0.1))
    gflow.solve(problem, 40.0, method=gflow.ModifiedFlow(h=0.1))

Every strategy runs through the compile cache of `_engine` / `_cache` (`integrate`), so a
later call with new values of the same shapes does not recompile. The older calls
(`simulate`, `gradient_descent`, `simulate_modified`, `simulate_mse`, `descend_mse`) keep
working and give the same numbers.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx

from ._modified import simulate_modified
from ._problem import Problem
from ._simulate import gradient_descent, simulate
from ._solution import Solution


class AbstractMethod(eqx.Module):
    """How `solve` moves a problem from t0 = 0 to t1."""

    @abc.abstractmethod
    def run(self, problem: Problem, t1: float, kwargs: dict[str, Any]) -> Solution:
        """Solve `problem` on [0, t1] with the extra keyword arguments `kwargs`."""


class Flow(AbstractMethod):
    """The gradient flow itself, integrated adaptively with error control (`simulate`:
    ts, solver, rtol, atol, dt0, max_steps, loss_target, checkpoint, dense, state, ...
    as keyword arguments of `solve`)."""

    def run(self, problem: Problem, t1: float, kwargs: dict[str, Any]) -> Solution:
        if problem.residual is not None:
            kwargs.setdefault("residual_fn", problem.residual)
        return simulate(problem.loss, problem.params, t1, **problem.call_kwargs(), **kwargs)


class GradientDescent(AbstractMethod):
    """Gradient descent with step dt (learning rate dt * eta): explicit Euler on the same
    field, step k at flow time k dt, so it compares with `Flow` at equal times. t1 must
    be a whole number of steps. `save_every` records every this many steps."""

    dt: float = eqx.field(static=True)
    save_every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if isinstance(self.dt, bool) or not isinstance(self.dt, int | float) or self.dt <= 0:
            raise ValueError(f"GradientDescent.dt: must be a positive number, got {self.dt!r}.")

    def run(self, problem: Problem, t1: float, kwargs: dict[str, Any]) -> Solution:
        steps = float(t1) / float(self.dt)
        n_steps = round(steps)
        if n_steps < 1 or not math.isclose(steps, n_steps, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                f"t1: GradientDescent(dt={self.dt}) needs t1 to be a whole number (>= 1) of "
                f"steps; t1 / dt = {steps:.6g}. Choose t1 = k * dt."
            )
        return gradient_descent(
            problem.loss,
            problem.params,
            float(self.dt),
            n_steps,
            save_every=self.save_every,
            **problem.call_kwargs(),
            **kwargs,
        )


class ModifiedFlow(AbstractMethod):
    """GD's modified flow (backward error analysis) for step h:
    d theta/dt = -E grad(L + (h/4)|grad L|_E^2), integrated like `Flow`; the unmodified
    loss is recorded as `metrics["train_loss"]`."""

    h: float = eqx.field(static=True)

    def __check_init__(self):
        if isinstance(self.h, bool) or not isinstance(self.h, int | float) or self.h <= 0:
            raise ValueError(f"ModifiedFlow.h: must be a positive number, got {self.h!r}.")

    def run(self, problem: Problem, t1: float, kwargs: dict[str, Any]) -> Solution:
        return simulate_modified(
            problem.loss, problem.params, t1, float(self.h), **problem.call_kwargs(), **kwargs
        )


def solve(
    problem: Problem,
    t1: float,
    *,
    method: AbstractMethod | None = None,
    **kwargs: Any,
) -> Solution:
    """Solve a `Problem` on [0, t1] by `method` (default `Flow()`).

    Arguments:
        problem: a `gflow.Problem` (`Problem(loss, params, ...)` or
            `Problem.from_model(model, data)`).
        t1: final flow time.
        method: `Flow()` (the gradient flow, adaptive), `GradientDescent(dt)` or
            `ModifiedFlow(h)`.
        kwargs: the method's settings (for `Flow`: ts, solver, rtol, atol, ...; for
            `GradientDescent`: save_params, loss_target, progress). The problem fixes
            eta, trainable, args and metrics: change them on the problem
            (`problem.replace(eta=...)`).

    Returns:
        A `Solution`, exactly as the corresponding `simulate` / `gradient_descent` /
        `simulate_modified` call returns it.
    """
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem: expected a gflow.Problem, got {type(problem).__name__}; build one with "
            "gflow.Problem(loss_fn, params, eta=...) or gflow.Problem.from_model(model, data)."
        )
    method = Flow() if method is None else method
    if not isinstance(method, AbstractMethod):
        raise ValueError(
            f"method: expected gflow.Flow(), gflow.GradientDescent(dt) or "
            f"gflow.ModifiedFlow(h), got {method!r}."
        )
    fixed = sorted({"eta", "trainable", "args", "metrics"} & set(kwargs))
    if fixed:
        raise ValueError(
            f"{fixed[0]}: fixed by the problem; pass problem.replace({fixed[0]}=...) instead."
        )
    return method.run(problem, t1, dict(kwargs))
