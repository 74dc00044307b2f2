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

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._flatten import as_filter_spec, flatten_problem
from ._simulate import _check_positive, simulate
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
    _check_positive("h", h)
    h = float(h)
    spec = as_filter_spec(params, trainable)
    eta_vec = flatten_problem(loss_fn, params, eta=eta, trainable=spec).eta

    def loss_tilde(p: PyTree) -> jax.Array:
        dyn, frozen = eqx.partition(p, spec)
        theta, unravel = ravel_pytree(dyn)
        g = jax.grad(lambda th: loss_fn(eqx.combine(unravel(th), frozen)))(theta)
        return loss_fn(p) + 0.25 * h * jnp.sum(eta_vec * g**2)

    return loss_tilde


def simulate_modified(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    t1: float,
    h: float,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    **kwargs: Any,
) -> Solution:
    """Simulate GD's modified flow  d theta/dt = -E grad(L + (h/4)|grad L|_E^2).

    Arguments:
        loss_fn, params, t1, eta, trainable: as in `simulate`.
        h: the GD step it models (`gradient_descent(..., dt=h)`).
        metrics: extra metrics; `train_loss` (the unmodified L) is always recorded.
        kwargs: passed to `simulate` (ts, solver, rtol, atol, save_params, ...).

    Returns:
        A `Solution` whose `loss` is the modified loss L~ and whose
        `metrics["train_loss"]` is L at the save times. Each step costs Hessian-vector
        products (forward-over-reverse), about 2-3 gradient evaluations per field call.
    """
    loss_tilde = modified_loss(loss_fn, params, h, eta=eta, trainable=trainable)
    all_metrics = {"train_loss": loss_fn, **dict(metrics or {})}
    sol = simulate(
        loss_tilde, params, t1, eta=eta, trainable=trainable, metrics=all_metrics, **kwargs
    )
    sol.settings["method"] = "modified_flow"
    sol.settings["h"] = float(h)
    return sol
