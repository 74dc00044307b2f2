"""The linearized (lazy) flow from the same initialization, in closed form.

Linearizing the network at theta_0, f_lin(x; theta) = f_0(x) + J_x (theta - theta_0), the
gradient flow d theta/dt = -eta J^T r / n has residual r_t = expm(-t H_0 / n) r_0 on the
training inputs (H_0 = the eta-weighted tangent kernel at init), so (docs/paper.md)

    f_t(X) = f_0(X) - (I - expm(-t H_0 / n)) r_0,
    f_t(x) = f_0(x) - K_0(x, X) H_0^+ (I - expm(-t H_0 / n)) r_0     (test inputs x),

with K_0(x, X) = J_x diag(eta) J_X^T. Both are evaluated in the eigenbasis H_0 = U diag(l) U^T:
(I - expm(-t H_0/n)) = U diag(-expm1(-t l/n)) U^T, and H_0^+ (I - expm(-t H_0/n)) =
U diag(phi_t(l)) U^T, phi_t(l) = -expm1(-t l/n) / l. On the null space of H_0
(l <= null_tol) the factor is set to 0: the pseudo-inverse. This is exact, not an
approximation: H_0 v = 0 implies J_X^T v = 0 on the trained parameters, hence K_0(x, X) v = 0,
and the train update has 1 - e^0 = 0 there too. `n_null` reports how many were dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._kernel import _check_x, tangent_kernel


@dataclass(frozen=True)
class LinearizedFlow:
    """Predictions of the linearized network along the flow.

    Fields:
        ts: (k,) times. f_train: (k, n) predictions on the training inputs.
        f_test: (k, n_test) on the test inputs, or None.
        eigvals: (n,) spectrum of H_0 ascending. n_null: eigenvalues treated as 0
            (pseudo-inverse). test_loss: (k,) (1/2 n_test) |f_test - y_test|^2 or None.
    """

    ts: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray | None
    eigvals: np.ndarray
    n_null: int
    train_loss: np.ndarray
    test_loss: np.ndarray | None


def linearized_flow(
    model: Any,
    x: Any,
    y: Any,
    ts: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
    null_tol: float | None = None,
) -> LinearizedFlow:
    """The lazy-training predictions f_t on train (and test) inputs, closed form above.

    Arguments:
        model: the initial parameters theta_0 (a gflow model or callable pytree).
        x, y: (n, d) training inputs and (n,) targets. ts: (k,) times >= 0.
        x_test, y_test: optional test inputs (n_test, d) and targets (n_test,).
        eta, trainable, chunk_size, method: as in `tangent_kernel` (default: the model's
            own eta and trainable layers).
        null_tol: eigenvalues of H_0 at or below it count as 0 (default
            100 n eps lambda_max, the round-off level of the eigensolver).

    Returns:
        A `LinearizedFlow`.
    """
    x = _check_x("x", x)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    if y.shape != (n,):
        raise ValueError(f"y: expected shape ({n},), got {y.shape}.")
    t = np.asarray(ts, dtype=np.float64)
    if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("ts: must be a 1-D array of finite times >= 0.")
    kw = {"eta": eta, "trainable": trainable, "chunk_size": chunk_size, "method": method}
    h0 = np.asarray(tangent_kernel(model, x, **kw))
    lam, u = np.linalg.eigh(h0)
    tol = 100 * n * np.finfo(np.float64).eps * max(lam[-1], 0.0) if null_tol is None else null_tol
    null = lam <= tol
    apply = jax.jit(lambda p, xs: p(xs))
    f0 = np.asarray(apply(model, x), dtype=np.float64)
    r0_eig = u.T @ (f0 - y)  # residual in the eigenbasis
    decay = -np.expm1(-np.outer(t, np.where(null, 0.0, lam)) / n)  # (k, n)
    f_train = f0[None, :] - (decay * r0_eig) @ u.T
    train_loss = 0.5 * np.mean((f_train - y) ** 2, axis=1)
    f_test = test_loss = None
    if x_test is not None:
        xt = _check_x("x_test", x_test)
        k0 = np.asarray(tangent_kernel(model, xt, x, **kw))  # (n_test, n)
        phi = np.where(null, 0.0, decay / np.where(null, 1.0, lam))
        f_test = (
            np.asarray(apply(model, xt), dtype=np.float64)[None, :] - (phi * r0_eig) @ (k0 @ u).T
        )
        if y_test is not None:
            yt = np.asarray(y_test, dtype=np.float64)
            if yt.shape != (xt.shape[0],):
                raise ValueError(f"y_test: expected shape ({xt.shape[0]},), got {yt.shape}.")
            test_loss = 0.5 * np.mean((f_test - yt) ** 2, axis=1)
    return LinearizedFlow(t, f_train, f_test, lam, int(null.sum()), train_loss, test_loss)


def prediction_gap(f_true: Any, f_lin: Any) -> np.ndarray:
    """RMS distance between true and linearized predictions at each time:
    sqrt(mean_k (f_true(x_k) - f_lin(x_k))^2), for (k, n) arrays -> (k,)."""
    a, b = np.asarray(f_true, dtype=np.float64), np.asarray(f_lin, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"f_lin: shape {b.shape} differs from f_true's {a.shape}.")
    return np.sqrt(np.mean((a - b) ** 2, axis=-1))


def prediction_metrics(x: Any, name: str = "pred_train") -> dict:
    """Save-time metric {name: params -> f(x)} (n,), to compare with `linearized_flow`."""
    xa = jnp.asarray(_check_x("x", x))
    return {name: lambda params: params(xa)}
