"""`solver="auto"`: Tsit5, or one of the least-squares solvers when the flow is stiff.

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

    exprb         if a residual function is given, S >= threshold (default 2e3, i.e.
                  Tsit5 would pay >= ~3,600 gradients for stability alone) and the
                  residual is affine in theta,
    Rosenbrock-W  if a residual function is given and S >= threshold otherwise,
    Tsit5         otherwise.

The exponential Rosenbrock solver (`ExpRosenbrock`) is exact for a linear least-squares
flow, whose Gauss-Newton W is the flow's Jacobian, and then takes a few long steps (48-51
gradient-equivalents on the 1e-4-conditioned benchmark against 1,463 for Rosenbrock-W).
For a nonlinear residual W misses sum_k r_k Hess r_k / n and exprb43 drops to order 2,
where Rosenbrock-W keeps order 3 for any W: on the claim-2 flow at d = 2 exprb needed
2.1x the gradient-equivalents of rosw at the same error (docs/stiff.md). Whether the
residual is affine is probed at theta0 along one fixed direction v of the size of theta0:

    defect = |r(theta0 + v) - r(theta0) - J v| / |J v|  <=  1e-8

(rounding level for an affine residual; O(|v| |Hess r| / |J|) otherwise). The probe
costs one residual evaluation besides the n Jacobian rows it shares with lambda_max.

The choice is made at t0 and recorded in `Solution.settings["auto"]`. When it is
Rosenbrock-W, `simulate` runs Tsit5 first, up to t0 + 200 / lambda_max, and Rosenbrock-W
from there (`_phases.py`: the early nonlinear part of such flows is not stiff on its own
time scale); `switch_times` and `phases` record it, checkpointed runs (`gflow run`)
included (each phase in its own checkpoint file).
"""

from __future__ import annotations

import time
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._flatten import FlatProblem
from ._rosenbrock import ExpRosenbrock, RosenbrockW, residual_jacobian

STIFFNESS_THRESHOLD = 2e3
LINEAR_DEFECT = 1e-8


@eqx.filter_jit
def _probe(prob: FlatProblem) -> tuple[jax.Array, jax.Array, int]:
    theta = prob.theta0
    jac = residual_jacobian(prob.residual, theta)
    k = (jac * prob.eta[None, :]) @ jac.T / jac.shape[0]
    lam = jnp.linalg.eigvalsh(0.5 * (k + k.T))[-1]
    g = jax.random.normal(jax.random.key(0), theta.shape, theta.dtype)
    scale = 1.0 + jnp.sqrt(jnp.mean(theta**2))
    v = scale * g / jnp.sqrt(jnp.mean(g**2))
    jv = jac @ v
    miss = prob.residual(theta + v) - prob.residual(theta) - jv
    defect = jnp.linalg.norm(miss) / jnp.maximum(jnp.linalg.norm(jv), 1e-300)
    return lam, defect, jac.shape[0]  # n: a static output of the compiled probe


def kernel_probe(problem: FlatProblem) -> tuple[float, float, int]:
    """(lambda_max of J diag(eta) J^T / n at theta0, linearity defect, n): the largest
    eigenvalue of the Gauss-Newton part of the flow's Jacobian, and the relative defect
    of the residual's linear model along a fixed direction (module doc). Needs
    `problem.residual_fn` and a flat state; costs n Jacobian rows, one residual
    evaluation and one n x n eigenvalue problem. Compiled once per problem structure
    (a later call with new values reuses it)."""
    lam, defect, n = _probe(problem)
    return float(lam), float(defect), int(n)


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
        "threshold", "jacobian_rows", "linearity_defect", "probe_evals" (residual
        evaluations, counted as gradient-equivalents), "probe_seconds" (wall time of the
        probe, compile included; not in the solve's run_seconds), "switch_times"}.
    """
    info: dict[str, Any] = {
        "threshold": float(threshold),
        "lambda_max": None,
        "stiffness": None,
        "jacobian_rows": 0,
        "linearity_defect": None,
        "probe_evals": 0,
        "probe_seconds": 0.0,
        "switch_times": [],
    }
    tsit5 = diffrax.Tsit5(scan_kind="lax")
    if problem.residual_fn is None or state != "flat":
        why = "no residual_fn" if problem.residual_fn is None else f"state={state!r}"
        return tsit5, {
            **info,
            "chosen": "tsit5",
            "reason": f"{why}: the least-squares solvers are not usable",
        }
    start = time.perf_counter()
    lam, defect, n = kernel_probe(problem)
    seconds = time.perf_counter() - start
    s = lam * (float(t1) - float(t0))
    info.update(
        lambda_max=lam,
        stiffness=s,
        jacobian_rows=n,
        linearity_defect=defect,
        probe_evals=1,
        probe_seconds=seconds,
    )
    if np.isfinite(s) and s >= threshold:
        if defect <= LINEAR_DEFECT:
            why = "stiffness >= threshold, residual affine (linearity defect <= 1e-8)"
            return ExpRosenbrock(), {**info, "chosen": "exprb", "reason": why}
        why = "stiffness >= threshold, residual not affine"
        return RosenbrockW(), {**info, "chosen": "rosw", "reason": why}
    return tsit5, {**info, "chosen": "tsit5", "reason": "stiffness < threshold"}
