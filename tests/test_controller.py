"""gflow's default step-size controller (`gflow.PIDController`: diffrax's PID controller
with CVODE's growth cap of 10^4 after the first step), and exact gradient-evaluation
counts."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._flow import _implicit
from gflow._flow._flatten import flatten_problem
from gflow._flow._simulate import SOLVERS, evals_per_step, make_solve_fn


def _quadratic():
    """L = sum_i lam_i x_i^2 / 2: theta_i(t) = theta_i(0) exp(-lam_i t) exactly."""
    lam = jnp.array([1.0, 0.3, 0.05])

    def loss(p):
        return 0.5 * jnp.sum(lam * p["x"] ** 2)

    return loss, {"x": jnp.array([1.0, -2.0, 0.5])}, lam


def _steps(controller, t1=10.0):
    loss, params, _ = _quadratic()
    prob = flatten_problem(loss, params)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: prob.vector_field(y)),
        diffrax.Tsit5(),
        0.0,
        t1,
        None,
        prob.theta0,
        saveat=diffrax.SaveAt(steps=True),
        stepsize_controller=controller,
        max_steps=1000,
    )
    ts = np.asarray(sol.ts)
    ys = np.asarray(sol.ys)
    keep = np.isfinite(ts)
    return ts[keep], ys[keep]


def test_equal_caps_reproduce_diffrax_step_for_step():
    ours = gflow.PIDController(rtol=1e-8, atol=1e-8, factormax_first=10.0)
    ts_a, ys_a = _steps(ours)
    ts_b, ys_b = _steps(diffrax.PIDController(rtol=1e-8, atol=1e-8))
    np.testing.assert_array_equal(ts_a, ts_b)
    np.testing.assert_array_equal(ys_a, ys_b)


def test_first_step_may_grow_past_ten_later_ones_may_not():
    ts, ys = _steps(gflow.PIDController(rtol=1e-6, atol=1e-6))
    ts_d, _ = _steps(diffrax.PIDController(rtol=1e-6, atol=1e-6))
    h = np.diff(np.concatenate([[0.0], ts]))
    # diffrax's initial step (Hairer's heuristic) is small; the first growth is > 10x...
    assert h[1] / h[0] > 10.0
    # ...and every later growth is capped at 10 (the last step is clipped to t1).
    assert np.all(h[2:-1] / h[1:-2] <= 10.0 * (1 + 1e-12))
    assert len(ts) < len(ts_d)  # fewer steps than diffrax's controller
    # still within tolerance of the exact flow theta(t) = theta0 exp(-lam t)
    _, params, lam = _quadratic()
    exact = np.asarray(params["x"])[None, :] * np.exp(-np.outer(ts, np.asarray(lam)))
    assert np.max(np.abs(ys - exact)) < 1e-5


def test_factormax_first_must_be_at_least_one():
    with pytest.raises(ValueError, match="factormax_first"):
        gflow.PIDController(rtol=1e-6, atol=1e-6, factormax_first=0.5)


def test_simulate_uses_it_by_default():
    loss, params, lam = _quadratic()
    sol = gflow.simulate(loss, params, 10.0, ts=[5.0, 10.0], rtol=1e-6, atol=1e-6)
    ref = gflow.simulate(
        loss,
        params,
        10.0,
        ts=[5.0, 10.0],
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    assert sol.stats["num_steps"] < ref.stats["num_steps"]
    # the settings say which controller ran, with its growth caps
    assert sol.settings["stepsize_controller"] == "gflow.PIDController"
    assert (sol.settings["factormax_first"], sol.settings["factormax"]) == (1e4, 10.0)
    assert ref.settings["stepsize_controller"] == "diffrax.PIDController"
    exact = np.asarray(params["x"]) * np.exp(-10.0 * np.asarray(lam))
    np.testing.assert_allclose(sol.final["x"], exact, atol=1e-5)


def _counted(solver_name, dt0, controller):
    """Solve with every vector-field evaluation counted by a host callback; returns
    (counted evaluations, number of steps)."""
    loss, params, _ = _quadratic()
    prob = flatten_problem(loss, params)
    run = make_solve_fn(
        0.0,
        20.0,
        solver=SOLVERS[solver_name](),
        stepsize_controller=controller,
        dt0=dt0,
        max_steps=1000,
        count_evals=True,
    )
    _implicit.reset_counts()
    out = jax.block_until_ready(jax.jit(run)(prob, jnp.array([5.0, 20.0])))
    return _implicit.read_counts()["grad"], int(out["stats"]["num_steps"])


@pytest.mark.parametrize("solver_name", ["tsit5", "dopri8", "lserk4", "heun"])
@pytest.mark.parametrize("dt0", [None, 0.05])
def test_tableau_evaluation_counts_equal_counted_ones(solver_name, dt0):
    """The counts gflow reports for explicit solvers (from the tableau) are exact: diffrax
    spends no evaluation choosing the initial step (it starts at 0.01, see _controller)."""
    counted, steps = _counted(solver_name, dt0, gflow.PIDController(rtol=1e-7, atol=1e-7))
    per, start = evals_per_step(SOLVERS[solver_name]())
    assert counted == per * steps + start
