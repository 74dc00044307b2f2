"""Following a gradient flow to its end: the limit point, classified, optionally polished.

`follow_to_limit` integrates the flow over time windows of geometrically growing length
(t, 4t, 16t, ...) from where the previous one ended, until

- the gradient norm |grad L| <= `grad_tol` ("grad_tol"), or the loss <= `loss_tol`
  ("loss_tol"), or
- the loss stops changing: over a whole window its relative decrease is below
  `stall_rtol` ("stalled"), or
- the time `t_max` is reached ("t_max").

At the end point theta_end it reports the loss, |grad L| and the extreme eigenvalues of
the loss Hessian H (Lanczos on Hessian-vector products, `_analysis/_hessian.py`; of H
itself, not eta-preconditioned), and classifies it:

    not converged   |grad L| > grad_tol (and the loss above loss_tol);
    saddle          lambda_min(H) < -neg_tol * max(|lambda_max|, 1)  (a direction of
                    negative curvature: the flow reached, or is passing, a saddle);
    minimum         otherwise (lambda_min >= -neg_tol: flat directions, as at the
                    manifold of global minima of an over-parameterised network, count
                    as minimum).

Polishing (`polish=True`): Gauss-Newton steps delta = -J^+ r (minimum-norm, through the
n x n system J J^T) when a residual function is given, otherwise Newton steps
delta = -H^+ grad L with the dense Hessian (P <= 4096), each halved up to 10 times until
the loss decreases (or stays and |grad L| decreases), at most 30 steps; the distance
|theta_polished - theta_end| is reported. Polishing is skipped at a saddle (Newton's
step is attracted to it) and says so; from a point that has not converged but shows no
negative curvature it is tried (Gauss-Newton then finishes the approach to the minimum;
the distance moved says how far the flow was).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._analysis._hessian import hvp, lanczos_eigs
from ._flatten import flatten_problem
from ._rosenbrock import residual_jacobian
from ._simulate import simulate

PyTree = Any
MAX_DENSE_NEWTON = 4096


@dataclasses.dataclass(frozen=True)
class LimitPoint:
    """Where a gradient flow ended (`follow_to_limit`).

    Fields:
        theta: (P,) the flow's end point (flat trainable parameters).
        t: the flow time reached.
        loss, grad_norm: L and |grad L| at theta.
        lambda_min, lambda_max: extreme eigenvalues of the loss Hessian at theta (Lanczos).
        classification: "minimum" | "saddle" | "not converged".
        stop_reason: "grad_tol" | "loss_tol" | "stalled" | "t_max" | "failed: ...".
        windows: list of (t_start, t_end, loss_end, grad_norm_end, solver) per window.
        grad_equivalents: gradient-equivalents of all windows (None if not counted).
        polished: (P,) the polished point, or None; polish_distance |polished - theta|;
            polished_loss, polished_grad_norm; polish_steps; polish_note.
    """

    theta: np.ndarray
    t: float
    loss: float
    grad_norm: float
    lambda_min: float
    lambda_max: float
    classification: str
    stop_reason: str
    windows: list
    grad_equivalents: float | None
    polished: np.ndarray | None = None
    polish_distance: float | None = None
    polished_loss: float | None = None
    polished_grad_norm: float | None = None
    polish_steps: int = 0
    polish_note: str = ""

    def summary(self) -> str:
        s = (
            f"{self.classification} at t = {self.t:.4g} ({self.stop_reason}): loss "
            f"{self.loss:.3e}, |grad| {self.grad_norm:.3e}, Hessian eigenvalues in "
            f"[{self.lambda_min:.3e}, {self.lambda_max:.3e}]"
        )
        if self.polished is not None:
            s += (
                f"; polished in {self.polish_steps} steps: moved {self.polish_distance:.3e}, "
                f"loss {self.polished_loss:.3e}, |grad| {self.polished_grad_norm:.3e}"
            )
        elif self.polish_note:
            s += f"; {self.polish_note}"
        return s


def _check(name: str, value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: must be a finite positive number or None, got {value!r}.")
    return v


def follow_to_limit(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    residual_fn: Callable[[PyTree], jax.Array] | None = None,
    grad_tol: float = 1e-8,
    loss_tol: float | None = None,
    stall_rtol: float = 1e-3,
    t_first: float = 10.0,
    t_max: float = 1e8,
    solver: str | Any = "auto",
    rtol: float = 1e-8,
    atol: float = 1e-12,
    neg_tol: float = 1e-6,
    lanczos_iters: int = 40,
    polish: bool = False,
    max_steps: int = 200_000,
) -> LimitPoint:
    """Run the flow until it stops (module doc) and report the limit point.

    Arguments:
        loss_fn, params, eta, trainable, residual_fn: as in `simulate`.
        grad_tol: stop once |grad L| <= grad_tol (also the convergence criterion).
        loss_tol: stop once L <= loss_tol (None: not used).
        stall_rtol: stop when a window lowers the loss by less than this fraction.
        t_first: length of the first window; each next one is 4x longer.
        t_max: give up at this flow time.
        solver, rtol, atol, max_steps: for each window's `simulate` ("auto" by default).
        neg_tol: relative negative curvature below which the point is a saddle.
        lanczos_iters: Lanczos steps for the extreme Hessian eigenvalues.
        polish: Gauss-Newton (residual_fn) or Newton polishing (not at a saddle).

    Returns:
        A `LimitPoint`.
    """
    grad_tol = _check("grad_tol", grad_tol)
    loss_tol = _check("loss_tol", loss_tol)
    stall_rtol = _check("stall_rtol", stall_rtol)
    t_first = _check("t_first", t_first)
    t_max = _check("t_max", t_max)
    neg_tol = _check("neg_tol", neg_tol)
    if t_first > t_max:
        raise ValueError(f"t_first: must be <= t_max = {t_max}, got {t_first}.")
    problem = flatten_problem(
        loss_fn, params, eta=eta, trainable=trainable, residual_fn=residual_fn
    )
    theta = np.asarray(problem.theta0)
    value_grad = jax.jit(lambda th: jax.value_and_grad(problem.loss)(th))
    loss0, g0 = value_grad(jnp.asarray(theta))
    loss_prev = float(loss0)
    t, length, windows, evals = 0.0, t_first, [], 0.0
    reason = "grad_tol" if float(jnp.linalg.norm(g0)) <= grad_tol else ""
    while not reason:
        t_end = min(t + length, t_max)
        sol = simulate(
            loss_fn,
            problem.to_params(jnp.asarray(theta)),
            t_end - t,
            eta=eta,
            trainable=trainable,
            residual_fn=residual_fn,
            ts=np.array([0.0, t_end - t]),
            solver=solver,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            loss_target=loss_tol,
            # auto's Tsit5 phase is for the flow's early part: the first window only
            # (later windows start late, where Tsit5 would be held by stability).
            auto_switch=not windows,
        )
        ge = sol.stats.get("grad_equivalents")
        evals = None if ge is None or evals is None else evals + ge
        t += sol.t_final
        theta = np.asarray(sol.theta_final)
        # L and |grad L| where the window ended (a window stopped by the loss target or a
        # failure ends between save times, after its last saved value)
        loss_j, grad_j = value_grad(jnp.asarray(theta))
        loss_now, gnorm = float(loss_j), float(jnp.linalg.norm(grad_j))
        windows.append((t - sol.t_final, t, loss_now, gnorm, sol.settings.get("solver")))
        if not sol.success:
            reason = f"failed: {sol.message}"
        elif gnorm <= grad_tol:
            reason = "grad_tol"
        elif sol.stopped_early or (loss_tol is not None and loss_now <= loss_tol):
            reason = "loss_tol"
        elif loss_prev - loss_now <= stall_rtol * abs(loss_prev):
            reason = "stalled"
        elif t >= t_max:
            reason = "t_max"
        loss_prev, length = loss_now, 4.0 * length
    th = jnp.asarray(theta)
    loss_end, g = value_grad(th)
    gnorm = float(jnp.linalg.norm(g))
    lam_min, lam_max = hessian_extremes(problem.loss, th, lanczos_iters)
    converged = gnorm <= grad_tol or (loss_tol is not None and float(loss_end) <= loss_tol)
    if not converged:
        kind = "not converged"
    elif lam_min < -neg_tol * max(abs(lam_max), 1.0):
        kind = "saddle"
    else:
        kind = "minimum"
    point = LimitPoint(
        theta=theta,
        t=t,
        loss=float(loss_end),
        grad_norm=gnorm,
        lambda_min=lam_min,
        lambda_max=lam_max,
        classification=kind,
        stop_reason=reason,
        windows=windows,
        grad_equivalents=evals,
    )
    if not polish:
        return point
    if kind == "saddle":
        return dataclasses.replace(point, polish_note="not polished: the point is a saddle")
    return _polish(point, problem)


def hessian_extremes(loss: Callable, theta: jax.Array, iters: int) -> tuple[float, float]:
    """(lambda_min, lambda_max) of the Hessian of `loss` at theta: Lanczos Ritz values
    (exact when iters >= P)."""
    p = theta.shape[0]
    m = max(1, min(int(iters), p))
    v0 = jax.random.normal(jax.random.PRNGKey(0), (p,), theta.dtype)
    grad = jax.grad(loss)
    ritz = jax.jit(lambda th: lanczos_eigs(lambda v: hvp(grad, th, v), v0, m))(theta)
    return float(ritz[0]), float(ritz[-1])


def _polish(point: LimitPoint, problem) -> LimitPoint:
    """Gauss-Newton (residual_fn) or dense Newton steps, while the loss decreases (or
    stays and |grad L| decreases; at most 30)."""
    p = point.theta.shape[0]
    if problem.residual_fn is None and p > MAX_DENSE_NEWTON:
        return dataclasses.replace(
            point,
            polish_note=f"not polished: no residual_fn and P = {p} > {MAX_DENSE_NEWTON} "
            "(dense Newton); pass residual_fn for Gauss-Newton",
        )
    if problem.residual_fn is not None:

        def step(th):
            r, jac = problem.residual(th), residual_jacobian(problem.residual, th)
            return -jac.T @ jnp.linalg.lstsq(jac @ jac.T, r, rcond=None)[0]
    else:

        def step(th):
            g, h = jax.grad(problem.loss)(th), jax.hessian(problem.loss)(th)
            return -jnp.linalg.lstsq(h, g, rcond=None)[0]

    step = jax.jit(step)
    value_grad = jax.jit(lambda th: jax.value_and_grad(problem.loss)(th))
    th = jnp.asarray(point.theta)
    loss, g = value_grad(th)
    gnorm, k = float(jnp.linalg.norm(g)), 0
    for _ in range(30):
        delta, accepted = step(th), False
        for halvings in range(11):  # backtracking: full step, then 1/2, ..., 1/1024
            cand = th + delta / 2.0**halvings
            c_loss, c_g = value_grad(cand)
            c_norm, c_loss_f, loss_f = float(jnp.linalg.norm(c_g)), float(c_loss), float(loss)
            finite = np.isfinite(c_norm) and np.isfinite(c_loss_f)
            if finite and (c_loss_f < loss_f or (c_loss_f <= loss_f and c_norm < gnorm)):
                accepted = True
                break
        if not accepted:
            break
        th, loss, gnorm, k = cand, c_loss, c_norm, k + 1
    return dataclasses.replace(
        point,
        polished=np.asarray(th),
        polish_distance=float(np.linalg.norm(np.asarray(th) - point.theta)),
        polished_loss=float(loss),
        polished_grad_norm=gnorm,
        polish_steps=k,
        polish_note="Gauss-Newton" if problem.residual_fn is not None else "Newton",
    )
