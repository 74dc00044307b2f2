"""The command line: default run, files written, help, and one-line errors."""

import json
import re
import subprocess
import sys
import threading

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


def test_help_has_no_default_none(capsys):
    """Issue 13: `--help` printed "(default: built-in) (default: None)"."""
    for sub in ("run", "bench", "reproduce", "sweep"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text, (sub, text)
        assert not re.search(r"\(default:[^)]*\) \(default:", text), (sub, text)
        if sub == "run":
            assert "(default: runs/default)" in text


def test_solver_name_case_insensitive():
    """The API accepts solver="Tsit5"; so does the config (normalised to 'tsit5')."""
    from gflow._config import validate

    assert validate({"flow": {"solver": "Tsit5"}})["flow"]["solver"] == "tsit5"
    assert validate({"flow": {"solver": "DOPRI8"}})["flow"]["solver"] == "dopri8"
    assert validate({"model": {"activation": "ReLU"}})["model"]["activation"] == "relu"


def test_digits_d_64_accepted():
    """A config written by gflow itself holds d = 64 for digits: it must still load."""
    from gflow._config import dumps_toml, validate

    cfg = validate({"data": {"kind": "digits"}})
    assert cfg["data"]["d"] == 64
    assert validate({"data": {"kind": "digits", "d": 64}})["data"]["kind"] == "digits"
    assert dumps_toml(cfg)


def test_failed_resume_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "resume: no checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_bench_default_out_is_fresh(tmp_path, monkeypatch):
    """`gflow bench` without --out writes into a new runs/bench-... folder, never into
    the committed benchmarks/results."""
    import sys

    from gflow._cli._bench_cmd import find_suite, fresh_bench_folder

    sys.path.insert(0, str(find_suite()))  # the repository's benchmark code
    import gflow_bench._run as bench_run

    seen = {}

    def fake_run_all(out, **kw):
        seen["out"] = out
        return {}

    monkeypatch.setattr(bench_run, "run_all", fake_run_all)
    monkeypatch.setattr(bench_run, "summary", lambda results: [])
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 0
    out = seen["out"]
    assert out.parent.name == "runs" and out.name.startswith("bench-")
    assert "benchmarks" not in str(out)
    out.mkdir(parents=True)
    again = fresh_bench_folder()
    assert again != out and not again.exists()
    assert main(["bench", "--quick", "--out", "mine"]) == 0
    assert seen["out"] == "mine"


RELU = """
[data]
n = 8
d = 16
n_test = 0
[model]
width = 32
activation = "{act}"
[flow]
t1 = 50.0
n_save = 21
max_steps = 1500
[analysis]
kernel = false
certificates = false
feature_learning = false
[output]
progress = false
"""


def test_step_count_warning_relu(tmp_path, capsys):
    """ReLU's kinks make the adaptive solver crawl: the run summary says so and what to do;
    the same net with tanh finishes in far fewer steps and gets no warning."""
    cfg = tmp_path / "relu.toml"
    cfg.write_text(RELU.format(act="relu"))
    main(["run", str(cfg), "--out", str(tmp_path / "relu")])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "relu" / "result.json").read_text())
    assert result["stats"]["num_steps"] >= 1000
    (warning,) = result["warnings"]
    assert "'relu' has a kink" in warning and "docs/nonsmooth.md" in warning
    assert warning in printed
    cfg.write_text(RELU.format(act="tanh"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "tanh")]) == 0
    result = json.loads((tmp_path / "tanh" / "result.json").read_text())
    assert result["stats"]["num_steps"] < 1000 and result["warnings"] == []
    assert "WARNING" not in capsys.readouterr().out


def test_step_warnings_rule():
    from gflow._run import STEP_WARNING, step_warnings

    cfg = {"model": {"activation": "tanh"}}
    assert step_warnings(cfg, {"num_steps": STEP_WARNING - 1}) == []
    (w,) = step_warnings(cfg, {"num_steps": STEP_WARNING, "grad_evals": 6000})
    assert "stiff" in w and 'solver = "auto"' in w  # squared error (the default loss)
    logistic = {**cfg, "flow": {"loss": "logistic", "solver": "tsit5"}}
    (w,) = step_warnings(logistic, {"num_steps": STEP_WARNING, "grad_evals": 6000})
    assert "stiff" in w and "kvaerno5" in w and "auto" not in w
    rosw = {**cfg, "flow": {"loss": "mse", "solver": "rosw"}}
    (w,) = step_warnings(rosw, {"num_steps": STEP_WARNING, "grad_evals": 6000})
    assert "rtol" in w and "kvaerno5" not in w and "auto" not in w
    (w,) = step_warnings({"model": {"activation": "relu"}}, {"num_steps": 5000})
    assert "kink" in w and "gelu" in w


_EXIT_SCRIPT = """
import atexit, sys, threading, time
where = sys.argv[1]
atexit.register(lambda: open(where + "/atexit", "w").write("ran"))
if sys.argv[2] == "thread":  # a non-daemon thread still working when main returns
    def late():
        time.sleep(0.5)
        open(where + "/thread", "w").write("done")
    threading.Thread(target=late).start()
sys.argv = ["gflow", *sys.argv[3:]]
from gflow._cli._main import command
command()
"""


def test_the_command_exits_fast_and_loses_nothing(tmp_path):
    """`command` ends the process with os._exit after main: the streams are flushed
    (a piped stdout is complete, the error line is there), atexit handlers run, the exit
    code is main's, and a non-daemon thread still running is waited for."""

    def gflow(*args: str, thread: str = "none") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _EXIT_SCRIPT, str(tmp_path), thread, *args],
            capture_output=True,
            text=True,
        )

    out = gflow("run", "--print-config")
    assert out.returncode == 0 and out.stdout.startswith("seed = 0")
    assert out.stdout.rstrip().endswith("segments = 20")  # the config's last line
    assert (tmp_path / "atexit").read_text() == "ran"
    (tmp_path / "atexit").unlink()

    out = gflow("run", str(tmp_path / "nope.toml"), thread="thread")
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"  # the normal exit waited for it


def test_the_command_takes_the_fast_exit_only_when_nothing_waits(monkeypatch, capsys):
    """The decision itself, in-process (os._exit and atexit stubbed): the fast exit after
    main, with main's code; the normal exit with GFLOW_FAST_EXIT=0 or while a non-daemon
    thread is alive."""
    from types import SimpleNamespace

    from gflow._cli import _main

    class FastExit(Exception):
        pass

    def fast_exit(code):
        raise FastExit(code)

    ran = []
    monkeypatch.setattr(_main.os, "_exit", fast_exit)
    monkeypatch.setattr(_main, "atexit", SimpleNamespace(_run_exitfuncs=lambda: ran.append(1)))
    monkeypatch.setattr(sys, "argv", ["gflow", "run", "--print-config"])
    with pytest.raises(FastExit) as e:
        _main.command()
    assert e.value.args == (0,) and ran == [1]
    monkeypatch.setenv("GFLOW_FAST_EXIT", "0")
    with pytest.raises(SystemExit) as e:
        _main.command()
    assert e.value.code == 0 and ran == [1]
    monkeypatch.delenv("GFLOW_FAST_EXIT")
    release = threading.Event()
    waiting = threading.Thread(target=release.wait)
    waiting.start()
    try:
        with pytest.raises(SystemExit):
            _main.command()
    finally:
        release.set()
        waiting.join()
    assert ran == [1]
    capsys.readouterr()
