"""`gflow.Problem` and the one front door `gflow.solve(problem, t1, method=...)`: the same
numbers as the older calls (bitwise: the same compiled program), the closed form of a
quadratic, the analyses taking a Problem, and the closed-form kernel hooks on models."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


def _setup(n=12, d=4, m=16, seed=0):
    data = gflow.make_synthetic(n, d, n_test=6, seed=seed)
    model = gflow.TwoLayer(d, m, scaling="mf", key=jax.random.key(seed))
    return model, data


def test_from_model_reads_the_model_once_and_solve_equals_simulate_mse():
    model, data = _setup()
    prob = gflow.Problem.from_model(model, data)
    assert prob.has_args and prob.residual is not None
    assert set(prob.metrics) == {"test_loss"}
    # the model's own time scale and trainable filter
    assert jax.tree_util.tree_leaves(prob.eta) == jax.tree_util.tree_leaves(model.eta())
    a = gflow.solve(prob, 3.0, rtol=1e-9, atol=1e-11)
    b = gflow.simulate_mse(model, data, 3.0, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.metrics["test_loss"], b.metrics["test_loss"])
    assert b.stats["cache_hit"]  # the very same compiled program
    # new initial parameters of the same shapes: no recompilation
    other = gflow.TwoLayer(4, 16, scaling="mf", key=jax.random.key(7))
    c = gflow.solve(prob.replace(params=other), 3.0, rtol=1e-9, atol=1e-11)
    assert c.stats["cache_hit"]
    assert not np.array_equal(c.loss, a.loss)
    # the loss value at t = 0 is the problem's value
    np.testing.assert_allclose(a.loss[0], prob.value(), rtol=1e-14)


def test_gradient_descent_and_modified_flow_strategies_equal_the_older_calls():
    model, data = _setup()
    prob = gflow.Problem.from_model(model, data)
    g1 = gflow.solve(prob, 2.0, method=gflow.GradientDescent(dt=0.1))
    g2 = gflow.descend_mse(model, data, 0.1, 20)
    assert g1.ts[-1] == pytest.approx(2.0)
    assert g1.settings["method"] == "gradient_descent"
    np.testing.assert_array_equal(g1.loss, g2.loss)
    m1 = gflow.solve(prob, 2.0, method=gflow.ModifiedFlow(h=0.1), rtol=1e-10, atol=1e-12)
    m2 = gflow.simulate_modified(
        prob.loss,
        model,
        2.0,
        0.1,
        eta=model.eta(),
        trainable=model.trainable(),
        metrics=prob.metrics,
        args=prob.args,
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_array_equal(m1.metrics["train_loss"], m2.metrics["train_loss"])
    # GD is closer to its modified flow than to the flow (order 2 vs order 1 in h)
    f = gflow.solve(prob, 2.0, ts=g1.ts, rtol=1e-10, atol=1e-12)
    mf = gflow.solve(prob, 2.0, method=gflow.ModifiedFlow(h=0.1), ts=g1.ts, rtol=1e-10)
    gap_flow = np.max(np.abs(f.loss - g1.loss))
    gap_mod = np.max(np.abs(mf.metrics["train_loss"] - g1.loss))
    assert gap_mod < 0.2 * gap_flow


def test_quadratic_closed_form():
    # L = (1/2)|theta - a|^2 with eta = 3: L(t) = L(0) exp(-2 eta t)
    a = jnp.array([1.0, -2.0, 0.5])
    prob = gflow.Problem(lambda th, a: 0.5 * jnp.sum((th - a) ** 2), jnp.zeros(3), eta=3.0, args=a)
    sol = gflow.solve(prob, 2.0, rtol=1e-10, atol=1e-14)
    want = prob.value() * np.exp(-6.0 * sol.ts)
    # error control at rtol 1e-10 keeps the relative error of this decay near 1e-9
    np.testing.assert_allclose(sol.loss, want, rtol=1e-8, atol=1e-14)
    # new data (same shapes) reuses the program; the answer follows the data
    sol2 = gflow.solve(prob.replace(args=2 * a), 2.0, rtol=1e-10, atol=1e-14)
    assert sol2.stats["cache_hit"]
    np.testing.assert_allclose(sol2.loss, 4 * want, rtol=1e-8, atol=1e-14)


def test_bad_inputs_name_the_field():
    model, data = _setup()
    prob = gflow.Problem.from_model(model, data)
    with pytest.raises(ValueError, match="^eta: fixed by the problem"):
        gflow.solve(prob, 1.0, eta=2.0)
    with pytest.raises(ValueError, match="^t1: GradientDescent"):
        gflow.solve(prob, 1.05, method=gflow.GradientDescent(dt=0.1))
    with pytest.raises(ValueError, match="^GradientDescent.dt"):
        gflow.GradientDescent(dt=-1.0)
    with pytest.raises(ValueError, match="^method:"):
        gflow.solve(prob, 1.0, method="gd")
    with pytest.raises(ValueError, match="^problem:"):
        gflow.solve(lambda p: p, 1.0)
    with pytest.raises(ValueError, match="^replace: unknown field"):
        prob.replace(data=1)
    with pytest.raises(ValueError, match="^loss:"):
        gflow.Problem(3.0, jnp.zeros(2))
    with pytest.raises(ValueError, match="^metrics:"):
        gflow.Problem(lambda p: jnp.sum(p), jnp.zeros(2), metrics={"a": 1})


def test_analyses_take_a_problem():
    model, data = _setup()
    prob = gflow.Problem.from_model(model, data)
    x = data.x_train
    h_model = gflow.tangent_kernel(model, x)
    np.testing.assert_array_equal(gflow.tangent_kernel(prob, x), h_model)
    # eta = 1 instead of the model's eta = m on both layers: H / m, exactly linear in eta
    h1 = gflow.tangent_kernel(prob.replace(eta=1.0), x)
    np.testing.assert_allclose(h1 * model.m, h_model, rtol=1e-12, atol=1e-14)
    # only the second layer trained: the closed form's S S^T term alone
    frozen_w = prob.replace(trainable=eqx.tree_at(lambda t: t.W, model.trainable(), False))
    h_c = gflow.tangent_kernel(frozen_w, x)
    s = np.tanh(np.asarray(x) @ np.asarray(model.W).T)
    np.testing.assert_allclose(h_c, model.m * s @ s.T / model.m**2, rtol=1e-11, atol=1e-14)
    with pytest.raises(ValueError, match="^eta: fixed by the problem"):
        gflow.tangent_kernel(prob, x, eta=1.0)
    lam = gflow.hessian_lambda_max(prob)
    loss_fn, _ = gflow.mse_problem(model, data)
    want = gflow.hessian_lambda_max(loss_fn, model, eta=model.eta(), trainable=model.trainable())
    assert lam == pytest.approx(want, rel=1e-12)
    sol = gflow.solve(prob, 1.0, save_params=True, ts=np.linspace(0.0, 1.0, 3))
    along = gflow.lambda_max_along(prob, sol.params)
    assert along.shape == (3,)
    assert along[0] == pytest.approx(lam, rel=1e-6)


def test_multi_output_mse_fits_one_hot_rows():
    data = gflow.load_digits(12, n_test=6, task="classes", classes=3)
    model = gflow.TwoLayer(64, 8, outputs=3, key=jax.random.key(0))
    prob = gflow.Problem.from_model(model, data)  # mse by default
    f = model(data.x_train)
    want = 0.5 * np.mean(np.sum((f - gflow.one_hot(data.y_train, 3)) ** 2, axis=1))
    assert float(prob.value()) == pytest.approx(float(want), rel=1e-13)
    assert prob.residual is None  # residuals are for scalar outputs (solver="rosw")
    with pytest.raises(ValueError, match="^loss:"):
        gflow.Problem.from_model(model, gflow.make_synthetic(12, 64, seed=0))


class RandomFeatures(gflow.AbstractModel):
    """f(x) = m^-1/2 sum_i c_i tanh(z_i . x), z frozen: a model of our own that declares
    its closed-form kernel through the hooks (only the output layer trains)."""

    Z: jax.Array
    c: jax.Array

    def __call__(self, x):
        return jnp.tanh(x @ self.Z.T) @ self.c / jnp.sqrt(self.c.shape[0])

    def layer_eta(self):
        return {"Z": 1.0, "c": 2.0}

    def layer_trainable(self):
        return {"Z": False, "c": True}

    def kernel_layers(self):
        return {"c": "outer"}

    def kernel_factors(self, x):
        s = jnp.tanh(x @ self.Z.T)
        return gflow.KernelFactors(x, None, s, 1.0, 1.0 / self.c.shape[0])


def test_a_users_model_gets_the_closed_form_through_the_hooks():
    kz, kc, kx = jax.random.split(jax.random.key(3), 3)
    model = RandomFeatures(jax.random.normal(kz, (10, 5)), jax.random.normal(kc, (10,)))
    x = jax.random.normal(kx, (7, 5))
    closed = gflow.structured_kernel(model, x)
    jac = gflow.tangent_kernel(model, x, method="jacobian")
    np.testing.assert_allclose(closed, jac, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gflow.tangent_kernel(model, x), jac, rtol=1e-12, atol=1e-14)
    # no hidden trained W: the Schur bound says why it does not apply
    from gflow._analysis._schur import schur_applies

    assert "no trained hidden layer W" in schur_applies(model)
