"""Figures of the benchmark results (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _curves(ax, curves: dict[str, Any], xkey: str) -> None:
    for name, rows in curves.items():
        if not isinstance(rows, list):
            continue
        pts = [(r[xkey], r["error"]) for r in rows if r.get("ok") and r.get("error")]
        if pts:
            xs, es = zip(*sorted(pts), strict=True)
            ax.loglog(xs, es, "o-", label=name, ms=4)
    ax.set_ylabel("relative trajectory error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def draw(results: dict[str, Any], out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out / f"bench_{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if "work_precision" in results:
        r = results["work_precision"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        curves = {k: v for k, v in r["curves"].items()}
        for row in curves.get("gd", []):
            row["grad_equivalents"] = row["grad_evals"]
        _curves(axes[0], curves, "grad_equivalents")
        axes[0].set_xlabel("gradient evaluations (HVP = 2)")
        _curves(axes[1], curves, "run_seconds")
        axes[1].set_xlabel("wall time [s] (shared 2-core machine)")
        fig.suptitle(f"work-precision, two-layer MF, width {r['problem']['width']}")
        save(fig, "work_precision")
    if "peers" in results:
        ws = results["peers"]["widths"]
        fig, axes = plt.subplots(1, len(ws), figsize=(5 * len(ws), 4), squeeze=False)
        for ax, w in zip(axes[0], ws, strict=True):
            _curves(ax, w["curves"], "run_seconds")
            ax.set_xlabel("wall time [s]")
            ax.set_title(f"width {w['width']} (P = {w['n_params']})")
        save(fig, "peers")
    if "stiff" in results:
        cases = results["stiff"]["cases"]
        fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
        for ax, (k, case) in zip(axes[0], cases.items(), strict=True):
            _curves(ax, case["curves"], "grad_equivalents")
            ax.set_xlabel("gradient-equivalent evaluations")
            ax.set_title(f"stiff linear flow, cond 1e4, {k} spectrum")
        save(fig, "stiff")
    if "gd_vs_flow" in results:
        r = results["gd_vs_flow"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for o in r["orders"]:
            hs = [x["h"] for x in o["rows"]]
            axes[0].loglog(
                hs,
                [x["gd_to_flow"] for x in o["rows"]],
                "o-",
                label=f"{o['problem']} to flow ({o['order_gd_to_flow']:.2f})",
            )
            axes[0].loglog(
                hs,
                [x["gd_to_modified"] for x in o["rows"]],
                "s--",
                label=f"{o['problem']} to modified ({o['order_gd_to_modified']:.2f})",
            )
        axes[0].set_xlabel("GD step h")
        axes[0].set_ylabel("relative distance at fixed times")
        axes[0].legend(fontsize=6)
        axes[0].grid(True, which="both", alpha=0.3)
        eos = r["edge_of_stability"]
        for run in eos["runs"]:
            d = [x if x is not None else float("nan") for x in run["rel_distance"]]
            axes[1].semilogy(
                run["ts"], d, label=f"h = {run['h_times_lambda0_over_2']:.2f} x 2/lambda0"
            )
        axes[1].axhline(0.1, color="k", lw=0.5)
        axes[1].set_xlabel("t")
        axes[1].set_ylabel("|GD - GF| / |GF|")
        axes[1].legend(fontsize=7)
        axes[1].set_title("where GD departs from the flow")
        save(fig, "gd_vs_flow")
        fig, ax = plt.subplots(figsize=(5, 4))
        run = eos["runs"][0]
        ax.plot(run["ts"], run["lambda_max_flow"], label="lambda_max(diag(eta) H) along GF")
        for run in eos["runs"]:
            ax.axhline(
                run["two_over_h"],
                ls="--",
                lw=0.8,
                label=f"2/h, h = {run['h_times_lambda0_over_2']:.2f} x 2/lambda0",
            )
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
        save(fig, "sharpness")
    return written
