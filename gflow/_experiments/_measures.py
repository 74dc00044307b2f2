"""Save-time and end-of-run measures of the reproduction experiments, built on the
analysis package (gflow/_analysis: closed-form tangent kernel, Schur parts, certificates,
linearized flow, feature movement).

What is added here is what an ensemble needs: metrics of the form fn(model, data), so
that each member is measured on its own training inputs, and the log-log slope fit.

Formulas (docs/paper.md). H(t) is the eta-weighted tangent kernel of the trained layers. For
the trained layer W, H_W = K o G with K = X X^T (two-layer) or Phi Phi^T D^-2b
(three-layer) and G_kl = eta_W m^-2a sum_i c_i^2 s'(u_ik) s'(u_il); Schur:
lambda_min(H) >= lambda_min(H_W) >= lambda_min(K) min_k G_kk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._analysis._certificates import certify
from .._analysis._linearized import linearized_flow
from .._analysis._rate import RateFit, ols, t_quantile_975
from .._analysis._structured import inner_layer, layer_parts, structured_kernel


def _eta_w(model) -> float:
    name = inner_layer(model)
    return 0.0 if name is None else float(model.layer_eta()[name])


def kernel_parts(model, x) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(H, lambda_min(H_W), Schur bound lambda_min(input Gram) min_k G_kk) on inputs x.

    H is `structured_kernel` (all trained layers); H_W = eta_W (input Gram) o g with
    (input Gram, g) from `layer_parts` (g carries m^-2a D^-2b), so G = eta_W g. The three
    are 0 for H_W and the bound when W is frozen."""
    x = jnp.asarray(x)
    h = structured_kernel(model, x)
    gram, g, _ = layer_parts(model, x)
    g = _eta_w(model) * g
    lam_w = jnp.linalg.eigvalsh(gram * g)[0]
    schur = jnp.linalg.eigvalsh(gram)[0] * jnp.min(jnp.diag(g))
    return h, lam_w, schur


def _lam(model, data):
    ev = jnp.linalg.eigvalsh(kernel_parts(model, data["x_train"])[0])
    return jnp.stack([ev[0], ev[-1]])


def _schur(model, data):
    _, lam_w, bound = kernel_parts(model, data["x_train"])
    return jnp.stack([lam_w, bound])


def kernel_metrics() -> dict:
    """Save-time metrics fn(model, data), data = {"x_train": (n, d), ...}:
    "lam" = (lambda_min(H), lambda_max(H)), "schur" = (lambda_min(H_W), Schur bound).
    Module-level functions, so sweep points of equal shapes share one compiled solve."""
    return {"lam": _lam, "schur": _schur}


def tangent_kernel(model, x) -> jnp.ndarray:
    """H (n, n) on inputs x, closed form."""
    return structured_kernel(model, jnp.asarray(x))


def lazy_gap(model0: Any, x, y, ts, f_traj) -> float:
    """max_t |f_t(X) - f_lin,t(X)| / |f_0(X) - y|: distance of the flow's training
    predictions f_traj (k, n) at save times ts to the linearized (lazy) flow of `model0`
    (`linearized_flow`: f_lin,t = f_0 - (I - expm(-t H_0 / n)) r_0)."""
    f_traj = np.asarray(f_traj)
    ok = np.all(np.isfinite(f_traj), axis=1)
    ts, f_traj = np.asarray(ts)[ok], f_traj[ok]
    lin = linearized_flow(model0, x, y, ts)
    gap = np.linalg.norm(f_traj - lin.f_train, axis=1)
    return float(np.max(gap) / np.linalg.norm(f_traj[0] - np.asarray(y)))


def certificates(ts, loss, lam_min, lam_max, schur, n: int, fit: RateFit | None) -> dict[str, Any]:
    """`certify` the trajectory (local rate, Gronwall envelope, Schur, fitted rate) and
    add the certified rates (2/n) min_t lambda_min(H(t)) and (2/n) min_t Schur bound.

    Returns:
        {"status": {check: "pass"|"fail"|"inconclusive"|"skipped"}, "certified_rate",
        "certified_rate_schur", "lam_min_init", "lam_min_final", "schur_init"}.
    """
    ts, loss, lam_min, lam_max = (
        np.asarray(a, dtype=np.float64) for a in (ts, loss, lam_min, lam_max)
    )
    schur = np.asarray(schur, dtype=np.float64)
    rep = certify(ts, loss, lam_min, n, fit=fit, lambda_max=lam_max, schur=schur)
    return {
        "status": {c.name: c.status for c in rep.checks},
        "detail": {c.name: c.detail for c in rep.checks},
        "certified_rate": float(2.0 / n * np.min(lam_min)),
        "certified_rate_schur": float(2.0 / n * np.min(schur[:, 1])),
        "lam_min_init": float(lam_min[0]),
        "lam_min_final": float(lam_min[-1]),
        "schur_init": float(schur[0, 1]),
    }


def loglog_slope(x: Sequence[float], y: np.ndarray) -> dict:
    """Least-squares slope of log y vs log x over all (x, seed) points, with a 95% interval
    (Student t, dof = points - 2). y: (len(x), seeds)."""
    y = np.asarray(y, dtype=np.float64)
    lx = np.repeat(np.log(np.asarray(x, dtype=np.float64)), y.shape[1])
    ly = np.log(y.reshape(-1))
    ok = np.isfinite(ly)
    b, a, se, r2 = ols(lx[ok], ly[ok])
    half = t_quantile_975(int(ok.sum()) - 2) * se
    return {"slope": b, "ci": [b - half, b + half], "stderr": se, "intercept": a, "r2": r2}
