"""Models (shapes, scalings, time scales) and data (shapes, seeds, errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


@pytest.mark.parametrize("activation", sorted(gflow.ACTIVATIONS))
def test_two_layer_forward_formula(activation):
    model = gflow.TwoLayer(5, 7, activation=activation, scaling="ntk", key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    s = gflow.ACTIVATIONS[activation]
    expected = np.array([sum(model.c[i] * s(model.W[i] @ xk) for i in range(7)) for xk in x])
    np.testing.assert_allclose(model(x), expected / np.sqrt(7), rtol=1e-12, atol=1e-14)


def test_user_callable_activation():
    model = gflow.TwoLayer(3, 4, activation=lambda z: z**3, key=jax.random.key(0))
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(model(x), (model.W @ x[0]) ** 3 @ model.c / 4 * np.ones(2))


def test_time_scales_follow_paper():
    two = gflow.TwoLayer(3, 50, scaling="mf", key=jax.random.key(0))
    assert two.layer_eta() == {"W": 50.0, "c": 50.0}
    assert gflow.TwoLayer(3, 50, scaling="ntk", key=jax.random.key(0)).layer_eta()["W"] == 1.0
    for scaling, eta_w in [("mf", 50.0 * 20), ("mf-sqrt", 50.0), ("ntk", 1.0)]:
        ml = gflow.MultiLayer(3, 20, 50, scaling=scaling, key=jax.random.key(0))
        assert ml.layer_eta()["W"] == eta_w
        assert ml.trained_layers() == ["W"]
    assert gflow.MultiLayer(
        3, 20, 50, train_output=True, key=jax.random.key(0)
    ).trained_layers() == ["W", "c"]


def test_mf_output_shrinks_with_width_ntk_does_not():
    x = gflow.make_synthetic(64, 8, seed=0).x_train
    sizes = {}
    for scaling in ("mf", "ntk"):
        sizes[scaling] = [
            float(jnp.std(gflow.TwoLayer(8, m, scaling=scaling, key=jax.random.key(1))(x)))
            for m in (100, 10000)
        ]
    # MF: f ~ m^-1/2 at init (factor 10 for 100x width); NTK: O(1)
    assert 5 < sizes["mf"][0] / sizes["mf"][1] < 20
    assert 0.5 < sizes["ntk"][0] / sizes["ntk"][1] < 2


def test_multilayer_forward_and_depth():
    x = jax.random.normal(jax.random.key(2), (3, 4))
    ml = gflow.MultiLayer(4, 6, 5, depth=4, scaling="mf-sqrt", key=jax.random.key(3))
    h = jax.nn.relu(x @ ml.Z[0].T)
    h = jax.nn.relu(h @ ml.Z[1].T / np.sqrt(6))
    expected = jnp.tanh(h @ ml.W.T / np.sqrt(6)) @ ml.c / 5
    np.testing.assert_allclose(ml(x), expected, rtol=1e-12)
    assert len(ml.Z) == 2 and ml.Z[1].shape == (6, 6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"d": 0}, "d"),
        ({"m": 0}, "width"),
        ({"scaling": "mf-sqrt"}, "scaling"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_model_bad_arguments(kwargs, field):
    args = {"d": 3, "m": 4, **kwargs}
    with pytest.raises(ValueError, match=field):
        gflow.TwoLayer(args.pop("d"), args.pop("m"), key=jax.random.key(0), **args)


def test_synthetic_shapes_seeds_and_laws():
    a = gflow.make_synthetic(20, 7, n_test=5, inputs="sphere", seed=3)
    b = gflow.make_synthetic(20, 7, n_test=5, inputs="sphere", seed=3)
    c = gflow.make_synthetic(20, 7, n_test=5, inputs="sphere", seed=4)
    assert a.x_train.shape == (20, 7) and a.y_test.shape == (5,)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    np.testing.assert_allclose(np.linalg.norm(a.x_train, axis=1), 1.0, rtol=1e-12)
    g = gflow.make_synthetic(4000, 50, inputs="gaussian", target="noise", seed=0)
    assert abs(np.mean(np.sum(g.x_train**2, axis=1)) - 1.0) < 0.02
    assert abs(np.std(g.y_train) - 1.0) < 0.05
    s = gflow.make_synthetic(10, 5, target="single-index", seed=1)
    assert np.all(np.isfinite(s.y_train))


def test_digits_task():
    data = gflow.load_digits(100, n_test=50, task="parity", seed=0)
    assert data.x_train.shape == (100, 64) and data.x_test.shape == (50, 64)
    assert set(np.unique(data.y_train)) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(data.x_train, axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="n"):
        gflow.load_digits(1800, n_test=0)


@pytest.mark.parametrize(
    "x, y, field",
    [
        (np.ones((3,)), np.ones(3), "x_train"),
        (np.ones((3, 2)), np.ones(4), "y_train"),
        (np.ones((3, 2)), np.ones((3, 1)), "y_train"),
        (np.array([[1.0, np.nan]]), np.ones(1), "x_train"),
        (np.ones((2, 2)), np.array([1.0, np.inf]), "y_train"),
        (np.ones((0, 2)), np.ones(0), "x_train"),
    ],
)
def test_data_errors_name_the_field(x, y, field):
    with pytest.raises(ValueError, match=field):
        gflow.from_arrays(x, y)


def test_model_data_dimension_mismatch():
    data = gflow.make_synthetic(5, 3, seed=0)
    with pytest.raises(ValueError, match="d = 3"):
        gflow.simulate_mse(gflow.TwoLayer(4, 2, key=jax.random.key(0)), data, 1.0)


@pytest.mark.parametrize(
    ("dtype", "make_key"), [(jnp.float64, jax.random.key), (jnp.float32, jax.random.PRNGKey)]
)
def test_bucketed_init_draws_equal_jax_random(dtype, make_key):
    # gflow's models draw through one compiled generator per size bucket; the values must
    # be JAX's own, bit for bit, for every shape (sizes below, at and above a bucket edge).
    from gflow._models import _init

    key = make_key(7)
    for shape in [(3, 5), (1025,), (2, 3, 4)]:  # below and above a bucket edge
        got = _init.normal(key, shape, dtype)
        want = jax.random.normal(key, shape, dtype)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for num in (2, 5):
        got = jnp.stack(_init.split(key, num))
        want = jax.random.split(key, num)
        if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Under vmap the draws go to JAX directly: the same values again.
    keys = jnp.stack([make_key(s) for s in range(3)])
    batched = jax.vmap(lambda k: _init.normal(k, (4, 6), dtype))(keys)
    for b in range(3):
        np.testing.assert_array_equal(
            np.asarray(batched[b]), np.asarray(jax.random.normal(keys[b], (4, 6), dtype))
        )


def test_models_draw_their_weights_from_the_documented_keys():
    key = jax.random.key(3)
    kw, kc = jax.random.split(key)
    net = gflow.TwoLayer(5, 9, key=key)
    np.testing.assert_array_equal(np.asarray(net.W), np.asarray(jax.random.normal(kw, (9, 5))))
    np.testing.assert_array_equal(np.asarray(net.c), np.asarray(jax.random.normal(kc, (9,))))
    deep = gflow.MultiLayer(3, 6, 7, depth=4, key=key)
    keys = jax.random.split(key, 4)
    np.testing.assert_array_equal(
        np.asarray(deep.Z[1]), np.asarray(jax.random.normal(keys[1], (6, 6)))
    )
    np.testing.assert_array_equal(np.asarray(deep.c), np.asarray(jax.random.normal(keys[-1], (7,))))


def test_init_goes_to_jax_directly_without_the_partitionable_generator(monkeypatch):
    # The prefix property holds only for the partitionable threefry: with it off, the
    # draws must still be JAX's own (then computed by jax.random directly).
    from gflow._models import _init

    monkeypatch.setattr(_init, "_flat_normal", None)  # would fail if used
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        key = jax.random.key(5)
        got = _init.normal(key, (3, 4), jnp.float64)
        np.testing.assert_array_equal(
            np.asarray(got), np.asarray(jax.random.normal(key, (3, 4), jnp.float64))
        )
    finally:
        jax.config.update("jax_threefry_partitionable", before)


def test_large_draws_go_to_jax_directly(monkeypatch):
    # Above 2^22 entries a power-of-two bucket could nearly double the peak memory: such
    # draws must not use the bucketed generator.
    from gflow._models import _init

    monkeypatch.setattr(_init, "_flat_normal", None)  # would fail if used
    key, big = jax.random.key(2), (_init._MAX_BUCKETED + 3,)
    got = _init.normal(key, big, jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(got[-5:]), np.asarray(jax.random.normal(key, big, jnp.float32)[-5:])
    )
