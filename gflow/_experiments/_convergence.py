"""Claims 1 and 2: linear convergence of the training loss, with fitted rates and
certificates, swept over the input dimension d.

shallow-dn: two-layer MF network (both layers trained, eta = m), d from below n to above.
multilayer-any-d: partially trained three-layer MF network (random ReLU features, D >= n,
trained middle layer), d << n.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._analysis._rate import fit_rate
from .._data._synthetic import make_synthetic
from .._models._multilayer import MultiLayer
from .._models._two_layer import TwoLayer
from ._ensemble import run_ensemble
from ._measures import certificates, kernel_metrics

# A seed "converged linearly" when its loss fell by this factor and the log-linear fit of
# its terminal regime explains the log-loss this well.
DECADES_REQUIRED = 6.0
R2_REQUIRED = 0.99


def _builder(name: str, s: dict[str, Any], d: int):
    if name == "shallow-dn":
        return lambda key: TwoLayer(
            d, s["width"], activation=s["activation"], scaling=s["scaling"], key=key
        )
    return lambda key: MultiLayer(
        d,
        s["features"],
        s["width"],
        depth=s["depth"],
        activation=s["activation"],
        feature_activation=s["feature_activation"],
        train_output=s["train_output"],
        scaling=s["scaling"],
        key=key,
    )


def seed_summary(ts, loss, lam, schur, n: int) -> dict[str, Any]:
    """Rate fit (log-linear least squares over the second half of the reached save times,
    i.e. the terminal rate) and certificates of one member's trajectory.

    Arguments: ts (k,), loss (k,), lam (k, 2) = (lambda_min, lambda_max) of H(t),
    schur (k, 2) = (lambda_min(H_W), Schur bound); NaN after the member stopped."""
    ok = np.isfinite(loss) & (loss > 0)
    ts, loss, lam, schur = ts[ok], loss[ok], lam[ok], schur[ok]
    out: dict[str, Any] = {"loss0": float(loss[0]), "loss_final": float(loss[-1])}
    out["t_final"] = float(ts[-1])
    out["decades"] = float(np.log10(loss[0] / loss[-1]))
    fit = None
    try:
        i0 = max(0, min(ts.size // 2, ts.size - 5))
        fit = fit_rate(ts, loss, window=(ts[i0], ts[-1]))
        out.update(rate=fit.rate, rate_ci=list(fit.ci), r2=fit.r2, window=list(fit.window))
    except ValueError as exc:
        out.update(rate=float("nan"), rate_ci=[float("nan")] * 2, r2=float("nan"), window=None)
        out["fit_error"] = str(exc)
    out.update(certificates(ts, loss, lam[:, 0], lam[:, 1], schur, n, fit))
    out["linear"] = bool(
        out["decades"] >= DECADES_REQUIRED and np.isfinite(out["r2"]) and out["r2"] >= R2_REQUIRED
    )
    return out


def _check_counts(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """check name -> {status: number of seeds}."""
    out: dict[str, dict[str, int]] = {}
    for p in per_seed:
        for name, status in p["status"].items():
            out.setdefault(name, {}).setdefault(status, 0)
            out[name][status] += 1
    return out


def run_point(name: str, spec: dict[str, Any], point: dict[str, Any]):
    """One d: an ensemble over seeds. Returns (summary, arrays)."""
    s = spec["settings"]
    d = int(point["d"])
    seeds = list(range(int(s["seeds"])))
    datasets = [
        make_synthetic(s["n"], d, inputs=s["inputs"], target=s["target"], seed=1000 + k)
        for k in seeds
    ]
    ts = np.linspace(0.0, float(s["t1"]), int(s["n_save"]))
    ens, _, _ = run_ensemble(
        _builder(name, s, d),
        seeds,
        datasets,
        float(s["t1"]),
        metrics=kernel_metrics(),
        ts=ts,
        rtol=s["rtol"],
        atol=s["atol"],
        loss_target=s["loss_target"],
        max_steps=s["max_steps"],
    )
    per_seed = [
        seed_summary(m.ts, m.loss, m.metrics["lam"], m.metrics["schur"], s["n"])
        for m in ens.members
    ]
    rates = np.array([p["rate"] for p in per_seed])
    summary = {
        "d": d,
        "n": s["n"],
        "per_seed": per_seed,
        "rate_mean": float(np.nanmean(rates)),
        "rate_std": float(np.nanstd(rates, ddof=1)) if len(rates) > 1 else 0.0,
        "linear_fraction": float(np.mean([p["linear"] for p in per_seed])),
        "certified_rate_mean": float(np.mean([p["certified_rate"] for p in per_seed])),
        "schur_rate_mean": float(np.mean([p["certified_rate_schur"] for p in per_seed])),
        "checks": _check_counts(per_seed),
        "results": ens.results,
        "compile_seconds": ens.stats["compile_seconds"],
        "run_seconds": ens.stats["run_seconds"],
        "num_steps": ens.stats["num_steps"].tolist(),
        "solver": ens.settings,
    }
    arrays = {
        "ts": ens.ts,
        "loss": ens.loss,
        "lam": ens.metrics["lam"],
        "schur": ens.metrics["schur"],
    }
    return summary, arrays


def points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"d": int(d)} for d in spec["settings"]["d"]]


def table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per d for the summary JSON and the report."""
    rows = []
    for r in records:
        s = r["summary"]
        rows.append(
            {
                "d": s["d"],
                "n": s["n"],
                "rate_mean": s["rate_mean"],
                "rate_std": s["rate_std"],
                "rate_ci_seed0": s["per_seed"][0]["rate_ci"],
                "linear_fraction": s["linear_fraction"],
                "decades_min": min(p["decades"] for p in s["per_seed"]),
                "certified_rate_mean": s["certified_rate_mean"],
                "schur_rate_mean": s["schur_rate_mean"],
                "checks": s["checks"],
                "wall_seconds": r["wall_seconds"],
            }
        )
    return rows
