"""Dense output: the solver's own interpolation between its steps, kept as plain arrays.

With `simulate(..., dense=True)` the solve also records, for every accepted step, the
step's times and the coefficients its solver interpolates with (diffrax's `dense_info`:
for Tsit5 y0, y1 and the 7 stages k). They are stored in `Solution.dense` as numpy
arrays, with the interpolation class named by its import path, so the dense output
survives `Solution.save` / `load_solution` without pickle; `Solution.evaluate(t)`
rebuilds diffrax's `DenseInterpolation` from them and evaluates theta(t).

Memory: diffrax reserves the buffers for `max_steps` steps up front, so the dense output
costs (max_steps + 1) x (size of one step's dense info) bytes during the solve;
`check_dense_memory` refuses a request above `DENSE_MAX_BYTES` before compiling.
"""

from __future__ import annotations

import importlib
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

DENSE_MAX_BYTES = 4 * 2**30
_ALLOWED_MODULES = ("diffrax", "gflow")


def interpolation_name(solver: diffrax.AbstractSolver) -> str:
    """'module:qualname' of the solver's interpolation class (a classmethod such as
    `ThirdOrderHermitePolynomialInterpolation.from_k` included)."""
    cls = solver.interpolation_cls
    return f"{cls.__module__}:{cls.__qualname__}"


def interpolation_class(name: str) -> Any:
    """The interpolation class (or constructor) named by `interpolation_name`. Only
    diffrax's and gflow's own are imported: a saved file never names code to run."""
    module, _, qualname = str(name).partition(":")
    if not qualname or module.split(".")[0] not in _ALLOWED_MODULES:
        raise ValueError(
            f"dense: interpolation {name!r} is not a diffrax or gflow interpolation; the "
            "dense output can only be evaluated with the solvers' own interpolations."
        )
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check_dense_memory(
    solver: diffrax.AbstractSolver, term: Any, problem: Any, t0: float, t1: float, max_steps: int
) -> None:
    """Raise ValueError when the dense buffers (max_steps + 1 steps) exceed
    `DENSE_MAX_BYTES`. Uses shapes only (nothing is evaluated or compiled)."""
    state = eqx.filter_eval_shape(solver.init, term, t0, t1, problem.theta0, problem)
    _, _, info, _, _ = eqx.filter_eval_shape(
        solver.step, term, t0, t1, problem.theta0, problem, state, False
    )
    per_step = sum(
        int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(info)
    )
    total = (int(max_steps) + 1) * (per_step + 8)
    if total > DENSE_MAX_BYTES:
        raise ValueError(
            f"dense: the dense output reserves max_steps + 1 = {max_steps + 1} steps of "
            f"{per_step} bytes each ({total / 2**30:.3g} GiB, above the "
            f"{DENSE_MAX_BYTES / 2**30:.3g} GiB limit); lower max_steps to the steps the run "
            "needs, or save parameters at chosen times instead (ts=..., save_params=True)."
        )


def dense_from_raw(raw: dict[str, Any], solver: diffrax.AbstractSolver) -> dict[str, Any]:
    """The host dense output of one solve, trimmed to the steps taken:
    {"ts": (s + 1,) step boundaries, "infos": name -> (s, ...) coefficients,
    "interpolation": interpolation_name(solver)}."""
    size = int(raw["ts_size"])
    ts = np.asarray(raw["ts"], dtype=np.float64)[:size]
    return {
        "ts": ts,
        "infos": {k: np.asarray(v)[: size - 1] for k, v in _flatten_infos(raw["infos"]).items()},
        "interpolation": interpolation_name(solver),
    }


def _flatten_infos(infos: Any) -> dict[str, Any]:
    """{"y0": a, "fs": (b, c)} -> {"y0": a, "fs/0": b, "fs/1": c} (arrays only)."""
    out: dict[str, Any] = {}
    if not isinstance(infos, dict):
        raise ValueError("dense: the solver's dense information is not a dict of arrays.")
    for k, v in infos.items():
        if isinstance(v, tuple | list):
            for i, a in enumerate(v):
                out[f"{k}/{i}"] = a
        elif isinstance(v, np.ndarray | jax.Array):
            out[str(k)] = v
        else:
            raise ValueError(
                f"dense: the solver's dense information {k!r} is a {type(v).__name__}, not an "
                "array (a pytree state?); dense output needs state='flat'."
            )
    return out


def _unflatten_infos(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_flatten_infos`."""
    out: dict[str, Any] = {}
    groups: dict[str, dict[int, Any]] = {}
    for k, v in flat.items():
        name, sep, idx = k.partition("/")
        if sep:
            groups.setdefault(name, {})[int(idx)] = v
        else:
            out[name] = v
    for name, items in groups.items():
        out[name] = tuple(items[i] for i in range(len(items)))
    return out


def evaluate_dense(dense: dict[str, Any], t: Any, t_max: float) -> np.ndarray:
    """theta at time(s) `t` from a stored dense output.

    Arguments:
        dense: `Solution.dense`.
        t: a time or an array of times in [ts[0], min(ts[-1], t_max)].
        t_max: the last valid time (the solution's t_final).

    Returns:
        (P,) for a scalar t, else t.shape + (P,): the solver's interpolant
        theta(t) = interpolation of the step [t_j, t_{j+1}] containing t.
    """
    ts = np.asarray(dense["ts"], dtype=np.float64)
    if ts.size < 2:
        raise ValueError("dense: the solve took no step; there is nothing to interpolate.")
    lo, hi = float(ts[0]), min(float(ts[-1]), float(t_max))
    tq = np.asarray(t, dtype=np.float64)
    bad = ~np.isfinite(tq) | (tq < lo) | (tq > hi)
    if np.any(bad):
        first = float(np.ravel(tq)[np.ravel(bad)][0])
        raise ValueError(
            f"t: {first!r} is outside the dense output's range [{lo:.10g}, {hi:.10g}]; "
            "evaluate only between t0 and t_final."
        )
    interp = diffrax.DenseInterpolation(
        ts=jnp.asarray(ts),
        ts_size=ts.size,
        infos=_unflatten_infos({k: jnp.asarray(v) for k, v in dense["infos"].items()}),
        interpolation_cls=interpolation_class(dense["interpolation"]),
        direction=1,
        t0_if_trivial=ts[0],
        y0_if_trivial=jnp.asarray(dense["infos"]["y0"][0]),
    )
    flat = jnp.ravel(jnp.asarray(tq, dtype=ts.dtype))
    out = np.asarray(jax.vmap(interp.evaluate)(flat))
    return out.reshape(tq.shape + out.shape[1:])
