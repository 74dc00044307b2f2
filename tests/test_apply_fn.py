"""Kernels and the linearized flow of any model through apply_fn(params, x), vector
outputs (full (n k, n k) kernel and per-output blocks), and analyses along a saved
trajectory. Second implementations: kernels built from a dense jax.jacobian; closed forms
for linear models; the true flow of a linear model (which is its own linearization)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gflow

D, H, N, K = 3, 5, 6, 2
X = jax.random.normal(jax.random.key(1), (N, D))
X2 = jax.random.normal(jax.random.key(2), (4, D))
Y2 = jnp.stack([jnp.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)  # (N, K)


def _mlp(out=K):
    return eqx.nn.MLP(D, out, H, 1, activation=jnp.tanh, key=jax.random.key(0))


def apply_vmap(p, x):
    return jax.vmap(p)(x)


def _dense_kernel(params, apply_fn, xa, xb, eta=1.0):
    """J(xa) eta J(xb)^T from a dense jax.jacobian of vec(f) w.r.t. all float leaves."""
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    theta, unravel = ravel_pytree(dyn)

    def f(th, xs):
        return apply_fn(eqx.combine(unravel(th), static), xs).reshape(-1)

    ja, jb = jax.jacobian(f)(theta, xa), jax.jacobian(f)(theta, xb)
    return np.asarray(eta * ja @ jb.T)


@pytest.mark.parametrize("chunk", [None, 2])
def test_multi_output_kernel_matches_dense_jacobian(chunk):
    m = _mlp()
    full = np.asarray(gflow.tangent_kernel(m, X, apply_fn=apply_vmap, chunk_size=chunk))
    want = _dense_kernel(m, apply_vmap, X, X)
    assert full.shape == (N * K, N * K)
    np.testing.assert_allclose(full, want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    blocks = np.asarray(
        gflow.tangent_kernel(m, X, apply_fn=apply_vmap, chunk_size=chunk, outputs="blocks")
    )
    assert blocks.shape == (K, N, N)
    for a in range(K):  # block a = entries (i K + a, j K + a) of the full kernel
        np.testing.assert_allclose(blocks[a], want[a::K, a::K], rtol=1e-12, atol=1e-14)
    cross = np.asarray(gflow.tangent_kernel(m, X2, X, apply_fn=apply_vmap, chunk_size=chunk))
    np.testing.assert_allclose(cross, _dense_kernel(m, apply_vmap, X2, X), rtol=1e-12, atol=1e-14)


def test_scalar_apply_fn_on_a_dict_pytree():
    p = {"w": jax.random.normal(jax.random.key(3), (H, D)), "c": jnp.linspace(-1, 1, H)}

    def apply(p, x):
        return jnp.tanh(x @ p["w"].T) @ p["c"] / H

    h = np.asarray(gflow.tangent_kernel(p, X, apply_fn=apply, eta=3.0))
    assert h.shape == (N, N)
    np.testing.assert_allclose(h, _dense_kernel(p, apply, X, X, eta=3.0), rtol=1e-12)


def test_linear_vector_model_closed_form():
    """f(x) = W x (W: (K, D)): H = eta (X X^T) kron I_K; each block = eta X X^T."""
    w = {"w": jax.random.normal(jax.random.key(4), (K, D))}

    def apply(p, x):
        return x @ p["w"].T

    gram = np.asarray(X @ X.T)
    full = np.asarray(gflow.tangent_kernel(w, X, apply_fn=apply, eta=2.5))
    np.testing.assert_allclose(full, 2.5 * np.kron(gram, np.eye(K)), rtol=1e-13, atol=1e-13)
    blocks = np.asarray(gflow.tangent_kernel(w, X, apply_fn=apply, eta=2.5, outputs="blocks"))
    np.testing.assert_allclose(blocks, np.broadcast_to(2.5 * gram, (K, N, N)), rtol=1e-13)


def test_linearized_flow_exact_for_linear_vector_model():
    """A linear model is its own linearization: the closed form equals the true flow."""
    w0 = {"w": 0.3 * jax.random.normal(jax.random.key(5), (K, D)), "b": jnp.zeros(K)}

    def apply(p, x):
        return x @ p["w"].T + p["b"]

    def loss(p):  # (1/2n) sum_i |f_i - y_i|^2
        return 0.5 * jnp.sum((apply(p, X) - Y2) ** 2) / N

    ts = jnp.array([0.0, 0.5, 2.0, 6.0])
    sol = gflow.simulate(
        loss,
        w0,
        6.0,
        eta=1.5,
        ts=ts,
        rtol=1e-11,
        atol=1e-13,
        metrics=gflow.prediction_metrics(X, apply_fn=apply)
        | gflow.prediction_metrics(X2, "pred_test", apply_fn=apply),
    )
    lin = gflow.linearized_flow(w0, X, Y2, ts, x_test=X2, apply_fn=apply, eta=1.5)
    assert lin.f_train.shape == (4, N, K) and lin.f_test.shape == (4, 4, K)
    np.testing.assert_allclose(lin.f_train, sol.metrics["pred_train"], atol=1e-8)
    np.testing.assert_allclose(lin.f_test, sol.metrics["pred_test"], atol=1e-8)
    np.testing.assert_allclose(lin.train_loss, sol.loss, rtol=1e-7)


def _mlp_loss(m):
    return 0.5 * jnp.sum((apply_vmap(m, X) - Y2) ** 2) / N


def test_kernel_metrics_and_kernel_along_an_mlp_trajectory():
    m = _mlp()
    metric = gflow.kernel_metrics(m, X, Y2, apply_fn=apply_vmap)
    v0 = np.asarray(metric["kernel"](m))
    h = _dense_kernel(m, apply_vmap, X, X)
    r = np.asarray(apply_vmap(m, X) - Y2).reshape(-1)
    np.testing.assert_allclose(v0[: N * K], np.linalg.eigvalsh(h), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v0[N * K], r @ h @ r / (r @ r), rtol=1e-10)
    assert abs(v0[N * K + 1]) < 1e-12  # no change at init
    sol = gflow.simulate(
        _mlp_loss,
        m,
        2.0,
        ts=jnp.linspace(0, 2.0, 4),
        rtol=1e-10,
        atol=1e-12,
        metrics=metric,
        save_params=True,
    )
    recorded = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    after = gflow.kernel_along(sol.params, X, Y2, apply_fn=apply_vmap)
    np.testing.assert_allclose(after.eigvals, recorded.eigvals, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(after.rayleigh, recorded.rayleigh, rtol=1e-9)
    np.testing.assert_allclose(after.change, recorded.change, rtol=1e-8, atol=1e-12)
    # -(d/dt) log L = (2/n) rayleigh for L = (1/2n) |vec r|^2 (the multi-output identity):
    # the flow's dL/dt = -|grad L|^2 (eta = 1) gives the same number
    rate = sol.grad_norm**2 / sol.loss
    np.testing.assert_allclose(rate, 2 / N * recorded.rayleigh, rtol=1e-9)


def test_lambda_max_along_solution_params():
    m = _mlp()
    sol = gflow.simulate(
        _mlp_loss, m, 1.0, ts=jnp.linspace(0, 1.0, 3), save_params=True, rtol=1e-10
    )
    prob = gflow.flatten_problem(_mlp_loss, m)
    lam = gflow.lambda_max_along(prob, sol.params, num_iters=60)
    assert lam.shape == (3,) and prob.theta0.size <= 60  # Krylov space is exact
    for i in range(3):
        th = gflow._analysis._hessian.trajectory_thetas(prob, sol.params)[i]
        dense = np.linalg.eigvalsh(np.asarray(jax.hessian(prob.loss)(th)))
        np.testing.assert_allclose(lam[i], dense[-1], rtol=1e-8)
    # the trajectory's flat states equal the flat state the solver reports at the end
    np.testing.assert_allclose(
        gflow._analysis._hessian.trajectory_thetas(prob, sol.params)[-1], sol.theta_final
    )


def test_bad_inputs():
    m = _mlp()
    with pytest.raises(ValueError, match="outputs"):
        gflow.tangent_kernel(m, X, apply_fn=apply_vmap, outputs="diag")
    with pytest.raises(ValueError, match="apply_fn"):
        gflow.tangent_kernel({"w": jnp.ones(3)}, X)
    with pytest.raises(ValueError, match="apply_fn"):
        gflow.kernel_metrics(m, X, apply_fn=3)
    with pytest.raises(ValueError, match="y:"):
        gflow.kernel_metrics(m, X, Y2[:, 0], apply_fn=apply_vmap)
    with pytest.raises(ValueError, match="jax.vmap"):  # a single-example Module, no apply_fn
        gflow.tangent_kernel(m, X)
    with pytest.raises(ValueError, match="jax.vmap"):
        gflow.kernel_metrics(m, X)
    with pytest.raises(ValueError, match="save_params=True"):
        gflow.kernel_along(None, X)
    with pytest.raises(ValueError, match="method"):
        gflow.tangent_kernel(m, X, apply_fn=apply_vmap, method="structured")
