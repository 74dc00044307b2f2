"""The least-squares test problems shared by test_rosenbrock.py and test_exprb.py.

Linear least squares: r = X theta - y, L = (1/2n)|r|^2, eta = 2. With X^T X / n =
V diag(lam) V^T the flow is theta(t) = theta* + V exp(-eta lam t) V^T (theta0 - theta*) on
the range of X^T (theta0 = 0, theta* the minimum-norm solution). Stiff: the kernel
eigenvalues lam span 1 to 1e-3.

Nonlinear least squares (tanh features plus a quadratic): the Gauss-Newton W is not the
Jacobian of the flow.
"""

import jax.numpy as jnp
import numpy as np

N, P, ETA = 8, 12, 2.0
_RNG = np.random.default_rng(0)
_U, _ = np.linalg.qr(_RNG.normal(size=(N, N)))
V, _ = np.linalg.qr(_RNG.normal(size=(P, N)))
LAM = np.logspace(0, -3, N)
X = _U @ np.diag(np.sqrt(LAM * N)) @ V.T
Y = _RNG.normal(size=N)
A = _RNG.normal(size=(6, 4)) / 2
THETA0_NL = np.array([0.5, -0.3, 0.8, 0.1])


def res(p):
    return jnp.asarray(X) @ p - jnp.asarray(Y)


def loss(p):
    return 0.5 * jnp.mean(res(p) ** 2)


def exact(ts):
    star = np.linalg.lstsq(X, Y, rcond=None)[0]
    return np.array([star - V @ (np.exp(-ETA * LAM * t) * (V.T @ star)) for t in ts])


def res_nl(p):
    return jnp.tanh(jnp.asarray(A) @ p) + 0.1 * jnp.sum(p**2) - jnp.arange(6.0) / 10


def loss_nl(p):
    return 0.5 * jnp.mean(res_nl(p) ** 2)
