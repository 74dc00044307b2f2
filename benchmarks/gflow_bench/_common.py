"""Shared pieces of the benchmarks: problems, one timed solve, errors, machine info."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gflow._data._synthetic import make_synthetic
from gflow._flow import _implicit
from gflow._flow._controller import PIDController
from gflow._flow._flatten import FlatProblem, flatten_problem
from gflow._flow._modified import modified_loss
from gflow._flow._simulate import evals_per_step, make_solve_fn
from gflow._io import versions, write_json
from gflow._models._linear import Linear
from gflow._models._multilayer import MultiLayer
from gflow._models._two_layer import TwoLayer
from gflow._problem import mse_problem


def machine() -> dict[str, Any]:
    """Versions, CPU model and count, and the load when the run started: the machine is
    shared, so absolute timings are noisy; compare ratios measured in one run."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        **versions(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "note": "other load on the machine shows in loadavg_at_start; prefer within-run ratios.",
    }


def save(result: dict[str, Any], out: str | Path, name: str) -> Path:
    path = Path(out) / f"{name}.json"
    result.setdefault("machine", machine())
    write_json(path, result)
    return path


def two_layer(m: int, *, n: int = 32, d: int = 8, seed: int = 0) -> dict[str, Any]:
    """Mean-field two-layer tanh network (eta = m on both layers) on a teacher dataset."""
    data = make_synthetic(n, d, seed=seed)
    model = TwoLayer(d, m, key=jax.random.PRNGKey(seed))
    loss, _ = mse_problem(model, data)
    return {"loss": loss, "params": model, "eta": model.eta(), "trainable": model.trainable()}


def three_layer(m: int, *, n: int = 32, d: int = 8, D: int = 16, seed: int = 0) -> dict[str, Any]:
    """Three-layer mean-field network with the first layer and the output frozen
    (partially trained: only W moves)."""
    data = make_synthetic(n, d, seed=seed)
    model = MultiLayer(d, D, m, key=jax.random.PRNGKey(seed))
    loss, _ = mse_problem(model, data)
    return {"loss": loss, "params": model, "eta": model.eta(), "trainable": model.trainable()}


def linear(
    *, n: int = 64, d: int = 16, cond: float = 1e2, spectrum: str = "log", seed: int = 0
) -> dict[str, Any]:
    """Linear model whose Hessian X^T X / n has eigenvalues in [1, cond]: log-spaced
    ("log"), or 4 outliers log-spaced in [cond/10, cond] above a bulk in [1, 10]
    ("outliers", the shape of trained networks' Hessians)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    if spectrum == "log":
        eig = np.logspace(0.0, np.log10(cond), d)
    else:
        eig = np.concatenate(
            [np.logspace(0.0, 1.0, d - 4), np.logspace(np.log10(cond) - 1, np.log10(cond), 4)]
        )
    s = np.sqrt(n * eig)
    x = u @ np.diag(s) @ v.T
    y = x @ rng.normal(size=d) / np.sqrt(d) + 0.1 * rng.normal(size=n)
    model = Linear(d, key=jax.random.PRNGKey(seed))
    x_, y_ = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        return 0.5 * jnp.mean((p(x_) - y_) ** 2)

    return {"loss": loss, "params": model, "eta": 1.0, "trainable": None}


def flat(spec: dict[str, Any], h: float | None = None, state: str = "flat") -> FlatProblem:
    """The flat problem of a spec; with `h`, of GD's modified loss L + (h/4)|grad L|_E^2;
    `state="tree"` integrates the parameter pytree itself (`simulate(..., state=)`)."""
    loss = spec["loss"]
    if h is not None:
        loss = modified_loss(loss, spec["params"], h, eta=spec["eta"], trainable=spec["trainable"])
    return flatten_problem(
        loss, spec["params"], eta=spec["eta"], trainable=spec["trainable"], state=state
    )


def solve(
    problem: FlatProblem,
    ts: np.ndarray,
    *,
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    dt0: float | None = None,
    max_steps: int = 1_000_000,
    repeats: int = 1,
) -> dict[str, Any]:
    """One solve through gflow's engine (`make_solve_fn`, as `simulate` runs it) on
    [0, ts[-1]] saving theta at `ts`: compiled once, run `repeats` times (median wall
    time), then counted exactly once more for implicit solvers (the counting callbacks
    are kept out of the timed runs)."""
    ts_arr = jnp.asarray(ts)

    def build(count: bool):
        run = make_solve_fn(
            0.0,
            float(ts[-1]),
            solver=solver,
            stepsize_controller=controller,
            dt0=dt0,
            max_steps=max_steps,
            save_params=True,
            count_evals=count,
        )
        return jax.jit(run).lower(problem, ts_arr).compile()

    start = time.perf_counter()
    compiled = build(False)
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(problem, ts_arr))
        times.append(time.perf_counter() - start)
    thetas = np.asarray(out["saved"]["theta"])
    return _finish(
        solver,
        thetas,
        int(out["result"]),
        int(out["stats"]["num_steps"]),
        times,
        compile_seconds,
        lambda: build(True)(problem, ts_arr),
    )


def _finish(solver, thetas, result, steps, times, compile_seconds, counted_run) -> dict:
    per = evals_per_step(solver)
    if per is not None:
        grad, hvp = per[0] * steps + per[1], 0
    else:
        _implicit.reset_counts()
        jax.block_until_ready(counted_run())
        counts = _implicit.read_counts()
        grad, hvp = counts["grad"], counts["hvp"]
    return {
        "thetas": thetas,
        "ok": result == 0 and bool(np.all(np.isfinite(thetas))),
        "num_steps": steps,
        "grad_evals": int(grad),
        "hvp_evals": int(hvp),
        "grad_equivalents": float(grad + _implicit.HVP_COST * hvp),
        "run_seconds": statistics.median(times),
        "run_seconds_all": times,
        "compile_seconds": compile_seconds,
    }


_RUNNERS: dict[tuple, Any] = {}


def _runner(
    solver: diffrax.AbstractSolver, adaptive: bool, modified: bool, count: bool, max_steps: int
):
    """A jitted solve whose tolerance, step, GD step h of the modified field and save times
    are traced arguments, so one compile serves a whole sweep. The field is the problem's
    -E grad L (or GD's modified field -E grad(L + (h/4) g^T E g)), exactly as in gflow's
    engine; only the save-time extras (loss, events) of `simulate` are left out."""
    key = (type(solver), id(solver), adaptive, modified, count, max_steps)
    if key in _RUNNERS:
        return _RUNNERS[key][1]

    def run(prob: FlatProblem, ts, tol, dt, h):
        def field(y):
            if not modified:
                return prob.vector_field(y)

            def tilde(th):
                g = prob.grad(th)
                return prob.loss(th) + 0.25 * h * jnp.sum(prob.eta * g**2)

            return -prob.eta * jax.grad(tilde)(y)

        vf = _implicit.counted_field(field) if count else field
        if adaptive:
            controller, dt0 = PIDController(rtol=tol, atol=tol), None
        else:
            controller, dt0 = diffrax.ConstantStepSize(), dt
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: vf(y)),
            solver,
            0.0,
            ts[-1],
            dt0,
            prob.theta0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys, sol.result._value, sol.stats["num_steps"]

    fn = jax.jit(run)
    _RUNNERS[key] = (solver, fn)  # keep the solver alive so its id stays unique
    return fn


def sweep_solve(
    problem: FlatProblem,
    ts: np.ndarray,
    *,
    solver: diffrax.AbstractSolver,
    tol: float | None = None,
    dt: float | None = None,
    h: float | None = None,
    max_steps: int = 400_000,
    repeats: int = 1,
) -> dict[str, Any]:
    """Like `solve`, with an adaptive PID controller at rtol = atol = `tol`, or constant
    steps `dt` (GD when the solver is Euler: ts must be multiples of dt); `h` solves GD's
    modified flow instead. Compiles once per (problem shapes, solver, mode)."""
    adaptive = tol is not None
    args = (
        jnp.asarray(ts),
        jnp.asarray(tol if adaptive else 0.0),
        jnp.asarray(0.0 if dt is None else dt),
        jnp.asarray(0.0 if h is None else h),
    )
    fn = _runner(solver, adaptive, h is not None, False, max_steps)
    start = time.perf_counter()
    jax.block_until_ready(fn(problem, *args))  # compile (cached) + warm-up
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        ys, result, steps = jax.block_until_ready(fn(problem, *args))
        times.append(time.perf_counter() - start)
    counted = _runner(solver, adaptive, h is not None, True, max_steps)
    return _finish(
        solver,
        np.asarray(ys),
        int(result),
        int(steps),
        times,
        max(compile_seconds - times[0], 0.0),
        lambda: counted(problem, *args),
    )


def pid(rtol: float, atol: float | None = None) -> PIDController:
    """gflow's default adaptive controller (`simulate`'s) at rtol, atol (= rtol)."""
    return PIDController(rtol=rtol, atol=rtol if atol is None else atol)


def gd_controller(t1: float, n_steps: int) -> diffrax.StepTo:
    return diffrax.StepTo(ts=jnp.linspace(0.0, t1, n_steps + 1))


def rel_error(thetas: np.ndarray, ref: np.ndarray) -> float:
    """max_k |theta(t_k) - ref(t_k)| / |ref(t_k)| over the save times (rows)."""
    num = np.linalg.norm(np.asarray(thetas) - ref, axis=1)
    return float(np.max(num / np.linalg.norm(ref, axis=1)))


def interp_at(xs: list[float], errs: list[float], target: float) -> float | None:
    """Work (xs) needed for error `target`, by log-log interpolation between the measured
    points that bracket it (None when no pair brackets it)."""
    pts = sorted((e, x) for e, x in zip(errs, xs, strict=True) if np.isfinite(e) and e > 0)
    found = []
    for (e0, x0), (e1, x1) in zip(pts[:-1], pts[1:], strict=True):
        if e0 <= target <= e1 and e1 > e0:
            w = (np.log(target) - np.log(e0)) / (np.log(e1) - np.log(e0))
            found.append(float(np.exp(np.log(x0) + w * (np.log(x1) - np.log(x0)))))
    return min(found) if found else None


def fit_order(hs: list[float], errs: list[float]) -> dict[str, float]:
    """Least-squares slope and intercept of log err vs log h."""
    slope, intercept = np.polyfit(np.log(hs), np.log(errs), 1)
    return {"order": float(slope), "log_constant": float(intercept)}
