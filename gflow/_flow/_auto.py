"""`solver="auto"`: Tsit5, or the Rosenbrock-W solver when the flow is stiff.

An explicit solver's step on the gradient flow is held to h <~ 3.3 / lambda_max by
stability (Tsit5; lambda_max the largest eigenvalue of the flow's Jacobian), so over a
horizon T it costs at least about 6 T lambda_max / 3.3 = 1.8 S gradients, with the
stiffness number

    S = lambda_max (t1 - t0).

For a least-squares loss the Gauss-Newton part of the Jacobian has the same nonzero
eigenvalues as the n x n matrix K / n = J diag(eta) J^T / n, whose lambda_max is computed
once at theta0 (n Jacobian rows, counted in the run's stats). Rosenbrock-W's cost grows
like the number of decades of time scales, not like S: on the stiff benchmarks it took
1,000-8,000 gradient-equivalents (docs/benchmarks.md). `auto` therefore picks

    Rosenbrock-W  if a residual function is given and S >= threshold (default 2e3,
                  i.e. Tsit5 would pay >= ~3,600 gradients for stability alone),
    Tsit5         otherwise.

The choice is made once, at t0 (no switch during the run: `switch_times` is empty);
it and its inputs are recorded in `Solution.settings["auto"]`.
"""

from __future__ import annotations

from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._flatten import FlatProblem
from ._rosenbrock import RosenbrockW, residual_jacobian

STIFFNESS_THRESHOLD = 2e3


def kernel_lambda_max(problem: FlatProblem) -> tuple[float, int]:
    """(lambda_max of J diag(eta) J^T / n at theta0, n): the largest eigenvalue of the
    Gauss-Newton part of the flow's Jacobian. Needs `problem.residual_fn` and a flat
    state; costs n Jacobian rows and one n x n eigenvalue problem."""

    def lam(prob: FlatProblem) -> jax.Array:
        jac = residual_jacobian(prob.residual, prob.theta0)
        k = (jac * prob.eta[None, :]) @ jac.T / jac.shape[0]
        return jnp.linalg.eigvalsh(0.5 * (k + k.T))[-1]

    n = int(jax.eval_shape(problem.residual, problem.theta0).shape[0])
    return float(jax.jit(lam)(problem)), n


def choose_solver(
    problem: FlatProblem,
    t0: float,
    t1: float,
    *,
    state: str = "flat",
    threshold: float = STIFFNESS_THRESHOLD,
) -> tuple[diffrax.AbstractSolver, dict[str, Any]]:
    """The solver `auto` runs, and the record of why.

    Returns:
        (solver, info) with info = {"chosen", "reason", "lambda_max", "stiffness",
        "threshold", "jacobian_rows", "switch_times"}.
    """
    info: dict[str, Any] = {
        "threshold": float(threshold),
        "lambda_max": None,
        "stiffness": None,
        "jacobian_rows": 0,
        "switch_times": [],
    }
    tsit5 = diffrax.Tsit5(scan_kind="lax")
    if problem.residual_fn is None or state != "flat":
        why = "no residual_fn" if problem.residual_fn is None else f"state={state!r}"
        return tsit5, {**info, "chosen": "tsit5", "reason": f"{why}: Rosenbrock-W not usable"}
    lam, n = kernel_lambda_max(problem)
    s = lam * (float(t1) - float(t0))
    info.update(lambda_max=lam, stiffness=s, jacobian_rows=n)
    if np.isfinite(s) and s >= threshold:
        return RosenbrockW(), {**info, "chosen": "rosw", "reason": "stiffness >= threshold"}
    return tsit5, {**info, "chosen": "tsit5", "reason": "stiffness < threshold"}
