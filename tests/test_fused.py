"""`FusedTsit5` ("tsit5-fused"): the same method as diffrax's Tsit5 with the stages
unrolled. A second implementation to compare against (diffrax's Tsit5: same steps, same
values to rounding), its convergence order on a closed-form flow, dense output, exact
evaluation counts, pytree states and float32."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow._flow import _implicit
from gflow._flow._flatten import flatten_problem
from gflow._flow._simulate import evals_per_step, make_solve_fn
from gflow._problem import mse_problem


def _network(state="flat", dtype=jnp.float64):
    data = gflow.make_synthetic(24, 5, seed=3)
    model = gflow.TwoLayer(5, 40, key=jax.random.key(1))
    model = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if isinstance(a, jax.Array) else a, model
    )
    loss, _ = mse_problem(model, data)
    return flatten_problem(loss, model, eta=model.eta(), trainable=model.trainable(), state=state)


def _solve(prob, solver, ts, tol=1e-8, dt0=None, controller=None, count=False):
    run = make_solve_fn(
        0.0,
        float(ts[-1]),
        solver=solver,
        stepsize_controller=controller or gflow.PIDController(rtol=tol, atol=tol),
        dt0=dt0,
        max_steps=10_000,
        save_params=True,
        count_evals=count,
    )
    return jax.device_get(jax.jit(run)(prob, jnp.asarray(ts)))


def test_same_steps_and_values_as_diffrax_tsit5(tol=1e-8):
    prob = _network()
    ts = np.array([0.3, 1.7, 4.0])  # save times inside steps: the dense output is used
    # diffrax's controller (growth cap 10 after the first step too): the first step of
    # 0.01 has an error estimate near rounding level, and gflow's larger first-step cap
    # would let those last bits choose the second step.
    ctrl = diffrax.PIDController(rtol=tol, atol=tol)
    a = _solve(prob, gflow.FusedTsit5(), ts, controller=ctrl)
    b = _solve(prob, diffrax.Tsit5(), ts, controller=ctrl)
    assert a["result"] == b["result"] == 0
    assert a["stats"]["num_steps"] == b["stats"]["num_steps"]
    assert a["stats"]["num_rejected_steps"] == b["stats"]["num_rejected_steps"]
    # Only the order of the floating-point sums differs: agreement to ~1e-15 relative,
    # amplified by at most the number of steps.
    np.testing.assert_allclose(a["saved"]["theta"], b["saved"]["theta"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a["saved"]["loss"], b["saved"]["loss"], rtol=1e-12)


def test_fifth_order_on_a_closed_form_flow():
    """L = sum lam_i x_i^2 / 2: theta(t) = theta0 exp(-lam t). Constant steps h: global
    error ~ h^5 (Tsit5 is a fifth-order method), and the same numbers as diffrax's."""
    lam = jnp.array([1.0, 0.4])

    def loss(p):
        return 0.5 * jnp.sum(lam * p**2)

    y0 = jnp.array([1.0, -1.5])
    prob = flatten_problem(loss, y0)
    exact = np.asarray(y0) * np.exp(-2.0 * np.asarray(lam))

    def final(solver):
        # one compile per solver: the step h is a traced argument
        return jax.jit(
            lambda h: diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, args: prob.vector_field(y)),
                solver,
                0.0,
                2.0,
                h,
                prob.theta0,
                stepsize_controller=diffrax.ConstantStepSize(),
                max_steps=100,
            ).ys[-1]
        )

    ours, theirs = final(gflow.FusedTsit5()), final(diffrax.Tsit5())
    errs, hs = [], [0.25, 0.125, 0.0625, 0.03125]
    for h in hs:
        out = np.asarray(ours(h))
        np.testing.assert_allclose(out, np.asarray(theirs(h)), rtol=1e-14)
        errs.append(np.max(np.abs(out - exact)))
    # Local orders log2(e(h) / e(h/2)) decrease towards 5 (61x, 49x, 41x per halving):
    # the finest pair is within 0.4 of 5.
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.diff(orders) < 0) and 4.8 < orders[-1] < 5.4, (orders, errs)


def test_dense_output_between_steps_is_accurate():
    """A save time in the middle of a long step is interpolated (fourth-order dense
    output): close to the exact flow, and equal to diffrax's Tsit5 interpolant."""
    lam = jnp.array([1.0, 0.4])

    def loss(p):
        return 0.5 * jnp.sum(lam * p**2)

    prob = flatten_problem(loss, jnp.array([1.0, -1.5]))
    ts = np.array([0.37, 1.0])
    kw = dict(dt0=0.5, controller=diffrax.ConstantStepSize())
    a = _solve(prob, gflow.FusedTsit5(), ts, **kw)
    b = _solve(prob, diffrax.Tsit5(), ts, **kw)
    np.testing.assert_allclose(a["saved"]["theta"], b["saved"]["theta"], rtol=1e-14)
    exact = np.array([1.0, -1.5]) * np.exp(-0.37 * np.asarray(lam))
    np.testing.assert_allclose(a["saved"]["theta"][0], exact, atol=1e-5)


def test_reported_evaluations_are_exact():
    prob = _network()
    _implicit.reset_counts()
    out = _solve(prob, gflow.FusedTsit5(), np.array([1.0, 4.0]), 1e-7, count=True)
    counted = _implicit.read_counts()["grad"]
    per, start = evals_per_step(gflow.FusedTsit5())
    assert (per, start) == (6, 1)
    assert counted == per * int(out["stats"]["num_steps"]) + start


def test_tree_state_equals_flat_state():
    ts = np.array([1.0, 4.0])
    a = _solve(_network("tree"), gflow.FusedTsit5(), ts, 1e-8)
    b = _solve(_network("flat"), gflow.FusedTsit5(), ts, 1e-8)
    assert a["stats"]["num_steps"] == b["stats"]["num_steps"]
    # The same arithmetic on another memory layout: equal to rounding, here rtol 1e-12 as
    # the same claim in test_lowstorage.py. XLA's code generation sets the last digits:
    # 3.9e-13 on one of 480 entries under the test session's XLA flags (conftest.py),
    # below 1e-13 under XLA's defaults.
    np.testing.assert_allclose(a["saved"]["theta"], b["saved"]["theta"], rtol=1e-12, atol=1e-14)


def test_float32_state_stays_float32():
    prob = _network(dtype=jnp.float32)
    out = _solve(prob, gflow.FusedTsit5(), np.array([1.0, 2.0]), 1e-5)
    assert out["result"] == 0  # diffrax's loop refuses a state whose dtype changes
    ref = _solve(prob, diffrax.Tsit5(), np.array([1.0, 2.0]), 1e-5)
    assert prob.theta0.dtype == np.float32
    # diffrax's saves promote to the time dtype (float64), for its own Tsit5 as well
    assert out["theta_final"].dtype == ref["theta_final"].dtype
    np.testing.assert_allclose(out["saved"]["theta"], ref["saved"]["theta"], rtol=1e-4, atol=1e-5)


def test_available_by_name_in_simulate():
    data = gflow.make_synthetic(16, 4, seed=0)
    model = gflow.TwoLayer(4, 16, key=jax.random.key(0))
    sol = gflow.simulate_mse(model, data, 3.0, solver="tsit5-fused", rtol=1e-7, atol=1e-7)
    ref = gflow.simulate_mse(model, data, 3.0, solver="tsit5", rtol=1e-7, atol=1e-7)
    assert sol.success and sol.settings["solver"] == "FusedTsit5"
    assert sol.stats["grad_evals"] == ref.stats["grad_evals"]
    # gflow's controller lets the first step's error estimate, which is near rounding
    # level, choose the second step: the trajectories agree to ~1e-11, far below rtol.
    np.testing.assert_allclose(sol.loss, ref.loss, rtol=1e-9)
