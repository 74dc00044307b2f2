"""Integrating the gradient flow  d theta/dt = -eta * grad L(theta)  with Diffrax.

`simulate` (adaptive solvers, the exact flow up to a tolerance) and `gradient_descent`
(explicit Euler with a constant step, i.e. GD) share one code path: `integrate`, which
jits one diffrax solve whose save-time function records the loss, the gradient norm,
the user's metrics and (only when asked) the parameters.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from . import _implicit
from ._checkpoint import Checkpoint, integrate_checkpointed
from ._controller import PIDController
from ._field import FORWARD, make_event, make_save_fn, make_term, watches_divergence
from ._flatten import FlatProblem, flatten_problem, tree_norm
from ._fsal import FSALSolver
from ._fused import FusedTsit5
from ._lowstorage import LowStorageRK4
from ._precision import check_rtol_resolution
from ._solution import Solution
from ._times import check_ts, default_ts

PyTree = Any


def _rk(cls: type) -> Callable[[], diffrax.AbstractSolver]:
    """A Runge-Kutta solver whose stage loop is a plain `lax.scan` (the solve is never
    differentiated, so diffrax's checkpointed scan is not needed; faster to trace)."""
    return functools.partial(cls, scan_kind="lax")


SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": _rk(diffrax.Heun),
    "midpoint": _rk(diffrax.Midpoint),
    "ralston": _rk(diffrax.Ralston),
    "bosh3": _rk(diffrax.Bosh3),
    "tsit5": _rk(diffrax.Tsit5),
    "dopri5": _rk(diffrax.Dopri5),
    "dopri8": _rk(diffrax.Dopri8),
    "kvaerno3": _rk(diffrax.Kvaerno3),
    "kvaerno4": _rk(diffrax.Kvaerno4),
    "kvaerno5": _rk(diffrax.Kvaerno5),
    "implicit_euler": diffrax.ImplicitEuler,
    # Matrix-free Newton-Krylov (Hessian-vector products, no P x P Jacobian); _implicit.py.
    "kvaerno3-matfree": lambda: _implicit.matfree_implicit("kvaerno3"),
    "kvaerno5-matfree": lambda: _implicit.matfree_implicit("kvaerno5"),
    # 2N-storage fourth order: 6 state vectors per step whatever the stages; _lowstorage.py.
    "lserk4": LowStorageRK4,
    # Tsit5 with the stages unrolled and fused (less memory traffic per step); _fused.py.
    "tsit5-fused": FusedTsit5,
}


def make_solver(solver: str | diffrax.AbstractSolver | None) -> diffrax.AbstractSolver:
    """A diffrax solver from a name (see `SOLVERS`) or a solver object (returned as is)."""
    if solver is None:
        return SOLVERS["tsit5"]()
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in SOLVERS:
        return SOLVERS[solver.lower()]()
    raise ValueError(
        f"solver: unknown solver {solver!r}; use one of {sorted(SOLVERS)} "
        "or pass a diffrax solver object such as diffrax.Dopri8()."
    )


def evals_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int] | None:
    """(vector-field evaluations per attempted step, evaluations at start) for explicit
    Runge-Kutta solvers, from their Butcher tableau; None when it is not fixed (implicit
    solvers, whose Newton iterations vary)."""
    if isinstance(solver, diffrax.Euler):
        return 1, 0
    if isinstance(solver, FSALSolver):  # gflow's own solvers: f(y0) once at the start
        return solver.evals_per_step, 1
    tableau = getattr(solver, "tableau", None)
    if isinstance(solver, diffrax.AbstractERK) and isinstance(tableau, diffrax.ButcherTableau):
        if tableau.fsal:
            return tableau.num_stages - 1, 1
        return tableau.num_stages, 0
    return None


def _check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: must be a finite positive number, got {value!r}.")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}.")
    return int(value)


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


def make_solve_fn(
    t0: float,
    t1: float,
    *,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    max_steps: int,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    loss_target: float | None = None,
    progress: bool = False,
    count_evals: bool = False,
) -> Callable[[FlatProblem, jax.Array], dict[str, Any]]:
    """The pure solve `(problem, ts) -> raw outputs` that `integrate` jits.

    It is free of Python side effects, so it can be jitted, vmapped over a batch of
    problems (an ensemble: batched theta0, eta and frozen leaves) or sharded. The raw
    outputs are turned into a `Solution` by `solution_from_raw`. The one exception is
    `count_evals=True`, which counts vector-field evaluations with a host callback
    (`_implicit.counted_field`) for solvers whose cost per step is not fixed.
    """
    t0, t1 = float(t0), float(t1)
    save_fn = make_save_fn(metrics, save_params)
    event = make_event(loss_target, divergence=watches_divergence(stepsize_controller))
    term = make_term(count_evals)
    meter = diffrax.TqdmProgressMeter(refresh_steps=50) if progress else diffrax.NoProgressMeter()

    def run(prob: FlatProblem, ts_arr: jax.Array) -> dict[str, Any]:
        # A single save time is saved twice and the copy dropped: diffrax's save loop
        # over one time (max_steps=1) is compiled by XLA into straight-line code that
        # evaluates the save function (a gradient) at every step, not once.
        single = ts_arr.shape[0] == 1
        if single:
            ts_arr = jnp.concatenate([ts_arr, ts_arr])
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t0,
            t1,
            dt0,
            prob.theta0,
            args=prob,
            saveat=diffrax.SaveAt(
                subs=[diffrax.SubSaveAt(ts=ts_arr, fn=save_fn), diffrax.SubSaveAt(t1=True)]
            ),
            stepsize_controller=stepsize_controller,
            event=event,
            max_steps=max_steps,
            adjoint=FORWARD,
            throw=False,
            progress_meter=meter,
        )
        saved, last = sol.ys
        ts_saved = sol.ts[0]
        if single:
            saved = jax.tree_util.tree_map(lambda a: a[:1], saved)
            ts_saved = ts_saved[:1]
        return {
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

    return run


def integrate(
    problem: FlatProblem,
    t0: float,
    t1: float,
    ts: np.ndarray,
    *,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    max_steps: int,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    loss_target: float | None = None,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
) -> Solution:
    """Solve d theta/dt = problem.vector_field(theta) on [t0, t1] and record at `ts`.

    This is the shared engine of `simulate` and `gradient_descent`; it does no argument
    checking of its own beyond what diffrax does. Compilation and the run are timed
    separately. Solvers without a fixed cost per step (implicit ones) have their gradient
    and Hessian-vector-product evaluations counted exactly during the run.
    """
    count_evals = evals_per_step(solver) is None
    run = make_solve_fn(
        t0,
        t1,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        progress=progress,
        count_evals=count_evals,
    )
    # The save times are a constant of the program (one solve, compiled once), so XLA
    # folds diffrax's checks on them away at compile time.
    ts_const = np.asarray(ts, dtype=problem.dtype)
    start = time.perf_counter()
    compiled = jax.jit(lambda prob: run(prob, ts_const)).lower(problem).compile()
    compile_seconds = time.perf_counter() - start
    _implicit.reset_counts()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(problem))
    run_seconds = time.perf_counter() - start
    counts = _implicit.read_counts() if count_evals else None
    return solution_from_raw(
        jax.device_get(out),
        problem,
        float(t0),
        float(t1),
        solver=solver,
        max_steps=max_steps,
        save_params=save_params,
        loss_target=loss_target,
        settings=settings,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        counts=counts,
    )


def solution_from_raw(
    out: dict[str, Any],
    problem: FlatProblem,
    t0: float,
    t1: float,
    *,
    solver: diffrax.AbstractSolver,
    max_steps: int,
    save_params: bool,
    loss_target: float | None,
    settings: dict[str, Any] | None,
    compile_seconds: float,
    run_seconds: float,
    counts: dict[str, int] | None = None,
) -> Solution:
    """Turn one (unbatched, host) raw output of a solve function into a `Solution`:
    decode the diffrax result, trim what was not reached, explain failures.

    `counts` ({"grad", "hvp"}, exact counts of the run) fills `stats["grad_evals"]` and
    `stats["hvp_evals"]` for solvers whose cost per step is not fixed; explicit solvers
    get them from their Butcher tableau. `stats["grad_equivalents"]` = grad_evals +
    2 * hvp_evals (a Hessian-vector product costs about two gradients)."""
    name, diffrax_message = _decode_result(int(out["result"]))
    mask = out["event_mask"]
    diverged_flag = name == "event_occurred" and bool(mask.get("diverged", False))
    target_flag = name == "event_occurred" and bool(mask.get("loss_target", False))
    t_final = float(out["t_final"])
    ts_all = np.asarray(out["ts"], dtype=np.float64)
    ts_kept, saved = _trim(out["saved"], ts_all, t_final)
    # The final state as solved (flat vector or pytree) gives the final parameters; the
    # flat theta_final is reported besides it.
    state_final = jax.tree_util.tree_map(jnp.asarray, out["theta_final"])
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
            state_final = problem.from_flat(jnp.asarray(theta_final))
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
        stats["hvp_evals"] = int(counts["hvp"]) if _implicit.is_matfree(solver) else None
    else:
        stats["grad_evals"] = stats["hvp_evals"] = None
    stats["grad_equivalents"] = (
        None
        if stats["grad_evals"] is None or stats["hvp_evals"] is None
        else stats["grad_evals"] + _implicit.HVP_COST * stats["hvp_evals"]
    )
    stats["save_evals"] = int(ts_kept.size)
    stats["compile_seconds"] = compile_seconds
    stats["run_seconds"] = run_seconds
    stats["max_steps"] = int(max_steps)

    params_traj = None
    if save_params:
        params_traj = jax.vmap(problem.to_params)(jnp.asarray(saved["theta"]))
        params_traj = jax.tree_util.tree_map(np.asarray, params_traj)
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
    )


def _check_metrics(metrics: Any) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"metrics: expected a dict name -> fn(params), got {type(metrics).__name__}."
        )
    for name, fn in metrics.items():
        if not isinstance(name, str) or not callable(fn):
            raise ValueError(
                f"metrics: entry {name!r} must map a str name to a callable fn(params) -> "
                f"array, got {type(fn).__name__}."
            )


def _eta_setting(eta: Any) -> Any:
    if isinstance(eta, int | float | np.floating | np.integer):
        return float(eta)
    return "per-leaf"


def flow_settings(
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    *,
    rtol: float,
    atol: float,
    dt0: float | None,
    max_steps: int,
    t0: float,
    t1: float,
    eta: Any,
    loss_target: float | None,
    n_params: int,
    dtype: Any,
) -> dict[str, Any]:
    """The settings a gradient-flow result records (simulate and simulate_ensemble)."""
    ctrl = type(stepsize_controller)
    growth = {  # the step-growth caps of a PID controller (gflow's or diffrax's)
        k: float(getattr(stepsize_controller, k))
        for k in ("factormax_first", "factormax")
        if hasattr(stepsize_controller, k)
    }
    return {
        "method": "gradient_flow",
        "solver": type(solver).__name__,
        "stepsize_controller": f"{ctrl.__module__.split('.')[0]}.{ctrl.__name__}",
        **growth,
        "rtol": float(rtol),
        "atol": float(atol),
        "dt0": dt0,
        "max_steps": max_steps,
        "t0": t0,
        "t1": float(t1),
        "eta": _eta_setting(eta),
        "loss_target": loss_target,
        "n_params": int(n_params),
        "dtype": str(dtype),
    }


def prepare_flow(
    t1: float,
    *,
    t0: float,
    ts: Any,
    rtol: float,
    atol: float,
    dt0: float | None,
    max_steps: int,
    loss_target: float | None,
    metrics: Mapping[str, Callable] | None,
    solver: str | diffrax.AbstractSolver | None,
    stepsize_controller: diffrax.AbstractStepSizeController | None,
) -> tuple[float, np.ndarray, int, diffrax.AbstractSolver, diffrax.AbstractStepSizeController]:
    """Check the arguments every gradient-flow front end shares (before anything is
    compiled) and choose the solver and controller: PID(rtol, atol) for adaptive
    solvers, a constant step dt0 otherwise. Returns (t0, ts, max_steps, solver,
    controller)."""
    _check_positive("t1", t1)
    t0 = float(t0)
    if not np.isfinite(t0) or not float(t1) > t0:
        raise ValueError(f"t1: must be greater than t0 = {t0}, got {t1}.")
    _check_positive("rtol", rtol)
    check_rtol_resolution(rtol)  # warns when rtol < eps of the state's dtype
    _check_positive("atol", atol)
    _check_positive("dt0", dt0, allow_none=True)
    _check_positive("loss_target", loss_target, allow_none=True)
    max_steps = _check_int("max_steps", max_steps, 1)
    _check_metrics(metrics)
    ts = default_ts(t0, float(t1)) if ts is None else check_ts(ts, t0, float(t1))
    solver_obj = make_solver(solver)
    if stepsize_controller is None:
        if isinstance(solver_obj, diffrax.AbstractAdaptiveSolver):
            stepsize_controller = PIDController(rtol=rtol, atol=atol)
        else:
            if dt0 is None:
                raise ValueError(
                    f"dt0: solver {type(solver_obj).__name__} has no error estimate, so it "
                    "needs a constant step; pass dt0 (or use gradient_descent for GD)."
                )
            stepsize_controller = diffrax.ConstantStepSize()
    return t0, ts, max_steps, solver_obj, stepsize_controller


def simulate(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
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
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
    state: str = "flat",
) -> Solution:
    """Simulate the gradient flow  d theta/dt = -eta * grad L(theta)  from `params`.

    Arguments:
        loss_fn: params -> scalar loss L.
        params: initial parameters, any pytree of arrays (equinox Modules included).
        t1: final time (flow time, in the units fixed by `eta`; see docs/time.md).
        eta: time scale, a positive scalar or a pytree like `params` with one scalar per
            leaf (e.g. `model.eta()`).
        trainable: which leaves move: None (all floating arrays), a callable filter, or a
            pytree of bools like `params`. Frozen leaves are closed over, not integrated.
        ts: save times in [t0, t1]; default `default_ts(t0, t1)` (linear and log grid).
        t0: initial time.
        save_params: also return the parameters at every save time (memory k x P).
        metrics: name -> fn(params) -> array, recorded at the save times.
        solver: a diffrax solver object or a name in `SOLVERS`; default Tsit5.
        stepsize_controller: default `gflow.PIDController(rtol, atol)` (diffrax's PID
            controller with CVODE's larger growth cap after the first step).
        rtol, atol: error-control tolerances of the default controller.
        dt0: initial step (None: chosen automatically by the controller).
        max_steps: step limit; reaching it ends the run with the partial trajectory.
        loss_target: stop (successfully) once the loss is at or below this value.
        progress: show a progress bar.
        checkpoint: a `Checkpoint` to integrate in time segments and checkpoint (and
            resume) the run; None integrates in one solve (see docs/reliability.md).
        state: "flat" (default: theta is one raveled vector) or "tree" (the trainable
            pytree is integrated as it is, eta per leaf): the same flow with 3-4 state
            vectors less memory; with solver="lserk4" a step fits in (5 + 4) state
            vectors + data (docs/scaling.md). Not with `checkpoint`.

    Returns:
        A `Solution`. Failures (step limit, divergence, interruption) are reported in it,
        not raised.
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
    if state == "tree" and checkpoint is not None:
        raise ValueError(
            "state: 'tree' is not supported with checkpoint (checkpoints store the flat "
            "state); use state='flat' to checkpoint, or drop checkpoint."
        )
    problem = flatten_problem(loss_fn, params, eta=eta, trainable=trainable, state=state)
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
        n_params=problem.n_params,
        dtype=problem.dtype,
    )
    settings["state"] = state
    if checkpoint is not None:
        if not isinstance(checkpoint, Checkpoint):
            raise ValueError(f"checkpoint: expected a gflow.Checkpoint, got {checkpoint!r}.")
        checkpoint.check_resumable()
        engine = functools.partial(integrate_checkpointed, checkpoint=checkpoint)
    else:
        engine = integrate
    return engine(
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
        progress=progress,
        settings=settings,
    )


def gradient_descent(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    dt: float,
    n_steps: int,
    *,
    eta: Any = 1.0,
    trainable: Any = None,
    save_every: int = 1,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    loss_target: float | None = None,
    progress: bool = False,
) -> Solution:
    """Gradient descent as explicit Euler on the gradient-flow field.

    theta_{k+1} = theta_k - dt * eta * grad L(theta_k): the learning rate is dt * eta and
    step k is flow time t = k * dt, so a GD `Solution` compares with a `simulate`
    `Solution` at equal times. Runs `diffrax.Euler` with steps fixed at t = k * dt
    (`StepTo`), through the same engine as `simulate`.

    Arguments:
        dt: time step (the learning rate divided by eta).
        n_steps: number of GD steps; the run ends at t = n_steps * dt.
        save_every: record the save-time quantities every this many steps (and at the end).
        Other arguments as in `simulate`.

    Returns:
        A `Solution` whose `ts` are k * dt for the recorded steps k.
    """
    _check_positive("dt", dt)
    n_steps = _check_int("n_steps", n_steps, 1)
    save_every = _check_int("save_every", save_every, 1)
    _check_positive("loss_target", loss_target, allow_none=True)
    _check_metrics(metrics)
    problem = flatten_problem(loss_fn, params, eta=eta, trainable=trainable)
    dt = float(dt)
    grid = np.arange(n_steps + 1, dtype=np.float64) * dt
    steps_saved = np.unique(np.concatenate([np.arange(0, n_steps + 1, save_every), [n_steps]]))
    ts = grid[steps_saved]
    settings = {
        "method": "gradient_descent",
        "solver": "Euler",
        "stepsize_controller": "StepTo",
        "dt": dt,
        "learning_rate": "dt * eta",
        "n_steps": n_steps,
        "save_every": save_every,
        "t0": 0.0,
        "t1": float(grid[-1]),
        "eta": _eta_setting(eta),
        "loss_target": loss_target,
        "n_params": problem.n_params,
        "dtype": str(problem.dtype),
    }
    return integrate(
        problem,
        0.0,
        float(grid[-1]),
        ts,
        solver=diffrax.Euler(),
        stepsize_controller=diffrax.StepTo(ts=jnp.asarray(grid)),
        dt0=None,
        max_steps=n_steps,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        progress=progress,
        settings=settings,
    )
