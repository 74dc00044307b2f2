"""The [limit] step of `gflow run`: after a completed run, follow the flow from its end
point to its limit (`follow_to_limit`) and report the limit point (docs/stiff.md)."""

from __future__ import annotations

import time
from typing import Any

from ._flow._limit import follow_to_limit
from ._flow._problem import Problem
from ._flow._solution import Solution


class _OnArgs:
    """fn(params) = fn(params, args): a problem's function with its data closed over. One
    object serves every window of `follow_to_limit` (hashed by identity, like any
    object), so the windows share one compiled solve."""

    def __init__(self, fn: Any, args: Any):
        self.fn, self.args = fn, args

    def __call__(self, params: Any) -> Any:
        return self.fn(params, self.args)


def _of_params(fn: Any, problem: Problem) -> Any:
    """`fn` as a function of the params alone (None stays None)."""
    return _OnArgs(fn, problem.args) if fn is not None and problem.has_args else fn


def follow_limit(cfg: dict, problem: Problem, sol: Solution):
    """The [limit] step: after a completed run, `follow_to_limit` from its end point.
    Returns (result.json's "limit" entry or None, arrays for trajectory.npz). A failure
    here is recorded, never raised: the run's own results are kept."""
    lc = cfg["limit"]
    if not lc["follow"]:
        return None, {}
    if not sol.success:
        return {"skipped": f"the run did not complete ({sol.result})"}, {}
    start = time.perf_counter()
    try:
        point = follow_to_limit(
            _of_params(problem.loss, problem),
            sol.final,
            eta=problem.eta,
            trainable=problem.trainable,
            residual_fn=_of_params(problem.residual, problem),  # MSE: Gauss-Newton
            grad_tol=lc["grad_tol"],
            loss_tol=lc["loss_tol"],
            stall_rtol=lc["stall_rtol"],
            t_max=lc["t_max"],
            solver=lc["solver"],
            rtol=cfg["flow"]["rtol"],
            atol=cfg["flow"]["atol"],
            max_steps=cfg["flow"]["max_steps"],
            polish=lc["polish"],
        )
    except Exception as exc:  # noqa: BLE001 - the run's results must be written anyway
        return {"error": f"{type(exc).__name__}: {exc}"}, {}
    entry = {
        "t_start": float(sol.t_final),
        "t_more": float(point.t),
        "loss": point.loss,
        "grad_norm": point.grad_norm,
        "lambda_min": point.lambda_min,
        "lambda_max": point.lambda_max,
        "classification": point.classification,
        "stop_reason": point.stop_reason,
        "windows": [list(w) for w in point.windows],
        "grad_equivalents": point.grad_equivalents,
        "polished_loss": point.polished_loss,
        "polished_grad_norm": point.polished_grad_norm,
        "polish_distance": point.polish_distance,
        "polish_steps": point.polish_steps,
        "polish_note": point.polish_note,
        "wall_seconds": time.perf_counter() - start,
    }
    arrays = {"limit_theta": point.theta}
    if point.polished is not None:
        arrays["limit_polished"] = point.polished
    return entry, arrays


def limit_lines(lim: dict[str, Any] | None) -> list[str]:
    """The verdict lines of the [limit] step."""
    if lim is None:
        return []
    if "skipped" in lim:
        return [f"limit point: not followed ({lim['skipped']})"]
    if "error" in lim:
        return [f"limit point: FAILED ({lim['error']})"]
    out = [
        f"limit point: {lim['classification']} after t = {lim['t_more']:.4g} more "
        f"(stop: {lim['stop_reason']}); L = {lim['loss']:.3e}, |grad L| = "
        f"{lim['grad_norm']:.2e}, Hessian eigenvalues in [{lim['lambda_min']:.3g}, "
        f"{lim['lambda_max']:.3g}]"
    ]
    if lim["polished_loss"] is not None:
        out.append(
            f"polished ({lim['polish_note']}, {lim['polish_steps']} steps, moved "
            f"{lim['polish_distance']:.2e}): L = {lim['polished_loss']:.3e}, |grad L| = "
            f"{lim['polished_grad_norm']:.2e}"
        )
    elif lim["polish_note"]:
        out.append(f"polish: {lim['polish_note']}")
    return out
