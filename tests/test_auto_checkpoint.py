"""solver="auto" with checkpoints: the two phases (Tsit5, then Rosenbrock-W) are kept in a
checkpointed run too, each phase in its own file, and a run stopped in either phase
resumes to the same numbers as an uninterrupted one (bit for bit)."""

import contextlib

import jax.numpy as jnp
import numpy as np
import pytest
from _least_squares import ETA, THETA0_NL, loss_nl, res_nl

import gflow
from gflow._flow import _checkpoint

T1 = 1e5
TS = np.concatenate([[0.0], np.logspace(-1, 5, 30)])
KW = dict(eta=ETA, ts=TS, residual_fn=res_nl, solver="auto", rtol=1e-7, atol=1e-10)


class _StopAfter(dict):
    """A stand-in for stop_signals' flag: reads "SIGINT" after `reads` reads (the
    segment loop reads it twice per segment), shared by both phases of a run."""

    def __init__(self, reads: int):
        super().__init__(signal=None)
        self.reads = reads

    def __getitem__(self, key):
        self.reads -= 1
        return "SIGINT" if self.reads < 0 else None


def _run(path, resume=False, **kw):
    ck = gflow.Checkpoint(path, every_seconds=0.0, resume=resume, segments=4)
    return gflow.simulate(loss_nl, jnp.asarray(THETA0_NL), T1, checkpoint=ck, **KW, **kw)


def _interrupted(monkeypatch, path, reads):
    flag = _StopAfter(reads)
    monkeypatch.setattr(_checkpoint, "stop_signals", lambda: contextlib.nullcontext(flag))
    sol = _run(path)
    monkeypatch.undo()
    return sol


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("whole") / "ck.npz"
    return _run(path), path


def test_checkpointed_auto_switches_like_the_plain_run(uninterrupted):
    """The checkpointed run records the same choice, switch time and phases as the
    unsegmented one and agrees with it to the tolerance (segments add step ends)."""
    sol, path = uninterrupted
    plain = gflow.simulate(loss_nl, jnp.asarray(THETA0_NL), T1, **KW)
    auto, want = sol.settings["auto"], plain.settings["auto"]
    assert auto["chosen"] == "rosw" and auto["switch_times"] == want["switch_times"]
    assert [p["solver"] for p in auto["phases"]] == ["tsit5", "rosw"]
    assert sol.settings["solver"] == "RosenbrockW" and sol.success and sol.t_final == T1
    np.testing.assert_array_equal(sol.ts, TS)
    # rtol 1e-7 on a contracting flow: both runs within ~1e-7 relative of the flow.
    np.testing.assert_allclose(sol.theta_final, plain.theta_final, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sol.loss, plain.loss, rtol=1e-4, atol=1e-12)
    # Phase 1's file holds its finished end state; phase 2's file is the run's own.
    assert path.is_file() and gflow.Checkpoint(path).phase_path().is_file()
    st = sol.stats
    assert st["grad_equivalents"] == st["grad_evals"] + st["jacobian_rows"] + 1


@pytest.mark.parametrize("reads", [2, 8], ids=["stop-in-tsit5-phase", "stop-in-rosw-phase"])
def test_auto_resumes_bitwise_from_either_phase(monkeypatch, tmp_path, uninterrupted, reads):
    whole, _ = uninterrupted
    path = tmp_path / "ck.npz"
    stopped = _interrupted(monkeypatch, path, reads)
    assert stopped.result == "interrupted" and not stopped.success
    phases = [p["solver"] for p in stopped.settings["auto"]["phases"]]
    # 4 segments per phase, the flag read twice after each but a phase's last: 2 reads
    # stop phase 1 after its 2nd segment, 8 reads phase 2 after its 2nd.
    assert phases == (["tsit5"] if reads == 2 else ["tsit5", "rosw"])
    assert path.is_file() == (reads == 8)
    assert str(path.with_name("ck.tsit5-phase.npz" if reads == 2 else "ck.npz")) in (
        stopped.message
    )
    resumed = _run(path, resume=True)
    got, want = resumed.settings["auto"]["phases"], whole.settings["auto"]["phases"]
    assert resumed.success and [(p["solver"], p["t0"], p["t1"]) for p in got] == [
        (p["solver"], p["t0"], p["t1"]) for p in want
    ]
    # Where each phase went on from: phase 1 from its 3rd segment and phase 2 afresh, or
    # phase 1 read back finished (no compile, no solve) and phase 2 from its 3rd segment.
    assert [p["resumed_from_segment"] for p in got] == ([2, None] if reads == 2 else [4, 2])
    assert resumed.stats["program_source"].startswith("checkpoint+") == (reads == 8)
    np.testing.assert_array_equal(resumed.ts, whole.ts)
    np.testing.assert_array_equal(resumed.loss, whole.loss)
    np.testing.assert_array_equal(resumed.theta_final, whole.theta_final)
    for k in ("num_steps", "grad_evals", "jacobian_rows", "grad_equivalents"):
        assert resumed.stats[k] == whole.stats[k], k


def test_resume_needs_one_of_the_phase_files(tmp_path):
    with pytest.raises(ValueError, match="resume: no checkpoint"):
        _run(tmp_path / "ck.npz", resume=True)


def test_gflow_run_auto_switches_and_removes_both_checkpoint_files(tmp_path):
    """`gflow run` with solver "auto" on a stiff config (lambda_max t1 ~ 5.7e3): the
    result records both phases, and once the results are saved neither file is left."""
    from gflow._config import validate
    from gflow._run import run_config

    cfg = validate(
        {
            "seed": 1,
            "data": {"n": 8, "d": 4, "n_test": 4},
            "model": {"width": 8},
            "flow": {"t1": 2e4, "n_save": 21, "solver": "auto"},
            "output": {"progress": False, "segments": 4, "checkpoint_seconds": 0},
        }
    )
    result = run_config(cfg, tmp_path)
    auto = result["solver"]["auto"]
    assert result["completed"] and auto["chosen"] == "rosw" and len(auto["switch_times"]) == 1
    assert [p["solver"] for p in auto["phases"]] == ["tsit5", "rosw"]
    assert result["final"]["t_final"] == 2e4 and result["final"]["loss_final"] < 1e-20
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())
