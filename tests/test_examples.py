"""Every examples/*.py runs at its tiny size (`--tiny`) in a fresh process, and says what
it should: the files it writes, and for GD vs GF the convergence orders 1 and 2."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# Optional dependencies an example needs (skipped, with the reason, when missing).
REQUIRES = {"flax_nnx.py": "flax"}
# What each example must write into --out (examples not listed: only a clean exit).
WRITES = {
    "own_equinox_model.py": ["solution.json", "solution.npz", "loss.png"],
    "gd_vs_flow.py": ["gd_vs_flow.png"],
    "certificates_mf.py": ["loss.png", "kernel.png"],
    "ensemble_seeds.py": ["seed0.json", "seed0.npz"],
}


def test_examples_found():
    names = {p.name for p in EXAMPLES}
    assert set(WRITES) <= names, sorted(names)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_tiny(script, tmp_path):
    need = REQUIRES.get(script.name)
    if need and importlib.util.find_spec(need) is None:
        pytest.skip(f"{script.name} needs the optional package {need}")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["MPLBACKEND"] = "Agg"
    out = tmp_path / "out"
    argv = [sys.executable, str(script), "--tiny"]
    if "--out" in script.read_text():  # examples that write files take --out
        argv += ["--out", str(out)]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip()
    for name in WRITES.get(script.name, []):
        assert (out / name).is_file(), (name, sorted(p.name for p in out.iterdir()))
    if script.name == "gd_vs_flow.py":
        orders = [float(v) for v in re.findall(r"order (-?[0-9.]+)", proc.stdout)]
        assert len(orders) == 2, proc.stdout
        assert abs(orders[0] - 1.0) < 0.15 and abs(orders[1] - 2.0) < 0.15, orders
