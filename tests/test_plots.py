"""Public plotting: figures and their artists, the fitted interval drawn from the fit
object itself, titles, legends clear of the data (checked with the Agg renderer), and
the CLI writing the same figures."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import gflow


@pytest.fixture(scope="module")
def runs():
    data = gflow.make_synthetic(n=8, d=8, n_test=16, seed=0)
    model = gflow.TwoLayer(d=8, m=16, scaling="mf", key=jax.random.key(3))
    metrics = gflow.kernel_metrics(model, data.x_train, data.y_train, eta=model.eta())
    sol = gflow.simulate_mse(model, data, 20.0, metrics=metrics, rtol=1e-7, atol=1e-9)
    gd = gflow.descend_mse(model, data, dt=0.05, n_steps=200, save_every=10)
    gf = gflow.simulate_mse(model, data, float(gd.ts[-1]), ts=gd.ts, rtol=1e-9, atol=1e-11)
    return model, data, sol, gd, gf


def _renderer(fig):
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    return renderer


def _assert_legend_clear(fig):
    """No data point of any line lies inside any legend's box (display coordinates)."""
    renderer = _renderer(fig)
    n_checked = 0
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            xy = xy[np.all(np.isfinite(xy), axis=1)]
            if ax.get_yscale() == "log":
                xy = xy[xy[:, 1] > 0]
            pts = ax.transData.transform(xy)
            inside = (
                (pts[:, 0] >= box.x0)
                & (pts[:, 0] <= box.x1)
                & (pts[:, 1] >= box.y0)
                & (pts[:, 1] <= box.y1)
            )
            assert not inside.any(), (line.get_label(), pts[inside][:3], box)
            n_checked += len(pts)
    assert n_checked > 20  # the check saw the data


def test_import_gflow_does_not_import_matplotlib():
    code = "import sys, gflow; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_loss_draws_the_fit_interval_of_the_fit(runs):
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon, Rectangle

    model, data, sol, _, _ = runs
    fit = gflow.fit_rate(sol.ts, sol.loss)
    fig = gflow.plot_loss(sol, fit, model=model, seed=3, data=data)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels[0] == "train loss L(t)" and "test loss" in labels
    (fit_line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]
    x = fit_line.get_xdata()
    # the drawn interval is exactly the fit's window, and the line is the fitted law
    assert x[0] == fit.window[0] and x[-1] == fit.window[1]
    np.testing.assert_allclose(fit_line.get_ydata(), np.exp(fit.intercept - fit.rate * x))
    (span,) = [p for p in ax.patches if p.get_label().startswith("fit interval")]
    assert isinstance(span, Polygon | Rectangle)
    xs = np.asarray(span.get_xy())[:, 0] if isinstance(span, Polygon) else None
    if xs is None:
        xs = np.array([span.get_x(), span.get_x() + span.get_width()])
    assert xs.min() == fit.window[0] and xs.max() == fit.window[1]
    assert f"[{fit.window[0]:.4g}, {fit.window[1]:.4g}]" in span.get_label()
    title = fig._suptitle.get_text()
    assert title == "TwoLayer m=16 (mf), seed 3, n=8, d=8"
    _assert_legend_clear(fig)


def test_plot_loss_without_fit_and_with_envelope(runs):
    _, _, sol, _, _ = runs
    env = sol.loss[0] * np.exp(-0.1 * sol.ts)
    fig = gflow.plot_loss(sol, envelope=env, title="my run")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert "Gronwall envelope" in labels and not any(lb.startswith("fit") for lb in labels)
    assert fig._suptitle.get_text() == "my run"
    _assert_legend_clear(fig)


def test_plot_kernel(runs):
    model, _, sol, _, _ = runs
    fig = gflow.plot_kernel(sol, model=model)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"lambda_max(H)", "lambda_min(H)"}
    kt = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    np.testing.assert_array_equal(lines["lambda_min(H)"].get_ydata(), kt.lambda_min)
    assert fig._suptitle.get_text() == "TwoLayer m=16 (mf)"
    _assert_legend_clear(fig)
    _, _, _, gd, _ = runs
    with pytest.raises(ValueError, match="no 'kernel' metric"):
        gflow.plot_kernel(gd)


def test_plot_gd_vs_flow_at_matched_times(runs):
    model, _, _, gd, gf = runs
    fig = gflow.plot_gd_vs_flow(gd, gf, model=model, seed=3)
    ax, ax_gap = fig.axes
    assert {ln.get_label() for ln in ax.get_lines()} == {"gradient flow", "GD (dt=0.05)"}
    (gap,) = ax_gap.get_lines()
    t = gap.get_xdata()
    k = np.searchsorted(gd.ts, t)
    np.testing.assert_array_equal(gd.ts[k], t)
    expected = np.abs(gd.loss[k] - gf.loss[k]) / gf.loss[k]
    np.testing.assert_allclose(gap.get_ydata(), expected)
    assert t.size >= gd.ts.size - 1  # every time but t = 0 (gap exactly 0 there)
    assert "seed 3" in fig._suptitle.get_text()
    _assert_legend_clear(fig)
    other = gflow.simulate_mse(
        model, gflow.make_synthetic(n=8, d=8, seed=0), 1.13, ts=[0.013, 0.77, 1.13]
    )
    with pytest.raises(ValueError, match="ts=gd_sol.ts"):
        gflow.plot_gd_vs_flow(gd, other)


def test_cli_loss_png_uses_the_printed_interval(tmp_path, monkeypatch):
    """`gflow run` draws loss.png with plot_loss from the same RateFit it prints."""
    from gflow import _run
    from gflow._cli._main import main

    seen = {}
    real = _run.plot_loss

    def spy(sol, fit, **kw):
        fig = real(sol, fit, **kw)
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("fit:")]
        seen["x"] = (line.get_xdata()[0], line.get_xdata()[-1])
        seen["title"] = fig._suptitle.get_text()
        return fig

    monkeypatch.setattr(_run, "plot_loss", spy)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[data]\nn = 8\nd = 8\nn_test = 8\n[model]\nwidth = 16\n[flow]\nt1 = 20.0\n"
        "n_save = 40\n[analysis]\nkernel = false\ncertificates = false\nfeature_learning = false\n"
        "[output]\nprogress = false\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    import json

    rf = json.loads((out / "result.json").read_text())["rate_fit"]
    assert seen["x"] == (rf["window"][0], rf["window"][1])
    assert seen["title"] == "TwoLayer m=16 (mf), seed 0, n=8, d=8"
    assert (out / "loss.png").stat().st_size > 5_000


def test_log_tick_labels_are_plain_text_with_the_same_values(runs):
    """Log axes are labelled without mathtext ('10⁻⁵', '2×10⁻⁵'), on exactly the ticks
    matplotlib labels, each naming the tick's value."""
    from matplotlib import ticker

    from gflow._plots import plain_log_label

    assert plain_log_label(r"$\mathdefault{10^{-5}}$") == "10⁻⁵"
    assert plain_log_label(r"$\mathdefault{2\times10^{-12}}$") == "2×10⁻¹²"
    assert plain_log_label(r"$\mathdefault{-10^{3}}$") == "-10³"
    assert plain_log_label(r"$\mathdefault{0.5}$") == "0.5"
    assert plain_log_label("not mathtext") == "not mathtext"
    _, _, sol, _, _ = runs
    fig = gflow.plot_loss(sol)
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2
    reference = ticker.LogFormatterSciNotation()
    reference.set_axis(ax.yaxis)
    for t in labels:
        value = t.get_position()[1]
        assert "$" not in t.get_text() and "\\" not in t.get_text()
        assert t.get_text() == plain_log_label(reference(value))
        mantissa, _, exponent = t.get_text().replace("×", " ").partition("10")
        exponent = exponent.translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
        coeff = float(mantissa) if mantissa.strip() else 1.0
        np.testing.assert_allclose(coeff * 10.0 ** int(exponent), value, rtol=1e-9)
