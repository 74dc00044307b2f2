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
import numpy as np

from . import _engine, _implicit
from ._auto import choose_solver
from ._checkpoint import Checkpoint, integrate_checkpointed
from ._controller import GridSteps
from ._dense import check_dense_memory
from ._field import make_term
from ._flatten import (
    NO_ARGS,
    FlatProblem,
    check_residual_matches_loss,
    device_array,
    flatten_problem,
)
from ._phases import run_two_phases, switch_time
from ._results import solution_from_raw
from ._rosenbrock import ExpRosenbrock, needs_residual
from ._settings import (
    check_int,
    check_metrics,
    check_positive,
    eta_setting,
    flow_settings,
    prepare_flow,
)
from ._solution import Solution
from ._solvers import SOLVERS, evals_per_step, make_solver

__all__ = [  # re-exported: the names tests, benchmarks and the other front ends import
    "SOLVERS",
    "evals_per_step",
    "make_solver",
    "flow_settings",
    "prepare_flow",
    "solution_from_raw",
]

PyTree = Any


def make_solve_fn(
    t0: float, t1: float, **settings: Any
) -> Callable[[FlatProblem, jax.Array], dict[str, Any]]:
    """The pure solve `(problem, ts) -> raw outputs` (`_engine.solve` of the `SolveSpec`
    that `_engine.make_spec(problem, t0, t1, ts, **settings)` builds: solver,
    stepsize_controller, dt0, max_steps, save_params, metrics, loss_target, progress,
    count_evals, dense), for jitting or vmapping by hand; `integrate` runs the same solve
    through the compile cache."""

    def run(prob: FlatProblem, ts_arr: jax.Array) -> dict[str, Any]:
        return _engine.solve(_engine.make_spec(prob, t0, t1, ts_arr, **settings))

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
    max_steps: int | None,
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
        limit_in_loop=True,
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
        program_source=timing["program_source"],
    )


@eqx.filter_jit
def _residual_and_loss(problem: FlatProblem) -> tuple[jax.Array, jax.Array]:
    return problem.residual(problem.theta0), problem.loss(problem.theta0)


def check_least_squares(problem: FlatProblem, state: str) -> None:
    """The Rosenbrock-W solver's requirements: a residual function whose (1/2n)|r|^2 is
    the loss (checked at theta0, one evaluation), and a flat state."""
    if problem.residual_fn is None:
        raise ValueError(
            "residual_fn: solvers 'rosw' and 'exprb' need the residuals of the least-squares loss "
            "(params -> (n,) with loss = (1/2n)|r|^2); pass residual_fn= or use "
            "simulate_mse, or choose another solver."
        )
    if state != "flat":
        raise ValueError(f"state: solvers 'rosw' and 'exprb' need state='flat', got {state!r}.")
    r, loss = _residual_and_loss(problem)
    check_residual_matches_loss(np.asarray(r), float(loss))


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
    auto_switch: bool = True,
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
            "auto": Tsit5, or when a residual_fn is given and the flow is stiff (lambda_max
            of the Gauss-Newton kernel x (t1 - t0) >= 2e3) "exprb" for an affine residual
            and "rosw" otherwise (the choice and its inputs in `settings["auto"]`, the
            probe's Jacobian rows and residual evaluation in the stats). With "rosw",
            Tsit5 runs first up to t0 + 200 / lambda_max (`auto_switch`; docs/stiff.md).
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
            with loss_fn = (1/2n)|r|^2 (least squares); (n, k, ...) residuals of a
            multi-output model are flattened, with loss_fn = 0.5 * mean(r**2) over
            every entry. Needed by `solver="rosw"`, "exprb"
            (Rosenbrock-W with the Gauss-Newton Jacobian, docs/benchmarks.md);
            `simulate_mse` passes the model's.
        auto_switch: with solver="auto" choosing Rosenbrock-W, run Tsit5 first over the
            flow's early, not yet stiff part (t0 to t0 + 200 / lambda_max) and switch
            (default). False: Rosenbrock-W throughout, e.g. when t0 is already late in
            a flow whose early part was integrated before (`follow_to_limit`'s later
            windows). With `checkpoint` the first phase has its own file
            (`Checkpoint.phase_path`); `dense=True` keeps one solver throughout.

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
    if auto:  # Tsit5 or Rosenbrock-W from the stiffness at theta0 (_auto.py); its probe
        # has checked what check_least_squares checks before it picks a residual solver
        solver_obj, auto_info = choose_solver(problem, t0, float(t1), state=state)
    elif needs_residual(solver_obj):
        check_least_squares(problem, state)
    if dense and isinstance(solver_obj, ExpRosenbrock):
        raise ValueError(
            "dense: solver 'exprb' evaluates its dense output with each step's Jacobian "
            "factor (n x P), which dense=True would keep for every step; save at chosen "
            "times instead (ts=..., save_params=True), or use solver='rosw' for dense output."
        )
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
        # A two-phase auto run: phase 1 in a file of its own, kept when it finishes.
        engines = (
            functools.partial(
                integrate_checkpointed, checkpoint=checkpoint.for_phase(True), final_checkpoint=True
            ),
            functools.partial(integrate_checkpointed, checkpoint=checkpoint.for_phase(False)),
        )
    else:
        engine = functools.partial(integrate, dense=bool(dense))
        engines = (engine, engine)
    run_kw = dict(
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        progress=progress,
    )
    t_switch = None
    switching = auto_switch and not dense
    if auto_info is not None and auto_info["chosen"] == "rosw" and switching:
        # Tsit5 first, while the flow is not yet stiff on its own time scale (_phases.py).
        t_switch = switch_time(t0, float(t1), auto_info["lambda_max"])
    if t_switch is None:
        sol = engine(
            problem, t0, float(t1), ts, solver=solver_obj, dt0=dt0, settings=settings, **run_kw
        )
    else:
        sol = run_two_phases(
            engines, problem, t0, float(t1), ts, t_switch, solver_obj, dt0, settings, run_kw
        )
    if auto_info is not None and auto_info["lambda_max"] is not None:  # the probe ran
        rows = auto_info["jacobian_rows"]
        sol.stats["jacobian_rows"] = sol.stats.get("jacobian_rows", 0) + rows
        if sol.stats["grad_equivalents"] is not None:
            sol.stats["grad_equivalents"] += rows + auto_info["probe_evals"]
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
    (`GridSteps`: the steps of `diffrax.StepTo` on that grid, with dt and n_steps as
    values, not shapes), through the same engine as `simulate`.

    Arguments:
        dt: time step (the learning rate divided by eta).
        n_steps: number of GD steps; the run ends at t = n_steps * dt.
        save_every: record the save-time quantities every this many steps (and at the end).
        Other arguments as in `simulate` (`args` too). A later call with another dt or
        n_steps, or new values of the same shapes, reuses the compiled program when it
        records as many steps (the number of save times is a shape).

    Returns:
        A `Solution` whose `ts` are k * dt for the recorded steps k.
    """
    check_positive("dt", dt)
    n_steps = check_int("n_steps", n_steps, 1)
    save_every = check_int("save_every", save_every, 1)
    check_positive("loss_target", loss_target, allow_none=True)
    check_metrics(metrics)
    problem = flatten_problem(loss_fn, params, eta=eta, trainable=trainable, args=args)
    dt = float(dt)
    steps_saved = np.unique(np.concatenate([np.arange(0, n_steps + 1, save_every), [n_steps]]))
    ts = steps_saved.astype(np.float64) * dt  # t_k = k * dt, as GridSteps steps to them
    t1 = float(ts[-1])  # the last recorded step is n_steps
    settings = {
        "method": "gradient_descent",
        "solver": "Euler",
        "stepsize_controller": "GridSteps",
        "dt": dt,
        "learning_rate": "dt * eta",
        "n_steps": n_steps,
        "save_every": save_every,
        "t0": 0.0,
        "t1": t1,
        "eta": eta_setting(eta),
        "loss_target": loss_target,
        "n_params": problem.n_params,
        "dtype": str(problem.dtype),
    }
    return integrate(
        problem,
        0.0,
        t1,
        ts,
        solver=diffrax.Euler(),
        stepsize_controller=GridSteps(
            dt=device_array(np.asarray(dt, problem.dtype)),
            n=device_array(np.asarray(n_steps)),
            t1=device_array(np.asarray(t1, problem.dtype)),
        ),
        dt0=None,
        max_steps=None,
        save_params=save_params,
        metrics=metrics,
        loss_target=loss_target,
        progress=progress,
        settings=settings,
    )
