"""Following a flow to its end: a known saddle, a known minimum (Newton polishing), and a
least-squares minimum reached through solver='auto' (Gauss-Newton polishing)."""

import jax.numpy as jnp
import numpy as np
import pytest

import gflow


def _double_well(p):
    # L = x^2/2 + (y^2 - 1)^2/4: minima (0, +-1) with Hessian diag(1, 2), saddle (0, 0)
    # with Hessian diag(1, -1). y = 0 is invariant under the flow.
    return 0.5 * p[0] ** 2 + 0.25 * (p[1] ** 2 - 1.0) ** 2


def test_known_saddle():
    lim = gflow.follow_to_limit(
        _double_well, jnp.array([1.0, 0.0]), grad_tol=1e-8, solver="tsit5", polish=True
    )
    assert lim.classification == "saddle" and lim.stop_reason == "grad_tol"
    np.testing.assert_allclose(lim.theta, [0.0, 0.0], atol=1e-8)
    # Lanczos with iters >= P = 2 gives the exact eigenvalues -1 and 1 (at theta ~ 0,
    # the Hessian is diag(1, 3 y^2 - 1) = diag(1, -1) up to 1e-16).
    np.testing.assert_allclose([lim.lambda_min, lim.lambda_max], [-1.0, 1.0], atol=1e-8)
    assert lim.polished is None and "saddle" in lim.polish_note


def test_known_minimum_with_newton_polish():
    lim = gflow.follow_to_limit(
        _double_well, jnp.array([1.0, 0.5]), grad_tol=1e-6, solver="tsit5", polish=True
    )
    assert lim.classification == "minimum" and lim.grad_norm <= 1e-6
    np.testing.assert_allclose([lim.lambda_min, lim.lambda_max], [1.0, 2.0], atol=1e-5)
    # Newton converges quadratically from |grad| <= 1e-6 to rounding level.
    np.testing.assert_allclose(lim.polished, [0.0, 1.0], atol=1e-15)
    assert lim.polished_grad_norm <= 1e-15
    assert lim.polish_distance == pytest.approx(np.linalg.norm(lim.theta - [0.0, 1.0]))
    assert 0 < lim.polish_distance < 1e-5


def test_least_squares_minimum_via_auto_and_gauss_newton():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 10)) * np.sqrt(np.logspace(0, -3, 6))[:, None]
    y = rng.normal(size=6)

    def res(p):
        return jnp.asarray(x) @ p - jnp.asarray(y)

    def loss(p):
        return 0.5 * jnp.mean(res(p) ** 2)

    lim = gflow.follow_to_limit(
        loss, jnp.zeros(10), residual_fn=res, grad_tol=1e-9, t_first=100.0, polish=True
    )
    # From 0 the flow stays in the row space of X: its limit is the minimum-norm solution.
    star = np.linalg.lstsq(x, y, rcond=None)[0]
    assert lim.classification == "minimum", lim.summary()
    # 4 zero Hessian eigenvalues (P - n flat directions): lambda_min ~ 0, not negative.
    assert abs(lim.lambda_min) < 1e-10 and lim.lambda_max > 0
    # auto picked the exponential solver on the long windows (stiff, affine residual)
    assert any(w[4] == "ExpRosenbrock" for w in lim.windows), lim.windows
    np.testing.assert_allclose(lim.polished, star, atol=1e-12)
    assert lim.polished_loss < 1e-28


def test_bad_inputs():
    with pytest.raises(ValueError, match="grad_tol"):
        gflow.follow_to_limit(_double_well, jnp.zeros(2), grad_tol=0.0)
    with pytest.raises(ValueError, match="t_first"):
        gflow.follow_to_limit(_double_well, jnp.zeros(2), t_first=10.0, t_max=1.0)


def test_gflow_run_follows_the_flow_to_its_limit(tmp_path, capsys):
    # `gflow run --follow-to-limit`: after t1 the flow is followed to |grad L| <= grad_tol
    # from the run's end point, classified with the Hessian's extreme eigenvalues and
    # polished by Gauss-Newton (MSE); recorded in result.json and trajectory.npz
    import json

    from gflow._cli._main import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "seed = 0\n[data]\nn = 6\nd = 12\nn_test = 0\n[model]\nwidth = 16\n"
        "[flow]\nt1 = 20.0\n[analysis]\nfeature_learning = false\n"
        "[limit]\ngrad_tol = 1e-9\npolish = true\n[output]\nprogress = false\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--follow-to-limit"]) == 0
    printed = capsys.readouterr().out
    assert "limit point: minimum" in printed and "polished (Gauss-Newton" in printed
    result = json.loads((out / "result.json").read_text())
    lim = result["limit"]
    assert result["config"]["limit"]["follow"] is True
    assert lim["stop_reason"] == "grad_tol" and lim["grad_norm"] <= 1e-9
    assert lim["loss"] < 1e-3 * result["final"]["loss_final"]
    assert lim["polished_loss"] <= lim["loss"] and lim["polished_grad_norm"] < lim["grad_norm"]
    # d >= n: a global minimum (L -> 0); the Hessian is PSD up to round-off
    assert lim["lambda_max"] > 0 and lim["lambda_min"] > -1e-6 * lim["lambda_max"]
    with np.load(out / "trajectory.npz", allow_pickle=False) as z:
        assert z["limit_theta"].shape == z["theta_final"].shape
        moved = np.linalg.norm(z["limit_polished"] - z["limit_theta"])
        np.testing.assert_allclose(moved, lim["polish_distance"], rtol=1e-12)


def test_limit_config_fields_are_validated():
    from gflow._config import ConfigError, validate

    with pytest.raises(ConfigError, match="^limit.grad_tol"):
        validate({"limit": {"grad_tol": 0.0}})
    with pytest.raises(ConfigError, match="^limit.solver"):
        validate({"limit": {"solver": "euler-ish"}})
    with pytest.raises(ConfigError, match="^limit.folow: unknown key"):
        validate({"limit": {"folow": True}})
    assert validate({})["limit"]["follow"] is False


def test_window_records_the_loss_where_it_stopped():
    # L = |theta|^2 / 2, eta = 1: L(t) = L0 exp(-2 t). The first window (t_first = 100)
    # stops at the loss target, between its save times; the window must record L there
    # (it recorded the last saved value, L0, before)
    th0 = jnp.array([1.0, -2.0, 0.5])
    l0 = 0.5 * float(th0 @ th0)
    lim = gflow.follow_to_limit(
        lambda p: 0.5 * jnp.sum(p**2), th0, loss_tol=1e-8, t_first=100.0, rtol=1e-10, atol=1e-14
    )
    assert lim.stop_reason == "loss_tol" and len(lim.windows) == 1
    t_start, t_end, loss_end, grad_end, _ = lim.windows[0]
    t_hit = np.log(l0 / 1e-8) / 2.0
    # the loss-target event ends the solve at the end of the step where L <= target
    assert t_hit <= t_end <= 1.02 * t_hit
    assert loss_end == pytest.approx(l0 * np.exp(-2.0 * t_end), rel=1e-6)
    assert loss_end <= 1e-8 and grad_end == pytest.approx(np.sqrt(2.0 * loss_end), rel=1e-9)
