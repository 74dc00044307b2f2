"""The low-storage solver (`LowStorageRK4`, "lserk4") and the pytree state
(`simulate(..., state="tree")`): exact order conditions, convergence orders of the
solution, the error estimate and the dense output, exact evaluation counts, equality with
the flat engine, and the memory of one solve (XLA's buffer assignment)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._flow._flatten import flatten_problem
from gflow._flow._lowstorage import butcher_tableau, embedded_weights
from gflow._flow._simulate import make_solve_fn
from gflow._problem import mse_problem


def _order_residuals(b, a, c):
    """Residuals of the order conditions up to order 4 (8 rooted trees)."""
    return np.array(
        [
            b.sum() - 1,
            b @ c - 1 / 2,
            b @ c**2 - 1 / 3,
            b @ a @ c - 1 / 6,
            b @ c**3 - 1 / 4,
            b @ (c * (a @ c)) - 1 / 8,
            b @ a @ c**2 - 1 / 12,
            b @ a @ a @ c - 1 / 24,
        ]
    )


def test_tableau_is_fourth_order_with_third_order_embedding():
    a, b, c = butcher_tableau()
    assert np.allclose(np.triu(a), 0.0)  # explicit
    # The published 2N coefficients are 13-digit rationals: conditions hold to ~1e-14.
    np.testing.assert_allclose(_order_residuals(b, a, c), 0.0, atol=1e-14)
    bhat = embedded_weights()
    res = _order_residuals(bhat, a, c)
    np.testing.assert_allclose(res[:4], 0.0, atol=1e-14)  # third order ...
    assert np.abs(res[4:]).max() > 1e-3  # ... and not fourth: the estimate is O(h^4)
    assert np.all(bhat > 0)


def _oscillator():
    # y'' = -(1 + t/2) y as a first-order system: smooth, non-autonomous, no closed form
    # needed (the reference is Dopri8 at 1e-14).
    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[1], -(1 + 0.5 * t) * y[0]]))
    y0 = jnp.array([1.0, 0.0])
    return term, y0


def _reference(ts):
    term, y0 = _oscillator()
    return diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        0.0,
        float(ts[-1]),
        None,
        y0,
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
        stepsize_controller=diffrax.PIDController(rtol=1e-14, atol=1e-14),
        max_steps=100_000,
    ).ys


def test_error_estimate_and_dense_output_orders():
    """One step of size h: the error estimate scales like h^4 (the embedded third-order
    method's local error) and the Hermite interpolant at mid-step is within O(h^4) of the
    exact solution."""
    term, y0 = _oscillator()
    solver = gflow.LowStorageRK4()
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    est, mid = [], []
    for h in hs:
        state = solver.init(term, 0.0, h, y0, None)
        y1, err, dense, _, _ = solver.step(term, 0.0, h, y0, None, state, False)
        est.append(float(jnp.linalg.norm(err)))
        interp = solver.interpolation_cls(t0=0.0, t1=h, **dense)
        exact_mid = _reference(np.array([0.0, h / 2]))[-1]
        mid.append(float(jnp.linalg.norm(interp.evaluate(h / 2) - exact_mid)))
        np.testing.assert_allclose(interp.evaluate(0.0), y0, atol=1e-15)
        np.testing.assert_allclose(interp.evaluate(h), y1, atol=1e-15)
    slope_est = np.polyfit(np.log(hs), np.log(est), 1)[0]
    slope_mid = np.polyfit(np.log(hs), np.log(mid), 1)[0]
    assert abs(slope_est - 4) < 0.2, (est, slope_est)
    assert abs(slope_mid - 4) < 0.3, (mid, slope_mid)


def test_adaptive_solve_tracks_tolerance_and_counts_evaluations():
    term, y0 = _oscillator()
    ts = np.linspace(0.0, 6.0, 25)
    ref = _reference(ts)
    calls = []
    counted = diffrax.ODETerm(
        lambda t, y, args: (jax.debug.callback(lambda: calls.append(1)), term.vf(t, y, args))[1]
    )
    errs = []
    for tol in (1e-6, 1e-8, 1e-10):
        calls.clear()
        sol = diffrax.diffeqsolve(
            counted,
            gflow.LowStorageRK4(),
            0.0,
            6.0,
            None,
            y0,
            saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            max_steps=100_000,
        )
        # 5 evaluations per attempted step (4 stages + f(y1), the next step's f(y0)), plus
        # f(y0) at the start and diffrax's evaluation for the initial step size.
        n = int(sol.stats["num_steps"])
        assert len(calls) in (5 * n + 1, 5 * n + 2), (len(calls), n)
        errs.append(float(jnp.abs(sol.ys - ref).max()))
    # error falls with the tolerance, at most ~100x above it (global vs local error)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-8 and errs[1] < 1e-6


def _two_layer(width=48, seed=0):
    data = gflow.make_synthetic(12, 6, n_test=20, seed=seed)
    model = gflow.TwoLayer(6, width, scaling="mf", key=jax.random.key(seed))
    return model, data


@pytest.mark.parametrize("solver", ["tsit5", "lserk4"])
def test_tree_state_equals_flat_state(solver):
    """The same flow on the pytree state: same steps, same numbers (per-leaf eta,
    saved parameters, metrics, final model)."""
    model, data = _two_layer()
    kw = dict(solver=solver, rtol=1e-9, atol=1e-12, save_params=True, ts=np.linspace(0, 30, 7))
    flat = gflow.simulate_mse(model, data, 30.0, **kw)
    tree = gflow.simulate_mse(model, data, 30.0, state="tree", **kw)
    assert tree.settings["state"] == "tree" and flat.settings["state"] == "flat"
    assert tree.stats["num_steps"] == flat.stats["num_steps"]
    np.testing.assert_allclose(tree.loss, flat.loss, rtol=1e-12)
    np.testing.assert_allclose(tree.grad_norm, flat.grad_norm, rtol=1e-12)
    np.testing.assert_allclose(tree.metrics["test_loss"], flat.metrics["test_loss"], rtol=1e-12)
    np.testing.assert_allclose(tree.theta_final, flat.theta_final, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tree.params.W, flat.params.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tree.final.c, flat.final.c, rtol=1e-12, atol=1e-14)


def test_tree_state_with_frozen_leaf_and_per_leaf_eta():
    model, data = _two_layer(width=16, seed=1)
    loss_fn, _ = mse_problem(model, data)
    only_c = jax.tree_util.tree_map(lambda leaf: leaf is model.c, model)  # W frozen
    eta = jax.tree_util.tree_map(lambda _: 2.5, model)
    out = [
        gflow.simulate(loss_fn, model, 20.0, eta=eta, trainable=only_c, state=s, rtol=1e-10)
        for s in ("flat", "tree")
    ]
    np.testing.assert_array_equal(out[1].final.W, model.W)  # frozen: bitwise unchanged
    np.testing.assert_allclose(out[1].final.c, out[0].final.c, rtol=1e-11)
    assert out[1].theta_final.shape == model.c.shape


def test_tree_state_bad_inputs():
    model, data = _two_layer(width=8)
    with pytest.raises(ValueError, match="state: must be one of"):
        gflow.simulate_mse(model, data, 1.0, state="vector")
    with pytest.raises(ValueError, match="state: 'tree' is not supported with checkpoint"):
        gflow.simulate_mse(
            model, data, 1.0, state="tree", checkpoint=gflow.Checkpoint("/tmp/never-written")
        )


def _program_states(solver, state, width=4000, n=32, d=64):
    """Arguments + outputs + temporaries of the compiled solve, in state vectors."""
    data = gflow.make_synthetic(n, d, n_test=0, seed=0)
    model = gflow.TwoLayer(d, width, scaling="mf", key=jax.random.key(0))
    loss_fn, _ = mse_problem(model, data)
    prob = flatten_problem(
        loss_fn, model, eta=model.eta(), trainable=model.trainable(), state=state
    )
    run = make_solve_fn(
        0.0,
        1e4,
        solver=gflow.make_solver(solver),
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-12),
        dt0=None,
        max_steps=1000,
        loss_target=1e-9,
    )
    ts = jnp.asarray(np.geomspace(1e-3, 1e4, 41))
    ma = jax.jit(run).lower(prob, ts).compile().memory_analysis()
    total = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
    state_bytes = prob.n_params * 8
    activations = 3 * n * width * 8 / state_bytes  # the (n, m) arrays of one backward pass
    return total / state_bytes, activations


def test_low_storage_tree_solve_fits_the_memory_budget():
    """Issue 7's budget: (stages + 4) x state + data, data = the dataset and the (n, m)
    activations. XLA's buffer assignment depends on shapes only, so a small width gives
    the ratios of width 10^6 (benchmarks/wide_network.py measures the real peak there).
    The model passed in is the solve's argument (no copy), so the budget covers it."""
    states, activations = _program_states("lserk4", "tree")
    assert states <= 5 + 4 + activations, states
    # ... and the flat Tsit5 engine does not fit: the budget is a real constraint.
    states_tsit5, _ = _program_states("tsit5", "flat")
    assert states_tsit5 > 7 + 4 + activations, states_tsit5
