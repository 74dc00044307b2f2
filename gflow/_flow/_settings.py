"""Argument checks every gradient-flow front end shares (before anything is compiled),
the choice of default controller, and the settings a result records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import numpy as np

from ._controller import PIDController
from ._precision import check_rtol_resolution
from ._solvers import make_solver
from ._times import check_ts, default_ts


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: must be a finite positive number, got {value!r}.")


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_metrics(metrics: Any) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"metrics: expected a dict name -> fn(params), got {type(metrics).__name__}."
        )
    for name, fn in metrics.items():
        if not isinstance(name, str) or not callable(fn):
            raise ValueError(
                f"metrics: entry {name!r} must map a str name to a callable fn(params) -> "
                f"array, got {type(fn).__name__}."
            )


def eta_setting(eta: Any) -> Any:
    if isinstance(eta, int | float | np.floating | np.integer):
        return float(eta)
    return "per-leaf"


def flow_settings(
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    *,
    rtol: float,
    atol: float,
    dt0: float | None,
    max_steps: int,
    t0: float,
    t1: float,
    eta: Any,
    loss_target: float | None,
    n_params: int,
    dtype: Any,
) -> dict[str, Any]:
    """The settings a gradient-flow result records (simulate and simulate_ensemble)."""
    ctrl = type(stepsize_controller)
    growth = {  # the step-growth caps of a PID controller (gflow's or diffrax's)
        k: float(getattr(stepsize_controller, k))
        for k in ("factormax_first", "factormax")
        if hasattr(stepsize_controller, k)
    }
    return {
        "method": "gradient_flow",
        "solver": type(solver).__name__,
        "stepsize_controller": f"{ctrl.__module__.split('.')[0]}.{ctrl.__name__}",
        **growth,
        "rtol": float(rtol),
        "atol": float(atol),
        "dt0": dt0,
        "max_steps": max_steps,
        "t0": t0,
        "t1": float(t1),
        "eta": eta_setting(eta),
        "loss_target": loss_target,
        "n_params": int(n_params),
        "dtype": str(dtype),
    }


def prepare_flow(
    t1: float,
    *,
    t0: float,
    ts: Any,
    rtol: float,
    atol: float,
    dt0: float | None,
    max_steps: int,
    loss_target: float | None,
    metrics: Mapping[str, Callable] | None,
    solver: str | diffrax.AbstractSolver | None,
    stepsize_controller: diffrax.AbstractStepSizeController | None,
) -> tuple[float, np.ndarray, int, diffrax.AbstractSolver, diffrax.AbstractStepSizeController]:
    """Check the arguments every gradient-flow front end shares (before anything is
    compiled) and choose the solver and controller: PID(rtol, atol) for adaptive
    solvers, a constant step dt0 otherwise. Returns (t0, ts, max_steps, solver,
    controller)."""
    check_positive("t1", t1)
    t0 = float(t0)
    if not np.isfinite(t0) or not float(t1) > t0:
        raise ValueError(f"t1: must be greater than t0 = {t0}, got {t1}.")
    check_positive("rtol", rtol)
    check_rtol_resolution(rtol)  # warns when rtol < eps of the state's dtype
    check_positive("atol", atol)
    check_positive("dt0", dt0, allow_none=True)
    check_positive("loss_target", loss_target, allow_none=True)
    max_steps = check_int("max_steps", max_steps, 1)
    check_metrics(metrics)
    ts = default_ts(t0, float(t1)) if ts is None else check_ts(ts, t0, float(t1))
    solver_obj = make_solver(solver)
    if stepsize_controller is None:
        if isinstance(solver_obj, diffrax.AbstractAdaptiveSolver):
            stepsize_controller = PIDController(rtol=rtol, atol=atol)
        else:
            if dt0 is None:
                raise ValueError(
                    f"dt0: solver {type(solver_obj).__name__} has no error estimate, so it "
                    "needs a constant step; pass dt0 (or use gradient_descent for GD)."
                )
            stepsize_controller = diffrax.ConstantStepSize()
    return t0, ts, max_steps, solver_obj, stepsize_controller
