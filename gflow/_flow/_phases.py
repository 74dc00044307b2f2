"""`solver="auto"` in two phases: Tsit5 while the flow is not yet stiff, then the
least-squares solver; the two Solutions joined into one.

Why: on a stiff nonlinear least-squares flow the early, nonlinear part is not stiff on
its own time scale, and there an explicit fifth-order method is far cheaper than the
third-order Rosenbrock-W: on the claim-2 network at d = 2 (lambda_max = 0.23, rtol 1e-6)
Tsit5 reached t = 300 with 367 gradients where Rosenbrock-W spent 1,837 gradient-
equivalents, and t = 1,000 with 1,135 against 3,157. Past that Tsit5 is held by
stability (h <~ 3.3 / lambda_max). The switch time is where Tsit5's stability bound
alone would have cost ~1.8 x SWITCH_STIFFNESS (~360) gradients:

    t_switch = t0 + SWITCH_STIFFNESS / lambda_max      (lambda_max at theta0)

(measured on claim 2: 200 gave 4,788 gradient-equivalents at error 6e-7, 500 gave 5,512
and 1,000 gave 8,002, against 6,738 for Rosenbrock-W alone at 1e-6; docs/stiff.md).
Affine residuals skip the first phase: the exponential solver is exact from the start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._solution import Solution

SWITCH_STIFFNESS = 200.0

# Counts and times that add over the phases; other stats are the second phase's.
_ADDITIVE = (
    "num_accepted_steps",
    "num_rejected_steps",
    "num_steps",
    "grad_evals",
    "hvp_evals",
    "grad_equivalents",
    "jacobian_rows",
    "save_evals",
    "compile_seconds",
    "run_seconds",
)


def switch_time(t0: float, t1: float, lambda_max: float) -> float | None:
    """t0 + SWITCH_STIFFNESS / lambda_max when that lies strictly inside (t0, t1), else
    None (one phase)."""
    if not (np.isfinite(lambda_max) and lambda_max > 0):
        return None
    ts = float(t0) + SWITCH_STIFFNESS / float(lambda_max)
    return ts if float(t0) < ts < float(t1) else None


def split_ts(ts: Any, t_switch: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """(save times of phase 1, of phase 2, whether t_switch is one of the user's): both
    phases save at t_switch (phase 1 ends there, phase 2 starts there)."""
    ts = np.asarray(ts, dtype=np.float64)
    first = np.concatenate([ts[ts < t_switch], [t_switch]])
    second = np.concatenate([[t_switch], ts[ts > t_switch]])
    return first, second, bool(np.any(ts == t_switch))


def _per_save_time(fn, *sols: Solution) -> dict[str, Any]:
    """`fn` applied across `sols` to every per-save-time field (ts, loss, grad_norm,
    metrics, params leaf by leaf): the fields to replace in the result."""
    params = None
    if all(s.params is not None for s in sols):
        params = jax.tree_util.tree_map(
            lambda *a: fn(*a) if eqx.is_array_like(a[0]) else a[0], *(s.params for s in sols)
        )
    return dict(
        ts=fn(*(s.ts for s in sols)),
        loss=fn(*(s.loss for s in sols)),
        grad_norm=fn(*(s.grad_norm for s in sols)),
        metrics={k: fn(*(s.metrics[k] for s in sols)) for k in sols[-1].metrics},
        params=params,
    )


def first_only(first: Solution, t_switch: float, shared_is_users: bool, settings: dict):
    """The first phase as the whole run (it ended before or at the switch time): its
    saved switch time dropped unless it is one of the user's save times."""
    keep = first.ts <= t_switch if shared_is_users else first.ts < t_switch
    return dataclasses.replace(
        first, **_per_save_time(lambda a: np.asarray(a)[keep], first), settings=settings
    )


def join(first: Solution, second: Solution, shared_is_users: bool, settings: dict) -> Solution:
    """One Solution from two consecutive phases that both saved at the switch time: that
    point is kept once when it is one of the user's save times, else dropped."""
    drop_a = 0 if shared_is_users else 1

    def cat(a: Any, b: Any) -> np.ndarray:
        a, b = np.asarray(a), np.asarray(b)
        return np.concatenate([a[: len(a) - drop_a], b[1:]], axis=0)

    stats = dict(second.stats)
    for k in _ADDITIVE:
        a, b = first.stats.get(k), second.stats.get(k)
        if isinstance(a, int | float) and isinstance(b, int | float):
            stats[k] = a + b
    stats["cache_hit"] = bool(first.stats.get("cache_hit")) and bool(second.stats.get("cache_hit"))
    stats["program_source"] = (
        f"{first.stats.get('program_source')}+{second.stats.get('program_source')}"
    )
    return dataclasses.replace(
        second, **_per_save_time(cat, first, second), stats=stats, settings=settings
    )


def _phase(solver: str, t0: float, sol: Solution) -> dict[str, Any]:
    """A phase's record; a checkpointed phase adds the segment it resumed from (None:
    started afresh; the number of segments: finished before, read from its file)."""
    rec = {"solver": solver, "t0": float(t0), "t1": float(sol.t_final)}
    if "resumed_from_segment" in sol.stats:
        rec["resumed_from_segment"] = sol.stats["resumed_from_segment"]
    return rec


def run_two_phases(engines, problem, t0, t1, ts, t_switch, solver_obj, dt0, settings, run_kw):
    """auto's run of a stiff nonlinear least-squares flow: Tsit5 on [t0, t_switch], then
    `solver_obj` on [t_switch, t1] from where the first phase ended; one joined Solution
    whose settings record both phases (`settings["auto"]["phases"]`, "switch_times").
    `engines`: (first phase's, second phase's) integrate functions; checkpointed runs
    give each phase its own file (Checkpoint.for_phase), otherwise both are the same."""
    first_engine, second_engine = engines
    tsit5 = diffrax.Tsit5(scan_kind="lax")
    ts1, ts2, shared = split_ts(ts, t_switch)
    phase_settings = dict(settings, solver="Tsit5", t1=t_switch)
    first = first_engine(
        problem, t0, t_switch, ts1, solver=tsit5, dt0=dt0, settings=phase_settings, **run_kw
    )
    phases = [_phase("tsit5", t0, first)]
    auto = dict(settings["auto"], switch_times=[], phases=phases)
    if not first.success or first.stopped_early:  # ended in the first phase
        return first_only(first, t_switch, shared, dict(settings, solver="Tsit5", auto=auto))
    theta = jnp.asarray(first.theta_final, dtype=problem.theta0.dtype)
    problem2 = eqx.tree_at(lambda p: p.theta0, problem, theta)
    second = second_engine(
        problem2, t_switch, t1, ts2, solver=solver_obj, dt0=None, settings=settings, **run_kw
    )
    phases.append(_phase(settings["auto"]["chosen"], t_switch, second))
    auto.update(switch_times=[t_switch], phases=phases)
    return join(first, second, shared, dict(settings, auto=auto))
