"""Figures drawn from results (matplotlib, Agg backend, no display needed), written
atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ._io import write_bytes  # noqa: E402


def _plottable(values) -> np.ndarray:
    """Values beyond 1e100 (a diverging run) break log-scale axis ticks: leave them out."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(values, dtype=np.float64)
        return np.where(np.abs(v) < 1e100, v, np.nan)


def _finish(fig, ax, path: str | Path, *, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def plot_loss(
    path: str | Path, ts, loss, *, fit=None, test_loss=None, envelope=None, title: str = ""
) -> None:
    """Loss vs time on a log scale, with the fitted exponential over its window and the
    Gronwall envelope L(0) exp(-(2/n) int lambda_min) when given."""
    loss = _plottable(loss)
    test_loss = None if test_loss is None else _plottable(test_loss)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.semilogy(ts, loss, lw=2, label="train loss L(t)")
    if envelope is not None:
        env = _plottable(envelope)
        keep = env >= np.nanmin(loss) * 1e-3  # do not squash the plot below the loss
        ax.semilogy(np.asarray(ts)[keep], env[keep], "r-.", lw=1.2, label="Gronwall envelope")
    if test_loss is not None:
        ax.semilogy(ts, test_loss, lw=1.5, ls="--", label="test loss")
    if fit is not None:
        tw = np.linspace(fit.window[0], fit.window[1], 50)
        ax.semilogy(
            tw,
            _plottable(np.exp(np.clip(fit.intercept - fit.rate * tw, -700, 700))),
            "k:",
            lw=2,
            label=f"fit: rate {fit.rate:.4g} ± {1.96 * fit.stderr:.1g}",
        )
    _finish(fig, ax, path, xlabel="flow time t", ylabel="loss", title=title)


def plot_kernel(path: str | Path, ts, kernel, *, schur=None, title: str = "") -> None:
    """lambda_min and lambda_max of the tangent kernel H(t) vs time (log scale), with
    lambda_min(H_W) and the Schur lower bound when recorded (`schur` (k, 3))."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.semilogy(ts, _plottable(kernel.lambda_max), lw=1.5, label="lambda_max(H)")
    ax.semilogy(ts, _plottable(kernel.lambda_min), lw=2, label="lambda_min(H)")
    if schur is not None:
        ax.semilogy(ts, schur[:, 0], "--", lw=1.5, label="lambda_min(H_W)")
        ax.semilogy(ts, schur[:, 1], "k:", lw=2, label="Schur bound")
    _finish(fig, ax, path, xlabel="flow time t", ylabel="eigenvalue of H(t)", title=title)
