"""Interruption and resume, for real: `gflow run` subprocesses are stopped with SIGINT and
killed with SIGKILL mid-run, resumed with --resume, and must end with bitwise the same
numbers as an uninterrupted run. Also: determinism across processes, refusal of corrupt
or foreign checkpoints, no unpickling.

Sizes are tiny; the time goes into starting and compiling the four subprocesses.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._cli._main import main
from gflow._config import load_config
from gflow._flow._checkpoint import Checkpoint, write_checkpoint
from gflow._io import read_npz, write_npz
from gflow._run import run_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """seed = 3
[data]
n = 8
d = 4
n_test = 4
[model]
width = 16
[flow]
t1 = 20.0
n_save = 41
[output]
progress = false
segments = 12
checkpoint_seconds = 0
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    (d / "run.toml").write_text(CONFIG)
    return d


def _env(work: Path, delay: float = 0.0) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["GFLOW_SEGMENT_DELAY"] = str(delay)  # slow the segments so we can hit them
    return env


def _gflow(work: Path, out: str, *extra: str, delay: float = 0.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gflow._cli._main", "run", str(work / "run.toml")]
    return subprocess.Popen(
        [*cmd, "--out", str(work / out), *extra],
        env=_env(work, delay),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_segment(path: Path, segment: int, proc: subprocess.Popen, timeout=120.0) -> int:
    """Poll the checkpoint (replaced atomically, so always readable) until it has reached
    `segment`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"run ended early: {proc.communicate()}"
        if path.is_file():
            seg = int(read_npz(path)["segment"])
            if seg >= segment:
                return seg
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _arrays(out: Path) -> dict:
    return read_npz(out / "trajectory.npz")


def _assert_bitwise(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(work):
    proc = _gflow(work, "ref", "--no-progress")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _arrays(work / "ref")


def test_same_config_and_seed_give_identical_numbers(work, reference):
    # A second, uninterrupted run in another process (this one): bitwise the same.
    run_config(load_config(work / "run.toml"), work / "again", progress=False)
    _assert_bitwise(_arrays(work / "again"), reference)
    result = json.loads((work / "again" / "result.json").read_text())
    assert result["completed"] is True and result["stats"]["segments"] == 12


def test_sigint_then_sigkill_then_resume_matches_uninterrupted_run(work, reference):
    ck = work / "cut" / "checkpoint.npz"
    # 1. SIGINT: stops cleanly after the current segment, writes a checkpoint and the
    #    partial results, exits 130.
    proc = _gflow(work, "cut", "--no-progress", delay=0.2)
    _wait_for_segment(ck, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    res = json.loads((work / "cut" / "result.json").read_text())
    assert res["completed"] is False and res["result"] == "interrupted"
    assert "--resume" in res["message"]
    seg_int = int(read_npz(ck)["segment"])
    partial = _arrays(work / "cut")
    assert 0 < partial["ts"].size < reference["ts"].size
    np.testing.assert_array_equal(partial["loss"], reference["loss"][: partial["ts"].size])
    # 2. Resume, then SIGKILL (no chance to clean up) once it has moved on.
    proc = _gflow(work, "cut", "--no-progress", "--resume", delay=0.2)
    seg_kill = _wait_for_segment(ck, seg_int + 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # 3. Resume to the end (config taken from DIR/config.toml): bitwise equal to the run
    #    that was never interrupted.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gflow._cli._main", "run", "--out", str(work / "cut")]
        + ["--resume", "--no-progress"],
        env=_env(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    res = json.loads((work / "cut" / "result.json").read_text())
    assert res["completed"] is True and res["stats"]["resumed_from_segment"] >= seg_kill
    _assert_bitwise(_arrays(work / "cut"), reference)
    assert not ck.exists()  # removed once the finished results were written


def test_foreign_and_corrupt_checkpoints_are_refused(tmp_path):
    loss = lambda p: 0.5 * jnp.sum((p - 1.0) ** 2)  # noqa: E731
    ck = Checkpoint(tmp_path / "ck.npz", every_seconds=0, segments=3)
    sol = gflow.simulate(loss, jnp.zeros(3), 2.0, checkpoint=ck)
    assert sol.completed and ck.path.is_file()  # the API leaves the file in place
    again = Checkpoint(ck.path, every_seconds=0, segments=3, resume=True)
    # exact check of what was computed: x(t) = 1 - e^-t, to the tolerance rtol = 1e-8
    np.testing.assert_allclose(sol.theta_final, 1 - np.exp(-2.0), rtol=1e-7)
    with pytest.raises(ValueError, match=r"belongs to another run \(settings.t1"):
        gflow.simulate(loss, jnp.zeros(3), 3.0, checkpoint=again)
    with pytest.raises(ValueError, match=r"belongs to another run \(theta0"):
        gflow.simulate(loss, jnp.ones(3), 2.0, checkpoint=again)
    ck.path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="corrupt or not a gflow checkpoint"):
        gflow.simulate(loss, jnp.zeros(3), 2.0, checkpoint=again)
    write_npz(ck.path, {"loss": np.zeros(3)})  # a valid .npz, but not a checkpoint
    with pytest.raises(ValueError, match="corrupt or not a gflow checkpoint"):
        gflow.simulate(loss, jnp.zeros(3), 2.0, checkpoint=again)


def test_cli_refuses_a_checkpoint_of_another_run(work, tmp_path, capsys):
    out = tmp_path / "o"
    state = {"segment": 1, "y": np.zeros(2), "run_seconds": 0.0, "carry_leaves": []}
    other = {"config": {"seed": 99}, "settings": {}}  # a checkpoint of another config
    write_checkpoint(out / "checkpoint.npz", other, {**state, "saved": {}, "stats": {}})
    args = ["run", str(work / "run.toml"), "--out", str(out), "--resume", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and len(err) < 400
    assert "belongs to another run (config.seed: 99 in the checkpoint, 3 now)" in err
    write_npz(out / "checkpoint.npz", {"meta": np.array(json.dumps({"format": "x"}))})
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a gflow checkpoint" in err


def test_loading_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))  # needs pickle to load
    with pytest.raises(ValueError, match="pickle"):
        read_npz(path)
    with pytest.raises(ValueError, match="object arrays"):
        write_npz(tmp_path / "x.npz", {"x": np.array([None], dtype=object)})


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from gflow._io import atomic_write, write_json

    path = tmp_path / "result.json"
    write_json(path, {"a": 1})

    def crash(f):
        f.write(b'{"a": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"a": 1}  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left


def test_corrupt_result_files_get_a_clear_error(tmp_path):
    from gflow._io import read_json

    (tmp_path / "trajectory.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or foreign"):
        read_npz(tmp_path / "trajectory.npz")
    (tmp_path / "result.json").write_text('{"completed": tr')
    with pytest.raises(ValueError, match="corrupt or foreign"):
        read_json(tmp_path / "result.json")
