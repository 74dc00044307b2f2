"""Dense output: Solution.evaluate(t) between save times against the closed-form flow of
linear least squares, theta(t) = theta* + expm(-t eta A)(theta0 - theta*), A = X^T X / n;
equal to the saved values at the save times; errors for bad requests."""

import jax
import numpy as np
import pytest
import scipy.linalg

import gflow

T1 = 30.0
# Off the save grid (0, 5, ..., 30), including both ends of the range.
T_OFF = np.array([0.0, 0.0137, 0.37, 3.3, 17.7, 29.99, T1])


@pytest.fixture(scope="module")
def lsq():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5)) / np.sqrt(5)
    y = rng.standard_normal(20)
    model = gflow.Linear(5, key=jax.random.key(1))
    return x, y, model, gflow.from_arrays(x, y)


def _exact(x, y, w0, t):
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    a = x.T @ x / x.shape[0]  # Linear's eta is 1
    return np.stack([w_star + scipy.linalg.expm(-s * a) @ (w0 - w_star) for s in np.ravel(t)])


@pytest.mark.parametrize("solver", ["tsit5", "bosh3", "lserk4", "tsit5-fused"])
def test_evaluate_matches_exact_flow_between_save_times(lsq, solver):
    """diffrax's interpolations (Tsit5's 4th order, Bosh3's cubic Hermite from_k) and
    gflow's own (LowStorageRK4's Hermite, FusedTsit5's stages) all rebuild theta(t).

    Tolerance: at rtol = 1e-10 the save points are within 1e-8 of the exact flow
    (test_flow_exact); the interpolants are at least third order inside steps that the
    controller keeps at that local error, so the same 1e-8 bound holds between them
    (measured: 8e-12 to 8e-11)."""
    x, y, model, data = lsq
    sol = gflow.simulate_mse(
        model,
        data,
        T1,
        ts=np.linspace(0.0, T1, 7),
        solver=solver,
        rtol=1e-10,
        atol=1e-12,
        save_params=True,
        dense=True,
        max_steps=5000,
    )
    assert sol.success and sol.dense is not None
    assert sol.dense["ts"][0] == 0.0 and sol.dense["ts"][-1] == T1
    got = sol.evaluate(T_OFF)
    exact = _exact(x, y, np.asarray(model.w), T_OFF)
    assert got.shape == (T_OFF.size, 5)
    err = np.linalg.norm(got - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert err.max() < 1e-8, err
    # At the save times the dense output is what was saved (the same interpolation).
    np.testing.assert_allclose(sol.evaluate(sol.ts), sol.params.w, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(sol.evaluate(T1), sol.theta_final, rtol=1e-14, atol=1e-15)
    # Scalars give (P,); arrays keep their shape.
    assert sol.evaluate(3.3).shape == (5,)
    assert sol.evaluate(np.full((2, 3), 1.5)).shape == (2, 3, 5)


def test_evaluate_errors(lsq):
    _, _, model, data = lsq
    sol = gflow.simulate_mse(model, data, 2.0, rtol=1e-8, dense=True, max_steps=1000)
    for bad in (-0.1, 2.0001, np.nan, [0.5, 3.0]):
        with pytest.raises(ValueError, match="outside the dense output's range"):
            sol.evaluate(bad)
    plain = gflow.simulate_mse(model, data, 2.0)
    assert plain.dense is None
    with pytest.raises(ValueError, match="simulate with dense=True"):
        plain.evaluate(1.0)


def test_evaluate_stops_at_t_final_of_an_early_stop(lsq):
    _, _, model, data = lsq
    sol = gflow.simulate_mse(model, data, 50.0, dense=True, loss_target=0.5, max_steps=1000)
    assert sol.result == "loss_target_reached" and sol.t_final < 50.0
    np.testing.assert_allclose(sol.evaluate(sol.t_final), sol.theta_final, rtol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        sol.evaluate(0.5 * (sol.t_final + 50.0))


def test_dense_refused_where_unsupported(lsq, tmp_path):
    _, _, model, data = lsq
    with pytest.raises(ValueError, match="dense: dense output needs one solve"):
        gflow.simulate_mse(model, data, 1.0, dense=True, state="tree")
    with pytest.raises(ValueError, match="dense: dense output needs one solve"):
        gflow.simulate_mse(
            model, data, 1.0, dense=True, checkpoint=gflow.Checkpoint(tmp_path / "c.npz")
        )
    # The buffers diffrax reserves for max_steps steps are checked before compiling.
    with pytest.raises(ValueError, match="lower max_steps"):
        gflow.simulate_mse(model, data, 1.0, dense=True, max_steps=10**9)
