"""flax.nnx models through nnx.split / nnx.merge: the state pytree is simulated like any
pytree, and the flow equals that of the same network written as a dict of arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow

nnx = pytest.importorskip(
    "flax.nnx", reason="flax is an optional extra (pip install -e '.[flax]'); not installed"
)

D, H, N = 3, 4, 6
X = jax.random.normal(jax.random.key(1), (N, D))
Y = jnp.sin(X[:, 0]) + 0.5 * X[:, 1]


class MLP(nnx.Module):
    def __init__(self, rngs):
        f64 = {"param_dtype": jnp.float64, "dtype": jnp.float64}
        self.l1 = nnx.Linear(D, H, rngs=rngs, **f64)
        self.l2 = nnx.Linear(H, 1, rngs=rngs, **f64)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))[..., 0]


def _split():
    return nnx.split(MLP(nnx.Rngs(0)))


def _as_dict(graphdef, state):
    m = nnx.merge(graphdef, state)
    return {
        "w1": jnp.asarray(m.l1.kernel[...]),
        "b1": jnp.asarray(m.l1.bias[...]),
        "w2": jnp.asarray(m.l2.kernel[...]),
        "b2": jnp.asarray(m.l2.bias[...]),
    }


def _dict_apply(p, x):
    return (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]


def test_nnx_flow_matches_dict():
    graphdef, state = _split()

    def apply_fn(s, x):
        return nnx.merge(graphdef, s)(x)

    def loss(s):
        return 0.5 * jnp.mean((apply_fn(s, X) - Y) ** 2)

    p = _as_dict(graphdef, state)
    np.testing.assert_allclose(apply_fn(state, X), _dict_apply(p, X), rtol=1e-14)
    kw = dict(ts=jnp.linspace(0.0, 2.0, 5), rtol=1e-10, atol=1e-12)
    a = gflow.simulate(loss, state, 2.0, **kw)
    b = gflow.simulate(lambda q: 0.5 * jnp.mean((_dict_apply(q, X) - Y) ** 2), p, 2.0, **kw)
    assert a.success and b.success and a.loss[-1] < 0.5 * a.loss[0]
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    # the final state merges back into a module with the dict flow's weights
    np.testing.assert_allclose(apply_fn(a.final, X), _dict_apply(b.final, X), rtol=1e-9)
    # the tangent kernel through apply_fn equals the dict network's
    np.testing.assert_allclose(
        gflow.tangent_kernel(state, X, apply_fn=apply_fn),
        gflow.tangent_kernel(p, X, apply_fn=_dict_apply),
        rtol=1e-12,
    )
