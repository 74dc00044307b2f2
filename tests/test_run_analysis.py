"""`gflow run` records the analyses: [analysis] table, result.json, trajectory.npz,
figures and the printed verdict."""

import json

import numpy as np
import pytest

import gflow
from gflow._cli._main import main
from gflow._config import ConfigError, validate
from gflow._io import read_npz

SMALL = """
seed = 1
[data]
n = 6
d = 8
n_test = 5
[model]
kind = "{kind}"
width = 16
features = 12
[flow]
t1 = 60.0
n_save = 41
[output]
progress = false
"""


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tmp / "cfg.toml"
    cfg.write_text(SMALL.format(kind="two-layer"))
    out = tmp / "out"
    return main(["run", str(cfg), "--out", str(out)]), out


def test_run_records_analysis(two_layer_run, capsys):
    rc, out = two_layer_run
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    ana = result["analysis"]
    cert = ana["certificates"]
    assert cert["passed"], cert
    names = {c["name"] for c in cert["checks"]}
    assert names == {"local_rate", "gronwall", "schur", "schur_total", "fitted_rate"}
    assert ana["kernel"]["lambda_min"][0] > 0
    fl = ana["feature_learning"]
    assert set(fl["movement_final"]) == {"W", "c"}
    assert "linearized_gap_test_final" in fl
    assert any(line.startswith("Gronwall envelope holds") for line in ana["verdict"])
    assert any(line.startswith("Schur bound holds") for line in ana["verdict"])
    arrays = read_npz(out / "trajectory.npz")
    k = arrays["ts"].size
    assert arrays["kernel_eigvals"].shape == (k, 6)
    for name in ("envelope", "lower_rate", "schur", "linearized_gap_train", "metric_movement_W"):
        assert arrays[name].shape[0] == k, name
    assert arrays["neuron_movement_W"].shape == (16,)
    # the envelope in the file is the Gronwall envelope of the recorded spectrum: it lies
    # between the envelopes of the bracket sums (min / max of lambda_min per interval)
    lam = arrays["kernel_eigvals"][:, 0]
    h = np.diff(arrays["ts"])
    i_hi = np.r_[0, np.cumsum(np.maximum(lam[:-1], lam[1:]) * h)]
    i_lo = np.r_[0, np.cumsum(np.minimum(lam[:-1], lam[1:]) * h)]
    l0 = arrays["loss"][0]
    assert np.all(arrays["envelope"] >= l0 * np.exp(-2 / 6 * i_hi) * (1 - 1e-12))
    assert np.all(arrays["envelope"] <= l0 * np.exp(-2 / 6 * i_lo) * (1 + 1e-12))
    assert np.all(arrays["envelope"] <= arrays["envelope_loose"])
    assert (out / "kernel.png").stat().st_size > 0
    assert (out / "loss.png").stat().st_size > 0


def test_verdict_printed(two_layer_run):
    from gflow._run import verdict

    _, out = two_layer_run
    text = verdict(json.loads((out / "result.json").read_text()))
    assert "linear rate" in text and "Gronwall envelope holds" in text
    assert "Schur bound holds with slack" in text and "feature learning:" in text


def test_run_linear_analysis_off(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        SMALL.format(kind="linear")
        + "[analysis]\nkernel = false\ncertificates = false\nfeature_learning = false\n"
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert "kernel" not in result["analysis"] and "certificates" not in result["analysis"]
    assert not (tmp_path / "o" / "kernel.png").exists()
    assert "kernel_eigvals" not in read_npz(tmp_path / "o" / "trajectory.npz")


def test_run_multilayer_schur(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SMALL.format(kind="multilayer") + "[analysis]\nfeature_learning = false\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    cert = result["analysis"]["certificates"]
    assert cert["passed"], cert
    assert "schur" in {c["name"] for c in cert["checks"]}


@pytest.mark.parametrize(
    "analysis, match",
    [
        ({"kernel": False}, "analysis.certificates: the certificates need"),
        ({"kernel_chunk": 0}, "analysis.kernel_chunk: must be >= 1"),
        ({"kernels": True}, "analysis.kernels: unknown key"),
        ({"rel_tol": "big"}, "analysis.rel_tol: expected"),
    ],
)
def test_analysis_config_errors(analysis, match):
    with pytest.raises(ConfigError, match=match):
        validate({"analysis": analysis})


def test_default_config_has_analysis():
    cfg = gflow._config.default_config()
    assert cfg["analysis"] == {
        "kernel": True,
        "certificates": True,
        "feature_learning": True,
        "kernel_chunk": None,
        "rel_tol": 1e-5,
    }


DIGITS = """
[data]
kind = "digits"
n = 32
n_test = 64
[model]
width = 64
[flow]
t1 = 50
[output]
progress = false
"""


def test_issue_digits_run_no_phantom_floor(tmp_path, monkeypatch, capsys):
    """Issue 13's digits run (loss 0.53 -> 0.012, smooth) printed 'numerical floor from
    t = 0.01045', a rate +- 2.6e+02 and 'holds' on 3 points. Now: no floor, a rate fitted
    on the later part of the run, every verdict line states its coverage, and the plot is
    handed the very RateFit whose numbers are printed and stored."""
    import gflow._run as run_mod

    seen = {}
    real_plot = run_mod.plot_loss

    def spy(sol, fit=None, **kw):
        seen["fit"] = fit
        return real_plot(sol, fit, **kw)

    monkeypatch.setattr(run_mod, "plot_loss", spy)
    cfg = tmp_path / "digits.toml"
    cfg.write_text(DIGITS)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    rf = result["rate_fit"]
    assert rf["floor_time"] is None and rf["bias_bound"] == 0.0
    assert rf["window"][0] >= 25.0 and rf["n_points"] >= 10
    assert "numerical floor" not in printed
    fit = seen["fit"]
    assert fit.rate == rf["rate"] and list(fit.ci) == rf["ci95"]
    half = 0.5 * (fit.ci[1] - fit.ci[0])
    assert rf["half_width"] == half
    assert f"linear rate {fit.rate:.4g} +- {half:.2g}" in printed
    assert result["decay_law"]["law"] in ("exponential", "power", "ambiguous", "neither")
    assert "decay law:" in printed
    for line in result["analysis"]["verdict"]:
        if line.startswith(("Gronwall", "local rate", "Schur bound", "fitted rate")):
            assert "% of the span)" in line, line
    for c in result["analysis"]["certificates"]["checks"]:
        assert c["coverage"] is not None
        if c["status"] == "pass":
            assert c["n_checked"] >= 5
    gron = next(c for c in result["analysis"]["certificates"]["checks"] if c["name"] == "gronwall")
    assert gron["coverage"] == 1.0 and gron["n_excluded"] == 0


def test_split_predictions_read_the_problems_data_args():
    """The run's pred_train / pred_test metrics are the model's outputs on the problem's
    own data args (shared with the loss's forward pass), recorded at every save time."""
    import jax

    from gflow._problem import split_predictions

    data = gflow.make_synthetic(n=6, d=3, n_test=5, seed=0)
    model = gflow.TwoLayer(3, 8, key=jax.random.key(0))
    problem = gflow.Problem.from_model(
        model,
        data,
        metrics={"pred_train": split_predictions("train"), "pred_test": split_predictions("test")},
    )
    sol = gflow.solve(problem, 2.0, ts=np.linspace(0.0, 2.0, 3))
    for split, x in (("train", data.x_train), ("test", data.x_test)):
        rec = sol.metrics[f"pred_{split}"]
        assert rec.shape == (3, x.shape[0])
        np.testing.assert_allclose(rec[0], np.asarray(model(x)), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rec[-1], np.asarray(sol.final(x)), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="split: must be 'train' or 'test'"):
        split_predictions("validation")
