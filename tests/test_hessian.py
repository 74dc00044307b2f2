"""lambda_max of H and of diag(eta) H by Lanczos with Hessian-vector products, against a
dense Hessian on a small problem."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._analysis._hessian import flat_top_eigs, lanczos_eigs


def _problem():
    data = gflow.make_synthetic(12, 3, seed=1)
    model = gflow.TwoLayer(3, 5, key=jax.random.PRNGKey(2))
    loss, _ = gflow.mse_problem(model, data)
    eta = eqx.tree_at(
        lambda m: (m.W, m.c), jax.tree_util.tree_map(lambda _: 1.0, model), (5.0, 0.5)
    )
    return loss, model, eta


def test_lanczos_exact_on_diagonal_operator():
    # With num_iters = dimension, Lanczos spans the whole space: Ritz values = eigenvalues
    # up to rounding (1e-10 relative on a spectrum spread over 1e4).
    lam = jnp.array([-3.0, 1e-2, 0.5, 2.0, 7.0, 1e2, 1e4])
    eigs = lanczos_eigs(lambda v: lam * v, jnp.ones(7) + jnp.arange(7.0), 7)
    np.testing.assert_allclose(
        np.sort(np.asarray(eigs)), np.sort(np.asarray(lam)), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("preconditioned", [False, True])
def test_lambda_max_matches_dense_hessian(preconditioned):
    loss, model, eta = _problem()
    prob = gflow.flatten_problem(loss, model, eta=eta)
    theta = prob.theta0
    dense = jax.hessian(prob.loss)(theta)  # P = 20: dense is fine for the check
    if preconditioned:
        s = jnp.sqrt(prob.eta)
        dense = s[:, None] * dense * s[None, :]
        # eigenvalues of diag(eta) H itself (non-symmetric) agree with the symmetric form
        direct = np.max(
            np.linalg.eigvals(np.asarray(prob.eta[:, None] * jax.hessian(prob.loss)(theta))).real
        )
        np.testing.assert_allclose(direct, np.linalg.eigvalsh(np.asarray(dense))[-1], rtol=1e-9)
    want = np.linalg.eigvalsh(np.asarray(dense))
    got = gflow.hessian_lambda_max(loss, model, eta=eta if preconditioned else None, num_iters=40)
    # num_iters >= P = 20: exact Krylov space, so agreement to rounding (1e-8 relative).
    np.testing.assert_allclose(got, want[-1], rtol=1e-8)
    # A short run (10 < P steps) already finds the separated top eigenvalue to 1e-6.
    ritz = np.asarray(flat_top_eigs(prob, theta, preconditioned=preconditioned, num_iters=10))
    np.testing.assert_allclose(ritz[-1], want[-1], rtol=1e-6)


def test_lambda_max_along_trajectory_and_gd_threshold():
    loss, model, eta = _problem()
    prob = gflow.flatten_problem(loss, model, eta=eta)
    noise = jax.random.normal(jax.random.PRNGKey(3), prob.theta0.shape)
    thetas = jnp.stack([prob.theta0, prob.theta0 + 0.3 * noise])
    lam = gflow.lambda_max_along(prob, thetas)
    assert lam.shape == (2,)
    for th, got in zip(thetas, lam, strict=True):
        s = jnp.sqrt(prob.eta)
        dense = s[:, None] * jax.hessian(prob.loss)(th) * s[None, :]
        np.testing.assert_allclose(got, np.linalg.eigvalsh(np.asarray(dense))[-1], rtol=1e-8)
    # GD with h just above 2 / lambda_max diverges along the top eigenvector of a quadratic.
    q = jnp.diag(jnp.array([1.0, 10.0]))
    quad = lambda p: 0.5 * p @ q @ p  # noqa: E731
    lmax = gflow.hessian_lambda_max(quad, jnp.ones(2), eta=3.0)
    assert np.isclose(lmax, 30.0, rtol=1e-12)
    stable = gflow.gradient_descent(quad, jnp.ones(2), 1.9 / lmax, 200, eta=3.0)
    unstable = gflow.gradient_descent(quad, jnp.ones(2), 2.1 / lmax, 200, eta=3.0)
    assert stable.loss[-1] < 1e-6 < unstable.loss[-1]


def test_bad_num_iters():
    with pytest.raises(ValueError, match="num_iters"):
        gflow.hessian_lambda_max(lambda p: jnp.sum(p**2), jnp.ones(3), num_iters=0)
