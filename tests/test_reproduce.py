"""The reproduction experiments (gflow reproduce): measures against second
implementations and closed forms, config loading, and every experiment at its tiny size
with the qualitative outcome asserted where it is robust, plus resume."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._analysis._linearized import linearized_flow
from gflow._cli._main import main
from gflow._experiments._convergence import seed_summary
from gflow._experiments._measures import kernel_parts, lazy_gap, loglog_slope
from gflow._experiments._reproduce import reproduce
from gflow._experiments._spec import EXPERIMENTS, SIZES, load_spec


def _jacobian_kernel(model, x):
    """Second implementation: H = sum over trained leaves of eta J J^T, J from jacrev."""
    spec = model.trainable()
    dyn, static = eqx.partition(model, spec)
    eta_dyn, _ = eqx.partition(model.eta(), spec)
    jac = jax.jacrev(lambda p: eqx.combine(p, static)(x))(dyn)
    n = x.shape[0]
    total = jnp.zeros((n, n))
    for j, e in zip(
        jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(eta_dyn), strict=True
    ):
        jm = j.reshape(n, -1)
        total = total + e * jm @ jm.T
    return total


@pytest.mark.parametrize(
    "build",
    [
        lambda k: gflow.TwoLayer(5, 7, key=k),
        lambda k: gflow.TwoLayer(5, 7, scaling="ntk", train_second=False, key=k),
        lambda k: gflow.TwoLayer(5, 7, train_first=False, key=k),
        lambda k: gflow.MultiLayer(3, 6, 7, scaling="mf", key=k),
        lambda k: gflow.MultiLayer(3, 6, 7, scaling="mf-sqrt", train_output=True, key=k),
        lambda k: gflow.MultiLayer(3, 6, 7, scaling="ntk", depth=4, key=k),
    ],
)
def test_kernel_matches_jacobian_and_schur(build):
    model = build(jax.random.key(1))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, model.d)) / 2)
    h, lam_w, schur = kernel_parts(model, x)
    ref = _jacobian_kernel(model, x)
    # Same sums in a different order: agreement to ~1e-13 relative in float64.
    np.testing.assert_allclose(h, ref, rtol=1e-10, atol=1e-12 * float(jnp.abs(ref).max()))
    lam_min = float(jnp.linalg.eigvalsh(h)[0])
    tol = 1e-12 * float(jnp.abs(ref).max())  # eigenvalue round-off
    assert float(schur) <= float(lam_w) + tol and float(lam_w) <= lam_min + tol


def test_lazy_gap_measures_distance_to_the_linearized_flow():
    model = gflow.MultiLayer(3, 6, 7, scaling="ntk", key=jax.random.key(0))
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 3)) / 2, rng.standard_normal(5)
    ts = np.linspace(0.0, 4.0, 9)
    lin = linearized_flow(model, x, y, ts).f_train
    r0 = np.linalg.norm(lin[0] - y)
    assert lazy_gap(model, x, y, ts, lin) == pytest.approx(0.0, abs=1e-12)
    bumped = lin.copy()
    bumped[4, 2] += 0.3 * r0
    assert lazy_gap(model, x, y, ts, bumped) == pytest.approx(0.3, rel=1e-10)


def test_seed_summary_on_an_exact_exponential():
    # L(t) = L0 exp(-(2/n) lam t) with constant lambda_min = lam: the fitted rate equals
    # (2/n) lam, the envelope is attained, and no certificate fails.
    n, lam = 4, 0.5
    ts = np.linspace(0.0, 60.0, 61)
    loss = 0.3 * np.exp(-2.0 / n * lam * ts)
    lam_arr = np.stack([np.full_like(ts, lam), np.full_like(ts, 2.0)], axis=1)
    schur = np.stack([np.full_like(ts, lam), np.full_like(ts, 0.2)], axis=1)
    out = seed_summary(ts, loss, lam_arr, schur, n)
    assert out["rate"] == pytest.approx(2.0 / n * lam, rel=1e-10)
    assert out["linear"] and out["decades"] > 6
    assert out["certified_rate"] == pytest.approx(0.25) and out["certified_rate_schur"] == 0.1
    assert "fail" not in out["status"].values()


def test_loglog_slope_closed_form():
    widths = [16, 64, 256]
    y = np.array([[3.0 * w**-0.5] * 3 for w in widths])
    res = loglog_slope(widths, y)
    assert res["slope"] == pytest.approx(-0.5, abs=1e-12)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_specs_load_at_every_size(name):
    for size in SIZES:
        spec = load_spec(name, size)
        assert spec["name"] == name and spec["version"] >= 1
        assert spec["settings"]["seeds"] >= 2
    assert load_spec(name, "tiny", seeds=3)["settings"]["seeds"] == 3


def test_experiment_models_are_run_config_models():
    # the reproductions build their models from a validated `gflow run` [model] table
    import jax

    from gflow._config import ConfigError
    from gflow._experiments._spec import _check_models, model_builder, model_config

    s = load_spec("feature-learning", "tiny")["settings"]
    cfg = model_config("feature-learning", s, width=16, scaling="ntk", train_output=False)
    assert cfg["model"]["kind"] == "multilayer" and cfg["model"]["width"] == 16
    model = model_builder("feature-learning", s, width=16, scaling="ntk")(jax.random.key(0))
    assert (model.m, model.D, model.scaling) == (16, s["features"], "ntk")
    shallow = load_spec("shallow-dn", "tiny")["settings"]
    two = model_builder("shallow-dn", shallow, d=2)(jax.random.key(0))
    assert type(two).__name__ == "TwoLayer" and two.m == shallow["width"]
    with pytest.raises(ConfigError, match=r"configs/feature-learning.toml \[tiny\]: model.width"):
        _check_models("feature-learning", "tiny", {**s, "widths": [16, 0]})
    with pytest.raises(ConfigError, match=r"model.scaling: must be one of"):
        _check_models("feature-learning", "tiny", {**s, "scalings": ["mf", "lazy"]})


def test_bad_names_are_refused(capsys):
    with pytest.raises(ValueError, match="name"):
        load_spec("nope")
    with pytest.raises(ValueError, match="size"):
        load_spec("shallow-dn", "huge")
    with pytest.raises(ValueError, match="seeds"):
        load_spec("shallow-dn", seeds=0)
    assert main(["reproduce", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_all_runs_its_experiments_in_parallel_processes(tmp_path, monkeypatch, capsys):
    """`reproduce all --jobs 2`: one process per experiment, longest first, at most 2 at
    once; every output line echoed with its name; a failing experiment fails the call
    and is named. (Dummy children stand in for the experiments, which test_outputs_written
    and the tests below run in-process.)"""
    import argparse
    import sys

    from gflow._cli import _reproduce_cmd as rc

    args = argparse.Namespace(name="all", quick=True, seeds=3, out="o", jobs=2)
    cmd = rc.child_command("shallow-dn", args)
    assert cmd[1:] == [
        "-m", "gflow._cli._main", "reproduce", "shallow-dn", "--quick", "--seeds", "3",
        "--out", "o",
    ]  # fmt: skip
    log = tmp_path / "log.txt"
    child = (
        "import sys, time\n"
        "name, log = sys.argv[1], sys.argv[2]\n"
        "open(log, 'a').write('+' + name + '\\n')\n"
        "time.sleep(0.3)\n"
        "print('working on', name, flush=True)\n"
        "open(log, 'a').write('-' + name + '\\n')\n"
        "sys.exit(3 if name == 'generalization' else 0)\n"
    )
    monkeypatch.setattr(
        rc, "child_command", lambda name, args: [sys.executable, "-c", child, name, str(log)]
    )
    assert main(["reproduce", "all", "--quick", "--jobs", "2"]) == 1
    out, err = capsys.readouterr()
    assert "generalization failed (exit codes [3]" in err
    for name in EXPERIMENTS:
        assert f"[{name}] working on {name}" in out
    events = log.read_text().split()
    starts = [e[1:] for e in events if e[0] == "+"]
    assert set(starts[:2]) == {"generalization", "multilayer-any-d"}  # the longest first
    running = peak = 0
    for e in events:
        running += 1 if e[0] == "+" else -1
        peak = max(peak, running)
    assert peak == 2 and len(events) == 2 * len(EXPERIMENTS)
    assert main(["reproduce", "all", "--jobs", "0"]) == 2
    assert "--jobs: must be an integer >= 1" in capsys.readouterr().err


def test_interrupting_all_stops_the_running_experiments_and_starts_no_more(tmp_path):
    """Ctrl-C on `reproduce all` (SIGINT to the parent only) is passed to the running
    children, which stop cleanly, and the experiments not yet started never start."""
    import os
    import signal
    import sys
    import threading

    from gflow._cli._reproduce_cmd import run_parallel

    child = (
        "import signal, sys, time\n"
        "name, where = sys.argv[1], sys.argv[2]\n"
        "open(where + '/started-' + name, 'w').close()\n"
        "def stop(*a):\n"
        "    open(where + '/stopped-' + name, 'w').close()\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    commands = {n: [sys.executable, "-c", child, n, str(tmp_path)] for n in ("a", "b", "c")}
    ready = []

    def echo(line):
        ready.append(line)
        if len(ready) == 2:  # both running: Ctrl-C, as the terminal would send the parent
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    # A terminal's Ctrl-C meets Python's default handler; a process started in the
    # background by a non-interactive shell inherits SIGINT ignored, so set it here.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_parallel(commands, 2, echo=echo)
    finally:
        signal.signal(signal.SIGINT, old)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["started-a", "started-b", "stopped-a", "stopped-b"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return out, {
        name: reproduce(name, size="tiny", out=out, log=lambda s: None) for name in EXPERIMENTS
    }


def test_outputs_written(runs):
    out, summaries = runs
    for name, s in summaries.items():
        folder = out / name
        assert (folder / f"{name}.png").is_file() and (folder / f"{name}.pdf").is_file()
        on_disk = json.loads((folder / "summary.json").read_text())
        assert on_disk["version"] == s["version"] and on_disk["size"] == "tiny"
        assert "jax" in on_disk["versions"] and on_disk["wall_seconds_points"] > 0
        assert on_disk["n_computed"] == len(on_disk["points"])


def test_shallow_dn_converges_linearly_when_d_at_least_n(runs):
    rows = runs[1]["shallow-dn"]["table"]
    above = [r for r in rows if r["d"] >= r["n"]]
    assert above
    for r in above:
        assert r["linear_fraction"] == 1.0
        assert r["rate_mean"] > 0 and r["schur_rate_mean"] > 0
        for cert in ("gronwall", "schur", "local_rate", "fitted_rate"):
            assert "fail" not in r["checks"][cert], (cert, r["checks"][cert])
    below = [r for r in rows if r["d"] < r["n"]]
    # With d < n the Gram matrix X X^T is singular: the Schur certificate is vacuous.
    assert below and all(r["schur_rate_mean"] <= 1e-10 for r in below)


def test_multilayer_certificates_hold(runs):
    rows = runs[1]["multilayer-any-d"]["table"]
    for r in rows:
        for cert in ("gronwall", "schur", "local_rate"):
            assert "fail" not in r["checks"][cert], (cert, r["checks"][cert])
        assert r["rate_mean"] > 0 and r["certified_rate_mean"] > 0


def test_feature_learning_mf_moves_ntk_shrinks(runs):
    slopes = runs[1]["feature-learning"]["slopes"]
    # NTK: relative movement ~ m^-1/2; MF: O(1). Between m = 16 and 256 the fitted
    # slopes are separated by far more than their intervals.
    assert slopes["ntk"]["movement"]["slope"] < -0.35
    assert slopes["mf"]["movement"]["slope"] > -0.15
    assert slopes["ntk"]["kernel"]["slope"] < slopes["mf"]["kernel"]["slope"]


def test_generalization_records_paired_statistics(runs):
    summary = runs[1]["generalization"]
    assert summary["verdict"]["verdict"] in (
        "reproduced",
        "partly",
        "not reproduced",
        "contradicted",
    )
    for pt in summary["points"]:
        s = pt["summary"]
        for pair in ("ntk_minus_mf", "mfsqrt_minus_mf", "ntkstd_minus_mf", "ntklin_minus_mf"):
            stat = s["paired"][pair]
            assert set(stat) >= {"mean", "ci95", "per_seed", "wilcoxon_p"}
            assert len(stat["per_seed"]) == s["seeds"] and np.isfinite(stat["mean"])
        for head in ("W", "Wc"):
            for arm in ("mf", "mf-sqrt", "ntk", "ntk-std"):
                rec = s["arms"][arm][head]
                assert all(np.isfinite(rec["stop"])) and len(rec["stop"]) == s["seeds"]
                # the flow fits the training set below its starting test loss
                assert max(rec["train_end"]) < min(rec["test_init"])
            # antisymmetric init: f_0 = 0, so the test loss at t = 0 is (1/2) mean(y^2),
            # the same for mf and ntk on the same data
            np.testing.assert_allclose(
                s["arms"]["mf"][head]["test_init"], s["arms"]["ntk"][head]["test_init"], rtol=1e-12
            )


def test_resume_recomputes_nothing(runs):
    out, _ = runs
    files = sorted((out / "shallow-dn" / "points").iterdir())
    before = {f: f.stat().st_mtime_ns for f in files}
    again = reproduce("shallow-dn", size="tiny", out=out, log=lambda s: None)
    assert again["n_computed"] == 0 and again["n_reused"] == len(again["points"])
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # A different setting (more seeds) is a different point: recomputed, not reused.
    changed = reproduce("multilayer-any-d", size="tiny", seeds=3, out=out, log=lambda s: None)
    assert changed["n_computed"] == len(changed["points"]) == 1
