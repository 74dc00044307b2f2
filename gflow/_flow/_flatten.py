"""Flattening a parameter pytree into the state vector theta of the flow.

The trainable leaves are partitioned out with equinox, raveled with
`jax.flatten_util.ravel_pytree` into one float vector, and the frozen part is closed
over. The flow's vector field on theta is ``-eta * grad L(theta)`` where ``eta`` is a
vector of the same length (one scalar per leaf, broadcast over the leaf's entries).
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

PyTree = Any


def _as_filter_spec(params: PyTree, trainable: Any) -> PyTree:
    """Turn `trainable` (None, a callable leaf filter, or a pytree of bools) into a
    pytree of bools with the structure of `params`."""
    if trainable is None:
        trainable = eqx.is_inexact_array
    if callable(trainable) and not isinstance(trainable, eqx.Module):
        return jtu.tree_map(lambda leaf: bool(trainable(leaf)), params)
    try:
        spec = jtu.tree_map(lambda _, s: s, params, trainable)
    except ValueError as exc:
        raise ValueError(
            "trainable: expected None, a callable filter (leaf -> bool), or a pytree of bools "
            f"with the same structure as params; the structures differ ({exc}). "
            "Build it with jax.tree_util.tree_map(lambda _: True, params) and edit it."
        ) from None
    for leaf, s in zip(jtu.tree_leaves(params), jtu.tree_leaves(spec), strict=True):
        if not isinstance(s, bool | np.bool_):
            raise ValueError(f"trainable: leaves must be Python bools, got {type(s).__name__}.")
        if s and not eqx.is_inexact_array(leaf):
            raise ValueError(
                "trainable: a leaf marked trainable is not a floating-point array "
                f"(got {type(leaf).__name__}); only inexact arrays can move under the flow."
            )
    return spec


class FlatProblem(eqx.Module):
    """A loss on a parameter pytree, re-expressed on the flat trainable vector theta.

    Fields:
        theta0: (P,) initial state vector (float64 when x64 is enabled).
        eta: (P,) time scale per entry of theta.
        frozen: the non-trainable part of the parameters (closed over).
        unravel: theta (P,) -> trainable part of the parameter pytree.
        loss_fn: the user's loss on the full parameter pytree.
    """

    theta0: jax.Array
    eta: jax.Array
    frozen: PyTree
    unravel: Callable = eqx.field(static=True)
    loss_fn: Callable = eqx.field(static=True)

    def params(self, theta: jax.Array) -> PyTree:
        """The full parameter pytree for state `theta`."""
        return eqx.combine(self.unravel(theta), self.frozen)

    def loss(self, theta: jax.Array) -> jax.Array:
        return self.loss_fn(self.params(theta))

    def grad(self, theta: jax.Array) -> jax.Array:
        return jax.grad(self.loss)(theta)

    def vector_field(self, theta: jax.Array) -> jax.Array:
        """The gradient-flow field  -eta * grad L(theta)."""
        return -self.eta * self.grad(theta)


def _eta_vector(eta: Any, spec: PyTree, params: PyTree, dyn: PyTree, dtype) -> jax.Array:
    if isinstance(eta, int | float | np.floating | np.integer) or (
        hasattr(eta, "shape") and np.ndim(eta) == 0
    ):
        value = float(eta)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"eta: must be a finite positive number, got {eta!r}.")
        theta, _ = ravel_pytree(dyn)
        return jnp.full(theta.shape, value, dtype=dtype)
    # A pytree: one positive scalar per trainable leaf (frozen leaves are ignored).
    try:
        eta_tree = jtu.tree_map(lambda _, e: e, params, eta, is_leaf=lambda x: x is None)
    except ValueError:
        raise ValueError(
            "eta: expected a positive scalar or a pytree with the structure of params "
            "(one scalar per leaf; frozen leaves may hold None). Use a scalar for one "
            "time scale, or the model's .eta() for its natural per-layer time scale."
        ) from None
    pieces = []
    for leaf, s, e in zip(
        jtu.tree_leaves(params),
        jtu.tree_leaves(spec),
        jtu.tree_leaves(eta_tree, is_leaf=lambda x: x is None),
        strict=True,
    ):
        if not s:
            continue
        if e is None or np.ndim(e) != 0 or not np.isfinite(float(e)) or float(e) <= 0:
            raise ValueError(
                f"eta: each trainable leaf needs a finite positive scalar time scale, got {e!r}."
            )
        pieces.append(jnp.full((int(np.size(leaf)),), float(e), dtype=dtype))
    if not pieces:
        return jnp.zeros((0,), dtype=dtype)
    return jnp.concatenate(pieces)


def flatten_problem(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
) -> FlatProblem:
    """Partition `params` into trainable and frozen parts and ravel the trainable part.

    Arguments:
        loss_fn: params -> scalar loss.
        params: any pytree of arrays (equinox Modules included).
        eta: positive scalar, or a pytree like `params` with one scalar per leaf.
        trainable: None (all inexact arrays), a callable leaf filter, or a pytree of bools.

    Returns:
        A `FlatProblem` whose `theta0` is the raveled trainable part.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: must be callable params -> scalar, got {type(loss_fn)}.")
    spec = _as_filter_spec(params, trainable)
    dyn, frozen = eqx.partition(params, spec)
    theta0, unravel = ravel_pytree(dyn)
    if theta0.size == 0:
        raise ValueError(
            "trainable: no trainable leaves; at least one floating-point array must move. "
            "Check the model's freeze options or the trainable filter."
        )
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        raise ValueError(f"params: trainable leaves must be floating point, got {theta0.dtype}.")
    if not bool(jnp.all(jnp.isfinite(theta0))):
        raise ValueError(
            "params: the initial trainable parameters contain NaN or inf; "
            "re-initialize the model (check the init scale and the key)."
        )
    eta_vec = _eta_vector(eta, spec, params, dyn, theta0.dtype)
    try:  # trace only (no compilation): the loss must be a real scalar
        out = jax.eval_shape(lambda th: loss_fn(eqx.combine(unravel(th), frozen)), theta0)
    except Exception as exc:  # noqa: BLE001 - report the user's error in one line
        raise ValueError(
            f"loss_fn: calling it on params failed ({type(exc).__name__}: {exc}); "
            "it must map the params pytree to a scalar."
        ) from None
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"loss_fn: must return a real scalar, got {getattr(out, 'shape', out)} "
            f"{getattr(out, 'dtype', '')}; reduce it, e.g. with jnp.mean or jnp.sum."
        )
    return FlatProblem(theta0=theta0, eta=eta_vec, frozen=frozen, unravel=unravel, loss_fn=loss_fn)
