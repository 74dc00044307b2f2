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
from ._flatten import tree_all_finite, tree_norm

PyTree = Any


# The solve is never differentiated (gradients of the loss are taken inside the vector
# field, not through diffeqsolve), so the forward-only adjoint is enough. It lowers the
# step loop as a plain while loop instead of a checkpointed one: the same numbers, about
# 0.5 s less tracing on the default problem (docs/benchmarks.md, first-call latency).
FORWARD = diffrax.ForwardMode()


def make_save_fn(
    metrics: Mapping[str, Callable[..., jax.Array]] | None, save_params: bool
) -> Callable:
    """The diffrax save-time function: loss, |grad L|, the user's metrics on the params
    (`fn(params)`, or `fn(params, args)` when the problem has data args), and theta
    itself only when `save_params`."""
    metrics = dict(metrics or {})

    def save_fn(t, theta, prob):
        loss, grad = jax.value_and_grad(prob.loss)(theta)
        out = {"loss": loss, "grad_norm": tree_norm(grad)}
        if metrics:
            params = prob.params(theta)
            out["metrics"] = {name: prob.call(fn, params) for name, fn in metrics.items()}
        if save_params:
            out["theta"] = prob.ravel(theta)
        return out

    return save_fn


def make_event(loss_target: Any, *, divergence: bool = True) -> diffrax.Event | None:
    """Stop on a non-finite state ("diverged", when `divergence`) and, when given, at the
    loss target (a number or a traced scalar: a program argument, not a constant); None
    when there is nothing to watch.

    Adaptive controllers never accept a non-finite step (its error estimate is not
    finite, so the step is rejected and shrunk until max_steps or dt_min), so the
    divergence event is only needed with constant steps (GD, Euler); leaving it out of
    adaptive solves saves about a second of compilation.
    """
    conds = {}
    if divergence:

        def diverged(t, y, args, **kwargs):
            return jnp.logical_not(tree_all_finite(y))

        conds["diverged"] = diverged
    if loss_target is not None:
        target = jnp.asarray(loss_target)

        def reached(t, y, args, **kwargs):
            return args.loss(y) <= target

        conds["loss_target"] = reached
    return diffrax.Event(conds) if conds else None


def watches_divergence(controller: diffrax.AbstractStepSizeController) -> bool:
    """Whether a solve with this controller needs the divergence event."""
    return not isinstance(controller, diffrax.AbstractAdaptiveStepSizeController)


def make_term(count_evals: bool = False) -> diffrax.ODETerm:
    """The gradient-flow field as a diffrax term (args is the FlatProblem); with
    `count_evals` each evaluation is counted by a host callback."""
    if count_evals:
        return diffrax.ODETerm(lambda t, y, args: _implicit.counted_field(args.vector_field)(y))
    return diffrax.ODETerm(lambda t, y, args: args.vector_field(y))
