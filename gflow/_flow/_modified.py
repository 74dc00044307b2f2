"""The modified flow of gradient descent (backward error analysis).

GD with step h on the flow  d theta/dt = f(theta) = -E g(theta),  E = diag(eta),
g = grad L, is explicit Euler: theta_{k+1} = theta_k + h f(theta_k). Its modified
equation (Hairer, Lubich & Wanner, Geometric Numerical Integration, IX.1) is

    d theta/dt = f + h f_1 + O(h^2),   f_1 = -(1/2) f' f = -(1/2) E H E g,

with H the Hessian of L. Since  E H E g = E grad((1/2) g^T E g),

    d theta/dt = -E grad( L + (h/4) sum_i eta_i (d L / d theta_i)^2 )
               = -E grad L~,   L~ = L + (h/4) |grad L|_E^2,

the gradient flow, with the same eta, of the modified loss L~. For eta = 1 this is the
implicit-regularisation flow d theta/dt = -grad(L + (h/4)|grad L|^2) of Barrett & Dherin
(2021). GD stays O(h) from the gradient flow but O(h^2) from this flow at fixed times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree

from ._flatten import NO_ARGS, as_filter_spec, flatten_problem
from ._settings import check_positive
from ._simulate import simulate
from ._solution import Solution

PyTree = Any


def modified_loss(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    h: float,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
) -> Callable[[PyTree], jax.Array]:
    """The modified loss  L~(p) = L(p) + (h/4) sum_i eta_i (dL/dtheta_i(p))^2.

    Arguments:
        loss_fn: params -> scalar loss L.
        params: parameters with the structure the returned function takes (used for the
            trainable/frozen split and the per-entry eta).
        h: the GD step in flow time (learning rate = h * eta).
        eta, trainable: as in `simulate`; the sum runs over trainable entries only.

    Returns:
        params -> L~(params), whose gradient flow with time scale eta is GD's modified
        equation to first order in h.
    """
    check_positive("h", h)
    h = float(h)
    spec = as_filter_spec(params, trainable)
    eta_vec = flatten_problem(loss_fn, params, eta=eta, trainable=spec).eta

    def loss_tilde(p: PyTree) -> jax.Array:
        dyn, frozen = eqx.partition(p, spec)
        theta, unravel = ravel_pytree(dyn)
        g = jax.grad(lambda th: loss_fn(eqx.combine(unravel(th), frozen)))(theta)
        return loss_fn(p) + 0.25 * h * jnp.sum(eta_vec * g**2)

    return loss_tilde


@dataclasses.dataclass(frozen=True)
class _WithArgs:
    """fn(p) or fn(p, args) called as (p, a) with a = {"args", "h", "eta"}: the base loss
    and the user's metrics inside the cached modified-flow solve (hashable)."""

    fn: Callable
    with_args: bool

    def __call__(self, p: PyTree, a: dict) -> jax.Array:
        return self.fn(p, a["args"]) if self.with_args else self.fn(p)


@dataclasses.dataclass(frozen=True)
class _ModifiedLoss:
    """(p, a) -> L(p) + (a["h"]/4) sum_i a["eta"]_i (dL/dtheta_i)^2: the modified loss with
    h and eta as data, so a new h or eta reuses the compiled solve."""

    base: _WithArgs
    spec_leaves: tuple
    spec_def: Any

    def __call__(self, p: PyTree, a: dict) -> jax.Array:
        spec = jtu.tree_unflatten(self.spec_def, self.spec_leaves)
        dyn, frozen = eqx.partition(p, spec)
        theta, unravel = ravel_pytree(dyn)
        g = jax.grad(lambda th: self.base(eqx.combine(unravel(th), frozen), a))(theta)
        return self.base(p, a) + 0.25 * a["h"] * jnp.sum(a["eta"] * g**2)


def simulate_modified(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    t1: float,
    h: float,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    args: Any = NO_ARGS,
    **kwargs: Any,
) -> Solution:
    """Simulate GD's modified flow  d theta/dt = -E grad(L + (h/4)|grad L|_E^2).

    Arguments:
        loss_fn, params, t1, eta, trainable: as in `simulate`.
        h: the GD step it models (`gradient_descent(..., dt=h)`).
        metrics: extra metrics; `train_loss` (the unmodified L) is always recorded.
        args: data for `loss_fn(params, args)` (and the metrics), as in `simulate`; h,
            eta and args are all program arguments, so new values reuse the compiled solve.
        kwargs: passed to `simulate` (ts, solver, rtol, atol, save_params, ...).

    Returns:
        A `Solution` whose `loss` is the modified loss L~ and whose
        `metrics["train_loss"]` is L at the save times. Each step costs Hessian-vector
        products (forward-over-reverse), about 2-3 gradient evaluations per field call.
    """
    check_positive("h", h)
    with_args = args is not NO_ARGS
    spec = as_filter_spec(params, trainable)
    eta_vec = flatten_problem(
        loss_fn, params, eta=eta, trainable=spec, **({"args": args} if with_args else {})
    ).eta
    spec_leaves, spec_def = jtu.tree_flatten(spec)
    loss_tilde = _ModifiedLoss(_WithArgs(loss_fn, with_args), tuple(spec_leaves), spec_def)
    all_metrics = {
        name: _WithArgs(fn, with_args)
        for name, fn in {"train_loss": loss_fn, **dict(metrics or {})}.items()
    }
    data = {"args": args if with_args else None, "h": jnp.asarray(float(h)), "eta": eta_vec}
    sol = simulate(
        loss_tilde,
        params,
        t1,
        eta=eta,
        trainable=trainable,
        metrics=all_metrics,
        args=data,
        **kwargs,
    )
    sol.settings["method"] = "modified_flow"
    sol.settings["h"] = float(h)
    return sol
