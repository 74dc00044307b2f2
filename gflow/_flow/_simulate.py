"""Integrating the gradient flow  d theta/dt = -eta * grad L(theta)  with Diffrax.

`simulate` (adaptive solvers, the exact flow up to a tolerance) and `gradient_descent`
(explicit Euler with a constant step, i.e. GD) share one code path: `integrate`, which
jits one diffrax solve whose save-time function records the loss, the gradient norm,
the user's metrics and (only when asked) the parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _engine, _implicit
from ._auto import choose_solver
from ._checkpoint import Checkpoint, integrate_checkpointed
from ._controller import PIDController
from ._dense import check_dense_memory, dense_from_raw
from ._field import make_term
from ._flatten import NO_ARGS, FlatProblem, flatten_problem, tree_norm
from ._fsal import FSALSolver
from ._fused import FusedTsit5
from ._lowstorage import LowStorageRK4
from ._rosenbrock import RosenbrockW, needs_residual
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
    # Rosenbrock-W (ROS34PW2) with the Gauss-Newton W of a least-squares loss, solved
    # through the n x n Woodbury system; needs residual_fn. _rosenbrock.py.
    "rosw": RosenbrockW,
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
    if isinstance(solver, FSALSolver | RosenbrockW):  # gflow's own: f(y0) once at the start
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
    dense: bool = False,
) -> Callable[[FlatProblem, jax.Array], dict[str, Any]]:
    """The pure solve `(problem, ts) -> raw outputs` (`_engine.solve` of a `SolveSpec`
    with these settings), for jitting or vmapping by hand; `integrate` runs the same solve
    through the compile cache."""

    def run(prob: FlatProblem, ts_arr: jax.Array) -> dict[str, Any]:
        return _engine.solve(
            _engine.make_spec(
                prob,
                t0,
                t1,
                ts_arr,
                solver=solver,
                stepsize_controller=stepsize_controller,
                dt0=dt0,
                max_steps=max_steps,
                save_params=save_params,
                metrics=metrics,
                loss_target=loss_target,
                progress=progress,
                count_evals=count_evals,
                dense=dense,
            )
        )

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
    dense: bool = False,
) -> Solution:
    """Solve d theta/dt = problem.vector_field(theta) on [t0, t1] and record at `ts`.

    This is the shared engine of `simulate` and `gradient_descent`; it does no argument
    checking of its own beyond what diffrax does. The solve runs through the compile
    cache (`_engine.run`): a later call of the same structure reuses the program.
    Compilation and the run are timed separately. Solvers without a fixed cost per step
    (implicit ones) have their gradient and Hessian-vector-product evaluations counted
    exactly during the run.
    """
    count_evals = evals_per_step(solver) is None
    spec = _engine.make_spec(
        problem,
        t0,
        t1,
        ts,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        progress=progress,
        count_evals=count_evals,
        dense=dense,
    )
    _implicit.reset_counts()
    out, timing = _engine.run(spec)
    # Always read: Jacobian rows (Rosenbrock-W) are counted by callbacks for every solver.
    counts = _implicit.read_counts()
    return solution_from_raw(
        out,
        problem,
        float(t0),
        float(t1),
        solver=solver,
        max_steps=max_steps,
        save_params=save_params,
        loss_target=loss_target,
        settings=settings,
        compile_seconds=timing["compile_seconds"],
        run_seconds=timing["run_seconds"],
        counts=counts,
        cache_hit=timing["cache_hit"],
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
    cache_hit: bool = False,
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
    stats["compile_seconds"] = compile_seconds
    stats["run_seconds"] = run_seconds
    stats["max_steps"] = int(max_steps)

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


@eqx.filter_jit
def _residual_and_loss(problem: FlatProblem) -> tuple[jax.Array, jax.Array]:
    return problem.residual(problem.theta0), problem.loss(problem.theta0)


def check_least_squares(problem: FlatProblem, state: str) -> None:
    """The Rosenbrock-W solver's requirements: a residual function whose (1/2n)|r|^2 is
    the loss (checked at theta0, one evaluation), and a flat state."""
    if problem.residual_fn is None:
        raise ValueError(
            "residual_fn: solver 'rosw' needs the residuals of the least-squares loss "
            "(params -> (n,) with loss = (1/2n)|r|^2); pass residual_fn= or use "
            "simulate_mse, or choose another solver."
        )
    if state != "flat":
        raise ValueError(f"state: solver 'rosw' needs state='flat', got {state!r}.")
    r, loss = _residual_and_loss(problem)
    r, loss = np.asarray(r), float(loss)
    ls = 0.5 * float(np.mean(r**2))
    if not abs(ls - loss) <= 1e-8 * max(abs(loss), 1e-300) + 1e-300:
        raise ValueError(
            f"residual_fn: (1/2n)|r|^2 = {ls:.6g} at the initial parameters but the loss "
            f"is {loss:.6g}; residual_fn must give r with loss_fn = 0.5 * mean(r**2)."
        )


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
    args: Any = NO_ARGS,
    dense: bool = False,
    residual_fn: Callable[[PyTree], jax.Array] | None = None,
) -> Solution:
    """Simulate the gradient flow  d theta/dt = -eta * grad L(theta)  from `params`.

    The solve is compiled once per structure (loss function object, parameter tree,
    shapes, solver and controller types, metrics, number of save times) and reused:
    a later call with new initial parameters, t0, t1, save times, tolerances, dt0, eta,
    loss target or data `args` of the same shapes does not recompile
    (`sol.stats["cache_hit"]`; docs/performance.md).

    Arguments:
        loss_fn: params -> scalar loss L, or (params, args) -> L when `args` is given.
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
            "auto": Tsit5, or "rosw" when a residual_fn is given and the flow is stiff
            (lambda_max of the Gauss-Newton kernel x (t1 - t0) >= 2e3; the choice and its
            inputs in `settings["auto"]`, the probe's Jacobian rows in the stats).
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
        args: data passed as the second argument of `loss_fn` and of every metric
            (diffrax's `args` convention): its arrays are program arguments, so new data
            of the same shapes reuses the compiled solve. Omit it for `loss_fn(params)`.
        dense: also keep the solver's dense output (every step's interpolation
            coefficients), so that `sol.evaluate(t)` gives theta(t) at any t in
            [t0, t_final]. Costs (max_steps + 1) steps of interpolation data (about
            (stages + 2) x P floats each) during the solve; not with `checkpoint` or
            state="tree" (docs/results.md).
        residual_fn: params -> (n,) residuals r (or (params, args) -> r with `args`),
            with loss_fn = (1/2n)|r|^2 (least squares). Needed by `solver="rosw"`
            (Rosenbrock-W with the Gauss-Newton Jacobian, docs/benchmarks.md);
            `simulate_mse` passes the model's.

    Returns:
        A `Solution`. Failures (step limit, divergence, interruption) are reported in it,
        not raised.
    """
    auto = isinstance(solver, str) and solver.lower() == "auto"
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
        solver=None if auto else solver,
        stepsize_controller=stepsize_controller,
    )
    if state == "tree" and checkpoint is not None:
        raise ValueError(
            "state: 'tree' is not supported with checkpoint (checkpoints store the flat "
            "state); use state='flat' to checkpoint, or drop checkpoint."
        )
    if dense and (checkpoint is not None or state != "flat"):
        raise ValueError(
            "dense: dense output needs one solve of a flat state; drop checkpoint and use "
            "state='flat', or pass dense=False."
        )
    problem = flatten_problem(
        loss_fn,
        params,
        eta=eta,
        trainable=trainable,
        state=state,
        args=args,
        residual_fn=residual_fn,
    )
    auto_info = None
    if auto:  # Tsit5 or Rosenbrock-W from the stiffness at theta0 (_auto.py)
        solver_obj, auto_info = choose_solver(problem, t0, float(t1), state=state)
    if needs_residual(solver_obj):
        check_least_squares(problem, state)
    if dense:
        check_dense_memory(solver_obj, make_term(False), problem, t0, float(t1), max_steps)
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
    if dense:
        settings["dense"] = True
    if auto_info is not None:
        settings["auto"] = auto_info
    if checkpoint is not None:
        if not isinstance(checkpoint, Checkpoint):
            raise ValueError(f"checkpoint: expected a gflow.Checkpoint, got {checkpoint!r}.")
        checkpoint.check_resumable()
        engine = functools.partial(integrate_checkpointed, checkpoint=checkpoint)
    else:
        engine = functools.partial(integrate, dense=bool(dense))
    sol = engine(
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
    if auto_info is not None and auto_info["jacobian_rows"]:  # the stiffness probe
        rows = auto_info["jacobian_rows"]
        sol.stats["jacobian_rows"] = sol.stats.get("jacobian_rows", 0) + rows
        if sol.stats["grad_equivalents"] is not None:
            sol.stats["grad_equivalents"] += rows
    return sol


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
    args: Any = NO_ARGS,
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
        Other arguments as in `simulate` (`args` too: a later call with new values of
        the same shapes, n_steps included, reuses the compiled program).

    Returns:
        A `Solution` whose `ts` are k * dt for the recorded steps k.
    """
    _check_positive("dt", dt)
    n_steps = _check_int("n_steps", n_steps, 1)
    save_every = _check_int("save_every", save_every, 1)
    _check_positive("loss_target", loss_target, allow_none=True)
    _check_metrics(metrics)
    problem = flatten_problem(loss_fn, params, eta=eta, trainable=trainable, args=args)
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
