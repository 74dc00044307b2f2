"""The tangent kernel H = J diag(eta) J^T against dense Jacobians and closed forms, and
dL/dt = -(1/n^2) r^T H r against finite differences of a simulated trajectory."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gflow

# Every kernel here is a sum of O(P) products of O(1) numbers: round-off ~ P eps |H|, far
# below 1e-12 |H| for the sizes used.
TOL = 1e-12


def _dense(model, x, x2=None, eta=None):
    """J(x) diag(eta) J(x2)^T with dense jacrev Jacobians (the reference)."""
    eta = model.eta() if eta is None else eta
    dyn, frozen = eqx.partition(model, model.trainable())
    theta, unravel = ravel_pytree(dyn)
    eta_vec = gflow.flatten_problem(lambda p: 0.0, model, eta=eta, trainable=model.trainable()).eta

    def jac(xs):
        return jax.jacrev(lambda t: eqx.combine(unravel(t), frozen)(xs))(theta)

    ja = jac(x)
    jb = ja if x2 is None else jac(x2)
    return np.asarray((ja * eta_vec) @ jb.T)


def _models():
    k = jax.random.key(3)
    return [
        gflow.TwoLayer(5, 7, key=k),
        gflow.TwoLayer(5, 7, scaling="ntk", activation="softplus", key=k),
        gflow.TwoLayer(5, 7, train_first=False, key=k),
        gflow.MultiLayer(5, 6, 4, scaling="mf-sqrt", train_output=True, key=k),
        gflow.MultiLayer(5, 6, 4, depth=4, scaling="ntk", activation="gelu", key=k),
        gflow.Linear(5, key=k),
    ]


@pytest.fixture(scope="module")
def xs():
    x = jax.random.normal(jax.random.key(0), (6, 5)) / np.sqrt(5)
    x2 = jax.random.normal(jax.random.key(1), (3, 5)) / np.sqrt(5)
    return x, x2


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_kernel_matches_dense_jacobian(model, xs):
    x, x2 = xs
    ref = _dense(model, x)
    scale = np.abs(ref).max()
    for method, chunk in (("jacobian", None), ("jacobian", 4), ("structured", None)):
        h = np.asarray(gflow.tangent_kernel(model, x, method=method, chunk_size=chunk))
        np.testing.assert_allclose(h, ref, atol=TOL * scale, err_msg=f"{method} {chunk}")
    np.testing.assert_allclose(h, h.T, atol=0)
    cross = _dense(model, x, x2)
    for method, chunk in (("jacobian", 2), ("auto", None)):
        k = np.asarray(gflow.tangent_kernel(model, x, x2, method=method, chunk_size=chunk))
        np.testing.assert_allclose(k, cross, atol=TOL * scale, err_msg=f"cross {method}")


def test_linear_kernel_is_eta_xxT(xs):
    x, _ = xs
    lin = gflow.Linear(5, key=jax.random.key(0))
    for method in ("jacobian", "structured"):
        h = gflow.tangent_kernel(lin, x, eta=2.5, method=method)
        np.testing.assert_allclose(h, 2.5 * x @ x.T, atol=1e-14)


def test_scalar_eta_override_and_pytree_eta(xs):
    x, _ = xs
    m = gflow.TwoLayer(5, 7, key=jax.random.key(4))
    np.testing.assert_allclose(
        gflow.tangent_kernel(m, x, eta=3.0), _dense(m, x, eta=3.0), atol=1e-12
    )
    # a per-leaf eta pytree goes through the Jacobian path
    eta = eqx.tree_at(lambda t: (t.W, t.c), m.eta(), (2.0, 5.0))
    np.testing.assert_allclose(
        gflow.tangent_kernel(m, x, eta=eta), _dense(m, x, eta=eta), atol=1e-12
    )


def test_jacobian_gram_generic_function():
    a = jax.random.normal(jax.random.key(2), (4, 9))

    def fn(theta):
        return jnp.sin(a @ theta) + theta[:4] ** 2

    theta = jnp.linspace(-1, 1, 9)
    eta = jnp.linspace(0.5, 2.0, 9)
    j = jax.jacrev(fn)(theta)
    for chunk in (None, 1, 3):
        np.testing.assert_allclose(
            gflow.jacobian_gram(fn, theta, eta, chunk_size=chunk), (j * eta) @ j.T, atol=1e-13
        )


def test_kernel_metrics_at_init(xs):
    x, _ = xs
    y = jnp.arange(6.0) / 6
    m = gflow.MultiLayer(5, 6, 4, train_output=True, key=jax.random.key(5))
    h = _dense(m, x)
    r = np.asarray(m(x) - y)
    for method in ("structured", "jacobian"):
        v = gflow.kernel_metrics(m, x, y, method=method)["kernel"](m)
        kt = gflow.KernelTrace.from_metric(np.asarray(v)[None])
        np.testing.assert_allclose(kt.eigvals[0], np.linalg.eigvalsh(h), atol=1e-12)
        assert kt.rayleigh[0] == pytest.approx(r @ h @ r / (r @ r), rel=1e-12)
        assert kt.change[0] == pytest.approx(0.0, abs=1e-14)
        yy = np.asarray(y)
        assert kt.alignment[0] == pytest.approx(yy @ h @ yy / np.linalg.norm(h) / (yy @ yy))
        assert kt.frobenius[0] == pytest.approx(np.linalg.norm(h))


def test_loss_derivative_matches_kernel_along_flow():
    """Along the simulated flow, dL/dt (central differences of the saved loss, step 0.01:
    error ~ h^2 |L'''| / 6 ~ 2e-5 |L'|) equals -(1/n^2) r^T H r = -(2/n) rayleigh L, and
    equals -sum eta g^2 = -m |grad L|^2 for the mean-field two-layer model exactly."""
    data = gflow.make_synthetic(6, 8, n_test=0, seed=1)
    m = gflow.TwoLayer(8, 16, key=jax.random.key(6))
    ts = np.linspace(0.0, 4.0, 401)
    sol = gflow.simulate_mse(
        m,
        data,
        4.0,
        ts=ts,
        rtol=1e-11,
        atol=1e-14,
        metrics=gflow.kernel_metrics(m, data.x_train, data.y_train),
    )
    kt = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    n = data.n
    dldt_kernel = -(2.0 / n) * kt.rayleigh * sol.loss
    dldt_fd = np.gradient(sol.loss, sol.ts)
    inner = slice(1, -1)
    np.testing.assert_allclose(dldt_fd[inner], dldt_kernel[inner], rtol=1e-4)
    np.testing.assert_allclose(-m.m * sol.grad_norm**2, dldt_kernel, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": np.ones(3)}, "x: expected inputs of shape"),
        ({"chunk_size": 0}, "chunk_size: must be >= 1"),
        ({"chunk_size": 1.5}, "chunk_size: must be a positive integer"),
        ({"method": "dense"}, "method: must be"),
        ({"method": "structured", "trainable": "x"}, "method: 'structured' needs"),
    ],
)
def test_bad_input(kwargs, match):
    m = gflow.TwoLayer(3, 4, key=jax.random.key(0))
    args = {"x": np.ones((2, 3))} | kwargs
    x = args.pop("x")
    with pytest.raises(ValueError, match=match):
        gflow.tangent_kernel(m, x, **args)


def test_kernel_trace_bad_shape():
    with pytest.raises(ValueError, match="values: expected the"):
        gflow.KernelTrace.from_metric(np.ones(5))
