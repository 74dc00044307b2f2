"""One solve of the gradient flow as a pure function of a `SolveSpec`, compiled once per
structure.

`SolveSpec` holds everything a diffrax solve of the flow needs. Its array leaves (initial
state, eta, frozen leaves, data args, t0, t1, save times, dt0, loss target, the
controller's rtol/atol and, where the step loop needs no static bound, the step limit) are
arguments of the compiled program; the rest (loss and metric functions, solver and
controller types, tree structure, number of save times, a static max_steps) keys
`_cache.compiled_call`'s cache. So a later call that changes only values runs the program
compiled by the first (`stats["cache_hit"]`).

`solve(spec)` is the single-problem solve, `solve_ensemble(spec)` the vmapped or mapped (and, over
several devices, shard_mapped) solve of a batch of problems. Segmented, checkpointed
integration (`_segments.py`) builds its step from the same pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._cache import compiled_call
from ._controller import limit_steps
from ._field import FORWARD, make_event, make_save_fn, make_term, watches_divergence
from ._flatten import FlatProblem, device_array

PyTree = Any
_INT32_MAX = int(np.iinfo(np.int32).max)  # a limit no run reaches


def _array(x: Any, dtype: Any) -> jax.Array | None:
    if x is None:
        return None
    if isinstance(x, jax.Array):
        return jnp.asarray(x, dtype=dtype)
    return device_array(np.asarray(x, dtype=dtype))  # host values: nothing to compile


def dynamic_controller(
    controller: diffrax.AbstractStepSizeController, dtype: Any
) -> diffrax.AbstractStepSizeController:
    """The controller with rtol and atol as arrays (program arguments, so a new tolerance
    does not recompile); other controllers are returned as they are."""
    if isinstance(controller, diffrax.PIDController):
        return eqx.tree_at(
            lambda c: (c.rtol, c.atol),
            controller,
            (_array(controller.rtol, dtype), _array(controller.atol, dtype)),
        )
    return controller


class SolveSpec(eqx.Module):
    """Everything one solve needs (see the module docstring for what is dynamic).

    Fields:
        problem: the `FlatProblem` (batched along a leading axis for `solve_ensemble`).
        solver, controller: diffrax objects.
        t0, t1: 0-d arrays; ts: (K,) save times; dt0, loss_target: 0-d arrays or None.
        max_steps: static step limit (it sizes diffrax's step loop: needed by dense
            output and by the segments' carried controller state); None for a loop that
            ends by itself (gradient descent's grid) or is limited by `step_limit`.
        step_limit: the step limit as a 0-d int32 array, checked inside the loop by the
            controller (`_controller.limit_steps`), so a new max_steps reuses the program;
            None when max_steps is static.
        metrics: ((name, fn), ...) recorded at the save times. A pytree field: a metric
            that is an equinox Module (gflow's analysis metrics) passes its arrays (data,
            initial kernel, ...) as program arguments, so new values of the same shapes
            reuse the program; a plain function is keyed by identity and its closure's
            arrays are constants of the program.
        save_params, progress, count_evals: static switches.
        dense: also return the solver's dense output (`raw["dense"]`: step times, their
            number and the per-step interpolation coefficients; see _dense.py).
        mesh: a device mesh to shard an ensemble over (None: vmap on one device).
        members: how `solve_ensemble` runs an ensemble's members on a device: "vmap" (one
            batched step loop) or "sequential" (`lax.map`: one member's loop after the
            other, inside the same program).
    """

    problem: FlatProblem
    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    t0: jax.Array
    t1: jax.Array
    ts: jax.Array
    dt0: jax.Array | None
    loss_target: jax.Array | None
    max_steps: int | None = eqx.field(static=True)
    step_limit: jax.Array | None = None
    metrics: tuple = ()
    save_params: bool = eqx.field(static=True, default=False)
    progress: bool = eqx.field(static=True, default=False)
    count_evals: bool = eqx.field(static=True, default=False)
    mesh: Any = eqx.field(static=True, default=None)
    dense: bool = eqx.field(static=True, default=False)
    members: str = eqx.field(static=True, default="vmap")


def make_spec(
    problem: FlatProblem,
    t0: float,
    t1: float,
    ts: Any,
    *,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    max_steps: int | None,
    save_params: bool = False,
    metrics: Any = None,
    loss_target: float | None = None,
    progress: bool = False,
    count_evals: bool = False,
    mesh: Any = None,
    dense: bool = False,
    members: str = "vmap",
    limit_in_loop: bool = False,
) -> SolveSpec:
    """A `SolveSpec` with every value that may change between calls as an array.

    With `limit_in_loop`, max_steps becomes a value (`step_limit`) unless the solve needs
    the static bound: dense output, or diffrax's `StepTo` (whose loop condition counts
    its grid)."""
    dtype = jax.tree_util.tree_leaves(problem.theta0)[0].dtype
    step_limit = None
    if (
        limit_in_loop
        and max_steps is not None
        and not dense
        and not isinstance(stepsize_controller, diffrax.StepTo)
    ):
        step_limit = device_array(np.asarray(min(int(max_steps), _INT32_MAX), np.int32))
        max_steps = None
    return SolveSpec(
        problem=problem,
        solver=solver,
        controller=dynamic_controller(stepsize_controller, dtype),
        t0=_array(t0, dtype),
        t1=_array(t1, dtype),
        ts=jnp.asarray(ts, dtype=dtype),
        dt0=_array(dt0, dtype),
        loss_target=_array(loss_target, dtype),
        max_steps=None if max_steps is None else int(max_steps),
        step_limit=step_limit,
        metrics=tuple(dict(metrics or {}).items()),
        save_params=bool(save_params),
        progress=bool(progress),
        count_evals=bool(count_evals),
        mesh=mesh,
        dense=bool(dense),
        members=members,
    )


def solve(spec: SolveSpec) -> dict[str, Any]:
    """The pure solve: raw outputs (save-time records, final state, result code, step
    statistics) that `solution_from_raw` turns into a `Solution`."""
    save_fn = make_save_fn(dict(spec.metrics), spec.save_params)
    event = make_event(spec.loss_target, divergence=watches_divergence(spec.controller))
    term = make_term(spec.count_evals)
    meter = (
        diffrax.TqdmProgressMeter(refresh_steps=50) if spec.progress else diffrax.NoProgressMeter()
    )
    controller = spec.controller
    if spec.step_limit is not None:
        controller = limit_steps(controller, spec.step_limit, spec.t1)
    ts = spec.ts
    # A single save time is saved twice and the copy dropped: diffrax's save loop over one
    # time (max_steps=1) is compiled by XLA into straight-line code that evaluates the
    # save function (a gradient) at every step, not once.
    single = ts.shape[0] == 1
    if single:
        ts = jnp.concatenate([ts, ts])
    sol = diffrax.diffeqsolve(
        term,
        spec.solver,
        spec.t0,
        spec.t1,
        spec.dt0,
        spec.problem.theta0,
        args=spec.problem,
        saveat=diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=ts, fn=save_fn), diffrax.SubSaveAt(t1=True)],
            dense=spec.dense,
        ),
        stepsize_controller=controller,
        event=event,
        max_steps=spec.max_steps,
        adjoint=FORWARD,
        throw=False,
        progress_meter=meter,
    )
    saved, last = sol.ys
    ts_saved = sol.ts[0]
    if single:
        saved = jax.tree_util.tree_map(lambda a: a[:1], saved)
        ts_saved = ts_saved[:1]
    extra = {}
    if spec.dense:
        it = sol.interpolation
        extra["dense"] = {"ts": it.ts, "ts_size": it.ts_size, "infos": it.infos}
    return {
        **extra,
        "ts": ts_saved,
        "saved": saved,
        "t_final": sol.ts[1][-1],
        "theta_final": jax.tree_util.tree_map(lambda a: a[-1], last),
        "result": sol.result._value,
        "event_mask": sol.event_mask,
        "stats": {
            k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")
        },
    }


def solve_ensemble(spec: SolveSpec) -> dict[str, Any]:
    """`solve` over the leading (ensemble) axis of the problem's array leaves (all but
    the shared data `args`): vmapped (`spec.members == "vmap"`: one batched step loop that
    runs until the device's slowest member is done) or mapped (`"sequential"`: `lax.map`,
    each member's own unbatched loop in turn). With a mesh of several devices,
    shard_mapped so each device solves its block."""
    from ._sharding import ENSEMBLE_AXIS

    members = dataclasses.replace(spec.problem, args=None)
    dyn, static = eqx.partition(members, eqx.is_array)
    rest = dataclasses.replace(spec, problem=None)
    args = spec.problem.args

    def one(d: PyTree, rest: SolveSpec, args: Any) -> dict[str, Any]:
        problem = dataclasses.replace(eqx.combine(d, static), args=args)
        return solve(dataclasses.replace(rest, problem=problem))

    if spec.members == "sequential":

        def per_block(d: PyTree, rest: SolveSpec, args: Any) -> dict[str, Any]:
            return jax.lax.map(lambda di: one(di, rest, args), d)

    else:
        per_block = jax.vmap(one, in_axes=(0, None, None))
    if spec.mesh is None or spec.mesh.size == 1:
        return per_block(dyn, rest, args)
    from jax.sharding import PartitionSpec as P

    shared_dyn, shared_static = eqx.partition((rest, args), eqx.is_array)
    return jax.shard_map(
        lambda d, sh: per_block(d, *eqx.combine(sh, shared_static)),
        mesh=spec.mesh,
        in_specs=(P(ENSEMBLE_AXIS), P()),
        out_specs=P(ENSEMBLE_AXIS),
        check_vma=False,
    )(dyn, shared_dyn)


def place_ensemble(spec: SolveSpec, mesh: Any, size: int) -> SolveSpec:
    """The spec with the problem's batched arrays padded to `size` members and sharded
    over `mesh` along the ensemble axis, and every other array (args included)
    replicated on the mesh's devices."""
    from ._sharding import replicate, shard_batch

    def put(tree: PyTree, place: Callable) -> PyTree:
        dyn, static = eqx.partition(tree, eqx.is_array)
        return eqx.combine(place(dyn), static)

    members = dataclasses.replace(spec.problem, args=None)
    members = put(members, lambda d: shard_batch(d, mesh, size))
    args = put(spec.problem.args, lambda d: replicate(d, mesh))
    rest = put(dataclasses.replace(spec, problem=None), lambda d: replicate(d, mesh))
    return dataclasses.replace(rest, problem=dataclasses.replace(members, args=args))


def run(spec: SolveSpec, fn: Callable[[SolveSpec], Any] = solve) -> tuple[Any, dict]:
    """`fn(spec)` through the compile cache: (raw outputs on the host, timing with
    cache_hit, compile_seconds and run_seconds)."""
    out, timing = compiled_call(fn, spec)
    return jax.device_get(out), timing
