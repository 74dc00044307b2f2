"""Feature learning: the linearized flow (closed form) against simulated flows, layer
movement, kernel change and alignment."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


def _simulate_with_predictions(model, data, t1, ts, **kw):
    metrics = gflow.prediction_metrics(data.x_train) | gflow.prediction_metrics(
        data.x_test, "pred_test"
    )
    return gflow.simulate_mse(model, data, t1, ts=ts, metrics=metrics, **kw)


@pytest.mark.parametrize("n, d", [(5, 8), (10, 4)], ids=["full-rank", "singular"])
def test_linearized_flow_is_exact_for_linear_model(n, d):
    """The linear model is its own linearization: closed form = simulated flow on train
    and test inputs, to the solver tolerance (rtol 1e-10 -> 1e-8 with a margin for the
    accumulation over ~100 steps). With n > d, H_0 = X X^T has n - d null directions and
    the pseudo-inverse is exact."""
    data = gflow.make_synthetic(n, d, n_test=7, seed=4)
    m = gflow.Linear(d, key=jax.random.key(0))
    ts = np.linspace(0.0, 50.0, 26)
    sol = _simulate_with_predictions(m, data, 50.0, ts, rtol=1e-10, atol=1e-12)
    lin = gflow.linearized_flow(
        m, data.x_train, data.y_train, ts, x_test=data.x_test, y_test=data.y_test
    )
    assert lin.n_null == max(0, n - d)
    np.testing.assert_allclose(lin.f_train, sol.metrics["pred_train"], atol=1e-8)
    np.testing.assert_allclose(lin.f_test, sol.metrics["pred_test"], atol=1e-8)
    np.testing.assert_allclose(lin.test_loss, sol.metrics["test_loss"], rtol=1e-7)
    np.testing.assert_allclose(lin.train_loss, sol.loss, rtol=1e-7)
    assert gflow.prediction_gap(sol.metrics["pred_test"], lin.f_test).max() < 1e-8


def test_linearized_test_formula_matches_parameter_flow():
    """For any model the linearized test prediction is f_0(x) + J_x (theta_t - theta_0) with
    theta_t - theta_0 = -eta J^T U diag(phi_t) U^T r_0 (PAPER.md); check it against that
    parameter-space formula with dense Jacobians for a small two-layer net."""
    data = gflow.make_synthetic(4, 3, n_test=5, seed=2)  # n > d... H_0 still full rank
    m = gflow.TwoLayer(3, 6, key=jax.random.key(1))
    dyn, frozen = eqx.partition(m, m.trainable())
    from jax.flatten_util import ravel_pytree

    theta0, unravel = ravel_pytree(dyn)

    def f(th, x):
        return eqx.combine(unravel(th), frozen)(x)

    jx = jax.jacrev(f)(theta0, data.x_train)
    jt = jax.jacrev(f)(theta0, data.x_test)
    eta = 6.0
    h0 = eta * jx @ jx.T
    lam, u = np.linalg.eigh(h0)
    r0 = np.asarray(f(theta0, data.x_train) - data.y_train)
    t = 3.0
    n = 4
    phi = -np.expm1(-t * lam / n) / lam
    dtheta = -eta * jx.T @ (u @ (phi * (u.T @ r0)))
    lin = gflow.linearized_flow(
        m, data.x_train, data.y_train, [t], x_test=data.x_test, method="jacobian"
    )
    np.testing.assert_allclose(lin.f_test[0], f(theta0, data.x_test) + jt @ dtheta, atol=1e-12)
    np.testing.assert_allclose(lin.f_train[0], f(theta0, data.x_train) + jx @ dtheta, atol=1e-12)


def test_wide_ntk_net_stays_close_to_linearization():
    """NTK scaling: the true flow approaches its linearization as the width grows
    (lazy training). The RMS train/test gap relative to |r_0| is small at width 4096 and
    shrinks with width (the theory says ~ m^-1/2: x4 for 16x the width; we ask >= x2)."""
    data = gflow.make_synthetic(6, 10, n_test=8, seed=5)
    ts = np.linspace(0.0, 20.0, 11)
    gaps = {}
    for m_width in (256, 4096):
        m = gflow.TwoLayer(10, m_width, scaling="ntk", key=jax.random.key(7))
        sol = _simulate_with_predictions(m, data, 20.0, ts)
        lin = gflow.linearized_flow(
            m, data.x_train, data.y_train, ts, x_test=data.x_test, y_test=data.y_test
        )
        r0 = np.sqrt(np.mean((sol.metrics["pred_train"][0] - data.y_train) ** 2))
        gaps[m_width] = (
            gflow.prediction_gap(sol.metrics["pred_train"], lin.f_train).max() / r0,
            gflow.prediction_gap(sol.metrics["pred_test"], lin.f_test).max() / r0,
        )
    print("relative gaps (train, test):", gaps)
    assert gaps[4096][0] < 0.05 and gaps[4096][1] < 0.05, gaps
    assert gaps[256][0] > 2 * gaps[4096][0] and gaps[256][1] > 2 * gaps[4096][1], gaps


def test_relative_and_neuron_movement():
    m0 = gflow.TwoLayer(3, 4, key=jax.random.key(0))
    dw = jnp.zeros_like(m0.W).at[1].set(m0.W[1])  # neuron 1 doubles
    m1 = eqx.tree_at(lambda t: (t.W, t.c), m0, (m0.W + dw, 0.5 * m0.c))
    mv = gflow.relative_movement(m0, m1)
    assert mv["W"] == pytest.approx(float(jnp.linalg.norm(m0.W[1]) / jnp.linalg.norm(m0.W)))
    assert mv["c"] == pytest.approx(0.5)
    np.testing.assert_allclose(gflow.neuron_movement(m0, m1, "W"), [0, 1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(gflow.neuron_movement(m0, m1, "c"), 0.5)
    met = gflow.movement_metrics(m0)
    assert set(met) == {"movement_W", "movement_c"}
    assert float(met["movement_W"](m1)) == pytest.approx(mv["W"])
    with pytest.raises(ValueError, match="no layer 'V'"):
        gflow.relative_movement(m0, m1, layers=["V"])


def test_movement_metric_along_flow_matches_final():
    data = gflow.make_synthetic(4, 5, n_test=0, seed=0)
    m = gflow.MultiLayer(5, 6, 8, key=jax.random.key(0))
    sol = gflow.simulate_mse(
        m, data, 5.0, ts=np.linspace(0, 5, 6), metrics=gflow.movement_metrics(m)
    )
    assert sol.metrics["movement_W"][0] == 0.0
    assert sol.metrics["movement_W"][-1] == pytest.approx(
        gflow.relative_movement(m, sol.final)["W"], rel=1e-12
    )


def test_kernel_change_and_alignment():
    y = jnp.array([1.0, -2.0, 0.5])
    assert float(gflow.kernel_alignment(jnp.outer(y, y), y)) == pytest.approx(1.0)
    h0 = jnp.eye(3)
    assert gflow.kernel_change(h0, 2 * h0) == pytest.approx(1.0)
    assert float(gflow.kernel_alignment(h0, y)) == pytest.approx(1 / np.sqrt(3))


def test_linearized_bad_input():
    m = gflow.Linear(3, key=jax.random.key(0))
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="y: expected shape"):
        gflow.linearized_flow(m, x, np.ones(3), [0.0])
    with pytest.raises(ValueError, match="ts: must be"):
        gflow.linearized_flow(m, x, np.ones(4), [-1.0])
    with pytest.raises(ValueError, match="y_test: expected shape"):
        gflow.linearized_flow(m, x, np.ones(4), [1.0], x_test=x, y_test=np.ones(2))
    with pytest.raises(ValueError, match="f_lin: shape"):
        gflow.prediction_gap(np.ones((2, 3)), np.ones((2, 4)))
