"""Ensembles: many gradient flows of the same shape solved as ONE vmapped, jitted program.

The members (seeds of one configuration, or datasets of the same shape) are stacked along
a leading ensemble axis. The pure solve (`_engine.solve_ensemble`) is vmapped over a batched
`FlatProblem` (theta0, eta and the frozen leaves carry the ensemble axis) and, when several
devices are available, sharded over them (`_sharding.py`).

Cost: a vmapped diffrax solve is a batched while loop. Every member keeps its own step
size, error control and event (so each member's trajectory is the one `simulate` would
compute), but the loop runs until the slowest member of a device's block has finished:
an ensemble costs (number of members per device) x (steps of its slowest member).
`members="sequential"` (the default on CPUs, from 256 parameters per member) maps the
unbatched solve over the members instead (`lax.map`, still one program): each member stops
at its own step count and no step pays the batched loop's masked update of every member's
state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree

from ._cache import compiled_call
from ._engine import make_spec, place_ensemble, solve_ensemble
from ._flatten import NO_ARGS, FlatProblem, as_filter_spec, flatten_problem, split_frozen
from ._results import solution_from_raw
from ._rosenbrock import needs_residual
from ._settings import flow_settings, prepare_flow
from ._sharding import ensemble_mesh, gather, padded_size
from ._solution import Solution

PyTree = Any


@dataclass(frozen=True)
class EnsembleSolution:
    """The result of `simulate_ensemble`: B member solutions and their batched arrays.

    Fields:
        members: B `Solution`s, one per member (trimmed where each stopped).
        ts: (k,) the requested save times (shared by all members).
        loss: (B, k) training loss of each member at `ts`; NaN after a member stopped.
        grad_norm: (B, k) gradient norms, NaN after a member stopped.
        metrics: name -> (B, k, ...) save-time metrics, NaN after a member stopped.
        t_final: (B,) time each member reached.
        success: (B,) True where the member reached t1 or its loss target.
        theta_final: (B, P) final flat states.
        final: the final parameter pytree with a leading ensemble axis.
        stats: per-member solver counts as (B,) arrays (num_steps, num_accepted_steps,
            num_rejected_steps, grad_evals), and for the whole ensemble: compile_seconds,
            run_seconds, n_members, n_devices, n_padded (members added to fill the devices
            evenly), sharded, process_count.
        settings: the solver settings (as in `Solution.settings`) plus the ensemble layout.
    """

    members: tuple[Solution, ...]
    ts: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    t_final: np.ndarray
    success: np.ndarray
    theta_final: np.ndarray
    final: PyTree
    stats: dict[str, Any]
    settings: dict[str, Any]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> Solution:
        return self.members[i]

    @property
    def results(self) -> list[str]:
        return [m.result for m in self.members]

    def summary(self) -> str:
        ok = int(np.sum(self.success))
        steps = self.stats["num_steps"]
        last = np.array([m.loss[-1] if m.loss.size else np.nan for m in self.members])
        return (
            f"{len(self)} members ({ok} successful) on {self.stats['n_devices']} device(s): "
            f"steps {int(steps.min())}..{int(steps.max())}, final loss "
            f"{np.min(last):.3e}..{np.max(last):.3e}, "
            f"compile {self.stats['compile_seconds']:.2f} s, run {self.stats['run_seconds']:.2f} s"
        )


MEMBER_MODES = ("auto", "vmap", "sequential")


# "auto" maps the members one after the other on CPUs from this many parameters per member.
# Measured on a 2-core CPU (two-layer tanh networks, 16 members, run time without compile):
# 80 and 160 parameters (n = 8): vmap 2.4x and 1.4x faster; 320 and more (n = 32 ... 256,
# up to 4096 hidden units): sequential 1.5-2.3x faster. Below the threshold a step's
# fixed cost (~30 us) outweighs the batched loop's masked updates.
SEQUENTIAL_MIN_PARAMS = 256


def resolve_members(members: str, mesh: Any, n_params: int) -> str:
    """ "vmap" or "sequential" for `members` ("auto": sequential on CPU devices when a
    member has at least SEQUENTIAL_MIN_PARAMS parameters, else vmap)."""
    if members != "auto":
        return members
    platforms = {dev.platform for dev in mesh.devices.flat}
    cpu = platforms == {"cpu"}
    return "sequential" if cpu and n_params >= SEQUENTIAL_MIN_PARAMS else "vmap"


def stack_params(trees: Sequence[PyTree]) -> PyTree:
    """Stack B parameter pytrees of identical structure and shapes along a new axis 0.

    Non-array leaves (and equinox static fields) must agree and are kept from the first."""
    trees = list(trees)
    if not trees:
        raise ValueError("members: empty list; an ensemble needs at least one member.")
    arrays = [eqx.filter(t, eqx.is_array) for t in trees]
    static = eqx.filter(trees[0], eqx.is_array, inverse=True)
    on_host = all(isinstance(a, np.ndarray) for a in jtu.tree_leaves(arrays))
    try:
        if on_host:  # results on the host stay there (no device round trip, no compile)
            stacked = jtu.tree_map(lambda *xs: np.stack(xs), *arrays)
        else:  # one compiled program per structure, not one per leaf shape
            stacked = _stack_trees(arrays)
    except ValueError as exc:
        raise ValueError(
            "members: the members differ in structure or shapes (e.g. widths or hyper-"
            f"parameters); an ensemble needs identical shapes ({exc}). Run different shapes "
            "as separate ensembles, or as a sweep."
        ) from None
    return eqx.combine(stacked, static)


def ensemble_size(params_batch: PyTree) -> int:
    """B, the common length of axis 0 of every array leaf; ValueError when they differ."""
    leaves = [leaf for leaf in jtu.tree_leaves(params_batch) if eqx.is_array(leaf)]
    if not leaves:
        raise ValueError("params_batch: has no array leaves; pass stacked parameters.")
    sizes = {int(leaf.shape[0]) if leaf.ndim else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "params_batch: every array leaf needs the same leading ensemble axis, got leading "
            f"sizes {sorted(sizes)} (-1: a scalar leaf). Build the batch with "
            "eqx.filter_vmap(constructor)(keys) or gflow.stack_params([...])."
        )
    return sizes.pop()


@jax.jit
def _stack_trees(trees: list[PyTree]) -> PyTree:
    return jtu.tree_map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def _take(tree: PyTree, i: jax.Array) -> PyTree:
    return jtu.tree_map(lambda a: a[i], tree)


def _member(tree: PyTree, i: int) -> PyTree:
    """Member i of a batched pytree: numpy leaves indexed on the host, JAX leaves through
    one compiled program per structure (the index is an argument, so no compile per i)."""
    on_device, rest = eqx.partition(tree, lambda a: isinstance(a, jax.Array))
    rest = jtu.tree_map(lambda a: a[i] if eqx.is_array(a) else a, rest)
    if jtu.tree_leaves(on_device):
        on_device = _take(on_device, np.int32(i))
    return eqx.combine(on_device, rest)


def batch_problem(
    loss_fn: Callable[..., jax.Array],
    params_batch: PyTree,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    args: Any = NO_ARGS,
) -> tuple[FlatProblem, int]:
    """A `FlatProblem` whose theta0 (B, P), eta (B, P) and frozen leaves carry the ensemble
    axis, built from member 0's flattening (which also validates the inputs); `args` is
    shared by all members (not batched). Returns (problem, B)."""
    n = ensemble_size(params_batch)
    member0 = _member(params_batch, 0)
    try:
        ref = flatten_problem(loss_fn, member0, eta=eta, trainable=trainable, args=args)
    except ValueError as exc:
        if not str(exc).startswith("loss_fn: calling it"):
            raise
        raise ValueError(
            f"params_batch: the loss failed on member 0 ({exc}). Pass parameters with a "
            "leading ensemble axis on every array leaf (eqx.filter_vmap of the constructor "
            "over keys)."
        ) from None
    spec = as_filter_spec(member0, trainable)
    dyn, frozen = eqx.partition(params_batch, spec)
    theta0 = jax.vmap(lambda tree: ravel_pytree(tree)[0])(dyn)
    if not bool(jnp.all(jnp.isfinite(theta0))):
        bad = np.nonzero(~np.all(np.isfinite(np.asarray(theta0)), axis=1))[0]
        raise ValueError(
            f"params_batch: members {bad.tolist()[:10]} have NaN or inf initial parameters; "
            "re-initialize them."
        )
    eta_b = jnp.broadcast_to(ref.eta, theta0.shape)
    frozen, static = split_frozen(frozen)
    problem = FlatProblem(
        theta0=theta0,
        eta=eta_b,
        frozen=frozen,
        static=static,
        unravel=ref.unravel,
        loss_fn=ref.loss_fn,
        args=ref.args,
        with_args=ref.with_args,
    )
    return problem, n


def _padded_rows(arr: np.ndarray, k: int) -> np.ndarray:
    """A member's trimmed (k_i, ...) record as (k, ...) with NaN after k_i."""
    out = np.full((k,) + arr.shape[1:], np.nan, dtype=np.float64)
    out[: arr.shape[0]] = arr
    return out


def simulate_ensemble(
    loss_fn: Callable[[PyTree], jax.Array],
    params_batch: PyTree,
    t1: float,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    ts: Any = None,
    t0: float = 0.0,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    solver: str | diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    dt0: float | None = None,
    max_steps: int = 200_000,
    loss_target: float | None = None,
    devices: Sequence[jax.Device] | None = None,
    args: Any = NO_ARGS,
    members: str = "auto",
) -> EnsembleSolution:
    """Simulate B gradient flows  d theta_b/dt = -eta * grad L(theta_b)  in one solve.

    Arguments:
        loss_fn: params -> scalar loss, for ONE member (it is vmapped).
        params_batch: the members' initial parameters stacked along a leading axis of
            length B on every array leaf, e.g. `eqx.filter_vmap(lambda k: TwoLayer(d, m,
            key=k))(keys)` or `stack_params([p0, p1, ...])`. Per-member data goes in here
            too, marked frozen by `trainable`.
        t1, t0, eta, trainable, ts, save_params, metrics, solver, stepsize_controller,
            rtol, atol, dt0, max_steps, loss_target: as in `simulate`, the same for every
            member (eta and trainable describe ONE member).
        devices: devices to shard the ensemble axis over; default all devices (of all
            hosts under jax.distributed). One device: plain vmap, no sharding.
        args: data shared by every member, passed as `loss_fn(params, args)` and
            `fn(params, args)` to each metric (as in `simulate`; not batched).
        members: how a device runs its members, inside one compiled program either way:
            "vmap": one batched step loop, which steps every member until the slowest is
                done (cost ~ members x slowest member's steps); the choice for GPUs and
                TPUs, where the batch runs in parallel.
            "sequential": `lax.map` over the members, each in its own unbatched loop that
                stops at its own step count (cost ~ the sum of the members' steps). On a
                CPU a batched loop pays a masked update of its whole state per step
                (~1.8x per member-step in claim 2's flow), so this is faster there.
            "auto" (default): "sequential" when the devices are CPUs and a member has
                at least 256 trainable parameters (below that a step's fixed cost
                dominates and "vmap" is faster), else "vmap".
            The trajectories are the same either way (same steps, same numbers).

    Returns:
        An `EnsembleSolution`; member b equals `simulate(loss_fn, member b, ...)` up to
        floating-point round-off (each member keeps its own adaptive steps and events).
        With members="vmap" the run costs as much as the slowest member per device,
        with "sequential" as the members' steps together (see module docstring).
    """
    t0, ts, max_steps, solver_obj, stepsize_controller = prepare_flow(
        t1,
        t0=t0,
        ts=ts,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        max_steps=max_steps,
        loss_target=loss_target,
        metrics=metrics,
        solver=solver,
        stepsize_controller=stepsize_controller,
    )
    if needs_residual(solver_obj):
        raise ValueError(
            f"solver: {type(solver_obj).__name__} integrates a least-squares residual, which "
            "an ensemble does not carry; use an explicit solver such as 'tsit5' for the "
            "ensemble, or run the members one by one with simulate_mse / simulate(..., "
            "residual_fn=...)."
        )
    if members not in MEMBER_MODES:
        raise ValueError(
            f"members: expected one of {', '.join(map(repr, MEMBER_MODES))}; got {members!r}."
        )
    problem, n = batch_problem(loss_fn, params_batch, eta=eta, trainable=trainable, args=args)

    mesh = ensemble_mesh(devices)
    n_dev = mesh.size
    mode = resolve_members(members, mesh, int(problem.theta0.shape[1]))
    size = padded_size(n, n_dev)
    spec = make_spec(
        problem,
        t0,
        float(t1),
        ts,
        solver=solver_obj,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        mesh=mesh if n_dev > 1 else None,
        members=mode,
        limit_in_loop=True,
    )
    if n_dev > 1:
        spec = place_ensemble(spec, mesh, size)
    out, timing = compiled_call(solve_ensemble, spec)
    compile_seconds, run_seconds = timing["compile_seconds"], timing["run_seconds"]
    out = gather(out)

    settings = flow_settings(
        solver_obj,
        stepsize_controller,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        max_steps=max_steps,
        t0=t0,
        t1=t1,
        eta=eta,
        loss_target=loss_target,
        n_params=problem.theta0.shape[1],
        dtype=problem.theta0.dtype,
    )
    settings.update(
        ensemble_size=n, n_devices=n_dev, process_count=jax.process_count(), members=mode
    )
    members = []
    # The members' problems on the host (args are shared, not batched): a member's record
    # is then sliced and unraveled with numpy, without a compiled program per leaf.
    batched = jtu.tree_map(
        lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, replace(problem, args=None)
    )
    for i in range(n):
        members.append(
            solution_from_raw(
                _member(out, i),
                replace(_member(batched, i), args=problem.args),
                t0,
                float(t1),
                solver=solver_obj,
                max_steps=max_steps,
                save_params=save_params,
                loss_target=loss_target,
                settings=settings,
                compile_seconds=compile_seconds,
                run_seconds=run_seconds,
                cache_hit=timing["cache_hit"],
                program_source=timing["program_source"],
            )
        )
    ens = assemble(members, ts, problem, settings, compile_seconds, run_seconds, size - n)
    ens.stats["cache_hit"] = timing["cache_hit"]
    ens.stats["program_source"] = timing["program_source"]
    return ens


def assemble(
    members: Sequence[Solution],
    ts: np.ndarray,
    problem: FlatProblem,
    settings: dict[str, Any],
    compile_seconds: float,
    run_seconds: float,
    n_padded: int,
) -> EnsembleSolution:
    """Stack the member solutions into an `EnsembleSolution` (NaN past each member's end)."""
    k = len(ts)
    count_keys = ("num_steps", "num_accepted_steps", "num_rejected_steps", "grad_evals")
    stats: dict[str, Any] = {
        key: np.array([-1 if m.stats[key] is None else m.stats[key] for m in members])
        for key in count_keys
    }
    stats.update(
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        n_members=len(members),
        n_devices=settings["n_devices"],
        n_padded=n_padded,
        sharded=settings["n_devices"] > 1,
        process_count=settings["process_count"],
    )
    names = members[0].metrics.keys()
    theta_final = np.stack([m.theta_final for m in members])
    return EnsembleSolution(
        members=tuple(members),
        ts=np.asarray(ts, dtype=np.float64),
        loss=np.stack([_padded_rows(m.loss, k) for m in members]),
        grad_norm=np.stack([_padded_rows(m.grad_norm, k) for m in members]),
        metrics={n: np.stack([_padded_rows(m.metrics[n], k) for m in members]) for n in names},
        t_final=np.array([m.t_final for m in members]),
        success=np.array([m.success for m in members]),
        theta_final=theta_final,
        final=stack_params([m.final for m in members]),
        stats=stats,
        settings=settings,
    )


def map_members(ens: EnsembleSolution, fn: Callable[[Solution], Solution]) -> EnsembleSolution:
    """Apply `fn` to every member solution and re-stack `final` (used to strip helper
    leaves, such as per-member data, from the parameters)."""
    members = tuple(fn(m) for m in ens.members)
    return replace(ens, members=members, final=stack_params([m.final for m in members]))
