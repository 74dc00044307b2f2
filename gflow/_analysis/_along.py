"""Analyses evaluated after the fact along a saved trajectory (`Solution.params`, from
`simulate(..., save_params=True)`): the tangent kernel's metrics at each saved time.
(`lambda_max_along` in `_hessian.py` takes the same trajectories.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._kernel import KernelTrace, kernel_metrics

PyTree = Any


def params_at(params_traj: PyTree, i: int) -> PyTree:
    """Row i of a parameter pytree with a leading time axis (`Solution.params`); non-array
    leaves (an equinox Module's functions) are kept as they are."""
    return jax.tree_util.tree_map(lambda v: v[i] if eqx.is_array(v) else v, params_traj)


def trajectory_length(params_traj: Any, name: str = "params") -> int:
    """k, the common leading length of the array leaves of a saved trajectory."""
    if hasattr(params_traj, "params") and hasattr(params_traj, "ts"):  # a Solution
        raise ValueError(
            f"{name}: pass the Solution's saved parameters, sol.params (simulate with "
            "save_params=True), not the Solution itself."
        )
    if params_traj is None:
        raise ValueError(
            f"{name}: None; the Solution kept no parameters. Simulate with save_params=True."
        )
    leaves = [v for v in jax.tree_util.tree_leaves(params_traj) if eqx.is_array(v)]
    sizes = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in leaves}
    if not leaves or len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"{name}: expected a parameter pytree with a leading time axis on every array "
            f"leaf (Solution.params), got leading sizes {sorted(sizes)}."
        )
    return sizes.pop()


def kernel_along(
    params_traj: PyTree,
    x: Any,
    y: Any = None,
    *,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    eta: Any = None,
    trainable: Any = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> KernelTrace:
    """The kernel metrics of `kernel_metrics` evaluated after the fact along a saved
    trajectory, e.g. `kernel_along(sol.params, x, y)` for `simulate(..., save_params=True)`.

    Arguments:
        params_traj: parameters with a leading time axis of length k on every array leaf.
        x, y, apply_fn, eta, trainable, chunk_size, method: as in `kernel_metrics`; the
            kernel change is measured from the first row (H(t_0)).

    Returns:
        A `KernelTrace` with k rows (the same numbers `kernel_metrics` records during the
        solve at those times).
    """
    k = trajectory_length(params_traj, "params_traj")
    first = params_at(params_traj, 0)
    fn = kernel_metrics(
        first,
        x,
        y,
        apply_fn=apply_fn,
        eta=eta,
        trainable=trainable,
        chunk_size=chunk_size,
        method=method,
    )["kernel"]
    fn_jit = eqx.filter_jit(fn)
    return KernelTrace.from_metric(
        np.stack([np.asarray(fn_jit(params_at(params_traj, i))) for i in range(k)])
    )
