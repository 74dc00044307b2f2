"""Any equinox Module works where a pytree is accepted: eqx.nn.MLP (which holds its
activation function as a field), stacks of eqx.nn.Linear and a Module with a callable
field, checked number for number against the same network written as a plain dict."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow

D, H, N = 3, 4, 6
X = jax.random.normal(jax.random.key(1), (N, D))
Y = jnp.sin(X[:, 0]) + 0.5 * X[:, 1]


def _mlp():
    return eqx.nn.MLP(D, "scalar", H, 1, activation=jnp.tanh, key=jax.random.key(0))


class LinearStack(eqx.Module):
    layers: list
    act: object  # a callable field, not static: a pytree leaf that is not an array

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(D, H, key=k1), eqx.nn.Linear(H, "scalar", key=k2)]
        self.act = jnp.tanh

    def __call__(self, x):
        return self.layers[1](self.act(self.layers[0](x)))


def _as_dict(model):
    """The same two-layer tanh network as a dict of arrays."""
    layers = model.layers
    return {
        "w1": layers[0].weight,
        "b1": layers[0].bias,
        "w2": layers[1].weight,
        "b2": layers[1].bias,
    }


def _dict_apply(p, x):
    return jnp.tanh(x @ p["w1"].T + p["b1"]) @ p["w2"].reshape(-1) + p["b2"].reshape(())


def _loss_model(m):
    return 0.5 * jnp.mean((jax.vmap(m)(X) - Y) ** 2)


def _loss_dict(p):
    return 0.5 * jnp.mean((_dict_apply(p, X) - Y) ** 2)


MODELS = {"mlp": _mlp, "linear_stack": lambda: LinearStack(jax.random.key(0))}


@pytest.fixture(params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def test_outputs_agree(model):
    np.testing.assert_allclose(jax.vmap(model)(X), _dict_apply(_as_dict(model), X), rtol=1e-14)


def test_simulate_matches_dict(model):
    kw = dict(ts=jnp.linspace(0.0, 2.0, 5), rtol=1e-10, atol=1e-12, save_params=True)
    a = gflow.simulate(_loss_model, model, 2.0, **kw)
    b = gflow.simulate(_loss_dict, _as_dict(model), 2.0, **kw)
    assert a.success and b.success
    # same flow, same state ordering up to a permutation: the loss and |grad| are
    # identical functions of t, computed by the same solver (round-off only)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    np.testing.assert_allclose(a.grad_norm, b.grad_norm, rtol=1e-10)
    assert a.loss[-1] < a.loss[0]
    # the saved trajectory is the Module with a time axis; its last row is `final`
    last = jax.tree_util.tree_map(lambda v: v[-1] if eqx.is_array(v) else v, a.params)
    np.testing.assert_allclose(jax.vmap(last)(X), jax.vmap(a.final)(X), rtol=1e-14)
    np.testing.assert_allclose(_dict_apply(b.final, X), jax.vmap(a.final)(X), rtol=1e-9)


def test_gradient_descent_matches_dict(model):
    a = gflow.gradient_descent(_loss_model, model, dt=0.1, n_steps=20)
    b = gflow.gradient_descent(_loss_dict, _as_dict(model), dt=0.1, n_steps=20)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)


def test_hessian_lambda_max_matches_dict(model):
    p = _as_dict(model)
    a = gflow.hessian_lambda_max(_loss_model, model, num_iters=40)
    b = gflow.hessian_lambda_max(_loss_dict, p, num_iters=40)
    # second implementation: the dense Hessian of the dict network
    theta, unravel = jax.flatten_util.ravel_pytree(p)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda t: _loss_dict(unravel(t)))(theta)))
    assert theta.size <= 40  # Lanczos with num_iters >= P is exact up to round-off
    np.testing.assert_allclose([a, b], dense[-1], rtol=1e-9)


def test_ensemble_matches_members(model):
    other = eqx.tree_at(lambda m: m.layers[0].bias, model, model.layers[0].bias + 0.3)
    batch = gflow.stack_params([model, other])
    ts = jnp.linspace(0.0, 1.0, 4)
    ens = gflow.simulate_ensemble(_loss_model, batch, 1.0, ts=ts, rtol=1e-10, atol=1e-12)
    for i, member in enumerate([model, other]):
        ref = gflow.simulate(_loss_dict, _as_dict(member), 1.0, ts=ts, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ens.loss[i], ref.loss, rtol=1e-10)


def test_static_part_is_hashable_and_rebuilds():
    m = _mlp()
    prob = gflow.flatten_problem(_loss_model, m)
    assert prob.static is not None and hash(prob.static) == hash(
        gflow.flatten_problem(_loss_model, _mlp()).static
    )
    rebuilt = prob.params(prob.theta0)
    np.testing.assert_allclose(jax.vmap(rebuilt)(X), jax.vmap(m)(X), rtol=0)
    # a pure-array pytree has no static part
    assert gflow.flatten_problem(_loss_dict, _as_dict(m)).static is None


def test_kernel_metrics_matches_dict(model):
    a = gflow.kernel_metrics(model, X, Y, apply_fn=lambda m, x: jax.vmap(m)(x))["kernel"]
    p = _as_dict(model)
    b = gflow.kernel_metrics(p, X, Y, apply_fn=_dict_apply)["kernel"]
    np.testing.assert_allclose(a(model), b(p), rtol=1e-11, atol=1e-14)
    # and as a save-time metric of a flow of the Module
    sol = gflow.simulate(
        _loss_model,
        model,
        1.0,
        ts=jnp.linspace(0.0, 1.0, 3),
        metrics={"kernel": a},
        rtol=1e-10,
        atol=1e-12,
    )
    assert np.all(np.isfinite(sol.metrics["kernel"]))
    np.testing.assert_allclose(sol.metrics["kernel"][0], b(p), rtol=1e-11, atol=1e-14)


def test_other_engine_paths_take_a_module(tmp_path):
    """state="tree", a checkpointed solve and the modified flow on eqx.nn.MLP."""
    m = _mlp()
    kw = dict(ts=jnp.linspace(0.0, 1.0, 3), rtol=1e-10, atol=1e-12)
    ref = gflow.simulate(_loss_model, m, 1.0, **kw)
    tree = gflow.simulate(_loss_model, m, 1.0, state="tree", **kw)
    ckpt = gflow.simulate(
        _loss_model, m, 1.0, checkpoint=gflow.Checkpoint(tmp_path / "c.npz"), **kw
    )
    np.testing.assert_allclose(tree.loss, ref.loss, rtol=1e-12)
    # segments end at fixed times, so the steps differ: agreement to the solver tolerance
    np.testing.assert_allclose(ckpt.loss, ref.loss, rtol=1e-9)
    mod = gflow.simulate_modified(_loss_model, m, 1.0, 0.1, **kw)
    assert mod.success
    np.testing.assert_allclose(mod.metrics["train_loss"][0], ref.loss[0], rtol=1e-14)
