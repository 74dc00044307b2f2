"""Running one configuration end to end: config -> (model, data) -> flow -> files.

Files written in the output folder:
    result.json      config, versions, solver settings and stats, wall times, final metrics
    trajectory.npz   save times, loss, gradient norm, metrics, final state (no pickle)
    loss.png         loss vs time (log scale) with the fitted exponential and the envelope
    kernel.png       lambda_min / lambda_max of the tangent kernel H(t) and the Schur bound
    config.toml      the complete config that was run (defaults filled in)
    checkpoint.npz   while running (and after an interruption): the resumable state;
                     solver "auto" running Tsit5 then Rosenbrock-W keeps its first phase in
                     checkpoint.tsit5-phase.npz (both deleted once the results are saved)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ._analysis._decay import DecayFit, decay_line, fit_decay
from ._analysis._pipeline import RunAnalysis
from ._analysis._rate import RateFit, fit_rate
from ._config import build_data, build_model, dumps_toml
from ._flow._checkpoint import Checkpoint
from ._flow._problem import Problem
from ._flow._solution import Solution
from ._flow._solve import solve
from ._flow._times import default_ts
from ._io import SCHEMA_VERSION, versions, write_json, write_npz, write_text
from ._limit_step import follow_limit, limit_lines
from ._plots import figure_title, plot_kernel, plot_loss, save_figure

CHECKPOINT_FILE = "checkpoint.npz"
_FREE_OUTPUT = ("progress", "checkpoint_seconds")  # may change between a run and its resume


STEP_WARNING = 1000  # steps: smooth runs of the default size take 50-200 (docs/nonsmooth.md)
NON_SMOOTH = ("relu",)  # activations whose derivative jumps
LEAST_SQUARES = ("auto", "rosw", "exprb")  # solvers that use a squared-error loss's structure


def step_warnings(cfg: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    """Warnings for the run summary: the step count exploded (>= STEP_WARNING steps), with
    the reason when the trained activation is non-smooth (kinks in the vector field) and
    what to do (docs/nonsmooth.md)."""
    steps = int(stats.get("num_steps") or 0)
    if steps < STEP_WARNING:
        return []
    act = cfg["model"]["activation"]
    evals = stats.get("grad_evals")
    head = f"WARNING: the solver took {steps} steps ({evals} gradient evaluations)"
    if act in NON_SMOOTH:
        return [
            f"{head}: activation {act!r} has a kink, so -grad L is not differentiable where "
            "a pre-activation crosses 0 and an adaptive solver shrinks its steps at every "
            "crossing (smooth activations take 50-200 steps here). Use a smooth activation "
            "(gelu, softplus), a larger rtol (1e-5: far fewer steps), or a low-order "
            "solver (bosh3); see docs/nonsmooth.md."
        ]
    flow = cfg.get("flow", {})
    if flow.get("solver") in LEAST_SQUARES:  # already the stiff solvers
        return [f"{head}: the horizon is long; a larger rtol or a shorter t1 cost fewer."]
    if flow.get("loss", "mse") == "mse":
        # A squared-error loss: the least-squares solvers use its Gauss-Newton structure.
        return [
            f"{head}: the flow is stiff or the horizon long; for this squared-error loss "
            'use solver = "auto" (it picks Rosenbrock-W or exprb when the flow is stiff, '
            "whose cost grows with log t1 where Tsit5's grows with t1; docs/stiff.md), "
            "or a larger rtol or a shorter t1."
        ]
    return [
        f"{head}: the flow is stiff or the horizon long; consider an implicit solver "
        "(kvaerno5), a larger rtol or a shorter t1 (docs/nonsmooth.md)."
    ]


def try_fit_rate(sol: Solution) -> RateFit | None:
    """The rate fit of a solution's loss, or None when there is too little to fit."""
    ok = np.isfinite(sol.loss) & (sol.loss > 0)
    if int(ok.sum()) < 5:
        return None
    try:
        return fit_rate(sol.ts[ok], sol.loss[ok])
    except ValueError:
        return None


def try_fit_decay(sol: Solution) -> DecayFit | None:
    """Which decay law the solution's loss follows (`fit_decay`), or None when there is too
    little to fit."""
    ok = np.isfinite(sol.loss) & (sol.loss > 0)
    try:
        return fit_decay(sol.ts[ok], sol.loss[ok])
    except ValueError:
        return None


def decay_dict(dec: DecayFit | None) -> dict[str, Any] | None:
    if dec is None:
        return None
    return {
        "law": dec.law,
        "rate": dec.rate,
        "rate_ci95": list(dec.rate_ci),
        "exponent": dec.exponent,
        "exponent_ci95": list(dec.exponent_ci),
        "rms_exponential": dec.rms_exponential,
        "rms_power": dec.rms_power,
        "noise": dec.noise,
        "tol": dec.tol,
        "window": list(dec.window),
        "n_points": dec.n_points,
    }


def rate_dict(fit: RateFit | None, ts: np.ndarray | None = None) -> dict[str, Any] | None:
    """result.json's "rate_fit": the numbers of `fit` (the very object the verdict prints
    and loss.png draws); `coverage` is the window's fraction of the time before the floor
    (of the run when there is none), computed from the save times `ts`."""
    if fit is None:
        return None
    cov = None
    if ts is not None and ts.size > 1:
        t_ref = ts[-1] if fit.floor_time is None else fit.floor_time
        if t_ref > ts[0]:
            cov = float(min((fit.window[1] - fit.window[0]) / (t_ref - ts[0]), 1.0))
    return {
        "rate": fit.rate,
        "stderr": fit.stderr,
        "ci95": list(fit.ci),
        "intercept": fit.intercept,
        "window": list(fit.window),
        "r2": fit.r2,
        "n_points": fit.n_points,
        "floor_time": fit.floor_time,
        "bias_bound": fit.bias_bound,
        "half_width": 0.5 * (fit.ci[1] - fit.ci[0]),
        "coverage": cov,
    }


def checkpoint_for(cfg: dict[str, Any], out: Path, resume: bool) -> Checkpoint:
    """The run's checkpoint: out/checkpoint.npz, identified by the config (less the
    output options that do not change the numbers)."""
    oc = cfg["output"]
    ident = {**cfg, "output": {k: v for k, v in oc.items() if k not in _FREE_OUTPUT}}
    return Checkpoint(
        out / CHECKPOINT_FILE,
        every_seconds=oc["checkpoint_seconds"],
        resume=resume,
        segments=oc["segments"],
        identity=ident,
    )


def prepare_out(out: str | Path) -> Path:
    """Create `out` and check it is writable, before anything is computed."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / ".write-test", "")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise ValueError(
            f"--out: cannot write to {str(out)!r} ({exc.strerror or exc}); choose a "
            "writable folder."
        ) from None
    return out


def run_config(
    cfg: dict[str, Any], out: str | Path, *, progress: bool | None = None, resume: bool = False
) -> dict:
    """Run a validated config and write the result files into `out`. Returns result.json's
    content. The run is checkpointed to out/checkpoint.npz (see docs/reliability.md);
    `resume` continues from it. Partial results are written when the run fails or is
    interrupted; the checkpoint is deleted once the results of a finished run are saved."""
    if resume:  # before creating the folder: a failed resume must not leave an empty one
        checkpoint_for(cfg, Path(out), resume).check_resumable()
    out = prepare_out(out)
    if not resume:
        write_text(out / "config.toml", dumps_toml(cfg))
    wall0 = time.perf_counter()
    data = build_data(cfg)
    model = build_model(cfg)
    fc = cfg["flow"]
    n_save = fc["n_save"]
    ts = default_ts(0.0, fc["t1"], n_linear=n_save // 2 + 1, n_log=n_save - n_save // 2)
    analysis = RunAnalysis(cfg["analysis"], model, data, eta=fc["eta"], loss=fc["loss"])
    problem = Problem.from_model(model, data, fc["loss"], metrics=analysis.metrics)
    if fc["eta"] is not None:
        problem = problem.replace(eta=fc["eta"])
    sol = solve(
        problem,
        fc["t1"],
        ts=ts,
        solver=fc["solver"],
        rtol=fc["rtol"],
        atol=fc["atol"],
        dt0=fc["dt0"],
        max_steps=fc["max_steps"],
        loss_target=fc["loss_target"],
        save_params=cfg["output"]["save_params"],
        progress=cfg["output"]["progress"] if progress is None else progress,
        checkpoint=checkpoint_for(cfg, out, resume),
    )
    fit = try_fit_rate(sol)
    decay = try_fit_decay(sol)
    ana = analysis.finish(sol, fit)
    limit, limit_arrays = follow_limit(cfg, problem, sol)
    arrays: dict[str, np.ndarray] = {
        "schema_version": np.asarray(SCHEMA_VERSION),
        "ts": sol.ts,
        "loss": sol.loss,
        "grad_norm": sol.grad_norm,
        "theta_final": sol.theta_final,
    }
    arrays.update({f"metric_{k}": v for k, v in sol.metrics.items()})
    if fit is not None:
        arrays["local_rate"] = fit.local_rate
    if sol.params is not None:  # every array leaf, e.g. params.W (k, m, d)
        for path, leaf in jax.tree_util.tree_flatten_with_path(sol.params)[0]:
            arrays["params" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    arrays.update(ana.arrays)
    arrays.update(limit_arrays)
    write_npz(out / "trajectory.npz", arrays)
    title = figure_title(model, seed=cfg["seed"], data=data)
    plot_errors = []
    try:  # a figure must never cost the results; the same fit object as result.json's
        envelope = None if ana.report is None else ana.report.envelope
        fig = plot_loss(sol, fit, envelope=envelope, title=title)
        save_figure(fig, out / "loss.png")
    except Exception as exc:  # noqa: BLE001
        plot_errors.append(f"loss.png not drawn: {type(exc).__name__}: {exc}")
    if ana.kernel is not None:
        try:
            fig = plot_kernel(sol, ana.kernel, schur=ana.schur, title=title)
            save_figure(fig, out / "kernel.png")
        except Exception as exc:  # noqa: BLE001
            plot_errors.append(f"kernel.png not drawn: {type(exc).__name__}: {exc}")
    plot_error = "; ".join(plot_errors) or None
    write_text(out / "config.toml", dumps_toml(cfg))
    final = {
        "t_final": sol.t_final,
        "loss_initial": float(sol.loss[0]) if sol.loss.size else None,
        "loss_final": float(sol.loss[-1]) if sol.loss.size else None,
        "grad_norm_final": float(sol.grad_norm[-1]) if sol.grad_norm.size else None,
    }
    if "test_loss" in sol.metrics and sol.metrics["test_loss"].size:
        final["test_loss_final"] = float(sol.metrics["test_loss"][-1])
    for name in ("train_accuracy", "test_accuracy"):
        if name in sol.metrics and sol.metrics[name].size:
            final[f"{name}_final"] = float(sol.metrics[name][-1])
    result = {
        "schema_version": SCHEMA_VERSION,
        "completed": sol.success,
        "result": sol.result,
        "message": sol.message,
        "config": cfg,
        "data": data.info,
        "model": {
            "class": type(model).__name__,
            "trained_layers": model.trained_layers(),
            "n_params_trained": sol.settings["n_params"],
        },
        "solver": sol.settings,
        "stats": sol.stats,
        "final": final,
        "rate_fit": rate_dict(fit, sol.ts),
        "decay_law": decay_dict(decay),
        "analysis": {**ana.summary, "verdict": ana.verdict},
        "limit": limit,
        "wall_seconds": time.perf_counter() - wall0,
        "versions": versions(),
        "plot_error": plot_error,
        "warnings": step_warnings(cfg, sol.stats),
    }
    write_json(out / "result.json", result)
    if sol.result != "interrupted":  # also a two-phase auto run's first-phase file
        for f in checkpoint_for(cfg, out, False).files():
            f.unlink(missing_ok=True)
    return result


def verdict(result: dict[str, Any]) -> str:
    """A short human summary of a run's result."""
    lines = []
    f = result["final"]
    st = result["stats"]
    status = "completed" if result["completed"] else "NOT completed"
    lines.append(f"{status} ({result['result']}): {result['message']}")
    if f["loss_initial"] is not None:
        lines.append(
            f"loss {f['loss_initial']:.3e} -> {f['loss_final']:.3e} at t = {f['t_final']:.4g}"
            + (f"; test loss {f['test_loss_final']:.3e}" if "test_loss_final" in f else "")
        )
    if "train_accuracy_final" in f:
        lines.append(
            f"accuracy: train {f['train_accuracy_final']:.3f}"
            + (f", test {f['test_accuracy_final']:.3f}" if "test_accuracy_final" in f else "")
        )
    lines.append(
        f"solver {result['solver']['solver']}: {st['num_steps']} steps "
        f"({st['num_rejected_steps']} rejected), {st['grad_evals']} gradient evaluations, "
        f"compile {st['compile_seconds']:.2f} s, run {st['run_seconds']:.2f} s"
    )
    lines += result.get("warnings", [])
    rf = result["rate_fit"]
    if rf is None:
        lines.append("rate fit: not enough decaying points to fit")
    else:
        half = 0.5 * (rf["ci95"][1] - rf["ci95"][0])
        floor = (
            "" if rf["floor_time"] is None else f"; numerical floor from t = {rf['floor_time']:.4g}"
        )
        cov = rf.get("coverage")
        span = "" if cov is None else f", {100 * cov:.0f}% of the span"
        lines.append(
            f"linear rate {rf['rate']:.4g} +- {half:.2g} over t in "
            f"[{rf['window'][0]:.4g}, {rf['window'][1]:.4g}] ({rf['n_points']} save times"
            f"{span}; R^2 = {rf['r2']:.5f}){floor}"
        )
    dl = result.get("decay_law")
    if dl is not None:
        lines.append(decay_line(dl))
    lines += result.get("analysis", {}).get("verdict", [])
    lines += limit_lines(result.get("limit"))
    return "\n".join(lines)
