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

from .._flow._flatten import as_filter_spec, device_array, flatten_problem
from .._flow._problem import Problem, model_defaults
from ._structured import has_closed_form, structured_kernel

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
    own_eta, own_trainable = model_defaults(model)
    eta = own_eta if eta is None else eta
    trainable = own_trainable if trainable is None else trainable
    prob = flatten_problem(lambda p: jnp.zeros(()), model, eta=eta, trainable=trainable)
    return as_filter_spec(model, trainable), prob.eta


def _same_tree(a: Any, b: Any) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    try:
        pairs = zip(la, lb, strict=True)
        return all(bool(np.all(np.asarray(u) == np.asarray(v))) for u, v in pairs)
    except (TypeError, ValueError):
        return all(u is v for u, v in zip(la, lb, strict=True))


def unpack_problem(model: Any, eta: Any, trainable: Any) -> tuple[Any, Any, Any]:
    """(params, eta, trainable) of a `Problem` (eta/trainable None when they are the
    model's own, so that closed forms apply), or the arguments unchanged."""
    if not isinstance(model, Problem):
        return model, eta, trainable
    for name, value in (("eta", eta), ("trainable", trainable)):
        if value is not None:
            raise ValueError(
                f"{name}: fixed by the problem; pass problem.replace({name}=...) instead."
            )
    own_eta, own_trainable = model_defaults(model.params)
    own = _same_tree(model.eta, own_eta) and _same_tree(model.trainable, own_trainable)
    return (model.params, None, None) if own else (model.params, model.eta, model.trainable)


def apply_model(apply_fn: Callable | None, params: PyTree, x: jax.Array) -> jax.Array:
    """f(params, x): `apply_fn(params, x)`, or `params(x)` for a callable model."""
    return params(x) if apply_fn is None else apply_fn(params, x)


def _flat_apply(params: PyTree, spec: PyTree, apply_fn: Callable | None = None):
    """theta, batch(x) -> (theta -> f(x)) and single(theta, x_k) -> f(x_k) (() or (k,))."""
    dyn, frozen = eqx.partition(params, spec)
    theta, unravel = ravel_pytree(dyn)

    def batch(x):
        return lambda th: apply_model(apply_fn, eqx.combine(unravel(th), frozen), x)

    def single(th, xk):
        return apply_model(apply_fn, eqx.combine(unravel(th), frozen), xk[None])[0]

    return theta, batch, single


OUTPUTS = ("full", "blocks")


def _example_gram(single, batch, theta, eta, xa, xb, chunk_size, outputs="full"):
    """K = J(xa) diag(eta) J(xb)^T with rows of J(xa) as per-example Jacobians.

    Scalar outputs: (na, nb). k outputs: (na k, nb k) with row index i k + a (example i,
    output a; the order of f(x).reshape(-1)) for outputs="full", or the k diagonal blocks
    (k, na, nb), block a = J_a(xa) diag(eta) J_a(xb)^T, for outputs="blocks".
    """
    out_shape = jax.eval_shape(single, theta, xa[0]).shape
    k_out = int(np.prod(out_shape, dtype=int))
    scalar = out_shape == ()

    def jac(xs):  # (c, k, P) per-example Jacobians
        return jax.vmap(lambda xk: jax.jacrev(lambda th: single(th, xk).reshape(-1))(theta))(xs)

    same = xb is None
    xb = xa if same else xb
    na, nb = xa.shape[0], xb.shape[0]
    n_rows = (na + (0 if same else nb)) * k_out
    if chunk_size is None and n_rows * theta.size <= _CHUNK_BUDGET:
        ja = jac(xa)
        jb = ja if same else jac(xb)
        if outputs == "blocks" and not scalar:
            k = jnp.einsum("iap,p,jap->aij", ja, eta * jnp.ones_like(theta), jb)
        else:
            k = jnp.einsum("iap,p,jbp->iajb", ja, eta * jnp.ones_like(theta), jb)
    else:
        c = default_chunk(na * k_out, theta.size) // k_out if chunk_size is None else chunk_size
        c = max(1, min(c, na))
        n_chunks = -(-na // c)
        pad = jnp.concatenate([xa, jnp.repeat(xa[:1], n_chunks * c - na, axis=0)])
        _, push_b = jax.linearize(batch(xb), theta)

        def rows(xs):  # (c, k, nb, k)
            j = jac(xs)
            return jax.vmap(jax.vmap(lambda v: push_b(eta * v).reshape(nb, k_out)))(j)

        k = jax.lax.map(rows, pad.reshape(n_chunks, c, *xa.shape[1:]))
        k = k.reshape(n_chunks * c, k_out, nb, k_out)[:na]
        if outputs == "blocks" and not scalar:
            k = jnp.einsum("iaja->aij", k)
    if scalar:
        k = k.reshape(na, nb)
    elif outputs == "full":
        k = k.reshape(na * k_out, nb * k_out)
    if not same:
        return k
    return 0.5 * (k + jnp.swapaxes(k, -1, -2))


def _choose(
    model: Any, eta: Any, trainable: Any, method: str, apply_fn: Any = None
) -> tuple[bool, float | None]:
    """(use the closed form?, its scalar eta) for method "auto" | "structured" | "jacobian"."""
    if method not in ("auto", "structured", "jacobian"):
        raise ValueError(f"method: must be 'auto', 'structured' or 'jacobian', got {method!r}.")
    scalar_eta = (
        eta is None
        or isinstance(eta, int | float | np.number)
        or (isinstance(eta, jax.Array | np.ndarray) and eta.ndim == 0)
    )
    fits = (
        has_closed_form(model)
        and getattr(model, "outputs", 1) == 1
        and trainable is None
        and scalar_eta
        and apply_fn is None
    )
    if method == "structured" and not fits:
        raise ValueError(
            "method: 'structured' needs a scalar-output TwoLayer, MultiLayer or Linear model "
            "with its own trainable layers, eta None or a scalar and no apply_fn; use "
            "method='jacobian'."
        )
    use = method == "structured" or (method == "auto" and fits)
    return use, (None if eta is None or not scalar_eta else float(eta))


def check_x(name: str, x: Any) -> jax.Array:
    x = device_array(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected inputs of shape (n, d) with n >= 1, got {x.shape}.")
    return x


def check_apply(apply_fn: Any, model: Any) -> None:
    if apply_fn is None:
        if not callable(model):
            raise ValueError(
                f"apply_fn: the params ({type(model).__name__}) are not callable; pass "
                "apply_fn(params, x) -> (n,) or (n, k) outputs (neural-tangents' convention)."
            )
    elif not callable(apply_fn):
        raise ValueError(f"apply_fn: must be callable (params, x) -> outputs, got {apply_fn!r}.")


def _out_shape(apply_fn: Callable | None, model: PyTree, x: jax.Array) -> tuple[int, ...]:
    """Shape of f(model, x), checked to be (n,) or (n, k) (traced only, no compilation)."""
    n = x.shape[0]
    try:
        shape = eqx.filter_eval_shape(lambda p: apply_model(apply_fn, p, x), model).shape
    except Exception as exc:  # noqa: BLE001 - report the user's error in one line
        how = "params(x)" if apply_fn is None else "apply_fn(params, x)"
        raise ValueError(
            f"apply_fn: {how} failed on inputs of shape {x.shape} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); it must map a batch (n, d) to (n,) or (n, k). For a "
            "single-example equinox Module pass apply_fn=lambda m, x: jax.vmap(m)(x)."
        ) from None
    if shape[:1] != (n,) or len(shape) > 2:
        raise ValueError(
            f"apply_fn: expected outputs of shape ({n},) or ({n}, k) on x, got {shape}; "
            "a single-example model needs apply_fn=lambda m, x: jax.vmap(m)(x)."
        )
    return shape


def _check_outputs(outputs: Any) -> str:
    if outputs not in OUTPUTS:
        raise ValueError(
            f"outputs: must be 'full' (one (n k, n k) matrix) or 'blocks' (k blocks (n, n), "
            f"one per output), got {outputs!r}."
        )
    return outputs


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise ValueError(f"chunk_size: must be a positive integer or None, got {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}.")
    return int(chunk_size)


def tangent_kernel(
    model: PyTree | Problem,
    x: Any,
    x2: Any = None,
    *,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
    outputs: str = "full",
) -> jax.Array:
    """The eta-weighted tangent kernel H = J(x) diag(eta) J(x2)^T of the trainable parameters.

    Arguments:
        model: the parameters: a gflow model, any callable pytree params(x) -> outputs, or
            any pytree with `apply_fn`; or a `Problem` (its params, eta and trainable).
        x: (n, d) inputs; x2: (n2, d) second inputs (default x: the Gram matrix H).
        apply_fn: apply_fn(params, x) -> (n,) or (n, k) outputs (neural-tangents'
            convention); default params(x).
        eta, trainable: as in `simulate`; default the model's `eta()` and `trainable()`.
        chunk_size: rows of J built at once (None: all n when n P fits in 2^25 numbers,
            else as many as fit); a given value forces the chunked jvp path.
        method: "jacobian" (per-example Jacobians and jvp, any model), "structured"
            (`structured_kernel`'s closed form) or "auto" (structured when it applies:
            gflow models with their own trainable layers, eta None or a scalar, no apply_fn).
        outputs: for k > 1 outputs, "full" (one (n k, n2 k) matrix, index i k + a for
            example i and output a, the order of f(x).reshape(-1)) or "blocks" ((k, n, n2):
            block a = J_a(x) diag(eta) J_a(x2)^T, the per-output kernels).

    The jacobian path takes per-example Jacobians, so the model must act on each input
    row independently (true of gflow's models); for other maps use `jacobian_gram`.

    Returns:
        (n, n2) array for scalar outputs, H[k, l] = sum_p eta_p (d f(x_k)/d theta_p)
        (d f(x2_l)/d theta_p); (n k, n2 k) or (k, n, n2) for k outputs (see `outputs`).
    """
    model, eta, trainable = unpack_problem(model, eta, trainable)
    x = check_x("x", x)
    chunk_size = _check_chunk(chunk_size)
    outputs = _check_outputs(outputs)
    check_apply(apply_fn, model)
    xb = None if x2 is None else check_x("x2", x2)
    structured, eta_s = _choose(model, eta, trainable, method, apply_fn)
    if structured:
        return _structured_jit(model, x, xb, eta_s)
    _out_shape(apply_fn, model, x)
    spec, eta_vec = _setup(model, eta, trainable)
    return _jacobian_jit(model, spec, eta_vec, x, xb, chunk_size, apply_fn, outputs)


@eqx.filter_jit
def _structured_jit(model, x, xb, eta):
    return structured_kernel(model, x, xb, eta=eta)


@eqx.filter_jit
def _jacobian_jit(model, spec, eta_vec, x, xb, chunk_size, apply_fn, outputs):
    """Compiled once per model structure, shapes, chunk size, apply_fn and outputs (bools,
    None, ints, strings and functions are static under filter_jit)."""
    theta, batch, single = _flat_apply(model, spec, apply_fn)
    return _example_gram(single, batch, theta, eta_vec, x, xb, chunk_size, outputs)


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
    model: PyTree | Problem,
    x: Any,
    y: Any = None,
    *,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> dict[str, Callable[[PyTree], jax.Array]]:
    """Save-time metrics recording the tangent kernel during `simulate` (no parameters kept).

    Arguments:
        model: the initial parameters (H(0) for the kernel change is computed from them),
            or a `Problem` (its params, eta and trainable).
        x: (n, d) training inputs; y: (n,) targets, or (n, k) for k outputs (for the
            Rayleigh rate and alignment).
        apply_fn: apply_fn(params, x) -> (n,) or (n, k) (default params(x)).
        eta, trainable, chunk_size: as in `tangent_kernel`; pass the ones the flow uses.
        method: "jacobian" (J diag(eta) J^T by vjp/jvp, any model), "structured" (the
            closed form of `structured_kernel`, O(n^2 (m + d)) per save time, for
            TwoLayer / MultiLayer / Linear with their own trainable layers and eta None
            or a scalar), or "auto" (structured when it applies).

    Returns:
        {"kernel": fn}, fn(params) -> (N + 4,) with N = n (scalar outputs) or n k (the
        full multi-output kernel, `outputs="full"`) = [eigenvalues of H ascending (N),
        r^T H r / r^T r, ||H - H0||_F / ||H0||_F, y^T H y / (||H||_F |y|^2), ||H||_F]
        with r = vec(f - y), y = vec(y); unpack the recorded (k, N + 4) array with
        `KernelTrace.from_metric`.
    """
    model, eta, trainable = unpack_problem(model, eta, trainable)
    x = check_x("x", x)
    chunk_size = _check_chunk(chunk_size)
    check_apply(apply_fn, model)
    spec, eta_vec = _setup(model, eta, trainable)
    structured, eta_s = _choose(model, eta, trainable, method, apply_fn)
    f_shape = _out_shape(apply_fn, model, x)
    yv = jnp.full(f_shape, jnp.nan) if y is None else device_array(y)
    if yv.shape != f_shape:
        raise ValueError(f"y: expected shape {f_shape} like the model's outputs, got {yv.shape}.")
    yv = yv.reshape(-1)

    metric = _KernelMetric(
        x=x,
        yv=yv,
        h0=np.zeros(()),  # placeholders, replaced below
        h0_norm=np.ones(()),
        eta_vec=None if structured else eta_vec,
        eta_s=eta_s,
        structured=structured,
        spec=spec,
        apply_fn=apply_fn,
        chunk_size=chunk_size,
    )
    if structured:  # the program `tangent_kernel` uses, compiled once for both
        h0 = _structured_jit(model, x, None, eta_s)
    else:
        h0 = _gram_jit(metric, model)
    # the n x n norm on the host: no program to compile for it
    h0_norm = device_array(np.linalg.norm(np.asarray(h0)))
    return {"kernel": eqx.tree_at(lambda k: (k.h0, k.h0_norm), metric, (h0, h0_norm))}


class _KernelMetric(eqx.Module):
    """The save-time kernel metric of `kernel_metrics`. The data, targets and H(0) are
    program arguments, so a new dataset or initialization of the same shapes reuses the
    compiled solve; eta (scalar, structured case), the filter spec, apply_fn and the chunk
    size are part of its key (with eta_vec, the per-parameter eta, as an argument)."""

    x: jax.Array
    yv: jax.Array
    h0: jax.Array
    h0_norm: jax.Array
    eta_vec: jax.Array | None
    eta_s: Any = eqx.field(static=True)
    structured: bool = eqx.field(static=True)
    spec: Any  # a pytree of bools: part of the key through its leaves and structure
    apply_fn: Any  # a function (keyed by identity) or a Module (its arrays are arguments)
    chunk_size: Any = eqx.field(static=True)

    def gram(self, params: PyTree) -> tuple[jax.Array, jax.Array]:
        if self.structured:
            return structured_kernel(params, self.x, eta=self.eta_s), params(self.x)
        theta, batch, single = _flat_apply(params, self.spec, self.apply_fn)
        h = _example_gram(single, batch, theta, self.eta_vec, self.x, None, self.chunk_size)
        return h, batch(self.x)(theta)

    def __call__(self, params: PyTree) -> jax.Array:
        h, f = self.gram(params)
        r = f.reshape(-1) - self.yv
        ev = jnp.linalg.eigvalsh(h)
        stats = jnp.stack(
            [
                (r @ h @ r) / (r @ r),
                jnp.linalg.norm(h - self.h0) / self.h0_norm,
                kernel_alignment(h, self.yv),
                jnp.linalg.norm(h),
            ]
        )
        return jnp.concatenate([ev, stats])


@eqx.filter_jit
def _gram_jit(metric: _KernelMetric, params: PyTree) -> jax.Array:
    return metric.gram(params)[0]
