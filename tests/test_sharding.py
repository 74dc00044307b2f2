"""The ensemble axis sharded over several devices (and several processes) gives the
unsharded result.

Forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count) and
jax.distributed must be configured before JAX starts, so every run is a subprocess of
tests/_ensemble_worker.py (5 members, per-member datasets, a loss target so the members
stop at different steps). Tolerances as in test_ensemble.py: values to round-off
(1e-11 relative), stop times to the step-size sensitivity (1e-8 relative); observed: equal
bit for bit.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_ensemble_worker.py")
REPO = Path(__file__).resolve().parents[1]
ROUNDOFF, STEP_TOL = 1e-11, 1e-8


def _env(n_devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GFLOW_DISTRIBUTED"}
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # the test session's XLA flags (conftest.py) stay, so every run of a comparison is
    # compiled alike; a device count set outside is replaced by this run's
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if n_devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={n_devices}")
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    env.update(extra)
    return env


def _run(out: Path, n_devices: int, members: str = "auto") -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), members],
        env=_env(n_devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The plain vmapped run on one CPU device."""
    ref = _run(tmp_path_factory.mktemp("ref") / "one.npz", 1)
    assert int(ref["n_devices"]) == 1 and int(ref["n_padded"]) == 0
    return ref


def _assert_same(got: dict, ref: dict) -> None:
    np.testing.assert_array_equal(got["results"], ref["results"])
    np.testing.assert_array_equal(got["num_steps"], ref["num_steps"])
    np.testing.assert_allclose(got["t_final"], ref["t_final"], rtol=STEP_TOL)
    for key in ("loss", "test_loss"):
        finite = np.isfinite(ref[key])
        np.testing.assert_array_equal(np.isfinite(got[key]), finite)
        np.testing.assert_allclose(got[key][finite], ref[key][finite], rtol=ROUNDOFF)
    np.testing.assert_allclose(got["theta_final"], ref["theta_final"], rtol=STEP_TOL, atol=0)


def test_four_host_devices_equal_unsharded(reference, tmp_path):
    got = _run(tmp_path / "four.npz", 4)
    assert int(got["n_devices"]) == 4 and int(got["n_padded"]) == 3
    # the members really stop at different times (per-member control on every shard)
    assert len(set(reference["num_steps"].tolist())) > 1
    assert set(reference["results"].tolist()) == {"loss_target_reached"}
    _assert_same(got, reference)


def test_four_host_devices_mapping_their_members_equal_unsharded(reference, tmp_path):
    """members="sequential" under the sharded layout: each device maps its block."""
    got = _run(tmp_path / "four_seq.npz", 4, "sequential")
    assert int(got["n_devices"]) == 4 and int(got["n_padded"]) == 3
    assert str(got["members"]) == "sequential" and str(reference["members"]) == "vmap"
    _assert_same(got, reference)


def test_two_processes_under_jax_distributed_equal_unsharded(reference, tmp_path):
    """Two processes with two CPU devices each form one 4-device job (jax.distributed over
    localhost): every process gets the whole ensemble back."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(2):
        env = _env(
            2,
            GFLOW_DISTRIBUTED="1",
            GFLOW_COORDINATOR=f"localhost:{port}",
            GFLOW_NUM_PROCESSES="2",
            GFLOW_PROCESS_ID=str(pid),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(tmp_path / "multi.npz")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
    for pid in range(2):
        got = dict(np.load(tmp_path / f"multi_{pid}.npz"))
        assert int(got["process_count"]) == 2 and int(got["n_devices"]) == 4
        _assert_same(got, reference)
