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
from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._field import FORWARD, make_event, make_save_fn, make_term, watches_divergence
from ._flatten import FlatProblem

PyTree = Any
STAT_KEYS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


class _CarryDt(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive controller that also keeps, in its state, the step size it proposed
    last (before diffrax clips it to the end of the interval), so that the next segment
    starts with that step instead of re-guessing one."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm

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


def make_segment_fns(
    *,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    max_steps: int,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    loss_target: float | None = None,
    count_evals: bool = False,
):
    """The pure functions of segmented integration.

    Returns:
        init(problem, y0, t0, t1) -> carry: the solver and controller states at t0;
        step(problem, y0, t0, t1, ts, carry) -> raw: integrate one segment [t0, t1]
            (t0, t1 traced), recording the loss, gradient norm, metrics (and theta when
            `save_params`) at `ts`; raw["carry"] continues exactly into the next segment.
    """
    adaptive = isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
    controller = _CarryDt(stepsize_controller) if adaptive else stepsize_controller
    term = make_term(count_evals)
    save_fn = make_save_fn(metrics, save_params)
    event = make_event(loss_target, divergence=watches_divergence(stepsize_controller))

    def init(prob: FlatProblem, y0, t0, t1) -> dict[str, Any]:
        order = solver.error_order(term)
        tnext, cstate = controller.init(term, t0, t1, y0, dt0, prob, solver.func, order)
        sstate = solver.init(term, t0, jnp.minimum(tnext, t1), y0, prob)
        return {"solver": sstate, "controller": cstate, "made_jump": jnp.asarray(False)}

    def step(prob: FlatProblem, y0, t0, t1, ts, carry) -> dict[str, Any]:
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t0,
            t1,
            carry["controller"][1] if adaptive else dt0,
            y0,
            args=prob,
            saveat=diffrax.SaveAt(
                subs=[diffrax.SubSaveAt(ts=ts, fn=save_fn), diffrax.SubSaveAt(t1=True)],
                solver_state=True,
                controller_state=True,
                made_jump=True,
            ),
            stepsize_controller=controller,
            event=event,
            max_steps=max_steps,
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

    return init, step


def compile_segment_fns(init, step, problem: FlatProblem, t0: float, t1: float, ts_row):
    """AOT-compile both functions once and run `init` (host arrays, so that every later
    carry has exactly the same types). Returns (step_c, carry0, compile_seconds)."""
    dtype = problem.theta0.dtype
    start = time.perf_counter()
    init_c = jax.jit(init).lower(problem, problem.theta0, dtype.type(t0), dtype.type(t1))
    carry0 = to_host(init_c.compile()(problem, problem.theta0, dtype.type(t0), dtype.type(t1)))
    step_c = (
        jax.jit(step)
        .lower(problem, problem.theta0, dtype.type(t0), dtype.type(t1), ts_row, carry0)
        .compile()
    )
    return step_c, carry0, time.perf_counter() - start


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
