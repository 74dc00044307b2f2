"""Figures of the reproduction experiments (matplotlib, Agg). Each is saved as PNG and
PDF: `save(fig, OUT/figure)` writes OUT/figure.png and OUT/figure.pdf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"mf": "C0", "mf-sqrt": "C2", "ntk": "C3"}


def save(fig, stem: str | Path) -> list[str]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=120)
        paths.append(str(path))
    plt.close(fig)
    return paths


def convergence_figure(records: list[dict[str, Any]], title: str, mark_n: bool):
    """Left: training loss vs time per d (every seed). Right: fitted rate vs d (mean and
    std over seeds) with the certified rates (2/n) min_t lambda_min(H) and Schur's."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    nrec = len(records)
    for i, r in enumerate(records):
        ts, loss = r["arrays"]["ts"], r["arrays"]["loss"]
        color = cmap(i / max(1, nrec - 1))
        for b in range(loss.shape[0]):
            ax0.semilogy(
                ts,
                loss[b],
                color=color,
                lw=1.2,
                alpha=0.8,
                label=f"d = {r['point']['d']}" if b == 0 else None,
            )
    ax0.set_xlabel("flow time t")
    ax0.set_ylabel("training loss L(t)")
    ax0.grid(True, which="both", alpha=0.3)
    ax0.legend(fontsize=8)
    d = np.array([r["point"]["d"] for r in records], dtype=float)
    mean = np.array([r["summary"]["rate_mean"] for r in records])
    std = np.array([r["summary"]["rate_std"] for r in records])
    cert = np.array([r["summary"]["certified_rate_mean"] for r in records])
    schur = np.array([r["summary"]["schur_rate_mean"] for r in records])
    ax1.errorbar(d, mean, yerr=std, fmt="o-", capsize=3, label="fitted rate (mean ± sd)")
    pos = cert > 0
    ax1.plot(d[pos], cert[pos], "s--", label="certified (2/n) min λ_min(H(t))")
    pos = schur > 0
    ax1.plot(d[pos], schur[pos], "^:", label="Schur bound (2/n) min λ_min(K) min G_kk")
    if mark_n:
        n = records[0]["summary"]["n"]
        ax1.axvline(n, color="k", lw=1, ls="--", label=f"d = n = {n}")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("input dimension d")
    ax1.set_ylabel("exponential rate")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


_LABELS = {
    "movement": "|W(t1) - W(0)| / |W(0)|",
    "kernel": "|H(t1) - H(0)| / |H(0)|",
    "lazy_gap": "max_t |f_t - f_lin,t| / |r_0|",
}


def feature_figure(slopes: dict[str, Any], title: str):
    """One panel per measure: mean ± sd over seeds vs width, log-log, slope in the legend."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, measure in zip(axes, _LABELS, strict=True):
        for scaling, res in slopes.items():
            w = np.asarray(res["widths"], dtype=float)
            q = res[measure]
            lo, hi = q["ci"]
            ax.errorbar(
                w,
                q["mean"],
                yerr=q["std"],
                fmt="o-",
                capsize=3,
                color=COLORS.get(scaling),
                label=f"{scaling}: slope {q['slope']:+.2f} [{lo:+.2f}, {hi:+.2f}]",
            )
        w = np.asarray(next(iter(slopes.values()))["widths"], dtype=float)
        ref = next(iter(slopes.values()))[measure]["mean"][0]
        ax.plot(w, ref * (w / w[0]) ** -0.5, "k:", lw=1, label="∝ m^-1/2")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_title(_LABELS[measure], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def generalization_figure(records: list[dict[str, Any]], title: str):
    """One panel per task: test loss vs time, mean ± sd over seeds, per scaling; the
    training loss dotted."""
    tasks = list(dict.fromkeys(r["point"]["task"] for r in records))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in records if r["point"]["task"] == task):
            sc = r["point"]["scaling"]
            ts, test, train = r["arrays"]["ts"], r["arrays"]["test_loss"], r["arrays"]["loss"]
            mean, sd = np.nanmean(test, axis=0), np.nanstd(test, axis=0)
            s = r["summary"]
            ax.plot(
                ts,
                mean,
                color=COLORS.get(sc),
                label=f"{sc}: test {s['test_final_mean']:.3g} ± {s['test_final_std']:.2g}",
            )
            ax.fill_between(
                ts, np.maximum(mean - sd, 1e-12), mean + sd, color=COLORS.get(sc), alpha=0.2
            )
            ax.plot(ts, np.nanmean(train, axis=0), color=COLORS.get(sc), ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("flow time t")
        ax.set_ylabel("loss (test solid, train dotted)")
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
