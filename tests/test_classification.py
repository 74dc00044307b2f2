"""Classification: cross-entropy and logistic losses against hand-computed values and
finite differences, multi-class digits, k-output models, and a tiny flow on separable
data whose loss decreases monotonically (dL/dt = -|grad L|_eta^2 <= 0)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._data._digits import DIGIT_COUNTS


def test_cross_entropy_hand_values():
    z = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = jnp.array([2.0, 1.0])
    # row 1: log(e + e^2 + e^3) - 3 = log(e^-2 + e^-1 + 1); row 2: log 3
    want = 0.5 * (math.log(math.exp(-2) + math.exp(-1) + 1) + math.log(3))
    assert float(gflow.cross_entropy(z, labels)) == pytest.approx(want, rel=1e-15)
    assert float(gflow.cross_entropy(z, gflow.one_hot(labels, 3))) == pytest.approx(want, rel=1e-15)
    # huge logits: no overflow; the loss is the margin to the top logit
    big = jnp.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert float(gflow.cross_entropy(big, jnp.array([0, 0]))) == pytest.approx(500.0, rel=1e-15)


def test_logistic_hand_values():
    f = jnp.array([0.0, 2.0, -1.0, 800.0])
    y = jnp.array([1.0, -1.0, -1.0, -1.0])
    want = (math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.exp(-1)) + 800.0) / 4
    assert float(gflow.logistic(f, y)) == pytest.approx(want, rel=1e-15)


def _central(fn, z, h=1e-6):
    z = np.asarray(z, dtype=np.float64)
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        g[idx] = (fn(jnp.asarray(z + e)) - fn(jnp.asarray(z - e))) / (2 * h)
    return g


def test_gradients_match_finite_differences_and_closed_forms():
    z = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 3, 1, 1, 2])
    ce = lambda v: gflow.cross_entropy(v, labels)  # noqa: E731
    g = np.asarray(jax.grad(ce)(z))
    # central differences: O(h^2) truncation ~1e-12 and round-off eps/h ~1e-10
    np.testing.assert_allclose(g, _central(ce, z), atol=1e-9)
    closed = (jax.nn.softmax(z, axis=1) - gflow.one_hot(labels, 4)) / 5
    np.testing.assert_allclose(g, closed, rtol=1e-13, atol=1e-16)
    f = jax.random.normal(jax.random.key(1), (6,))
    y = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    lg = lambda v: gflow.logistic(v, y)  # noqa: E731
    g = np.asarray(jax.grad(lg)(f))
    np.testing.assert_allclose(g, _central(lg, f), atol=1e-9)
    np.testing.assert_allclose(g, -y * jax.nn.sigmoid(-y * f) / 6, rtol=1e-13)


def test_accuracy():
    z = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert float(gflow.accuracy(z, jnp.array([0.0, 1.0, 1.0]))) == pytest.approx(2 / 3)
    assert float(gflow.accuracy(jnp.array([0.5, -2.0]), jnp.array([1.0, 1.0]))) == 0.5


def test_multiclass_digits():
    from sklearn.datasets import load_digits

    _, labels = load_digits(return_X_y=True)
    assert tuple(np.bincount(labels)) == DIGIT_COUNTS
    data = gflow.load_digits(40, n_test=20, task="classes", classes=3, seed=1)
    assert data.classes == 3 and data.d == 64
    assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) <= {0.0, 1.0, 2.0}
    assert gflow.load_digits(10).classes is None
    oh = np.asarray(gflow.one_hot(data.y_train, 3))
    assert oh.shape == (40, 3) and np.all(oh.sum(1) == 1) and np.all(oh.argmax(1) == data.y_train)
    with pytest.raises(ValueError, match="classes"):
        gflow.load_digits(10, task="classes", classes=11)
    with pytest.raises(ValueError, match="n:"):
        gflow.load_digits(sum(DIGIT_COUNTS[:2]) + 1, task="classes", classes=2)


def test_k_output_two_layer():
    m = gflow.TwoLayer(64, 8, outputs=3, key=jax.random.key(0))
    x = gflow.load_digits(5).x_train
    f = m(x)
    assert f.shape == (5, 3)
    want = np.tanh(np.asarray(x) @ np.asarray(m.W).T) @ np.asarray(m.c) / 8
    # a sum of m terms: round-off ~ m eps max|term|, so relative to the output scale (a
    # small entry by cancellation has no relative accuracy; seen at 1.3e-13 relative)
    np.testing.assert_allclose(f, want, rtol=1e-13, atol=1e-14 * np.abs(want).max())
    with pytest.raises(ValueError, match="method"):
        gflow.tangent_kernel(m, x, method="structured")
    h = gflow.tangent_kernel(m, x)  # auto: jacobian, full (n k, n k)
    assert h.shape == (15, 15)


def _monotone(loss):
    return np.all(np.diff(loss) < 0)


def test_cross_entropy_flow_on_separable_digits_decreases():
    data = gflow.load_digits(24, n_test=12, task="classes", classes=3, seed=0)
    m = gflow.TwoLayer(64, 16, outputs=3, scaling="ntk", key=jax.random.key(0))
    sol = gflow.simulate_loss(
        m, data, 100.0, loss="cross-entropy", ts=jnp.linspace(0, 100.0, 21), rtol=1e-9, atol=1e-11
    )
    assert sol.success
    assert _monotone(sol.loss)
    assert sol.loss[0] > 0.5 and sol.loss[-1] < 0.5 * sol.loss[0]
    # the recorded metric is the same function of the parameters
    lf, _ = gflow.loss_problem(m, data, "cross-entropy")
    assert float(lf(sol.final)) == pytest.approx(sol.loss[-1], rel=1e-12)
    assert sol.metrics["train_accuracy"][-1] == 1.0  # 24 points, 64 inputs: separable
    assert "test_accuracy" in sol.metrics


def test_logistic_flow_decreases():
    data = gflow.load_digits(24, task="parity", seed=0)
    m = gflow.TwoLayer(64, 16, scaling="ntk", key=jax.random.key(1))
    sol = gflow.simulate_loss(m, data, 100.0, loss="logistic", ts=jnp.linspace(0, 100.0, 21))
    assert sol.success and _monotone(sol.loss)
    assert sol.loss[-1] < 0.5 * sol.loss[0]
    assert sol.metrics["train_accuracy"][-1] > sol.metrics["train_accuracy"][0]


def test_loss_problem_bad_inputs():
    data = gflow.load_digits(10, task="classes", classes=3)
    scalar = gflow.TwoLayer(64, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="cross-entropy"):
        gflow.loss_problem(scalar, data, "cross-entropy")
    with pytest.raises(ValueError, match="logistic"):
        gflow.loss_problem(scalar, data, "logistic")
    with pytest.raises(ValueError, match="loss: must be one of"):
        gflow.loss_problem(scalar, data, "hinge")
    three = gflow.TwoLayer(64, 4, outputs=3, key=jax.random.key(0))
    loss_fn, _ = gflow.loss_problem(three, data, "mse")  # MSE on one-hot rows
    want = 0.5 * np.mean(
        np.sum((np.asarray(three(data.x_train)) - np.eye(3)[data.y_train.astype(int)]) ** 2, 1)
    )
    assert float(loss_fn(three)) == pytest.approx(want, rel=1e-13)


def _cfg(**tables):
    from gflow._config import validate

    return validate(tables)


def test_config_loss_and_classes_validation():
    from gflow._config import ConfigError, build_model

    digits = {"kind": "digits", "task": "classes", "classes": 4, "n": 20, "n_test": 8}
    cfg = _cfg(data=digits, flow={"loss": "cross-entropy"}, model={"width": 8})
    assert cfg["flow"]["loss"] == "cross-entropy"
    assert build_model(cfg).outputs == 4
    assert build_model(_cfg()).outputs == 1
    bad = [
        ({"flow": {"loss": "hinge"}}, "flow.loss: must be one of"),
        ({"flow": {"loss": "cross-entropy"}}, "flow.loss: 'cross-entropy' needs class labels"),
        ({"flow": {"loss": "logistic"}}, "flow.loss: 'logistic' needs"),
        ({"data": {**digits, "classes": 11}}, "data.classes"),
        ({"data": {**digits, "classes": 1}}, "data.classes"),
        ({"data": {**digits, "n": 715}}, "data.n: .* digits 0..3"),
        ({"data": digits, "model": {"kind": "linear"}}, "model.kind"),
    ]
    for tables, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            _cfg(**tables)


def test_run_config_cross_entropy(tmp_path):
    from gflow._run import run_config, verdict

    digits = {"kind": "digits", "task": "classes", "classes": 3, "n": 18, "n_test": 6}
    cfg = _cfg(
        data=digits,
        model={"width": 8},
        flow={"loss": "cross-entropy", "t1": 5.0, "n_save": 11},
        output={"progress": False},
    )
    result = run_config(cfg, tmp_path)
    assert result["completed"]
    assert result["final"]["loss_final"] < result["final"]["loss_initial"]
    assert 0.0 <= result["final"]["train_accuracy_final"] <= 1.0
    text = verdict(result)
    assert "accuracy: train" in text and "certificates: skipped" in text
