"""The top of the loss Hessian's spectrum from Hessian-vector products (Lanczos).

Gradient descent theta_{k+1} = theta_k - h E grad L (E = diag(eta), learning rate h * eta)
linearised at theta is  delta_{k+1} = (I - h E H) delta_k: it is stable while
h * lambda_max(E H) < 2, the edge-of-stability threshold. E H is similar to the symmetric
E^{1/2} H E^{1/2}, so its eigenvalues are real and Lanczos on
v -> E^{1/2} H (E^{1/2} v) finds them. H is never formed: each Lanczos step is one
Hessian-vector product by forward-over-reverse differentiation, so memory is
O(num_iters * P), not O(P^2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree

from .._flow._flatten import FlatProblem, flatten_problem
from .._flow._problem import Problem
from ._along import trajectory_length

PyTree = Any


def hvp(grad_fn: Callable[[jax.Array], jax.Array], theta: jax.Array, v: jax.Array) -> jax.Array:
    """H(theta) v = d/ds grad L(theta + s v) at s = 0 (forward-over-reverse)."""
    return jax.jvp(grad_fn, (theta,), (v,))[1]


def lanczos_eigs(
    matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_iters: int
) -> jax.Array:
    """Ritz values (ascending) of a symmetric operator after `num_iters` Lanczos steps
    with full reorthogonalisation, started from v0. Pure and jittable.

    The extreme Ritz values converge first; with num_iters >= the dimension they are the
    exact eigenvalues (up to rounding). A breakdown (an invariant subspace found early)
    leaves zero rows, whose spurious Ritz values are 0.
    """
    n = v0.shape[0]
    m = int(num_iters)
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 10

    def body(j, carry):
        basis, alpha, beta = carry
        v = basis[j]
        w = matvec(v)
        a = jnp.vdot(v, w)
        w = w - a * v - beta[j] * basis[jnp.maximum(j - 1, 0)] * (j > 0)
        # two passes of classical Gram-Schmidt against all previous vectors (rows > j are 0)
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        ok = b > tiny * jnp.maximum(jnp.abs(a), 1.0)
        basis = basis.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0))
        return basis, alpha.at[j].set(a), beta.at[j + 1].set(jnp.where(ok, b, 0.0))

    basis = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha = jnp.zeros((m,), dtype)
    beta = jnp.zeros((m + 1,), dtype)
    basis, alpha, beta = jax.lax.fori_loop(0, m, body, (basis, alpha, beta))
    off = beta[1:m]
    tri = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.eigvalsh(tri)


def flat_top_eigs(
    problem: FlatProblem,
    theta: jax.Array,
    *,
    preconditioned: bool = True,
    num_iters: int = 30,
    key: jax.Array | None = None,
) -> jax.Array:
    """Ritz values (ascending) of E H (preconditioned) or H at `theta`. Jittable,
    vmappable over theta (e.g. the saved states of a trajectory).

    The largest is lambda_max; E = diag(problem.eta).
    """
    p = problem.theta0.shape[0]
    m = max(1, min(int(num_iters), p))
    key = jax.random.PRNGKey(0) if key is None else key
    v0 = jax.random.normal(key, (p,), theta.dtype)
    scale = jnp.sqrt(problem.eta) if preconditioned else jnp.ones_like(problem.eta)

    def matvec(v):
        return scale * hvp(problem.grad, theta, scale * v)

    return lanczos_eigs(matvec, v0, m)


def hessian_lambda_max(
    loss_fn: Callable[[PyTree], jax.Array] | Problem,
    params: PyTree = None,
    *,
    eta: Any = None,
    trainable: Any = None,
    num_iters: int = 30,
    seed: int = 0,
) -> float:
    """lambda_max of the loss Hessian, or of diag(eta) H when `eta` is given.

    Arguments:
        loss_fn: params -> scalar loss L; or a `Problem`, whose eta (lambda_max of
            diag(eta) H), trainable filter and args are used.
        params: the point (a parameter pytree); for a Problem, default its params.
        eta: None for the plain Hessian H; a scalar or per-leaf pytree (as in `simulate`)
            for lambda_max(diag(eta) H), the quantity GD's stability depends on:
            GD with step h (learning rate h * eta) is linearly stable iff
            h * lambda_max(diag(eta) H) < 2 (for the positive eigenvalues).
        trainable: which leaves count (as in `simulate`).
        num_iters: Lanczos steps (capped at P); 20-40 gives lambda_max to ~1e-8 relative
            when the top eigenvalue is separated.
        seed: seed of the random start vector.

    Returns:
        The largest Ritz value, a float.
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters: must be an integer >= 1, got {num_iters!r}.")
    if isinstance(loss_fn, Problem):
        if eta is not None or trainable is not None:
            raise ValueError(
                "eta: fixed by the problem; pass problem.replace(eta=..., trainable=...) instead."
            )
        prob = loss_fn if params is None else loss_fn.replace(params=params)
        eta = prob.eta
        problem = prob.flat()
    else:
        if params is None:
            raise ValueError("params: required (the point where the Hessian is taken).")
        problem = flatten_problem(
            loss_fn, params, eta=1.0 if eta is None else eta, trainable=trainable
        )
    eigs = jax.jit(
        lambda prob, th: flat_top_eigs(
            prob,
            th,
            preconditioned=eta is not None,
            num_iters=num_iters,
            key=jax.random.PRNGKey(seed),
        )
    )(problem, problem.theta0)
    return float(np.asarray(eigs)[-1])


def trajectory_thetas(problem: FlatProblem, params_traj: PyTree) -> jax.Array:
    """(k, P) flat trainable states of a parameter pytree with a leading time axis (e.g.
    `Solution.params`), in `problem`'s layout (its trainable filter and ravel order)."""
    trajectory_length(params_traj, "thetas")
    template = problem.params(problem.theta0)
    dyn = problem.theta0 if problem.tree else problem.unravel(problem.theta0)
    try:
        mask = jtu.tree_map(lambda d, _: d is not None, dyn, template, is_leaf=lambda v: v is None)
        return eqx.filter_vmap(lambda p: ravel_pytree(eqx.filter(p, mask))[0])(params_traj)
    except ValueError as exc:
        raise ValueError(
            "thetas: the saved parameters do not have the structure of the problem's params "
            f"({exc}); build the problem from the same model that was simulated."
        ) from None


def lambda_max_along(
    problem: FlatProblem | Problem,
    thetas: Any,
    *,
    preconditioned: bool = True,
    num_iters: int = 30,
) -> np.ndarray:
    """lambda_max(E H) (or of H) at each saved point of a trajectory.

    Arguments:
        problem: the `Problem` of the flow, or its `FlatProblem`
            (`flatten_problem(loss_fn, params, eta=...)`).
        thetas: (k, P) flat states, or a parameter pytree with a leading time axis, e.g.
            `sol.params` of `simulate(..., save_params=True)` (flattened with `problem`'s
            trainable filter).
        preconditioned, num_iters: as in `hessian_lambda_max` (E = diag(problem.eta)).

    Returns:
        (k,) array; compare with 2 / h to locate GD's edge of stability.
    """
    if isinstance(problem, Problem):
        problem = problem.flat()
    if not isinstance(thetas, np.ndarray | jax.Array):
        thetas = trajectory_thetas(problem, thetas)
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != problem.theta0.shape[0]:
        raise ValueError(
            f"thetas: expected shape (k, {problem.theta0.shape[0]}) or a parameter pytree "
            f"with a leading time axis (sol.params), got {thetas.shape}."
        )
    fn = jax.jit(
        jax.vmap(
            lambda th: flat_top_eigs(
                problem, th, preconditioned=preconditioned, num_iters=num_iters
            )[-1]
        )
    )
    return np.asarray(fn(thetas))
