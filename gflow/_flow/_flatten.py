"""Flattening a parameter pytree into the state vector theta of the flow.

The trainable leaves are partitioned out with equinox, raveled with
`jax.flatten_util.ravel_pytree` into one float vector, and the frozen part is closed
over. The flow's vector field on theta is ``-eta * grad L(theta)`` where ``eta`` is a
vector of the same length (one scalar per leaf, broadcast over the leaf's entries).

`state="tree"` keeps the same problem but integrates the trainable pytree itself (eta one
scalar per leaf): no raveled copy of the parameters, no per-entry eta vector and no
slice/concatenate copies in every gradient evaluation. That is 3 to 4 state vectors less
memory, which matters only for very wide networks (docs/scaling.md). Results (saved
parameters, the final theta) are reported flat either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


def as_filter_spec(params: PyTree, trainable: Any) -> PyTree:
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


def _identity(x: Any) -> Any:
    return x


class Unravel(eqx.Module):
    """flat (P,) vector -> the pytree it was raveled from: `ravel_pytree`'s unravel as a
    hashable object (its structure, shapes and dtypes are static fields), so that two
    problems of the same structure share one compiled program."""

    treedef: Any = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    dtypes: tuple = eqx.field(static=True)

    @classmethod
    def of(cls, tree: PyTree) -> Unravel:
        leaves, treedef = jtu.tree_flatten(tree)
        return cls(
            treedef,
            tuple(tuple(np.shape(leaf)) for leaf in leaves),
            tuple(np.dtype(jnp.result_type(leaf)).str for leaf in leaves),
        )

    def __call__(self, flat: jax.Array) -> PyTree:
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        cuts = np.cumsum(sizes)[:-1].tolist()
        xp = np if isinstance(flat, np.ndarray) else jnp  # a result on the host: no compile
        parts = xp.split(flat, cuts) if cuts else [flat]
        leaves = [
            part.reshape(shape).astype(dt)
            for part, shape, dt in zip(parts, self.shapes, self.dtypes, strict=True)
        ]
        return jtu.tree_unflatten(self.treedef, leaves)


class StaticPart:
    """The non-array leaves of a pytree (functions, Python scalars, strings) and its
    structure, held as one hashable value so that a `FlatProblem` carrying it is a valid
    jit argument (it becomes part of the tree structure, as in `eqx.filter_jit`).

    Equal (and equally hashed) when the structure and the leaves are equal; leaves that
    cannot be hashed compare by identity.
    """

    __slots__ = ("treedef", "leaves", "_key")

    def __init__(self, tree: PyTree):
        leaves, self.treedef = jtu.tree_flatten(tree)
        self.leaves = tuple(leaves)
        try:
            hash(self.leaves)
            self._key = (self.treedef, self.leaves)
        except TypeError:
            self._key = (self.treedef, tuple(id(leaf) for leaf in self.leaves))

    def tree(self) -> PyTree:
        return jtu.tree_unflatten(self.treedef, self.leaves)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticPart) and self._key == other._key


def split_frozen(frozen: PyTree) -> tuple[PyTree, StaticPart | None]:
    """(array leaves, `StaticPart` of the rest or None when every leaf is an array)."""
    arrays, rest = eqx.partition(frozen, eqx.is_array)
    if not jtu.tree_leaves(rest):
        return arrays, None
    return arrays, StaticPart(rest)


class FlatProblem(eqx.Module):
    """A loss on a parameter pytree, re-expressed on the flat trainable vector theta.

    Fields:
        theta0: (P,) initial state vector (float64 when x64 is enabled); with
            `tree=True` the trainable pytree itself (frozen leaves None).
        eta: (P,) time scale per entry of theta; with `tree=True` one 0-d array per
            trainable leaf.
        frozen: the non-trainable array leaves of the parameters (closed over).
        static: the non-array leaves (an equinox Module's functions, Python scalars) as a
            hashable `StaticPart`, or None; never traced.
        unravel: state -> trainable part of the parameter pytree (identity for a tree).
        loss_fn: the user's loss on the full parameter pytree: `loss_fn(params)`, or
            `loss_fn(params, args)` when `with_args`.
        args: data passed to the loss (and metrics) as their second argument; array
            leaves are arguments of the compiled program, so new data of the same shapes
            does not recompile.
        with_args: whether the loss takes `args`.
        from_flat: flat (P,) vector -> state (identity for a flat state).
        tree: whether the state is the pytree (`state="tree"`) rather than flat.
        residual_fn: optional params -> (n,) residuals r with loss = (1/2n)|r|^2, for
            solvers that use the least-squares structure (`solver="rosw"`); None if not
            given.
    """

    theta0: Any
    eta: Any
    frozen: PyTree
    unravel: Callable = eqx.field(static=True)
    loss_fn: Callable = eqx.field(static=True)
    from_flat: Callable = eqx.field(static=True, default=_identity)
    tree: bool = eqx.field(static=True, default=False)
    args: Any = None
    with_args: bool = eqx.field(static=True, default=False)
    residual_fn: Callable | None = eqx.field(static=True, default=None)
    static: StaticPart | None = eqx.field(static=True, default=None)

    def params(self, theta: Any) -> PyTree:
        """The full parameter pytree for state `theta`."""
        if self.static is None:
            return eqx.combine(self.unravel(theta), self.frozen)
        return eqx.combine(self.unravel(theta), self.frozen, self.static.tree())

    def call(self, fn: Callable, params: PyTree) -> Any:
        """`fn(params, args)` when the problem has data args, else `fn(params)`: how the
        loss and every metric are called."""
        return fn(params, self.args) if self.with_args else fn(params)

    def loss(self, theta: Any) -> jax.Array:
        return self.call(self.loss_fn, self.params(theta))

    def raw_residual(self, theta: Any) -> jax.Array:
        """What `residual_fn` returns at theta: (n,) or (n, k, ...) residuals."""
        return self.call(self.residual_fn, self.params(theta))

    def residual(self, theta: Any) -> jax.Array:
        """The residuals r(theta) of a least-squares loss as one vector (needs
        `residual_fn`; multi-output residuals (n, k, ...) are flattened to n k ... entries,
        so loss = 0.5 * mean(r**2) over every entry)."""
        return jnp.reshape(self.raw_residual(theta), (-1,))

    def grad(self, theta: Any) -> Any:
        return jax.grad(self.loss)(theta)

    def vector_field(self, theta: Any) -> Any:
        """The gradient-flow field  -eta * grad L(theta)."""
        if self.tree:
            return jtu.tree_map(lambda e, g: -e * g, self.eta, self.grad(theta))
        return -self.eta * self.grad(theta)

    # State-layout helpers (flat vector or pytree), used by the solve and its results.
    @property
    def n_params(self) -> int:
        return int(sum(np.size(leaf) for leaf in jtu.tree_leaves(self.theta0)))

    @property
    def dtype(self) -> np.dtype:
        return jtu.tree_leaves(self.theta0)[0].dtype

    def ravel(self, theta: Any) -> jax.Array:
        """The state as one flat (P,) vector (a copy for a tree state)."""
        if not self.tree:
            return theta
        leaves = jtu.tree_leaves(theta)
        if all(isinstance(leaf, np.ndarray) for leaf in leaves):  # on the host: numpy
            return np.concatenate([np.ravel(leaf) for leaf in leaves])
        return ravel_pytree(theta)[0]

    def to_params(self, flat: Any) -> PyTree:
        """The full parameter pytree for a flat (P,) vector."""
        return self.params(self.from_flat(flat))


def device_array(x: Any) -> jax.Array:
    """`x` as a `jax.Array`: unchanged when it is one, host data (numpy arrays, lists,
    scalars) copied with `jax.device_put`, with the dtype `jnp.asarray` would give. Unlike
    `jnp.asarray` of host data, which JAX runs as a small compiled program per shape and
    dtype (10-20 ms each the first time in a process), this compiles nothing."""
    return x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x))


def tree_norm(tree: Any) -> jax.Array:
    """Euclidean norm of all entries of a pytree (a flat vector included)."""
    leaves = jtu.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.vdot(leaf, leaf).real for leaf in leaves))


def tree_all_finite(tree: Any) -> jax.Array:
    """Whether every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(tree)]))


# The set-up checks and layout run once per problem, eagerly, as one compiled program per
# structure (not one small program per leaf and operation): the finite check of a tree
# state, and the finite check with the ravel of a flat state.
_all_finite = jax.jit(tree_all_finite)
_finite_and_flat = jax.jit(lambda tree: (tree_all_finite(tree), ravel_pytree(tree)[0]))


def _eta_vector(eta: Any, spec: PyTree, params: PyTree, dtype) -> jax.Array:
    """eta as a (P,) vector, one value per entry of the flat state."""
    values = _eta_values(eta, spec, params)
    sizes = [
        int(np.size(leaf))
        for leaf, s in zip(jtu.tree_leaves(params), jtu.tree_leaves(spec), strict=True)
        if s
    ]
    # Built on the host and transferred once (no compiled program per leaf size).
    return jnp.asarray(np.repeat(np.asarray(values, dtype=np.float64), sizes), dtype=dtype)


def _eta_values(eta: Any, spec: PyTree, params: PyTree) -> list[float]:
    """One validated positive time scale per trainable leaf, in leaf order."""
    n_trainable = sum(bool(s) for s in jtu.tree_leaves(spec))
    if isinstance(eta, int | float | np.floating | np.integer) or (
        hasattr(eta, "shape") and np.ndim(eta) == 0
    ):
        value = float(eta)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"eta: must be a finite positive number, got {eta!r}.")
        return [value] * n_trainable
    # A pytree: one positive scalar per trainable leaf (frozen leaves are ignored).
    try:
        eta_tree = jtu.tree_map(lambda _, e: e, params, eta, is_leaf=lambda x: x is None)
    except ValueError:
        raise ValueError(
            "eta: expected a positive scalar or a pytree with the structure of params "
            "(one scalar per leaf; frozen leaves may hold None). Use a scalar for one "
            "time scale, or the model's .eta() for its natural per-layer time scale."
        ) from None
    values = []
    for _leaf, s, e in zip(
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
        values.append(float(e))
    return values


STATES = ("flat", "tree")


NO_ARGS = object()


def flatten_problem(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    state: str = "flat",
    args: Any = NO_ARGS,
    residual_fn: Callable[[PyTree], jax.Array] | None = None,
) -> FlatProblem:
    """Partition `params` into trainable and frozen parts and ravel the trainable part.

    Arguments:
        loss_fn: params -> scalar loss, or (params, args) -> scalar loss when `args` is
            given.
        params: any pytree of arrays (equinox Modules included, also ones holding
            functions or other non-array fields: those are kept static, never traced).
        eta: positive scalar, or a pytree like `params` with one scalar per leaf.
        trainable: None (all inexact arrays), a callable leaf filter, or a pytree of bools.
        state: "flat" (theta is one raveled vector) or "tree" (the trainable pytree is
            integrated as it is, with eta per leaf: less memory, same flow).
        args: data for `loss_fn(params, args)` (diffrax's `args` convention); omit it
            for a loss of the params alone.
        residual_fn: optional residuals r with loss = (1/2n)|r|^2: params -> (n,), or
            (params, args) -> (n,) with `args`; multi-output (n, k, ...) residuals are
            flattened (n is then the number of entries); checked by tracing (a real
            array), used by the Rosenbrock-W solver.

    Returns:
        A `FlatProblem` whose `theta0` is the raveled trainable part (or, for a tree
        state, the trainable part itself).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: must be callable params -> scalar, got {type(loss_fn)}.")
    if state not in STATES:
        raise ValueError(
            f"state: must be one of {list(STATES)}, got {state!r}; 'tree' saves memory on "
            "very wide networks, 'flat' is the default."
        )
    spec = as_filter_spec(params, trainable)
    dyn, frozen = eqx.partition(params, spec)
    leaves = jtu.tree_leaves(dyn)
    if not leaves or sum(int(np.size(leaf)) for leaf in leaves) == 0:
        raise ValueError(
            "trainable: no trainable leaves; at least one floating-point array must move. "
            "Check the model's freeze options or the trainable filter."
        )
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    if not all(jnp.issubdtype(dt, jnp.floating) for dt in dtypes):
        raise ValueError(f"params: trainable leaves must be floating point, got {dtypes}.")
    if state == "tree" and len(dtypes) > 1:
        raise ValueError(
            f"state: 'tree' needs all trainable leaves in one dtype, got "
            f"{sorted(map(str, dtypes))}; cast the parameters or use state='flat'."
        )
    finite, flat0 = (_all_finite(leaves), None) if state == "tree" else _finite_and_flat(dyn)
    if not bool(finite):
        raise ValueError(
            "params: the initial trainable parameters contain NaN or inf; "
            "re-initialize the model (check the init scale and the key)."
        )
    if state == "tree":
        dtype = leaves[0].dtype
        values = _eta_values(eta, spec, params)
        eta_state = jtu.tree_unflatten(
            jtu.tree_structure(dyn), [jnp.asarray(v, dtype=dtype) for v in values]
        )
        theta0 = jtu.tree_map(jnp.asarray, dyn)
        from_flat = Unravel.of(dyn)
        unravel = _identity
    else:
        theta0, unravel = flat0, Unravel.of(dyn)
        eta_state = _eta_vector(eta, spec, params, theta0.dtype)
        from_flat = _identity
    with_args = args is not NO_ARGS
    frozen, static = split_frozen(frozen)
    problem = FlatProblem(
        theta0=theta0,
        eta=eta_state,
        frozen=frozen,
        static=static,
        unravel=unravel,
        loss_fn=loss_fn,
        from_flat=from_flat,
        tree=state == "tree",
        args=args if with_args else None,
        with_args=with_args,
        residual_fn=residual_fn,
    )
    check_loss(problem)
    if residual_fn is not None:
        check_residual(problem)
    return problem


def _trace(problem: FlatProblem, method: str) -> Any:
    """The shape of `problem.<method>(theta0)` (tracing only: no compilation)."""
    dyn, static = eqx.partition(problem, eqx.is_array)
    return jax.eval_shape(lambda d: getattr(eqx.combine(d, static), method)(d.theta0), dyn)


def check_loss(problem: FlatProblem) -> None:
    """The loss must trace to a real scalar on the problem's state (shapes only: no
    compilation, no evaluation); ValueError naming loss_fn otherwise."""
    how = "(params, args)" if problem.with_args else "the params pytree"
    try:
        out = _trace(problem, "loss")
    except Exception as exc:  # noqa: BLE001 - report the user's error in one line
        raise ValueError(
            f"loss_fn: calling it on {how} failed ({type(exc).__name__}: {exc}); "
            f"it must map {how} to a scalar."
        ) from None
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"loss_fn: must return a real scalar, got {getattr(out, 'shape', out)} "
            f"{getattr(out, 'dtype', '')}; reduce it, e.g. with jnp.mean or jnp.sum."
        )


def check_residual(problem: FlatProblem) -> None:
    """residual_fn must map the params (and args) to a real array of residuals, (n,) or
    (n, k, ...), with at least one entry (checked by tracing only); ValueError naming
    residual_fn otherwise."""
    fn = problem.residual_fn
    if not callable(fn):
        raise ValueError(f"residual_fn: must be callable params -> (n,) residuals, got {type(fn)}.")
    how = "(params, args)" if problem.with_args else "the params pytree"
    try:
        out = _trace(problem, "raw_residual")
    except Exception as exc:  # noqa: BLE001 - report the user's error in one line
        raise ValueError(
            f"residual_fn: calling it on {how} failed ({type(exc).__name__}: {exc}); it "
            f"must map {how} to the (n,) residuals f(x_k) - y_k."
        ) from None
    shape = getattr(out, "shape", None)
    if (
        shape is None
        or len(shape) < 1
        or math.prod(shape) < 1
        or not jnp.issubdtype(out.dtype, jnp.floating)
    ):
        raise ValueError(
            f"residual_fn: must return a real array of residuals, (n,) or (n, k, ...) with "
            f"at least one entry, got {shape} {getattr(out, 'dtype', '')}; return the "
            f"residuals f(x_k) - y_k themselves, not a reduction of them."
        )


def check_residual_matches_loss(r: np.ndarray, loss: float) -> None:
    """The least-squares solvers need loss = (1/2n)|r|^2 (n: the number of residual
    entries); checked on the values at theta0 (`r` flattened). ValueError naming
    residual_fn otherwise, with the factor between the two."""
    ls = 0.5 * float(np.mean(np.square(r)))
    if not abs(ls - loss) <= 1e-8 * max(abs(loss), 1e-300) + 1e-300:
        ratio = f" ({loss / ls:.6g} times it)" if ls > 0 else ""
        raise ValueError(
            f"residual_fn: (1/2n)|r|^2 = {ls:.6g} at the initial parameters (n = {r.size} "
            f"residual entries) but the loss is {loss:.6g}{ratio}; residual_fn must give r "
            f"with loss_fn = 0.5 * mean(r**2) over every entry (a loss that sums k outputs "
            f"per point, 0.5 * mean(sum(r**2, axis=1)), needs r * sqrt(k))."
        )
