"""`solver="auto"`: Tsit5, or one of the least-squares solvers when the flow is stiff.

An explicit solver's step on the gradient flow is held to h <~ 3.3 / lambda_max by
stability (Tsit5; lambda_max the largest eigenvalue of the flow's Jacobian), so over a
horizon T it costs at least about 6 T lambda_max / 3.3 = 1.8 S gradients, with the
stiffness number

    S = lambda_max (t1 - t0).

For a least-squares loss the Gauss-Newton part of the Jacobian has the same nonzero
eigenvalues as the n x n matrix K / n = J diag(eta) J^T / n, whose lambda_max is computed
once at theta0 (n Jacobian rows for n <= LANCZOS_MIN_N, else LANCZOS_ITERS Lanczos
products with K / n; counted in the run's stats). Rosenbrock-W's cost grows
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
costs one residual evaluation besides what it shares with lambda_max (J v from the
rows, or one jvp from the linearisation the Lanczos products use).

The choice is made at t0 and recorded in `Solution.settings["auto"]`. When it is
Rosenbrock-W, `simulate` runs Tsit5 first, up to t0 + 200 / lambda_max, and Rosenbrock-W
from there (`_phases.py`: the early nonlinear part of such flows is not stiff on its own
time scale); `switch_times` and `phases` record it, checkpointed runs (`gflow run`)
included (each phase in its own checkpoint file).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._flatten import FlatProblem, check_residual_matches_loss
from ._rosenbrock import ExpRosenbrock, RosenbrockW, residual_jacobian

STIFFNESS_THRESHOLD = 2e3
LINEAR_DEFECT = 1e-8
# lambda_max by Lanczos when n > LANCZOS_MIN_N: LANCZOS_ITERS products with J E J^T (a jvp
# and a vjp each, 2 gradient-equivalents) cost less than n Jacobian rows, and J (n x P)
# is never held. On a non-stiff flow with n = 1024 the full Jacobian made auto cost 6.3x
# Tsit5's gradient-equivalents (1,218 vs 193) and 7.8x its wall time.
LANCZOS_ITERS = 24
LANCZOS_MIN_N = 2 * LANCZOS_ITERS + 2


def lanczos_max(matvec: Callable, n: int, dtype: Any, iters: int = LANCZOS_ITERS) -> jax.Array:
    """The largest eigenvalue of a symmetric positive semi-definite n x n operator from
    `iters` Lanczos steps with full reorthogonalisation (a Ritz value: <= lambda_max, and
    converging fastest at the extremes). A fixed start vector; a breakdown (an invariant
    subspace found early) leaves zero rows that do not change the largest Ritz value."""
    q0 = jax.random.normal(jax.random.key(1), (n,), dtype)
    qs = jnp.zeros((iters + 1, n), dtype).at[0].set(q0 / jnp.linalg.norm(q0))

    def body(i, carry):
        qs, alphas, betas = carry
        q = qs[i]
        w = matvec(q)
        alpha = jnp.dot(w, q)
        for _ in range(2):  # against every earlier vector (rows not yet set are zero)
            w = w - qs.T @ (qs @ w)
        beta = jnp.linalg.norm(w)
        ok = beta > 1e-12 * jnp.maximum(jnp.abs(alpha), 1e-300)
        qs = qs.at[i + 1].set(jnp.where(ok, w / jnp.where(ok, beta, 1.0), 0.0))
        return qs, alphas.at[i].set(alpha), betas.at[i].set(jnp.where(ok, beta, 0.0))

    zeros = jnp.zeros(iters, dtype)
    _, alphas, betas = jax.lax.fori_loop(0, iters, body, (qs, zeros, zeros))
    off = betas[:-1]
    tri = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.eigvalsh(tri)[-1]


@eqx.filter_jit
def _probe(prob: FlatProblem) -> tuple[jax.Array, jax.Array, int, str, jax.Array, jax.Array]:
    theta = prob.theta0
    g = jax.random.normal(jax.random.key(0), theta.shape, theta.dtype)
    scale = 1.0 + jnp.sqrt(jnp.mean(theta**2))
    v = scale * g / jnp.sqrt(jnp.mean(g**2))  # the direction of the linearity probe
    r0, jvp_fn = jax.linearize(prob.residual, theta)
    n = r0.shape[0]
    if n <= LANCZOS_MIN_N:  # n rows cost less than the Lanczos products
        jac = residual_jacobian(prob.residual, theta)
        k = (jac * prob.eta[None, :]) @ jac.T / n
        lam = jnp.linalg.eigvalsh(0.5 * (k + k.T))[-1]
        jv, method = jac @ v, "jacobian"
    else:  # lambda_max of J E J^T / n from products with J^T and J, never J itself
        vjp_fn = jax.linear_transpose(jvp_fn, theta)
        lam = lanczos_max(lambda u: jvp_fn(prob.eta * vjp_fn(u)[0]) / n, n, r0.dtype)
        jv, method = jvp_fn(v), "lanczos"
    miss = prob.residual(theta + v) - r0 - jv
    defect = jnp.linalg.norm(miss) / jnp.maximum(jnp.linalg.norm(jv), 1e-300)
    # n, method: static outputs of the compiled probe; r0 and the loss for the check that
    # (1/2n)|r|^2 is the loss (a forward pass: not counted)
    return lam, defect, n, method, r0, prob.loss(theta)


def kernel_probe(problem: FlatProblem) -> tuple[float, float, int, str]:
    """(lambda_max of J diag(eta) J^T / n at theta0, linearity defect, n, method): the
    largest eigenvalue of the Gauss-Newton part of the flow's Jacobian, and the relative
    defect of the residual's linear model along a fixed direction (module doc). Needs
    `problem.residual_fn` and a flat state. Method "jacobian" (n <= LANCZOS_MIN_N): n
    Jacobian rows and an n x n eigenvalue problem; "lanczos": LANCZOS_ITERS products
    with J E J^T and one jvp. Either way one residual evaluation for the defect.
    Compiled once per problem structure (a later call with new values reuses it).
    First checks that (1/2n)|r|^2 is the loss at theta0 (ValueError naming residual_fn
    otherwise): a residual of another scale would misstate lambda_max."""
    lam, defect, n, method, r0, loss0 = _probe(problem)
    check_residual_matches_loss(np.asarray(r0), float(loss0))
    return float(lam), float(defect), int(n), str(method)


def probe_cost(n: int, method: str) -> tuple[int, int]:
    """(Jacobian rows, other gradient-equivalents) of the probe: n rows and the residual
    evaluations of the linearity defect (counted as 1), or 2 per Lanczos product (a jvp
    and a vjp) plus the defect's jvp and residual evaluations (2)."""
    if method == "jacobian":
        return n, 1
    return 0, 2 * LANCZOS_ITERS + 2


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
    lam, defect, n, method = kernel_probe(problem)
    seconds = time.perf_counter() - start
    s = lam * (float(t1) - float(t0))
    rows, evals = probe_cost(n, method)
    info.update(
        lambda_max=lam,
        stiffness=s,
        jacobian_rows=rows,
        linearity_defect=defect,
        probe_method=method,
        probe_evals=evals,
        probe_seconds=seconds,
    )
    if np.isfinite(s) and s >= threshold:
        if defect <= LINEAR_DEFECT:
            why = "stiffness >= threshold, residual affine (linearity defect <= 1e-8)"
            return ExpRosenbrock(), {**info, "chosen": "exprb", "reason": why}
        why = "stiffness >= threshold, residual not affine"
        return RosenbrockW(), {**info, "chosen": "rosw", "reason": why}
    return tsit5, {**info, "chosen": "tsit5", "reason": "stiffness < threshold"}
