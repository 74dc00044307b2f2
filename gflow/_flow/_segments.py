"""Integrating in deterministic time segments, so that a run can be checkpointed and resumed.

The interval [t0, t1] is cut at fixed *simulated* times (every few save times, never
depending on the wall clock). One jitted diffrax solve integrates one segment; it is
compiled once (segment start and end are traced) and carries everything diffrax needs
to continue exactly: the solver state (e.g. the FSAL stage), the step-size controller
state (PID error history) and the step size it proposed last (`_CarryDt`), and
`made_jump`. A run resumed from the state after segment j therefore takes the very same
steps, with the same floating-point numbers, as a run that never stopped.

Compared with one solve over [t0, t1] the only difference is that a step ends exactly
at each segment boundary (one extra, shorter step per segment).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._cache import cache_size, checks_without_callbacks, compile_for, structure_key
from ._controller import AdaptiveWrapper
from ._field import FORWARD, make_event, make_save_fn, make_term, watches_divergence

PyTree = Any
STAT_KEYS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


class _CarryDt(AdaptiveWrapper):
    """An adaptive controller that also keeps, in its state, the step size it proposed
    last (before diffrax clips it to the end of the interval), so that the next segment
    starts with that step instead of re-guessing one."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    def wrap(self, direction):
        return _CarryDt(self.inner.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, jnp.asarray(tnext - t0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        keep, nt0, nt1, jump, inner_state, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state[0]
        )
        return keep, nt0, nt1, jump, (inner_state, jnp.asarray(nt1 - nt0)), result


def segment_grid(ts: np.ndarray, t0: float, t1: float, segments: int):
    """Cut [t0, t1] at about `segments` of the save times.

    Returns:
        bounds (S + 1,) segment end points, starting at t0 and ending at t1;
        ts_pad (S, L) each segment's save times padded with its end point;
        counts (S,) how many entries of each row are real save times.
    Segment j saves the times in (bounds[j], bounds[j + 1]] (and t0 itself in the first).
    """
    idx = np.unique(np.round(np.linspace(0, ts.size - 1, segments + 1)).astype(int))
    bounds = np.unique(np.concatenate([[t0], ts[idx], [t1]]))
    rows = []
    for j in range(bounds.size - 1):
        lo, hi = bounds[j], bounds[j + 1]
        sel = (ts > lo) & (ts <= hi) if j else (ts >= lo) & (ts <= hi)
        rows.append(ts[sel])
    # At least 2 columns: diffrax's save loop over a single save time is compiled by XLA
    # into straight-line code that evaluates the save function at every step.
    width = max(2, max(r.size for r in rows))
    ts_pad = np.stack(
        [
            np.concatenate([r, np.full(width - r.size, hi)])
            for r, hi in zip(rows, bounds[1:], strict=True)
        ]
    )
    counts = np.array([r.size for r in rows])
    return bounds, ts_pad, counts


def _controller(spec):
    """(controller, adaptive): adaptive controllers are wrapped to carry their last step."""
    adaptive = isinstance(spec.controller, diffrax.AbstractAdaptiveStepSizeController)
    return (_CarryDt(spec.controller) if adaptive else spec.controller), adaptive


def segment_init(a: tuple) -> dict[str, Any]:
    """a = (spec, y0): the solver and controller states at spec.t0 (a pure function of
    a `SolveSpec` whose t0, t1 are the first segment's, compiled through the cache)."""
    spec, y0 = a
    controller, _ = _controller(spec)
    term = make_term(spec.count_evals)
    order = spec.solver.error_order(term)
    tnext, cstate = controller.init(
        term, spec.t0, spec.t1, y0, spec.dt0, spec.problem, spec.solver.func, order
    )
    sstate = spec.solver.init(term, spec.t0, jnp.minimum(tnext, spec.t1), y0, spec.problem)
    return {"solver": sstate, "controller": cstate, "made_jump": jnp.asarray(False)}


def segment_step(a: tuple) -> dict[str, Any]:
    """a = (spec, y0, carry, fresh): integrate one segment [spec.t0, spec.t1] from y0,
    recording the loss, gradient norm, metrics (and theta when `save_params`) at spec.ts;
    raw["carry"] continues exactly into the next segment. With `fresh` (a boolean array)
    the solver and controller start anew at spec.t0 (`segment_init`, run inside this
    program: one program to compile instead of two) and `carry` only gives the types."""
    spec, y0, carry, fresh = a
    carry = jax.lax.cond(fresh, lambda: segment_init((spec, y0)), lambda: carry)
    controller, adaptive = _controller(spec)
    term = make_term(spec.count_evals)
    save_fn = make_save_fn(dict(spec.metrics), spec.save_params)
    event = make_event(spec.loss_target, divergence=watches_divergence(spec.controller))
    sol = diffrax.diffeqsolve(
        term,
        spec.solver,
        spec.t0,
        spec.t1,
        carry["controller"][1] if adaptive else spec.dt0,
        y0,
        args=spec.problem,
        saveat=diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=spec.ts, fn=save_fn), diffrax.SubSaveAt(t1=True)],
            solver_state=True,
            controller_state=True,
            made_jump=True,
        ),
        stepsize_controller=controller,
        event=event,
        max_steps=spec.max_steps,
        adjoint=FORWARD,
        throw=False,
        solver_state=carry["solver"],
        controller_state=carry["controller"],
        made_jump=carry["made_jump"],
    )
    saved, last = sol.ys
    return {
        "saved": saved,
        "t_final": sol.ts[1][-1],
        "y": last[-1],
        "result": sol.result._value,
        "event_mask": sol.event_mask,
        "stats": {k: sol.stats[k] for k in STAT_KEYS},
        "carry": {
            "solver": sol.solver_state,
            "controller": sol.controller_state,
            "made_jump": jnp.asarray(sol.made_jump),
        },
    }


def _zeros_like_output(s: Any) -> np.ndarray:
    return np.zeros(s.shape, s.dtype) if isinstance(s, jax.ShapeDtypeStruct) else np.asarray(s)


# Zero carries by structure of (spec, y0), so that a later call of the same structure
# does not trace `segment_init` again (30-40 ms per call); bounded like the compile cache.
# The arrays are only read (their types key the program; fresh=True ignores the values).
_CARRY0: OrderedDict[Hashable, PyTree] = OrderedDict()


def _carry0(spec, y0) -> PyTree:
    key = structure_key(segment_init, (spec, y0))[0]
    if key is not None and key in _CARRY0:
        _CARRY0.move_to_end(key)
        return _CARRY0[key]
    with checks_without_callbacks():
        shapes = eqx.filter_eval_shape(segment_init, (spec, y0))
    # Python scalars in the state (e.g. a flag of the controller) become arrays, as they
    # do when they leave a compiled program.
    carry0 = jax.tree_util.tree_map(_zeros_like_output, shapes)
    if key is not None and cache_size() > 0:
        _CARRY0[key] = carry0
        while len(_CARRY0) > cache_size():
            _CARRY0.popitem(last=False)
    return carry0


def compile_segments(spec, y0):
    """Compile (or take from the cache) the segment program.

    Returns:
        (step_exe, carry0, compile_seconds, source): `step_exe(dynamic((spec_j, y,
        carry, fresh)))` integrates segment j; carry0 is a zero carry of the right types
        (host arrays, as every later carry), passed with fresh = True to start a run;
        source is where the program came from ("memory", "disk" or "compiled").
    """
    start = time.perf_counter()
    carry0 = _carry0(spec, y0)
    trace_seconds = time.perf_counter() - start
    step_exe, _, source, sec = compile_for(segment_step, (spec, y0, carry0, np.asarray(True)))
    return step_exe, carry0, sec + (0.0 if source == "memory" else trace_seconds), source


def to_host(tree: PyTree) -> PyTree:
    """Device arrays to numpy (exact: no casting)."""
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def carry_leaves(carry: PyTree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(carry)]


def carry_from_leaves(template: PyTree, leaves: list[np.ndarray]) -> PyTree:
    """Rebuild a carry from stored leaves, checking them against `template`'s shapes."""
    shapes = jax.tree_util.tree_leaves(template)
    if len(shapes) != len(leaves):
        raise ValueError(
            f"checkpoint: holds {len(leaves)} solver-state arrays where this run needs "
            f"{len(shapes)}; it was written with another solver. Rerun without --resume."
        )
    for i, (s, leaf) in enumerate(zip(shapes, leaves, strict=True)):
        if tuple(s.shape) != leaf.shape or np.dtype(s.dtype) != leaf.dtype:
            raise ValueError(
                f"checkpoint: solver-state array {i} has shape {leaf.shape} {leaf.dtype}, "
                f"expected {tuple(s.shape)} {s.dtype}; it belongs to another run. "
                "Rerun without --resume."
            )
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in leaves])
