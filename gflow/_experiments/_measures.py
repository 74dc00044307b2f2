"""Save-time and end-of-run measures used by the reproduction experiments.

MINIMAL LOCAL VERSION (issue 4): the library-wide analysis package (issue 3, branch
`issue3`, gflow/_analysis/_kernel.py, _certificates.py, _features.py, _linearized.py) was
not committed when these experiments had to run, so this file implements only what the
experiments need, for the two model classes they use. The lead may replace it by the
issue-3 functions; `tests/test_reproduce.py` checks it against a second implementation
(the Jacobian of the network outputs).

Formulas (PAPER.md). For the trained first/middle layer W of
    f(x) = m^-a sum_i c_i s(u_i(x)),   u_i(x) = D^-b sum_j W_ij h_j(x)
(two-layer: h = x, D^-b = 1), the eta-weighted tangent kernel of W is the Hadamard product
    H_W = K o G,   K_kl = D^-2b h(x_k).h(x_l),   G_kl = eta_W m^-2a sum_i c_i^2 s'(u_ik) s'(u_il),
and, when c is trained too, H_c = eta_c m^-2a S S^T with S_ki = s(u_ik). H = H_W (+ H_c).
Schur product theorem: lambda_min(H) >= lambda_min(H_W) >= lambda_min(K) min_k G_kk.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._models._activations import get_activation
from .._models._multilayer import MultiLayer
from .._models._two_layer import TwoLayer


def _derivative(s, z: jax.Array) -> jax.Array:
    """s'(z) elementwise (forward-mode derivative along ones)."""
    return jax.jvp(s, (z,), (jnp.ones_like(z),))[1]


def _parts(model: TwoLayer | MultiLayer, x: jax.Array):
    """(K, pre-activations u (n, m), a, eta_W, eta_c, c trained?)."""
    if isinstance(model, TwoLayer):
        h, b_scale, a = x, 1.0, model.exponent
        train_c = model.train_second
        train_w = model.train_first
    elif isinstance(model, MultiLayer):
        a, b = model.exponents
        h, b_scale = model.features(x), float(model.D) ** (-b)
        train_c, train_w = model.train_output, True
    else:
        raise ValueError(
            f"model: kernel measures support TwoLayer and MultiLayer, got {type(model).__name__}."
        )
    eta = model.layer_eta()
    u = (h @ model.W.T) * b_scale
    k = (h @ h.T) * b_scale**2
    return k, u, a, eta["W"] if train_w else 0.0, eta["c"] if train_c else 0.0


def kernel_parts(model: TwoLayer | MultiLayer, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(H, schur): the eta-weighted tangent kernel H (n, n) of the trained layers and the
    Schur lower bound lambda_min(K) min_k G_kk of its smallest eigenvalue (0 when W is
    frozen)."""
    k, u, a, eta_w, eta_c = _parts(model, x)
    s = get_activation(model.activation)
    m = model.m
    ds = _derivative(s, u) * model.c  # (n, m): c_i s'(u_ik)
    g = eta_w * (ds @ ds.T) / m ** (2 * a)
    h = k * g
    if eta_c:
        su = s(u)
        h = h + eta_c * (su @ su.T) / m ** (2 * a)
    schur = jnp.linalg.eigvalsh(k)[0] * jnp.min(jnp.diag(g))
    return h, schur


def kernel_metrics() -> dict:
    """Save-time metrics fn(model, data) with data = {"x": (n, d), ...}: "lam" =
    (lambda_min, lambda_max) of H(t) on the training inputs, "schur" = the Schur bound."""

    def lam(model, data):
        h, _ = kernel_parts(model, data["x"])
        ev = jnp.linalg.eigvalsh(h)
        return jnp.stack([ev[0], ev[-1]])

    def schur(model, data):
        return kernel_parts(model, data["x"])[1]

    return {"lam": lam, "schur": schur}


def tangent_kernel(model: TwoLayer | MultiLayer, x) -> jax.Array:
    return kernel_parts(model, jnp.asarray(x))[0]


def relative_movement(w0, w1) -> float:
    """|W(T) - W(0)|_F / |W(0)|_F."""
    w0, w1 = np.asarray(w0), np.asarray(w1)
    return float(np.linalg.norm(w1 - w0) / np.linalg.norm(w0))


def kernel_change(h0, h1) -> float:
    """|H(T) - H(0)|_F / |H(0)|_F."""
    h0, h1 = np.asarray(h0), np.asarray(h1)
    return float(np.linalg.norm(h1 - h0) / np.linalg.norm(h0))


def linearized_outputs(ts, f0, y, h0) -> np.ndarray:
    """Outputs on the training points of the lazy (linearized) flow
    f_lin(t) = f0 - V (1 - exp(-t lambda / n)) V^T r0, with H0 = V diag(lambda) V^T and
    r0 = f0 - y. Returns (len(ts), n)."""
    f0, y, h0 = np.asarray(f0), np.asarray(y), np.asarray(h0)
    n = f0.size
    lam, v = np.linalg.eigh(h0)
    lam = np.clip(lam, 0.0, None)
    r0 = v.T @ (f0 - y)
    decay = 1.0 - np.exp(-np.outer(np.asarray(ts), lam) / n)  # (k, n)
    return f0[None, :] - (decay * r0[None, :]) @ v.T


def linearized_distance(ts, f_traj, y, h0) -> float:
    """max_t |f(t) - f_lin(t)| / |f(0) - y| over the save times where f is finite."""
    f_traj = np.asarray(f_traj)
    ok = np.all(np.isfinite(f_traj), axis=1)
    ts, f_traj = np.asarray(ts)[ok], f_traj[ok]
    f_lin = linearized_outputs(ts, f_traj[0], y, h0)
    gap = np.linalg.norm(f_traj - f_lin, axis=1)
    return float(np.max(gap) / np.linalg.norm(f_traj[0] - np.asarray(y)))


def gronwall_envelope(ts, loss0: float, lam_min, n: int) -> np.ndarray:
    """L(0) exp(-(2/n) int_0^t lambda_min(H(s)) ds), trapezoid rule on the save times."""
    ts, lam_min = np.asarray(ts), np.asarray(lam_min)
    integral = np.concatenate([[0.0], np.cumsum(np.diff(ts) * 0.5 * (lam_min[1:] + lam_min[:-1]))])
    return loss0 * np.exp(-2.0 / n * integral)


def certificates(ts, loss, lam_min, schur, n: int, rel_tol: float = 1e-3) -> dict:
    """Checks along one trajectory (fractions of save times where each holds):
    envelope L(t) <= (1 + rel_tol) L(0) exp(-(2/n) int lambda_min); Schur bound
    schur(t) <= lambda_min(t) (1 + rel_tol); and the certified rate (2/n) min_t lambda_min."""
    ts, loss, lam_min, schur = (np.asarray(a, dtype=np.float64) for a in (ts, loss, lam_min, schur))
    env = gronwall_envelope(ts, loss[0], lam_min, n)
    env_ok = loss <= env * (1 + rel_tol) + 1e-300
    schur_ok = schur <= lam_min * (1 + rel_tol) + 1e-14 * np.abs(lam_min).max()
    return {
        "envelope_holds": float(np.mean(env_ok)),
        "schur_holds": float(np.mean(schur_ok)),
        "certified_rate": float(2.0 / n * np.min(lam_min)),
        "certified_rate_schur": float(2.0 / n * np.min(schur)),
        "lam_min_init": float(lam_min[0]),
        "lam_min_final": float(lam_min[-1]),
        "schur_init": float(schur[0]),
    }


def loglog_slope(x: Sequence[float], y: np.ndarray) -> dict:
    """Least-squares slope of log y vs log x over all (x, seed) points, with a 95% interval
    (Student t, dof = points - 2). y: (len(x), seeds)."""
    from .._analysis._rate import _ols, _t_quantile_975

    y = np.asarray(y, dtype=np.float64)
    lx = np.repeat(np.log(np.asarray(x, dtype=np.float64)), y.shape[1])
    ly = np.log(y.reshape(-1))
    ok = np.isfinite(ly)
    b, a, se, r2 = _ols(lx[ok], ly[ok])
    half = _t_quantile_975(int(ok.sum()) - 2) * se
    return {"slope": b, "ci": [b - half, b + half], "stderr": se, "intercept": a, "r2": r2}
