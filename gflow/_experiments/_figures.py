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


_ARM_STYLE = {
    "mf": ("C0", "o-"),
    "mf-sqrt": ("C2", "s-"),
    "ntk": ("C3", "^-"),
    "ntk-std": ("C1", "v-"),
    "constant": ("0.5", ":"),
    "ridge-linear": ("k", "--"),
    "random-features": ("C4", "--"),
    "ntk-linearized": ("C3", ":"),
}


def generalization_figure(records: list[dict[str, Any]], curves: dict[str, Any], title: str):
    """Top row, per task: learning curves of the paper's model (head W), test loss at the
    validation-chosen time vs n (mean over seeds, 95% t interval), log-log, with the
    baselines; slope of each arm in the legend. Bottom row: paired differences
    L_ntk - L_mf, L_mf-sqrt - L_mf, L_ntk-std - L_mf vs n (mean, 95% t interval), head W
    solid, head Wc dashed."""
    tasks = list(curves)
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 8.5), squeeze=False)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        ns = np.asarray(curves[task]["n"], dtype=float)
        for arm, q in curves[task]["W"].items():
            color, fmt = _ARM_STYLE[arm]
            mean = np.asarray(q["mean"])
            ci = np.asarray(q["ci95"])
            err = np.abs(np.stack([mean - ci[:, 0], ci[:, 1] - mean]))
            ax.errorbar(
                ns,
                mean,
                yerr=err,
                fmt=fmt,
                color=color,
                capsize=2,
                ms=4,
                lw=1.2,
                label=f"{arm} (slope {q['slope']['slope']:+.2f})",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("training points n")
        ax.set_ylabel("test loss at validation-chosen t")
        ax.set_title(f"{task}: paper's model (W trained, c fixed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        recs = [r for r in records if r["point"]["task"] == task]
        for head, ls, off in (("W", "-", 0.97), ("Wc", "--", 1.03)):
            for pair, color in (
                ("ntk_minus_mf", "C3"),
                ("mfsqrt_minus_mf", "C2"),
                ("ntkstd_minus_mf", "C1"),
            ):
                stats = [r["summary"]["paired_by_head"][head]["stop"][pair] for r in recs]
                mean = np.array([q["mean"] for q in stats])
                ci = np.array([q["ci95"] for q in stats])
                err = np.abs(np.stack([mean - ci[:, 0], ci[:, 1] - mean]))
                ax.errorbar(
                    ns * off,
                    mean,
                    yerr=err,
                    fmt="o",
                    ls=ls,
                    color=color,
                    capsize=2,
                    ms=4,
                    mfc=color if head == "W" else "white",
                    label=f"{pair} ({head})",
                )
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training points n")
        ax.set_ylabel("paired difference of test loss (95% CI)")
        ax.set_title(f"{task}: > 0 means mf generalizes better")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rate_certificate_figure(records: list[dict[str, Any]], title: str):
    """Left: fitted rate vs certified rate (2/n) min_t lambda_min(H(t)), one marker per
    (d, seed, head), log-log with the line fitted = certified. Right: the ratio fitted /
    certified vs lambda_min(Phi Phi^T)/D of the seed's features: bounded ratio = the rate
    depends on d only through the certificate."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.4))
    ds = sorted({r["summary"]["d"] for r in records})
    cmap = plt.get_cmap("viridis")
    lo, hi = np.inf, 0.0
    for r in records:
        s = r["summary"]
        color = cmap(ds.index(s["d"]) / max(1, len(ds) - 1))
        head = s.get("head", "W")
        marker = "o" if head == "W" else "s"
        fitted = np.array([p["rate"] for p in s["per_seed"]])
        cert = np.array([p["certified_rate"] for p in s["per_seed"]])
        ok = (cert > 0) & np.isfinite(fitted) & (fitted > 0)
        ax0.scatter(
            cert[ok],
            fitted[ok],
            color=color,
            marker=marker,
            facecolors=color if head == "W" else "none",
            label=f"d = {s['d']}, {head}",
        )
        if ok.any():
            lo, hi = (
                min(lo, cert[ok].min(), fitted[ok].min()),
                max(hi, cert[ok].max(), fitted[ok].max()),
            )
        gram = np.asarray(s.get("feature_gram_lam_min", [np.nan] * len(fitted)))
        ax1.scatter(
            gram[ok],
            fitted[ok] / cert[ok],
            color=color,
            marker=marker,
            facecolors=color if head == "W" else "none",
        )
    if np.isfinite(lo):
        ax0.plot([lo, hi], [lo, hi], "k--", lw=1, label="fitted = certified")
    for ax in (ax0, ax1):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax0.set_yscale("log")
    ax0.set_xlabel("certified rate (2/n) min_t λ_min(H(t))")
    ax0.set_ylabel("fitted terminal rate")
    ax0.legend(fontsize=7)
    ax1.set_xlabel("λ_min(Φ Φ^T) / D at the seed's inputs")
    ax1.set_ylabel("fitted / certified")
    ax1.axhline(1.0, color="k", lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
