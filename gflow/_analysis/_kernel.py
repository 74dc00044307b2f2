"""The eta-weighted empirical tangent kernel (NTK Gram matrix) of the trainable parameters.

For outputs f(x_k; theta), k = 1..n, with Jacobian J (n x P) of the trainable state
theta and per-entry time scales eta (P,), the flow moves the outputs by

    df/dt = -J diag(eta) grad L = -(1/n) H r,    H = J diag(eta) J^T  (n x n),

so dL/dt = -(1/n^2) r^T H r (docs/paper.md). H is computed with vjp/jvp only, never with a
P x P matrix:

- models (`tangent_kernel`, `kernel_metrics`): the rows of J are per-example gradients
  (vmap of grad over the inputs, one batch gradient's worth of work in all). When n P
  numbers fit in the budget (2^25, 256 MiB in float64) J is formed and H = (J eta) J^T;
  otherwise J is built c rows at a time and each row is pushed forward through the
  linearized batch map, H[k, :] = J (eta * J[k]) (jvp), memory O(c P + n^2). c P stays
  below the budget, which covers P up to ~1e7 (c = 1..3).
- any map theta -> (n,) (`jacobian_gram`): the rows of J are pulled back from basis
  vectors of R^n (vmapped vjp, c at a time) and pushed forward the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._flow._flatten import _as_filter_spec, flatten_problem
from .._models._base import AbstractModel
from ._structured import STRUCTURED, structured_kernel

PyTree = Any
_CHUNK_BUDGET = 2**25  # numbers held by one chunk of pulled-back basis vectors


def default_chunk(n: int, n_params: int) -> int:
    """Basis vectors per vjp batch: as many as fit in ~2^25 numbers, at most n."""
    return int(max(1, min(n, _CHUNK_BUDGET // max(1, n_params))))


def jacobian_gram(
    fn_a: Callable[[jax.Array], jax.Array],
    theta: jax.Array,
    eta: jax.Array,
    fn_b: Callable[[jax.Array], jax.Array] | None = None,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """K = J_a diag(eta) J_b^T for J_a, J_b the Jacobians of fn_a, fn_b at theta.

    Arguments:
        fn_a: theta (P,) -> (n_a,) outputs; fn_b: theta -> (n_b,) (default fn_a).
        theta: (P,) point of evaluation. eta: (P,) or scalar weights.
        chunk_size: basis vectors of R^{n_a} pulled back at once (default `default_chunk`).

    Returns:
        (n_a, n_b) matrix; symmetrized when fn_b is fn_a. Jittable (no Python side effects).
    """
    same = fn_b is None
    fn_b = fn_a if same else fn_b
    out_a, vjp_a = jax.vjp(fn_a, theta)
    n_a = out_a.shape[0]
    _, push_b = jax.linearize(fn_b, theta)
    c = default_chunk(n_a, theta.size) if chunk_size is None else int(chunk_size)
    c = max(1, min(c, n_a))
    n_chunks = -(-n_a // c)
    basis = jnp.eye(n_chunks * c, n_a, dtype=out_a.dtype).reshape(n_chunks, c, n_a)

    def rows(e_chunk):
        v = jax.vmap(lambda e: vjp_a(e)[0])(e_chunk)  # (c, P) rows of J_a
        return jax.vmap(lambda vi: push_b(eta * vi))(v)  # (c, n_b)

    k = jax.lax.map(rows, basis).reshape(n_chunks * c, -1)[:n_a]
    return 0.5 * (k + k.T) if same else k


def _setup(model: PyTree, eta: Any, trainable: Any):
    """(filter spec, eta vector) of a model: its own eta()/trainable() unless given."""
    if isinstance(model, AbstractModel):
        eta = model.eta() if eta is None else eta
        trainable = model.trainable() if trainable is None else trainable
    eta = 1.0 if eta is None else eta
    prob = flatten_problem(lambda p: jnp.zeros(()), model, eta=eta, trainable=trainable)
    return _as_filter_spec(model, trainable), prob.eta


def _flat_apply(params: PyTree, spec: PyTree):
    """theta, batch(x) -> (theta -> f(x)) and single(theta, x_k) -> f(x_k) (scalar)."""
    dyn, frozen = eqx.partition(params, spec)
    theta, unravel = ravel_pytree(dyn)

    def batch(x):
        return lambda th: eqx.combine(unravel(th), frozen)(x)

    def single(th, xk):
        return eqx.combine(unravel(th), frozen)(xk[None])[0]

    return theta, batch, single


def _example_gram(single, batch, theta, eta, xa, xb, chunk_size):
    """K = J(xa) diag(eta) J(xb)^T with rows of J(xa) as per-example gradients."""

    def jac(xs):
        return jax.vmap(lambda xk: jax.grad(single)(theta, xk))(xs)

    same = xb is None
    xb = xa if same else xb
    na, n_rows = xa.shape[0], xa.shape[0] + (0 if same else xb.shape[0])
    if chunk_size is None and n_rows * theta.size <= _CHUNK_BUDGET:
        ja = jac(xa) * jnp.sqrt(eta) if same else jac(xa) * eta
        k = ja @ (ja if same else jac(xb)).T
    else:
        c = default_chunk(na, theta.size) if chunk_size is None else chunk_size
        c = max(1, min(c, na))
        n_chunks = -(-na // c)
        pad = jnp.concatenate([xa, jnp.repeat(xa[:1], n_chunks * c - na, axis=0)])
        _, push_b = jax.linearize(batch(xb), theta)
        rows = jax.lax.map(
            lambda xs: jax.vmap(lambda v: push_b(eta * v))(jac(xs)),
            pad.reshape(n_chunks, c, *xa.shape[1:]),
        )
        k = rows.reshape(n_chunks * c, -1)[:na]
    return 0.5 * (k + k.T) if same else k


def _choose(model: Any, eta: Any, trainable: Any, method: str) -> tuple[bool, float | None]:
    """(use the closed form?, its scalar eta) for method "auto" | "structured" | "jacobian"."""
    if method not in ("auto", "structured", "jacobian"):
        raise ValueError(f"method: must be 'auto', 'structured' or 'jacobian', got {method!r}.")
    scalar_eta = (
        eta is None
        or isinstance(eta, int | float | np.number)
        or (isinstance(eta, jax.Array | np.ndarray) and eta.ndim == 0)
    )
    fits = isinstance(model, STRUCTURED) and trainable is None and scalar_eta
    if method == "structured" and not fits:
        raise ValueError(
            "method: 'structured' needs a TwoLayer, MultiLayer or Linear model with its own "
            "trainable layers and eta None or a scalar; use method='jacobian'."
        )
    use = method == "structured" or (method == "auto" and fits)
    return use, (None if eta is None or not scalar_eta else float(eta))


def _check_x(name: str, x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected inputs of shape (n, d) with n >= 1, got {x.shape}.")
    return x


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise ValueError(f"chunk_size: must be a positive integer or None, got {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}.")
    return int(chunk_size)


def tangent_kernel(
    model: PyTree,
    x: Any,
    x2: Any = None,
    *,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> jax.Array:
    """The eta-weighted tangent kernel H = J(x) diag(eta) J(x2)^T of the trainable parameters.

    Arguments:
        model: a gflow model (or any callable pytree params, x (n, d) -> (n,)).
        x: (n, d) inputs; x2: (n2, d) second inputs (default x: the Gram matrix H).
        eta, trainable: as in `simulate`; default the model's `eta()` and `trainable()`.
        chunk_size: rows of J built at once (None: all n when n P fits in 2^25 numbers,
            else as many as fit); a given value forces the chunked jvp path.
        method: "jacobian" (per-example gradients and jvp, any model), "structured"
            (`structured_kernel`'s closed form) or "auto" (structured when it applies:
            gflow models with their own trainable layers and eta None or a scalar).

    The jacobian path takes per-example gradients, so the model must act on each input
    row independently (true of gflow's models); for other maps use `jacobian_gram`.

    Returns:
        (n, n2) array, H[k, l] = sum_p eta_p (d f(x_k)/d theta_p) (d f(x2_l)/d theta_p).
    """
    x = _check_x("x", x)
    chunk_size = _check_chunk(chunk_size)
    xb = None if x2 is None else _check_x("x2", x2)
    structured, eta_s = _choose(model, eta, trainable, method)
    if structured:
        return _structured_jit(model, x, xb, eta_s)
    spec, eta_vec = _setup(model, eta, trainable)
    return _jacobian_jit(model, spec, eta_vec, x, xb, chunk_size)


@eqx.filter_jit
def _structured_jit(model, x, xb, eta):
    return structured_kernel(model, x, xb, eta=eta)


@eqx.filter_jit
def _jacobian_jit(model, spec, eta_vec, x, xb, chunk_size):
    """Compiled once per model structure, shapes and chunk size (bools, None and ints are
    static under filter_jit)."""
    theta, batch, single = _flat_apply(model, spec)
    return _example_gram(single, batch, theta, eta_vec, x, xb, chunk_size)


def kernel_alignment(h: jax.Array, y: jax.Array) -> jax.Array:
    """Kernel-target alignment  A = y^T H y / (||H||_F |y|^2)  in [-1, 1] (1: H ~ y y^T)."""
    return (y @ h @ y) / (jnp.linalg.norm(h) * (y @ y))


@dataclass(frozen=True)
class KernelTrace:
    """The tangent kernel along a trajectory, unpacked from the `kernel` metric.

    Fields (k save times, n training points):
        eigvals: (k, n) spectrum of H(t), ascending. lambda_min, lambda_max: (k,).
        rayleigh: (k,) r^T H r / r^T r, so that -(d/dt) log L = (2/n) rayleigh exactly.
        change: (k,) ||H(t) - H(0)||_F / ||H(0)||_F.
        alignment: (k,) y^T H y / (||H||_F |y|^2).
        frobenius: (k,) ||H(t)||_F.
    """

    eigvals: np.ndarray
    rayleigh: np.ndarray
    change: np.ndarray
    alignment: np.ndarray
    frobenius: np.ndarray

    @property
    def lambda_min(self) -> np.ndarray:
        return self.eigvals[:, 0]

    @property
    def lambda_max(self) -> np.ndarray:
        return self.eigvals[:, -1]

    @classmethod
    def from_metric(cls, values: Any) -> KernelTrace:
        """Unpack the (k, n + 4) array that `kernel_metrics(...)["kernel"]` records."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] < 5:
            raise ValueError(f"values: expected the (k, n + 4) kernel metric, got {v.shape}.")
        return cls(v[:, :-4], v[:, -4], v[:, -3], v[:, -2], v[:, -1])


def kernel_metrics(
    model: PyTree,
    x: Any,
    y: Any = None,
    *,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> dict[str, Callable[[PyTree], jax.Array]]:
    """Save-time metrics recording the tangent kernel during `simulate` (no parameters kept).

    Arguments:
        model: the initial parameters (H(0) for the kernel change is computed from them).
        x: (n, d) training inputs; y: (n,) targets (for the Rayleigh rate and alignment).
        eta, trainable, chunk_size: as in `tangent_kernel`; pass the ones the flow uses.
        method: "jacobian" (J diag(eta) J^T by vjp/jvp, any model), "structured" (the
            closed form of `structured_kernel`, O(n^2 (m + d)) per save time, for
            TwoLayer / MultiLayer / Linear with their own trainable layers and eta None
            or a scalar), or "auto" (structured when it applies).

    Returns:
        {"kernel": fn}, fn(params) -> (n + 4,) = [eigenvalues of H ascending (n),
        r^T H r / r^T r, ||H - H0||_F / ||H0||_F, y^T H y / (||H||_F |y|^2), ||H||_F];
        unpack the recorded (k, n + 4) array with `KernelTrace.from_metric`.
    """
    x = _check_x("x", x)
    chunk_size = _check_chunk(chunk_size)
    spec, eta_vec = _setup(model, eta, trainable)
    yv = jnp.full((x.shape[0],), jnp.nan) if y is None else jnp.asarray(y)
    if yv.shape != (x.shape[0],):
        raise ValueError(f"y: expected shape ({x.shape[0]},) like x's rows, got {yv.shape}.")

    structured, eta_s = _choose(model, eta, trainable, method)

    def gram(params):
        if structured:
            return structured_kernel(params, x, eta=eta_s), params(x)
        theta, batch, single = _flat_apply(params, spec)
        h = _example_gram(single, batch, theta, eta_vec, x, None, chunk_size)
        return h, batch(x)(theta)

    h0 = jax.jit(lambda p: gram(p)[0])(model)
    h0_norm = jnp.linalg.norm(h0)

    def kernel(params):
        h, f = gram(params)
        r = f - yv
        ev = jnp.linalg.eigvalsh(h)
        stats = jnp.stack(
            [
                (r @ h @ r) / (r @ r),
                jnp.linalg.norm(h - h0) / h0_norm,
                kernel_alignment(h, yv),
                jnp.linalg.norm(h),
            ]
        )
        return jnp.concatenate([ev, stats])

    return {"kernel": kernel}
