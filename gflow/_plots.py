"""Figures drawn from results (matplotlib, Agg backend, no display needed)."""

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


def plot_loss(path: str | Path, ts, loss, *, fit=None, test_loss=None, title: str = "") -> None:
    """Loss vs time on a log scale, with the fitted exponential over its window."""
    loss = _plottable(loss)
    test_loss = None if test_loss is None else _plottable(test_loss)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.semilogy(ts, loss, lw=2, label="train loss L(t)")
    if test_loss is not None:
        ax.semilogy(ts, test_loss, lw=1.5, ls="--", label="test loss")
    if fit is not None:
        tw = np.linspace(fit.window[0], fit.window[1], 50)
        ax.semilogy(
            tw,
            _plottable(np.exp(fit.intercept - fit.rate * tw)),
            "k:",
            lw=2,
            label=f"fit: rate {fit.rate:.4g} ± {1.96 * fit.stderr:.1g}",
        )
    ax.set_xlabel("flow time t")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
