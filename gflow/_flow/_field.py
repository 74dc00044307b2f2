"""The pieces of one diffrax solve of the gradient flow that every integration path
shares (one solve, segmented and checkpointed solves, ensembles): the vector field as a
diffrax term, the save-time function, and the stopping event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp

from . import _implicit

PyTree = Any


def make_save_fn(
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None, save_params: bool
) -> Callable:
    """The diffrax save-time function: loss, |grad L|, the user's metrics on the params,
    and theta itself only when `save_params`."""
    metrics = dict(metrics or {})

    def save_fn(t, theta, prob):
        loss, grad = jax.value_and_grad(prob.loss)(theta)
        out = {"loss": loss, "grad_norm": jnp.linalg.norm(grad)}
        if metrics:
            params = prob.params(theta)
            out["metrics"] = {name: fn(params) for name, fn in metrics.items()}
        if save_params:
            out["theta"] = theta
        return out

    return save_fn


def make_event(loss_target: float | None) -> diffrax.Event:
    """Stop on a non-finite state ("diverged") and, when given, at the loss target."""

    def diverged(t, y, args, **kwargs):
        return jnp.logical_not(jnp.all(jnp.isfinite(y)))

    conds = {"diverged": diverged}
    if loss_target is not None:
        target = float(loss_target)

        def reached(t, y, args, **kwargs):
            return args.loss(y) <= target

        conds["loss_target"] = reached
    return diffrax.Event(conds)


def make_term(count_evals: bool = False) -> diffrax.ODETerm:
    """The gradient-flow field as a diffrax term (args is the FlatProblem); with
    `count_evals` each evaluation is counted by a host callback."""
    if count_evals:
        return diffrax.ODETerm(lambda t, y, args: _implicit.counted_field(args.vector_field)(y))
    return diffrax.ODETerm(lambda t, y, args: args.vector_field(y))
