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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._kernel import apply_model, check_apply, check_x, tangent_kernel


@dataclass(frozen=True)
class LinearizedFlow:
    """Predictions of the linearized network along the flow.

    Fields:
        ts: (k_t,) times. f_train: (k_t, n) predictions on the training inputs
            ((k_t, n, k) for k outputs).
        f_test: (k_t, n_test) (or (k_t, n_test, k)) on the test inputs, or None.
        eigvals: (N,) spectrum of H_0 ascending (N = n, or n k). n_null: eigenvalues
            treated as 0 (pseudo-inverse). train_loss: (k_t,) (1/2n) sum |f_train - y|^2.
            test_loss: (k_t,) (1/2 n_test) sum |f_test - y_test|^2 or None.
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
    apply_fn: Callable[[Any, jax.Array], jax.Array] | None = None,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
    null_tol: float | None = None,
) -> LinearizedFlow:
    """The lazy-training predictions f_t on train (and test) inputs, closed form above.

    Arguments:
        model: the initial parameters theta_0 (a gflow model, a callable pytree, or any
            pytree with `apply_fn`).
        x, y: (n, d) training inputs and (n,) targets, or (n, k) for k outputs.
        ts: (k_t,) times >= 0.
        x_test, y_test: optional test inputs (n_test, d) and targets (n_test,) / (n_test, k).
        apply_fn: apply_fn(params, x) -> (n,) or (n, k) outputs (default params(x)).
        eta, trainable, chunk_size, method: as in `tangent_kernel` (default: the model's
            own eta and trainable layers).
        null_tol: eigenvalues of H_0 at or below it count as 0 (default
            100 N eps lambda_max, N = n k, the round-off level of the eigensolver).

    The loss is L = (1/2n) sum_i |f(x_i) - y_i|^2 (summed over outputs, averaged over
    examples: gflow's `mse_loss` for scalar outputs); for k outputs H_0 is the full
    (n k, n k) kernel (`tangent_kernel(..., outputs="full")`) and the formulas above hold
    for vec(f) with the same 1/n.

    Returns:
        A `LinearizedFlow`; f_train (k_t, n) or (k_t, n, k), f_test likewise, eigvals (N,).
    """
    x = check_x("x", x)
    check_apply(apply_fn, model)
    f0 = np.asarray(_apply_jit(apply_fn, model, x), dtype=np.float64)
    n = x.shape[0]
    if f0.shape[:1] != (n,) or f0.ndim > 2:
        raise ValueError(f"apply_fn: expected outputs of shape ({n},) or ({n}, k), got {f0.shape}.")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != f0.shape:
        raise ValueError(f"y: expected shape {f0.shape} like the model's outputs, got {y.shape}.")
    t = np.asarray(ts, dtype=np.float64)
    if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("ts: must be a 1-D array of finite times >= 0.")
    kw = {
        "apply_fn": apply_fn,
        "eta": eta,
        "trainable": trainable,
        "chunk_size": chunk_size,
        "method": method,
    }
    h0 = np.asarray(tangent_kernel(model, x, **kw))
    lam, u = np.linalg.eigh(h0)
    big_n = lam.size
    tol = (
        100 * big_n * np.finfo(np.float64).eps * max(lam[-1], 0.0) if null_tol is None else null_tol
    )
    null = lam <= tol
    r0_eig = u.T @ (f0 - y).reshape(-1)  # residual in the eigenbasis
    decay = -np.expm1(-np.outer(t, np.where(null, 0.0, lam)) / n)  # (k_t, N)
    f_train = (f0.reshape(-1)[None, :] - (decay * r0_eig) @ u.T).reshape(t.size, *f0.shape)
    train_loss = _half_mse(f_train, y)
    f_test = test_loss = None
    if x_test is not None:
        xt = check_x("x_test", x_test)
        ft0 = np.asarray(_apply_jit(apply_fn, model, xt), dtype=np.float64)
        k0 = np.asarray(tangent_kernel(model, xt, x, **kw))  # (n_test k, n k)
        phi = np.where(null, 0.0, decay / np.where(null, 1.0, lam))
        f_test = (ft0.reshape(-1)[None, :] - (phi * r0_eig) @ (k0 @ u).T).reshape(
            t.size, *ft0.shape
        )
        if y_test is not None:
            yt = np.asarray(y_test, dtype=np.float64)
            if yt.shape != ft0.shape:
                raise ValueError(f"y_test: expected shape {ft0.shape}, got {yt.shape}.")
            test_loss = _half_mse(f_test, yt)
    return LinearizedFlow(t, f_train, f_test, lam, int(null.sum()), train_loss, test_loss)


# module level, so that every call with the same model structure and shapes reuses one
# compiled program (apply_fn and the model's static fields are static arguments)
_apply_jit = eqx.filter_jit(apply_model)


def _half_mse(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(1/2n) sum_i |f_i - y_i|^2 per time, for f (k_t, n) or (k_t, n, k)."""
    sq = (f - y[None]) ** 2
    return 0.5 * sq.reshape(sq.shape[0], sq.shape[1], -1).sum(axis=2).mean(axis=1)


def prediction_gap(f_true: Any, f_lin: Any) -> np.ndarray:
    """RMS distance between true and linearized predictions at each time:
    sqrt(mean_k (f_true(x_k) - f_lin(x_k))^2), for (k_t, n) (or (k_t, n, k): mean over
    examples and outputs) arrays -> (k_t,)."""
    a, b = np.asarray(f_true, dtype=np.float64), np.asarray(f_lin, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"f_lin: shape {b.shape} differs from f_true's {a.shape}.")
    return np.sqrt(np.mean(((a - b) ** 2).reshape(a.shape[0], -1), axis=-1))


def prediction_metrics(
    x: Any, name: str = "pred_train", *, apply_fn: Callable | None = None
) -> dict:
    """Save-time metric {name: params -> f(x)} ((n,) or (n, k)), to compare with
    `linearized_flow`; `apply_fn(params, x)` as in `tangent_kernel` (default params(x))."""
    xa = check_x("x", x)
    if apply_fn is not None and not callable(apply_fn):
        raise ValueError(f"apply_fn: must be callable (params, x) -> outputs, got {apply_fn!r}.")
    return {name: _Prediction(xa, apply_fn)}


class _Prediction(eqx.Module):
    """params -> f(x); x is a program argument (new inputs of the same shape reuse the
    compiled solve), apply_fn part of the program's key."""

    x: jax.Array
    apply_fn: Any  # a function (keyed by identity) or a Module (its arrays are arguments)

    def __call__(self, params: Any) -> jax.Array:
        return apply_model(self.apply_fn, params, self.x)
