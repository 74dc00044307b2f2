"""Bad input, API and CLI: each raises ValueError (or, on the command line, prints one
line `gflow: error: ...` and exits 2, with no traceback) naming the field, the bad value
and the fix, before anything is compiled.

Every row lists substrings the message must contain: the field, the value (or what is
wrong with it), and a word of the fix.
"""

import os
import subprocess
import sys
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._cli._main import main

KEY = jax.random.key(0)
SQ = lambda p: 0.5 * jnp.sum(p**2)  # noqa: E731
X0 = jnp.ones(3)
DATA = gflow.make_synthetic(8, 4, n_test=2, seed=0)
MODEL = gflow.TwoLayer(4, 8, key=KEY)

API = {
    "t1 negative": (lambda: gflow.simulate(SQ, X0, -1.0), ["t1", "-1.0", "positive"]),
    "t1 not after t0": (lambda: gflow.simulate(SQ, X0, 1.0, t0=2.0), ["t1", "t0 = 2.0"]),
    "rtol zero": (lambda: gflow.simulate(SQ, X0, 1.0, rtol=0.0), ["rtol", "0.0", "positive"]),
    "atol nan": (lambda: gflow.simulate(SQ, X0, 1.0, atol=float("nan")), ["atol", "nan"]),
    "dt0 negative": (lambda: gflow.simulate(SQ, X0, 1.0, dt0=-0.1), ["dt0", "-0.1"]),
    "max_steps zero": (lambda: gflow.simulate(SQ, X0, 1.0, max_steps=0), ["max_steps", ">= 1"]),
    "max_steps float": (
        lambda: gflow.simulate(SQ, X0, 1.0, max_steps=1.5),
        ["max_steps", "integer", "1.5"],
    ),
    "unknown solver": (
        lambda: gflow.simulate(SQ, X0, 1.0, solver="rk99"),
        ["solver", "'rk99'", "tsit5", "Dopri8"],
    ),
    "euler without dt0": (
        lambda: gflow.simulate(SQ, X0, 1.0, solver="euler"),
        ["dt0", "Euler", "pass dt0"],
    ),
    "ts outside [t0, t1]": (
        lambda: gflow.simulate(SQ, X0, 1.0, ts=[0.0, 2.0]),
        ["ts", "[0.0, 1.0]", "extend t1"],
    ),
    "ts unsorted": (lambda: gflow.simulate(SQ, X0, 1.0, ts=[0.5, 0.1]), ["ts", "sort"]),
    "ts with nan": (lambda: gflow.simulate(SQ, X0, 1.0, ts=[0.0, np.nan]), ["ts", "NaN"]),
    "eta negative": (lambda: gflow.simulate(SQ, X0, 1.0, eta=-1.0), ["eta", "-1.0", "positive"]),
    "eta pytree mismatch": (
        lambda: gflow.simulate(SQ, {"a": X0}, 1.0, eta={"b": 1.0}),
        ["eta", "structure of params", "model's .eta()"],
    ),
    "params with nan": (
        lambda: gflow.simulate(SQ, jnp.array([1.0, np.nan]), 1.0),
        ["params", "NaN", "re-initialize"],
    ),
    "params with inf": (
        lambda: gflow.gradient_descent(SQ, jnp.array([np.inf]), 0.1, 3),
        ["params", "inf"],
    ),
    "loss not callable": (lambda: gflow.simulate(3.0, X0, 1.0), ["loss_fn", "callable"]),
    "loss not scalar": (
        lambda: gflow.simulate(lambda p: p**2, X0, 1.0),
        ["loss_fn", "scalar", "(3,)", "jnp.mean"],
    ),
    "loss raises": (
        lambda: gflow.simulate(lambda p: p["w"].sum(), X0, 1.0),
        ["loss_fn", "failed", "scalar"],
    ),
    "metrics not callable": (
        lambda: gflow.simulate(SQ, X0, 1.0, metrics={"m": 3}),
        ["metrics", "'m'", "callable"],
    ),
    "nothing trainable": (
        lambda: gflow.simulate(SQ, X0, 1.0, trainable=lambda leaf: False),
        ["trainable", "no trainable leaves"],
    ),
    "loss_target negative": (
        lambda: gflow.simulate(SQ, X0, 1.0, loss_target=-1.0),
        ["loss_target", "-1.0"],
    ),
    "checkpoint not a Checkpoint": (
        lambda: gflow.simulate(SQ, X0, 1.0, checkpoint="ck.npz"),
        ["checkpoint", "'ck.npz'", "gflow.Checkpoint"],
    ),
    "checkpoint interval negative": (
        lambda: gflow.Checkpoint("ck.npz", every_seconds=-1),
        ["every_seconds", "-1", "use 0"],
    ),
    "checkpoint segments zero": (
        lambda: gflow.Checkpoint("ck.npz", segments=0),
        ["segments", ">= 1", "0"],
    ),
    "resume without checkpoint": (
        lambda: gflow.simulate(
            SQ, X0, 1.0, checkpoint=gflow.Checkpoint("/nonexistent/ck.npz", resume=True)
        ),
        ["resume", "no checkpoint", "without --resume"],
    ),
    "gd dt zero": (lambda: gflow.gradient_descent(SQ, X0, 0.0, 10), ["dt", "0.0", "positive"]),
    "gd n_steps zero": (lambda: gflow.gradient_descent(SQ, X0, 0.1, 0), ["n_steps", ">= 1"]),
    "gd save_every zero": (
        lambda: gflow.gradient_descent(SQ, X0, 0.1, 5, save_every=0),
        ["save_every", ">= 1"],
    ),
    "model width zero": (lambda: gflow.TwoLayer(4, 0, key=KEY), ["width", ">= 1", "0"]),
    "model activation": (
        lambda: gflow.TwoLayer(4, 8, activation="swish", key=KEY),
        ["activation", "'swish'", "tanh"],
    ),
    "model scaling": (
        lambda: gflow.TwoLayer(4, 8, scaling="mup", key=KEY),
        ["scaling", "'mup'", "'mf'"],
    ),
    "model both frozen": (
        lambda: gflow.TwoLayer(4, 8, train_first=False, train_second=False, key=KEY),
        ["train_first", "frozen", "train at least one"],
    ),
    "multilayer depth": (
        lambda: gflow.MultiLayer(4, 8, 8, depth=2, key=KEY),
        ["depth", ">= 3", "2"],
    ),
    "data n zero": (lambda: gflow.make_synthetic(0, 4), ["n", ">= 1", "0"]),
    "data inputs": (
        lambda: gflow.make_synthetic(4, 4, inputs="cube"),
        ["inputs", "'cube'", "sphere"],
    ),
    "data noise negative": (lambda: gflow.make_synthetic(4, 4, noise=-1.0), ["noise", "-1.0"]),
    "digits task": (lambda: gflow.load_digits(8, task="odd"), ["task", "'odd'", "parity"]),
    "digits too many": (lambda: gflow.load_digits(1800), ["n", "1800", "1797", "lower"]),
    "arrays with nan": (
        lambda: gflow.from_arrays(np.array([[np.nan, 1.0]]), np.array([1.0])),
        ["x_train", "NaN", "clean"],
    ),
    "targets with inf": (
        lambda: gflow.from_arrays(np.ones((2, 2)), np.array([1.0, np.inf])),
        ["y_train", "inf"],
    ),
    "arrays length mismatch": (
        lambda: gflow.from_arrays(np.ones((3, 2)), np.ones(2)),
        ["y_train", "2 targets", "3 rows"],
    ),
    "targets 2-D": (
        lambda: gflow.from_arrays(np.ones((3, 2)), np.ones((3, 1))),
        ["y_train", "(3, 1)", "reshape(-1)"],
    ),
    "data d vs model d": (
        lambda: gflow.simulate_mse(gflow.TwoLayer(5, 8, key=KEY), DATA, 1.0),
        ["data", "d = 4", "d = 5", "input dimension"],
    ),
    "model not a model": (
        lambda: gflow.simulate_mse(SQ, DATA, 1.0),
        ["model", "TwoLayer"],
    ),
    "data not a dataset": (lambda: gflow.simulate_mse(MODEL, (1, 2), 1.0), ["data", "Dataset"]),
    "StepTo with checkpoint": (
        lambda: gflow._flow._checkpoint.integrate_checkpointed(
            gflow.flatten_problem(SQ, X0),
            0.0,
            1.0,
            np.array([0.0, 1.0]),
            solver=diffrax.Euler(),
            stepsize_controller=diffrax.StepTo(ts=jnp.array([0.0, 0.5, 1.0])),
            dt0=None,
            max_steps=10,
            checkpoint=gflow.Checkpoint("ck.npz"),
        ),
        ["checkpoint", "StepTo", "ConstantStepSize"],
    ),
    "controller and solver": (
        lambda: gflow.simulate(SQ, X0, 1.0, solver=diffrax.Euler(), dt0=None),
        ["dt0", "constant step"],
    ),
}


@pytest.fixture
def no_solve(monkeypatch):
    """Fail if a solve is even entered: errors must come before any compilation."""

    def entered(*args, **kwargs):
        raise AssertionError("the solver engine was entered")

    import gflow._flow._simulate as sim

    monkeypatch.setattr(sim, "integrate", entered)
    monkeypatch.setattr(sim, "integrate_checkpointed", entered)


@pytest.mark.parametrize("name", list(API))
def test_api_bad_input(name, no_solve):
    fn, parts = API[name]
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)


BASE = "[data]\nn = 8\nd = 4\n[model]\nwidth = 8\n[flow]\nt1 = 1.0\n"
CLI = {
    "unknown key (typo)": (
        "[flow]\nmax_step = 3\n",
        ["flow.max_step", "unknown key", "Did you mean 'max_steps'"],
    ),
    "unknown table": ("[flw]\nt1 = 3.0\n", ["flw", "unknown top-level key", "'flow'"]),
    "t1 negative": ("[flow]\nt1 = -5.0\n", ["flow.t1", "-5.0", "> 0"]),
    "t1 inf": ("[flow]\nt1 = inf\n", ["flow.t1", "finite", "inf"]),
    "rtol nan": ("[flow]\nrtol = nan\n", ["flow.rtol", "finite", "nan"]),
    "solver name": ('[flow]\nsolver = "rk4"\n', ["flow.solver", "'rk4'", "tsit5"]),
    "euler without dt0": ('[flow]\nsolver = "euler"\n', ["flow.dt0", "'euler'", "set flow.dt0"]),
    "width zero": ("[model]\nwidth = 0\n", ["model.width", ">= 1", "0"]),
    "width float": ("[model]\nwidth = 10.5\n", ["model.width", "expected int", "10.5"]),
    "width string": ('[model]\nwidth = "8"\n', ["model.width", "expected int", "'8'"]),
    "activation": ('[model]\nactivation = "swish"\n', ["model.activation", "'swish'", "tanh"]),
    "scaling for two-layer": (
        '[model]\nscaling = "mf-sqrt"\n',
        ["model.scaling", "'mf-sqrt'", "'mf' or 'ntk'"],
    ),
    "data kind": ('[data]\nkind = "mnist"\n', ["data.kind", "'mnist'", "digits"]),
    "digits too many": (
        '[data]\nkind = "digits"\nn = 1700\nn_test = 200\n',
        ["data.n", "1900", "1797", "lower"],
    ),
    "depth too small": ('[model]\nkind = "multilayer"\ndepth = 2\n', ["model.depth", ">= 3"]),
    "digits with d": (
        '[data]\nkind = "digits"\nd = 32\n',
        ["data.d", "d = 64", "d = 32", "remove data.d"],
    ),
    "solver typo": (
        '[flow]\nsolver = "Tsit6"\n',
        ["flow.solver", "'Tsit6'", "Did you mean 'tsit5'?"],
    ),
    "bool as number": ("[output]\nprogress = 1\n", ["output.progress", "expected bool", "1"]),
    "checkpoint_seconds": (
        "[output]\ncheckpoint_seconds = -1\n",
        ["output.checkpoint_seconds", ">= 0", "-1"],
    ),
    "segments zero": ("[output]\nsegments = 0\n", ["output.segments", ">= 1"]),
    "eta zero": ("[flow]\neta = 0.0\n", ["flow.eta", "> 0", "0.0"]),
    "seed negative": ("seed = -1\n", ["seed", ">= 0", "-1"]),
    "table not a table": ("flow = 3\n", ["flow", "expected a table"]),
    "invalid TOML": ("[flow\nt1 = 3\n", ["config", "not valid TOML", "line 1", "fix the syntax"]),
}


def _run_cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert err.startswith("gflow: error: ") and "\n" not in err and "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("name", list(CLI))
def test_cli_bad_config(name, tmp_path, capsys, no_solve):
    text, parts = CLI[name]
    path = tmp_path / "c.toml"
    path.write_text(text if name in ("invalid TOML", "table not a table") else text + "\n")
    code, err = _run_cli(["run", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    for part in parts:
        assert part in err, (part, err)


def test_cli_bad_paths(tmp_path, capsys, no_solve):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    code, err = _run_cli(["run", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and "missing.toml" in err and "does not exist" in err
    code, err = _run_cli(["run", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err and ".toml file" in err
    (tmp_path / "latin1.toml").write_bytes(b"name = '\xe9'\n")
    code, err = _run_cli(["run", str(tmp_path / "latin1.toml")], capsys)
    assert code == 2 and "not UTF-8" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _run_cli(["run", str(cfg), "--out", str(blocker / "sub")], capsys)
    assert code == 2 and "--out" in err and str(blocker / "sub") in err and "writable" in err
    code, err = _run_cli(["run", str(cfg), "--out", str(tmp_path / "new"), "--resume"], capsys)
    assert code == 2 and "no checkpoint" in err and "without --resume" in err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = _run_cli(["run", str(cfg), "--out", str(locked / "o")], capsys)
        assert code == 2 and "Permission denied" in err


def test_cli_error_is_one_line_without_traceback_in_a_real_process(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nwidht = 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gflow._cli._main", "run", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "model.widht: unknown key. Did you mean 'width'?" in proc.stderr
