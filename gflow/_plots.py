"""Figures of results: the public plotting functions, also used by `gflow run`.

Each function returns a `matplotlib.figure.Figure` (drawn on an Agg canvas: no display
and no pyplot state needed, and the user's matplotlib backend is left alone); matplotlib
is imported only when a figure is drawn, so `import gflow` does not import it. Legends
sit outside the axes, to the right, so they never cover the data. `save_figure` writes a
figure atomically.
"""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_bytes

_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


def _plottable(values: Any) -> np.ndarray:
    """Values beyond 1e100 (a diverging run) break log-scale axis ticks: leave them out."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(values, dtype=np.float64)
        return np.where(np.abs(v) < 1e100, v, np.nan)


def _new_figure(ncols: int = 1, width: float = 7.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_MATHTEXT_LABEL = re.compile(
    r"^\$\\mathdefault\{(-?)(?:([0-9.e+-]+)\\times)?(?:(\d+)\^\{(-?\d+)\}|([0-9.e+-]+))\}\$$"
)


def plain_log_label(label: str) -> str:
    """matplotlib's mathtext tick label of a log axis as plain text with Unicode
    superscripts: '$\\mathdefault{10^{-5}}$' -> '10⁻⁵', '$\\mathdefault{2\\times10^{-5}}$'
    -> '2×10⁻⁵'. Looks the same and skips mathtext layout, about 0.1 s of every figure
    with a log axis. Any other label is returned unchanged."""
    m = _MATHTEXT_LABEL.match(label)
    if m is None:
        return label
    sign, coeff, base, exponent, plain = m.groups()
    if plain is not None:
        return sign + plain
    return sign + (f"{coeff}\u00d7" if coeff else "") + base + exponent.translate(_SUPERSCRIPT)


@functools.cache
def _plain_log_formatter() -> type:
    from matplotlib import ticker

    class PlainLogFormatter(ticker.LogFormatterSciNotation):
        """matplotlib's log-axis formatter (the same ticks get labels) with plain-text
        labels (`plain_log_label`)."""

        def __call__(self, x, pos=None):
            return plain_log_label(super().__call__(x, pos))

    return PlainLogFormatter


def _plain_log_ticks(axis) -> None:
    """Tick labels of a log-scale axis without mathtext (`plain_log_label`): the axis's
    own formatter keeps its settings and only its labels are rewritten."""
    from matplotlib import rcParams, ticker

    if rcParams["text.usetex"]:
        return
    for fmt in (axis.get_major_formatter(), axis.get_minor_formatter()):
        if type(fmt) is ticker.LogFormatterSciNotation:
            fmt.__class__ = _plain_log_formatter()


def _finish(ax, *, xlabel: str, ylabel: str) -> None:
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            _plain_log_ticks(axis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**_LEGEND, fontsize="small")


def figure_title(model: Any = None, *, seed: int | None = None, data: Any = None) -> str:
    """'TwoLayer m=1024 (mf), seed 0, n=32, d=64': the model's class, width and scaling,
    the seed and the data size, each where known (attributes m / D / scaling of gflow's
    models; `data` a `Dataset`)."""
    parts = []
    if model is not None:
        name = type(model).__name__
        width = getattr(model, "m", None)
        scaling = getattr(model, "scaling", None)
        name += f" m={width}" if isinstance(width, int | np.integer) else ""
        name += f" ({scaling})" if isinstance(scaling, str) else ""
        parts.append(name)
    if seed is not None:
        parts.append(f"seed {seed}")
    if data is not None and hasattr(data, "n"):
        parts.append(f"n={data.n}, d={data.d}")
    return ", ".join(parts)


def _title(fig, title: str | None, model: Any, seed: int | None, data: Any) -> None:
    text = figure_title(model, seed=seed, data=data) if title is None else title
    if text:
        fig.suptitle(text)


def plot_loss(
    sol: Any,
    fit: Any = None,
    *,
    envelope: Any = None,
    model: Any = None,
    seed: int | None = None,
    data: Any = None,
    title: str | None = None,
):
    """Training loss L(t) of a `Solution` on a log scale, with the test loss when it was
    recorded (metric "test_loss"), the fitted law over the fit's own interval, and the
    Gronwall envelope when given.

    Arguments:
        sol: a `Solution` (its ts, loss, metrics["test_loss"]).
        fit: a `RateFit` (or None): drawn as exp(intercept - rate t) on
            [fit.window[0], fit.window[1]], the interval the fit reports (never
            recomputed), with that interval shaded, and the floor time as a vertical line.
        envelope: (k,) Gronwall envelope L(0) exp(-(2/n) int lambda_min) at sol.ts.
        model, seed, data: for the title (`figure_title`); `title` overrides it.

    Returns:
        A matplotlib Figure with one Axes. Line labels: "train loss", "test loss",
        "fit: ...", "Gronwall envelope"; the shaded span is labelled "fit interval".
    """
    fig, (ax,) = _new_figure()
    ts = np.asarray(sol.ts, dtype=np.float64)
    loss = _plottable(sol.loss)
    ax.semilogy(ts, loss, lw=2, label="train loss L(t)")
    test = sol.metrics.get("test_loss")
    if test is not None:
        ax.semilogy(ts, _plottable(test), lw=1.5, ls="--", label="test loss")
    if envelope is not None:
        env = _plottable(envelope)
        keep = env >= np.nanmin(loss) * 1e-3  # do not squash the plot below the loss
        t_env = ts[: env.size]
        ax.semilogy(t_env[keep], env[keep], "r-.", lw=1.2, label="Gronwall envelope")
    if fit is not None:
        t_start, t_end = float(fit.window[0]), float(fit.window[1])
        tw = np.linspace(t_start, t_end, 50)
        law = np.exp(np.clip(fit.intercept - fit.rate * tw, -700, 700))
        half = 0.5 * (fit.ci[1] - fit.ci[0])
        ax.semilogy(tw, _plottable(law), "k:", lw=2, label=f"fit: rate {fit.rate:.4g} ± {half:.2g}")
        ax.axvspan(
            t_start,
            t_end,
            color="0.5",
            alpha=0.12,
            label=f"fit interval [{t_start:.4g}, {t_end:.4g}]",
        )
        if fit.floor_time is not None:
            ax.axvline(
                fit.floor_time, color="0.3", lw=1, ls="--", label=f"floor t={fit.floor_time:.4g}"
            )
    _title(fig, title, model, seed, data)
    _finish(ax, xlabel="flow time t", ylabel="loss")
    return fig


def plot_kernel(
    sol: Any,
    kernel: Any = None,
    *,
    schur: Any = None,
    model: Any = None,
    seed: int | None = None,
    data: Any = None,
    title: str | None = None,
):
    """lambda_min and lambda_max of the tangent kernel H(t) along a `Solution` (log scale),
    with lambda_min(H_W) and the Schur lower bound when recorded.

    Arguments:
        sol: a `Solution` simulated with `kernel_metrics` (metric "kernel"), and
            optionally `schur_metrics` (metric "schur").
        kernel: a `KernelTrace` to draw instead of sol.metrics["kernel"].
        schur: (k, 3) Schur metric to draw instead of sol.metrics["schur"].
        model, seed, data, title: as in `plot_loss`.

    Returns:
        A matplotlib Figure with one Axes; lines "lambda_max(H)", "lambda_min(H)" and,
        with the Schur metric, "lambda_min(H_W)" and "Schur bound".
    """
    from ._analysis._kernel import KernelTrace

    if kernel is None:
        if "kernel" not in sol.metrics:
            raise ValueError(
                "sol: it has no 'kernel' metric; simulate with "
                "metrics=gflow.kernel_metrics(model, x, y) or pass kernel=KernelTrace."
            )
        kernel = KernelTrace.from_metric(sol.metrics["kernel"])
    if schur is None:
        schur = sol.metrics.get("schur")
    ts = np.asarray(sol.ts, dtype=np.float64)
    fig, (ax,) = _new_figure()
    ax.semilogy(ts, _plottable(kernel.lambda_max), lw=1.5, label="lambda_max(H)")
    ax.semilogy(ts, _plottable(kernel.lambda_min), lw=2, label="lambda_min(H)")
    if schur is not None:
        schur = np.asarray(schur)
        ax.semilogy(ts, _plottable(schur[:, 0]), "--", lw=1.5, label="lambda_min(H_W)")
        ax.semilogy(ts, _plottable(schur[:, 1]), "k:", lw=2, label="Schur bound")
    _title(fig, title, model, seed, data)
    _finish(ax, xlabel="flow time t", ylabel="eigenvalue of H(t)")
    return fig


def matched_times(gd_ts: Any, gf_ts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) with gd_ts[i] == gf_ts[j] up to 1e-9 relative: the times where a
    GD run (step k at t = k dt) and a flow are compared."""
    a, b = np.asarray(gd_ts, dtype=np.float64), np.asarray(gf_ts, dtype=np.float64)
    j = np.clip(np.searchsorted(b, a), 0, max(b.size - 1, 0))
    jl = np.clip(j - 1, 0, max(b.size - 1, 0))
    j = np.where(np.abs(b[jl] - a) < np.abs(b[j] - a), jl, j)
    ok = np.abs(b[j] - a) <= 1e-9 * np.maximum(1.0, np.abs(a))
    return np.nonzero(ok)[0], j[ok]


def plot_gd_vs_flow(
    gd_sol: Any,
    gf_sol: Any,
    *,
    model: Any = None,
    seed: int | None = None,
    data: Any = None,
    title: str | None = None,
):
    """Gradient descent against the gradient flow at matched times t = k dt.

    Arguments:
        gd_sol: a `Solution` of `gradient_descent` (or `descend_mse`).
        gf_sol: a `Solution` of `simulate` that has save times equal to GD's recorded
            times (pass ts=gd_sol.ts, or a grid that contains them).
        model, seed, data, title: as in `plot_loss`.

    Returns:
        A matplotlib Figure with two Axes: (left) both losses vs t, "GD (dt=...)" and
        "gradient flow"; (right) |L_GD(t) - L_GF(t)| / L_GF(t) at the matched times only,
        line "relative loss gap". Raises ValueError when no time is shared.
    """
    i, j = matched_times(gd_sol.ts, gf_sol.ts)
    if i.size == 0:
        raise ValueError(
            "gf_sol: no save time coincides with gd_sol.ts; simulate the flow with "
            "ts=gd_sol.ts so that the two are compared at equal times t = k dt."
        )
    fig, (ax, ax_gap) = _new_figure(ncols=2, width=11.0)
    dt = gd_sol.settings.get("dt")
    gd_label = "GD" + (f" (dt={dt:.3g})" if isinstance(dt, int | float) else "")
    ax.semilogy(gf_sol.ts, _plottable(gf_sol.loss), lw=2, label="gradient flow")
    ax.semilogy(gd_sol.ts, _plottable(gd_sol.loss), "--", lw=1.5, label=gd_label)
    gf_loss = np.asarray(gf_sol.loss, dtype=np.float64)[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.asarray(gd_sol.loss, dtype=np.float64)[i] - gf_loss) / gf_loss
    t_match = np.asarray(gd_sol.ts, dtype=np.float64)[i]
    pos = gap > 0
    ax_gap.semilogy(t_match[pos], _plottable(gap[pos]), "o-", ms=3, label="relative loss gap")
    _title(fig, title, model, seed, data)
    _finish(ax, xlabel="flow time t = k dt", ylabel="loss")
    _finish(ax_gap, xlabel="flow time t = k dt", ylabel="|L_GD - L_GF| / L_GF")
    return fig


def save_figure(fig: Any, path: str | Path) -> None:
    """Write `fig` to `path` atomically (format from the suffix, png by default)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png")
    write_bytes(path, buf.getvalue())
