"""Raw outputs of a solve -> `Solution`: diffrax result codes decoded, unreached save
times trimmed, failures explained with the fix, evaluation counts."""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _implicit
from ._dense import dense_from_raw
from ._flatten import FlatProblem, tree_norm
from ._solution import Solution
from ._solvers import evals_per_step

_RESULT_ADVICE = {
    "max_steps_reached": "increase max_steps, loosen rtol/atol, or shorten t1",
    "dt_min_reached": (
        "the step size underflowed: the flow is very stiff or blew up; "
        "try an implicit solver (kvaerno5), a smaller eta, or check the loss for NaNs"
    ),
}


_RESULT_NAMES = (
    "successful",
    "max_steps_reached",
    "dt_min_reached",
    "event_occurred",
    "max_steps_rejected",
    "internal_error",
)


def _decode_result(code: int) -> tuple[str, str]:
    """(name, diffrax's message) of a diffrax result code."""
    for name in _RESULT_NAMES:
        member = getattr(diffrax.RESULTS, name)
        if int(member._value) == code:
            return name, diffrax.RESULTS[member]
    return "failed", f"unknown diffrax result code {code}"


def _blowup_hint(theta0: Any, theta: np.ndarray, t: float) -> str:
    """A note when the state grew by over 1e3 (or overflowed) before a step-limit stop."""
    a, b = float(tree_norm(theta0)), float(np.linalg.norm(theta))
    if np.isfinite(b) and b <= 1e3 * max(a, 1e-300):
        return ""
    return (
        f" The state norm grew from {a:.3g} to {b:.3g}: the flow is probably blowing up "
        f"(finite-time blow-up near t = {t:.6g}); check that the loss is bounded below, "
        "or lower eta."
    )


def _trim(saved: dict[str, Any], ts: np.ndarray, t_final: float) -> tuple[np.ndarray, dict]:
    """Keep the save times actually reached with a finite loss (diffrax fills the rest
    with inf after an early stop)."""
    loss = np.asarray(saved["loss"])
    keep = (ts <= t_final) & np.isfinite(loss) & np.isfinite(ts)
    # keep only the leading run of reached points (a NaN in the middle ends the record)
    bad = np.nonzero(~keep)[0]
    k = int(bad[0]) if bad.size else ts.size
    return ts[:k], jax.tree_util.tree_map(lambda a: np.asarray(a)[:k], saved)


def solution_from_raw(
    out: dict[str, Any],
    problem: FlatProblem,
    t0: float,
    t1: float,
    *,
    solver: diffrax.AbstractSolver,
    max_steps: int | None,
    save_params: bool,
    loss_target: float | None,
    settings: dict[str, Any] | None,
    compile_seconds: float,
    run_seconds: float,
    counts: dict[str, int] | None = None,
    cache_hit: bool = False,
    program_source: str = "compiled",
) -> Solution:
    """Turn one (unbatched, host) raw output of a solve function into a `Solution`:
    decode the diffrax result, trim what was not reached, explain failures.

    `counts` ({"grad", "hvp"}, exact counts of the run) fills `stats["grad_evals"]` and
    `stats["hvp_evals"]` for solvers whose cost per step is not fixed; explicit solvers
    get them from their Butcher tableau. `stats["grad_equivalents"]` = grad_evals +
    2 * hvp_evals (a Hessian-vector product costs about two gradients) + jacobian_rows
    (rows of a residual Jacobian, one vector-Jacobian product each; Rosenbrock-W)."""
    name, diffrax_message = _decode_result(int(out["result"]))
    mask = out["event_mask"]
    diverged_flag = name == "event_occurred" and bool(mask.get("diverged", False))
    target_flag = name == "event_occurred" and bool(mask.get("loss_target", False))
    t_final = float(out["t_final"])
    ts_all = np.asarray(out["ts"], dtype=np.float64)
    ts_kept, saved = _trim(out["saved"], ts_all, t_final)
    # The final state as solved (flat vector or pytree) gives the final parameters; the
    # flat theta_final is reported besides it.
    state_final = jax.tree_util.tree_map(np.asarray, out["theta_final"])  # on the host
    theta_final = np.asarray(problem.ravel(state_final))
    # A non-finite loss at a reached save time (the state itself still finite) is a
    # divergence too: the record was cut there, so the run must not count as complete.
    if ts_kept.size < int(np.sum(np.isfinite(ts_all) & (ts_all <= t_final))):
        diverged_flag, target_flag = True, False

    if diverged_flag:
        name = "diverged"
        finite_t = float(ts_kept[-1]) if ts_kept.size else t0
        message = (
            f"the state or loss became non-finite by t = {t_final:.6g}; "
            f"the last finite save time is t = {finite_t:.6g}. For gradient descent use a "
            "smaller step (dt * eta below 2 / lambda_max of the Hessian); for the flow, "
            "check the loss for overflow."
        )
        success = False
        # The final state is the last finite saved one when parameters were saved.
        if save_params and ts_kept.size:
            theta_final = np.asarray(saved["theta"][-1])
            state_final = problem.from_flat(theta_final)
        t_final = finite_t
    elif target_flag:
        name = "loss_target_reached"
        message = f"stopped at t = {t_final:.6g}: the loss reached the target {loss_target:g}."
        success = True
    elif name == "successful":
        message = f"integrated to t1 = {t1:g}."
        success = True
    else:
        advice = _RESULT_ADVICE.get(name, "see diffrax.RESULTS")
        message = (
            f"stopped at t = {t_final:.6g} before t1 = {t1:g}: {diffrax_message} "
            f"Fix: {advice}. Everything up to t = {t_final:.6g} is kept."
        ) + _blowup_hint(problem.theta0, theta_final, t_final)
        success = False

    stats = {k: int(v) for k, v in out["stats"].items()}
    per = evals_per_step(solver)
    if per is not None:
        stats["grad_evals"], stats["hvp_evals"] = per[0] * stats["num_steps"] + per[1], 0
    elif counts is not None:
        stats["grad_evals"] = int(counts["grad"])
        # A dense-Jacobian implicit solver (no CountingLinearSolver) builds its Jacobian
        # from P Jacobian-vector products that are not counted: report None there.
        stats["hvp_evals"] = int(counts["hvp"]) if _implicit.counts_exactly(solver) else None
    else:
        stats["grad_evals"] = stats["hvp_evals"] = None
    stats["grad_equivalents"] = (
        None
        if stats["grad_evals"] is None or stats["hvp_evals"] is None
        else stats["grad_evals"] + _implicit.HVP_COST * stats["hvp_evals"]
    )
    if counts is not None and counts.get("jac_rows"):
        # Each Jacobian row is one vector-Jacobian product: one gradient-equivalent.
        stats["jacobian_rows"] = int(counts["jac_rows"])
        if stats["grad_equivalents"] is not None:
            stats["grad_equivalents"] += stats["jacobian_rows"]
    stats["save_evals"] = int(ts_kept.size)
    stats["cache_hit"] = bool(cache_hit)
    stats["program_source"] = program_source
    stats["compile_seconds"] = compile_seconds
    stats["run_seconds"] = run_seconds
    stats["max_steps"] = None if max_steps is None else int(max_steps)

    params_traj = None
    if save_params:
        params_traj = eqx.filter_vmap(problem.to_params)(jnp.asarray(saved["theta"]))
        params_traj = jax.tree_util.tree_map(
            lambda v: np.asarray(v) if eqx.is_array(v) else v, params_traj
        )
    final = jax.tree_util.tree_map(
        lambda a: np.asarray(a) if isinstance(a, jax.Array) else a,
        problem.params(state_final),
    )
    return Solution(
        ts=ts_kept,
        loss=np.asarray(saved["loss"], dtype=np.float64),
        grad_norm=np.asarray(saved["grad_norm"], dtype=np.float64),
        metrics={k: np.asarray(v) for k, v in saved.get("metrics", {}).items()},
        params=params_traj,
        final=final,
        theta_final=theta_final,
        t_final=t_final,
        success=success,
        stopped_early=target_flag,
        diverged=diverged_flag,
        result=name,
        message=message,
        stats=stats,
        settings=dict(settings or {}),
        dense=dense_from_raw(out["dense"], solver) if "dense" in out else None,
    )
