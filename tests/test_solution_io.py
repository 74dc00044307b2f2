"""Solution.save / gflow.load_solution: every field round-trips (arrays bit for bit, the
parameter pytrees with their structure, stats, settings, dense output); no pickle;
clear errors for missing, foreign or mismatched files."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._io import to_jsonable


@pytest.fixture(scope="module")
def two_layer():
    data = gflow.make_synthetic(n=8, d=4, n_test=8, seed=0)
    model = gflow.TwoLayer(d=4, m=6, train_second=False, key=jax.random.key(2))
    sol = gflow.simulate_mse(
        model, data, 3.0, ts=np.linspace(0, 3, 7), save_params=True, dense=True, max_steps=2000
    )
    return model, sol


def _same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if eqx.is_array(x):
            assert np.asarray(x).dtype == np.asarray(y).dtype
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            assert x == y


def test_round_trip_every_field(two_layer, tmp_path):
    model, sol = two_layer
    json_path = sol.save(tmp_path / "sol")
    assert json_path == tmp_path / "sol.json" and (tmp_path / "sol.npz").is_file()
    # The arrays are readable without pickle.
    with np.load(tmp_path / "sol.npz", allow_pickle=False) as z:
        assert "final.W" in z.files and "params.W" in z.files
    back = gflow.load_solution(tmp_path / "sol", like=model)
    for name in ("ts", "loss", "grad_norm", "theta_final"):
        a, b = getattr(sol, name), getattr(back, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert set(back.metrics) == set(sol.metrics) == {"test_loss"}
    np.testing.assert_array_equal(back.metrics["test_loss"], sol.metrics["test_loss"])
    _same_tree(back.final, sol.final)
    _same_tree(back.params, sol.params)
    assert isinstance(back.final, gflow.TwoLayer) and back.final.activation == model.activation
    for name in ("t_final", "success", "result", "message", "stopped_early", "diverged"):
        assert getattr(back, name) == getattr(sol, name), name
    assert back.stats == to_jsonable(sol.stats) and back.stats["num_steps"] > 0
    assert back.settings == to_jsonable(sol.settings) and back.settings["dense"] is True
    # Dense output: the same arrays, so evaluate gives the same numbers.
    assert back.dense["interpolation"] == sol.dense["interpolation"]
    np.testing.assert_array_equal(back.dense["ts"], sol.dense["ts"])
    assert set(back.dense["infos"]) == set(sol.dense["infos"])
    t = np.linspace(0.0, 3.0, 11)
    np.testing.assert_array_equal(back.evaluate(t), sol.evaluate(t))
    # Either file name works, and the summary line is unchanged.
    assert gflow.load_solution(tmp_path / "sol.npz", like=model).summary() == sol.summary()


def test_module_without_like_comes_back_by_key_path(two_layer, tmp_path):
    model, sol = two_layer
    sol.save(tmp_path / "s.json")
    back = gflow.load_solution(tmp_path / "s.json")
    assert set(back.final) == {".W", ".c"}
    np.testing.assert_array_equal(back.final[".W"], sol.final.W)
    np.testing.assert_array_equal(back.params[".c"], sol.params.c)


def test_plain_containers_rebuilt_without_like(tmp_path):
    params = {"a": jnp.asarray([0.3, -0.2]), "b": [jnp.asarray(1.5), (jnp.ones((2, 2)),)]}

    def loss(p):
        return jnp.sum(p["a"] ** 2) + p["b"][0] ** 2 + jnp.sum(p["b"][1][0] ** 2)

    sol = gflow.simulate(loss, params, 1.0, ts=[0.0, 0.5, 1.0], save_params=True)
    sol.save(tmp_path / "p")
    back = gflow.load_solution(tmp_path / "p")
    _same_tree(back.final, sol.final)
    _same_tree(back.params, sol.params)
    assert back.dense is None and back.settings["eta"] == 1.0


def test_gradient_descent_round_trip(tmp_path):
    sol = gflow.gradient_descent(lambda w: jnp.sum(w**2), jnp.ones(3), 0.1, 5)
    sol.save(tmp_path / "gd")
    back = gflow.load_solution(tmp_path / "gd")
    np.testing.assert_array_equal(back.final, sol.final)
    assert back.params is None and back.settings == to_jsonable(sol.settings)


def test_missing_foreign_and_mismatched_files(two_layer, tmp_path):
    model, sol = two_layer
    with pytest.raises(ValueError, match="no such file"):
        gflow.load_solution(tmp_path / "nothing")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a saved gflow Solution"):
        gflow.load_solution(tmp_path / "foreign")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        gflow.load_solution(tmp_path / "broken")
    sol.save(tmp_path / "a")
    (tmp_path / "a.npz").unlink()
    with pytest.raises(ValueError, match="no such file"):
        gflow.load_solution(tmp_path / "a")
    # a JSON paired with another solution's npz
    sol.save(tmp_path / "b")
    gflow.gradient_descent(lambda w: jnp.sum(w**2), jnp.ones(3), 0.1, 5).save(tmp_path / "c")
    (tmp_path / "c.npz").replace(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="do not belong together"):
        gflow.load_solution(tmp_path / "b")
    # `like` of another size
    sol.save(tmp_path / "d")
    other = gflow.TwoLayer(d=4, m=7, train_second=False, key=jax.random.key(2))
    with pytest.raises(ValueError, match="like: leaf '.W' has shape"):
        gflow.load_solution(tmp_path / "d", like=other)
    with pytest.raises(ValueError, match="like: its structure has no leaf"):
        gflow.load_solution(tmp_path / "d", like={"w": jnp.ones(3)})
