"""Figures drawn from results (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_loss(
    path: str | Path, ts, loss, *, fit=None, test_loss=None, envelope=None, title: str = ""
) -> None:
    """Loss vs time on a log scale, with the fitted exponential over its window and the
    Gronwall envelope L(0) exp(-(2/n) int lambda_min) when given."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.semilogy(ts, loss, lw=2, label="train loss L(t)")
    if envelope is not None:
        env = np.asarray(envelope)
        keep = env >= np.min(loss) * 1e-3  # do not squash the plot below the loss
        ax.semilogy(np.asarray(ts)[keep], env[keep], "r-.", lw=1.2, label="Gronwall envelope")
    if test_loss is not None:
        ax.semilogy(ts, test_loss, lw=1.5, ls="--", label="test loss")
    if fit is not None:
        tw = np.linspace(fit.window[0], fit.window[1], 50)
        ax.semilogy(
            tw,
            np.exp(fit.intercept - fit.rate * tw),
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_kernel(path: str | Path, ts, kernel, *, schur=None, title: str = "") -> None:
    """lambda_min and lambda_max of the tangent kernel H(t) vs time (log scale), with
    lambda_min(H_W) and the Schur lower bound when recorded (`schur` (k, 3))."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.semilogy(ts, kernel.lambda_max, lw=1.5, label="lambda_max(H)")
    ax.semilogy(ts, kernel.lambda_min, lw=2, label="lambda_min(H)")
    if schur is not None:
        ax.semilogy(ts, schur[:, 0], "--", lw=1.5, label="lambda_min(H_W)")
        ax.semilogy(ts, schur[:, 1], "k:", lw=2, label="Schur bound")
    ax.set_xlabel("flow time t")
    ax.set_ylabel("eigenvalue of H(t)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
