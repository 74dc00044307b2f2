"""Failures during a run: divergence, step limit, step-size underflow. The run stops,
says why and what to change, and keeps (returns and, for `gflow run`, saves) everything
computed up to where it stopped."""

import json

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._cli._main import main
from gflow._config import validate
from gflow._flow._checkpoint import Checkpoint
from gflow._io import read_npz
from gflow._run import run_config


def test_gd_divergence_keeps_the_finite_prefix():
    # L = x^2 / 2, GD with dt = 3: x_k = (-2)^k x0 exactly (powers of two are exact in
    # float64), so L_k = 4^k / 2 overflows to inf at k = 512 (4^512 = 2^1024).
    sol = gflow.gradient_descent(lambda p: 0.5 * p[0] ** 2, jnp.array([1.0]), 3.0, 600)
    assert sol.diverged and not sol.success and sol.result == "diverged"
    assert "smaller step" in sol.message
    k = np.arange(sol.ts.size)
    np.testing.assert_array_equal(sol.ts, 3.0 * k)
    np.testing.assert_array_equal(sol.loss, 0.5 * 4.0**k)  # exact: powers of two
    assert sol.ts.size == 512  # the last finite loss is L_511; L_512 = inf is not kept
    assert sol.t_final == sol.ts[-1] == 3.0 * 511
    assert np.all(np.isfinite(sol.grad_norm))


def _blowup():
    # L = -x^4/4: dx/dt = x^3, x(t) = (1 - 2t)^(-1/2), blow-up at t* = 1/2.
    return (lambda p: -(p[0] ** 4) / 4), jnp.array([1.0])


@pytest.mark.parametrize("segmented", [False, True])
def test_adaptive_blowup_stops_at_the_step_limit_with_a_clear_message(segmented, tmp_path):
    loss, x0 = _blowup()
    ck = Checkpoint(tmp_path / "ck.npz", segments=4) if segmented else None
    sol = gflow.simulate(loss, x0, 1.0, max_steps=400, checkpoint=ck)
    assert sol.result == "max_steps_reached" and not sol.success
    assert "increase max_steps" in sol.message and "blowing up" in sol.message
    assert 0.45 < sol.t_final <= 0.5 + 1e-6 and sol.ts[-1] <= sol.t_final
    # Everything kept is right: the closed form, to the solver tolerance (rtol 1e-8 on a
    # solution growing like (1 - 2t)^-1/2; 1e-5 leaves room for error growth near t*).
    ok = sol.ts < 0.45
    exact = -((1 - 2 * sol.ts[ok]) ** -2.0) / 4
    np.testing.assert_allclose(sol.loss[ok], exact, rtol=1e-5)


def test_step_size_underflow_is_explained(tmp_path):
    loss, x0 = _blowup()
    ck = Checkpoint(tmp_path / "ck.npz", segments=4)
    ctrl = diffrax.PIDController(rtol=1e-8, atol=1e-10, dtmin=1e-9, force_dtmin=False)
    sol = gflow.simulate(loss, x0, 1.0, stepsize_controller=ctrl, checkpoint=ck)
    assert sol.result == "dt_min_reached" and not sol.completed
    assert "step size underflowed" in sol.message and "blowing up" in sol.message
    assert sol.ts.size > 10 and np.all(np.isfinite(sol.loss))


def _small(**flow):
    return validate(
        {
            "seed": 1,
            "data": {"n": 8, "d": 4, "n_test": 4},
            "model": {"width": 8},
            "flow": {"t1": 5.0, "n_save": 21, **flow},
            "output": {"progress": False, "segments": 4, "checkpoint_seconds": 0},
        }
    )


def test_gflow_run_saves_the_partial_trajectory_at_the_step_limit(tmp_path):
    result = run_config(_small(max_steps=3), tmp_path)
    disk = json.loads((tmp_path / "result.json").read_text())
    assert disk["completed"] is False and disk["result"] == "max_steps_reached"
    assert "increase max_steps" in disk["message"]
    traj = read_npz(tmp_path / "trajectory.npz")
    assert int(traj["schema_version"]) == disk["schema_version"] == 1
    assert 1 <= traj["ts"].size < 21 and traj["ts"][-1] <= result["final"]["t_final"] < 5.0
    assert np.all(np.isfinite(traj["loss"])) and (tmp_path / "loss.png").is_file()
    assert not (tmp_path / "checkpoint.npz").exists()  # removed once results are safe


def test_gflow_run_divergence_records_the_last_finite_time(tmp_path, capsys):
    # Euler with a step far beyond stability: the state overflows within a few steps.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "seed = 1\n[data]\nn = 8\nd = 4\nn_test = 4\n[model]\nwidth = 8\n[flow]\nt1 = 5.0\n"
        'solver = "euler"\ndt0 = 0.05\neta = 1e6\nn_save = 21\n[output]\nsegments = 4\n'
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    disk = json.loads((tmp_path / "o" / "result.json").read_text())
    assert disk["completed"] is False and disk["result"] == "diverged"
    traj = read_npz(tmp_path / "o" / "trajectory.npz")
    assert traj["ts"].size >= 1 and np.all(np.isfinite(traj["loss"]))
    assert traj["ts"][-1] == disk["final"]["t_final"] < 5.0
    # huge losses once broke the log-scale figure (and cost result.json): not any more
    assert disk["plot_error"] is None and (tmp_path / "o" / "loss.png").is_file()
    assert "NOT completed (diverged)" in capsys.readouterr().out
