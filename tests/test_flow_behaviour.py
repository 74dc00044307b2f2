"""Frozen leaves, early stopping, failures reported in the Solution, save times."""

import equinox as eqx
import jax
import numpy as np
import pytest

import gflow


@pytest.fixture(scope="module")
def data():
    return gflow.make_synthetic(12, 16, n_test=20, seed=0)


def test_frozen_leaves_never_move(data):
    model = gflow.TwoLayer(16, 32, train_second=False, key=jax.random.key(0))
    sol = gflow.simulate_mse(model, data, 20.0, save_params=True)
    assert np.array_equal(sol.params.c, np.broadcast_to(model.c, sol.params.c.shape))
    assert np.array_equal(sol.final.c, model.c)
    assert not np.allclose(sol.final.W, model.W)
    assert sol.settings["n_params"] == model.W.size


def test_multilayer_random_features_frozen():
    d2 = gflow.make_synthetic(10, 3, seed=1)
    model = gflow.MultiLayer(3, 24, 16, depth=4, key=jax.random.key(1))
    sol = gflow.simulate_mse(model, d2, 10.0)
    for z_before, z_after in zip(model.Z, sol.final.Z, strict=True):
        assert np.array_equal(z_before, z_after)
    assert np.array_equal(sol.final.c, model.c)
    assert sol.settings["n_params"] == model.W.size
    assert sol.loss[-1] < sol.loss[0]


def test_trainable_filter_callable_and_pytree(data):
    model = gflow.TwoLayer(16, 8, key=jax.random.key(2))
    loss_fn, _ = gflow.mse_problem(model, data)
    only_w = eqx.tree_at(lambda m: m.c, model.trainable(), False)
    sol = gflow.simulate(loss_fn, model, 2.0, trainable=only_w, eta=8.0)
    assert np.array_equal(sol.final.c, model.c)
    sol2 = gflow.simulate(loss_fn, model, 2.0, trainable=eqx.is_inexact_array, eta=8.0)
    assert not np.array_equal(sol2.final.c, model.c)


def test_early_stopping_at_loss_target(data):
    model = gflow.TwoLayer(16, 64, key=jax.random.key(3))
    sol = gflow.simulate_mse(model, data, 1e4, loss_target=1e-6)
    assert sol.success and sol.stopped_early and sol.result == "loss_target_reached"
    assert sol.t_final < 1e4
    loss_fn, _ = gflow.mse_problem(model, data)
    assert float(loss_fn(sol.final)) <= 1e-6
    assert sol.ts[-1] <= sol.t_final
    # the event fires at the first accepted step below the target: one step earlier the
    # loss was above it, so the final loss is not far below the target
    assert float(loss_fn(sol.final)) > 1e-9


def test_step_limit_returns_partial_trajectory(data):
    model = gflow.TwoLayer(16, 64, key=jax.random.key(3))
    sol = gflow.simulate_mse(model, data, 500.0, max_steps=10)
    assert not sol.success and sol.result == "max_steps_reached"
    assert "max_steps" in sol.message
    assert 0 < sol.t_final < 500.0
    assert sol.ts.size > 1 and sol.ts[-1] <= sol.t_final
    assert np.all(np.isfinite(sol.loss))


def test_gradient_descent_divergence_is_reported(data):
    model = gflow.TwoLayer(16, 64, scaling="ntk", activation="relu", key=jax.random.key(4))
    sol = gflow.descend_mse(model, data, 400.0, 200)
    assert sol.diverged and not sol.success and sol.result == "diverged"
    assert sol.ts.size >= 1 and np.all(np.isfinite(sol.loss))
    assert "smaller step" in sol.message


def test_default_ts_linear_and_log():
    ts = gflow.default_ts(0.0, 100.0)
    assert ts[0] == 0.0 and ts[-1] == 100.0
    assert np.all(np.diff(ts) > 0)
    assert np.sum(ts < 1.0) >= 40  # dense at early times on a log scale
    assert np.sum(ts > 50.0) >= 40  # and on a linear scale


def test_test_loss_metric_and_stats(data):
    model = gflow.TwoLayer(16, 32, scaling="ntk", key=jax.random.key(6))
    sol = gflow.simulate_mse(model, data, 5.0)
    assert sol.metrics["test_loss"].shape == sol.ts.shape
    st = sol.stats
    assert st["num_steps"] == st["num_accepted_steps"] + st["num_rejected_steps"]
    assert st["grad_evals"] == 6 * st["num_steps"] + 1  # Tsit5: 7 stages, FSAL
    assert st["compile_seconds"] > 0 and st["run_seconds"] > 0
    assert sol.settings["solver"] == "Tsit5" and sol.settings["rtol"] == 1e-8


def test_same_seed_same_numbers(data):
    a = gflow.simulate_mse(gflow.TwoLayer(16, 16, key=jax.random.key(9)), data, 3.0)
    b = gflow.simulate_mse(gflow.TwoLayer(16, 16, key=jax.random.key(9)), data, 3.0)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.theta_final, b.theta_final)


@pytest.mark.parametrize("t1", [1.0, 37.3, 150.0, 400.0, 1e4])
def test_default_ts_has_no_near_duplicates(t1):
    ts = gflow.default_ts(0.0, t1)
    assert ts[0] == 0.0 and ts[-1] == t1
    assert np.diff(ts).min() > 1e-9 * t1


def test_single_save_time_is_saved_once_and_matches():
    """One save time (internally saved twice, so that XLA keeps diffrax's save loop a
    loop instead of evaluating the save function at every step) gives one record, equal
    to the same time saved among others."""
    data = gflow.make_synthetic(8, 4, n_test=8, seed=2)
    model = gflow.TwoLayer(4, 16, key=jax.random.key(2))
    one = gflow.simulate_mse(model, data, 3.0, ts=[3.0], rtol=1e-10, atol=1e-12)
    two = gflow.simulate_mse(model, data, 3.0, ts=[1.5, 3.0], rtol=1e-10, atol=1e-12)
    assert one.ts.shape == (1,) and one.loss.shape == (1,)
    assert one.metrics["test_loss"].shape == (1,)
    np.testing.assert_allclose(one.loss[0], two.loss[-1], rtol=1e-12)
    np.testing.assert_allclose(one.grad_norm[0], two.grad_norm[-1], rtol=1e-12)
    assert one.stats["num_steps"] == two.stats["num_steps"]
