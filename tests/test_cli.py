"""The command line: default run, files written, help, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gflow._cli._main import main


def test_default_run_writes_three_files(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    # the default config with a shorter horizon (same model/data as `gflow run`)
    cfg.write_text("[flow]\nt1 = 150.0\n[data]\nn_test = 16\n[output]\nprogress = false\n")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "linear rate" in printed and "completed" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["completed"] is True and result["schema_version"] == 1
    assert result["config"]["model"]["kind"] == "two-layer"
    assert result["rate_fit"]["rate"] > 0 and result["rate_fit"]["r2"] > 0.99
    assert {"jax", "diffrax", "equinox", "numpy"} <= set(result["versions"])
    assert result["stats"]["compile_seconds"] > 0 and result["wall_seconds"] > 0
    with np.load(out / "trajectory.npz", allow_pickle=False) as z:
        assert z["loss"].shape == z["ts"].shape and z["loss"][-1] < 1e-4 * z["loss"][0]
        assert "metric_test_loss" in z.files
    assert (out / "loss.png").stat().st_size > 10_000
    assert (out / "config.toml").is_file()


def test_print_config_roundtrip(tmp_path, capsys):
    assert main(["run", "--print-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "c.toml").write_text(text)
    assert main(["run", str(tmp_path / "c.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[model]\nwidht = 3\n", "model.widht: unknown key. Did you mean 'width'?"),
        ("[model]\nwidth = 0\n", "model.width: must be >= 1"),
        ("[flow]\nrtol = -1.0\n", "flow.rtol: must be > 0.0"),
        ("[flow]\nsolver = 'rk99'\n", "flow.solver: must be one of"),
        ("[model]\nactivation = 'swish'\n", "model.activation: must be one of"),
        ("[data]\nn = 'ten'\n", "data.n: expected int, got str"),
        ("[model]\nkind = 'two-layer'\nscaling = 'mf-sqrt'\n", "model.scaling"),
        ("seeed = 1\n", "seeed: unknown top-level key"),
        ("[flow\n", "is not valid TOML"),
    ],
)
def test_bad_config_one_line_error(tmp_path, capsys, content, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("gflow: error:") and "\n" not in err
    assert not (tmp_path / "o").exists()  # nothing computed or written


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_is_useful():
    out = subprocess.run(
        [sys.executable, "-m", "gflow._cli._main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "gradient flow" in out.stdout and "run" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "gflow._cli._main", "run", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "result.json" in out.stdout and "--out" in out.stdout


def test_config_docs_are_current():
    from pathlib import Path

    from gflow._config_docs import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == render(), "regenerate: python -m gflow._config_docs > docs/config.md"
