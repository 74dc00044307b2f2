"""`gflow sweep`: grid validation, and a real local Dask cluster of 2 worker processes
that runs the points, records a failure without losing the rest, and skips finished points
on a rerun."""

import csv
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gflow._cli._main import main
from gflow._config import ConfigError, build_data, build_model
from gflow._models._base import mse_loss
from gflow._sweep import load_sweep, parse_sweep, run_sweep

BASE = """
seed = 0
[data]
n = 4
d = 3
n_test = 4
[flow]
t1 = 4.0
n_save = 9
solver = "heun"
[output]
progress = false
"""


def _write(tmp_path: Path, grid: str, base: str = BASE) -> Path:
    (tmp_path / "base.toml").write_text(base)
    path = tmp_path / "sweep.toml"
    path.write_text(f'name = "t"\nbase = "base.toml"\n[grid]\n{grid}\n')
    return path


def test_grid_expansion_and_ids(tmp_path):
    sweep = load_sweep(_write(tmp_path, 'widths = [4, 8]\nseed = [0, 1]\n"flow.rtol" = [1e-6]'))
    points = sweep.points()
    assert len(points) == 4
    assert [(p.config["model"]["width"], p.config["seed"]) for p in points] == [
        (4, 0),
        (4, 1),
        (8, 0),
        (8, 1),
    ]
    assert all(p.config["flow"]["rtol"] == 1e-6 and p.config["data"]["n"] == 4 for p in points)
    assert len({p.id for p in points}) == 4
    # ids are stable: the same point in a bigger grid keeps its id
    grid = 'widths = [4, 8, 16]\nseed = [0, 1]\n"flow.rtol" = [1e-6]'
    bigger = load_sweep(_write(tmp_path, grid))
    assert {p.id for p in points} <= {p.id for p in bigger.points()}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"grid": {"width": [4]}, "extra": 1}, "extra: unknown sweep key"),
        ({"grid": {"widht": [4]}}, "Did you mean 'width'"),
        ({"grid": {"flow.rtl": [4]}}, "Did you mean 'flow.rtol'"),
        ({"grid": {}}, "grid: missing or empty"),
        ({}, "grid: missing or empty"),
        ({"grid": {"width": []}}, "grid.width: expected a non-empty list"),
        ({"grid": {"width": 4}}, "grid.width: expected a non-empty list"),
        ({"grid": {"width": [4, 4]}}, "repeated values"),
        ({"grid": {"width": [4], "model.width": [8]}}, "keep one of them"),
        ({"grid": {"width": [4, 0]}}, r"grid point \{'width': 0\}: model.width: must be >= 1"),
        ({"grid": {"solver": ["rk4"]}}, "flow.solver: must be one of"),
        ({"base": {"flow": {"t2": 1.0}}, "grid": {"seed": [0]}}, "base.flow.t2: unknown key"),
        ({"base": "missing.toml", "grid": {"seed": [0]}}, "does not exist"),
    ],
)
def test_bad_sweeps_raise_before_running(raw, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(raw, root=tmp_path)


def test_cli_errors_and_dry_run(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nwidth = []\n")
    assert main(["sweep", str(bad)]) == 2
    assert "grid.width: expected a non-empty list" in capsys.readouterr().err
    good = _write(tmp_path, "width = [4, 8]")
    assert main(["sweep", str(good), "--dry-run"]) == 0
    assert "2 points" in capsys.readouterr().out
    assert main(["sweep", str(good), "--workers", "-1"]) == 2
    assert "--workers: must be >= 1 (Dask processes) or 0 (serial)" in capsys.readouterr().err


def test_serial_sweep_equals_dask_sweep_and_resumes(tmp_path):
    # --workers 0: the same engine without Dask; a point that raises is recorded and the
    # others are stored; the rerun skips the finished ones
    sweep = load_sweep(_write(tmp_path, "width = [4, 8]"))

    calls = []

    def flaky(config, out, progress=False):
        from gflow._run import run_config

        calls.append(config["model"]["width"])
        if config["model"]["width"] == 8:
            raise RuntimeError("boom")
        return run_config(config, out, progress=progress)

    out = tmp_path / "serial"
    rows = run_sweep(sweep, out, workers=0, runner=flaky, log=lambda s: None)
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert "RuntimeError: boom" in rows[1]["error"]
    assert (out / "points" / rows[0]["id"] / "result.json").is_file()
    rows2 = run_sweep(sweep, out, workers=0, runner=flaky, log=lambda s: None)
    assert [r["status"] for r in rows2] == ["skipped", "failed"]
    assert calls == [4, 8, 8]


def _rows(out: Path) -> dict[str, dict]:
    with (out / "summary.csv").open() as f:
        return {r["width"]: r for r in csv.DictReader(f)}


def test_sweep_on_a_local_dask_cluster(tmp_path):
    path = _write(tmp_path, "width = [4, 8]")
    sweep = load_sweep(path)
    out = tmp_path / "out"

    def flaky(config, out_dir, progress=False):
        # defined here so Dask ships it to the workers by value
        from gflow._run import run_config

        if config["model"]["width"] == 8:
            raise RuntimeError("injected failure")
        return run_config(config, out_dir, progress=progress)

    rows = run_sweep(sweep, out, workers=2, runner=flaky, log=lambda s: None)
    assert [r["status"] for r in rows] == ["done", "failed"]
    by_width = _rows(out)
    assert by_width["8"]["status"] == "failed" and "injected failure" in by_width["8"]["error"]
    p4, p8 = sweep.points()
    assert (out / "points" / p8.id / "error.json").is_file()
    result_file = out / "points" / p4.id / "result.json"
    assert {f.name for f in result_file.parent.iterdir()} >= {
        "result.json",
        "trajectory.npz",
        "loss.png",
        "config.toml",
    }
    result = json.loads(result_file.read_text())
    # the worker really ran this point: its initial loss is L(theta_0) of the point's model
    data, model = build_data(p4.config), build_model(p4.config)
    loss0 = float(mse_loss(model, jnp.asarray(data.x_train), jnp.asarray(data.y_train)))
    assert result["final"]["loss_initial"] == pytest.approx(loss0, rel=1e-12)
    assert float(by_width["4"]["loss_initial"]) == pytest.approx(loss0, rel=1e-12)
    assert result["completed"] and result["model"]["n_params_trained"] == 4 * 3 + 4
    mtime = result_file.stat().st_mtime_ns

    # Rerun through the CLI: the finished point is skipped, the failed one runs now.
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    by_width = _rows(out)
    assert by_width["4"]["status"] == "skipped" and by_width["8"]["status"] == "done"
    assert result_file.stat().st_mtime_ns == mtime
    assert not (out / "points" / p8.id / "error.json").exists()
    r8 = json.loads((out / "points" / p8.id / "result.json").read_text())
    assert r8["config"]["model"]["width"] == 8 and r8["completed"]
    assert np.isfinite(float(by_width["8"]["loss_final"]))
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["n_run"] == 1 and manifest["n_failed"] == 0 and len(manifest["points"]) == 2


def test_reproduction_sweep_keeps_finished_points_when_one_fails(tmp_path):
    from gflow._experiments._sweep import run_sweep as run_points_sweep

    spec = {"name": "toy", "version": 1, "settings": {"a": 1}}
    points = [{"m": 1}, {"m": 2}, {"m": 3}]
    calls = []

    def fn(point):
        calls.append(point["m"])
        if point["m"] == 2 and len(calls) < 3:
            raise ValueError("bad point")
        return {"m2": point["m"] ** 2}, {"x": np.arange(point["m"])}

    with pytest.raises(RuntimeError, match="toy point m=2 failed .ValueError: bad point."):
        run_points_sweep(spec, points, fn, tmp_path, log=lambda s: None)
    assert (tmp_path / "points" / "m=1.json").is_file()
    records = run_points_sweep(spec, points, fn, tmp_path, log=lambda s: None)
    assert calls == [1, 2, 2, 3]  # m=1 reused, not recomputed
    assert [r["reused"] for r in records] == [True, False, False]
    assert [r["summary"]["m2"] for r in records] == [1, 4, 9]
    np.testing.assert_array_equal(records[2]["arrays"]["x"], np.arange(3))
