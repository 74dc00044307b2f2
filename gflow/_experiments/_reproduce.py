"""`reproduce(name)`: run one named experiment (a resumable sweep of vmapped seed
ensembles), draw its figure (PNG and PDF) and write its machine-readable summary.

Layout of OUT (default runs/reproduce/SIZE):
    OUT/NAME/points/*.json, *.npz   one finished sweep point each (reused on rerun)
    OUT/NAME/NAME.png, NAME.pdf     the figure
    OUT/NAME/summary.json           versions, settings, per-point wall times, the table
                                    or slopes, and the qualitative checks
    OUT/NAME/table.md               the same table as Markdown (docs/reproduction.md)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_write, versions, write_json
from . import _convergence, _feature_learning, _generalization, _report
from ._spec import EXPERIMENTS, load_spec
from ._sweep import run_sweep


def _convergence_checks(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if name == "shallow-dn":
        above = [r for r in rows if r["d"] >= r["n"]]
        below = [r for r in rows if r["d"] < r["n"]]
        checks["d>=n: every seed linear (>= 6 decades, R^2 >= 0.99)"] = bool(
            above and all(r["linear_fraction"] == 1.0 for r in above)
        )
        checks["d>=n: Schur certificate positive"] = bool(
            above and all(r["schur_rate_mean"] > 0 for r in above)
        )
        checks["d<n: every seed linear"] = bool(
            below and all(r["linear_fraction"] == 1.0 for r in below)
        )
        checks["d<n: Schur certificate positive"] = bool(
            below and any(r["schur_rate_mean"] > 0 for r in below)
        )
    else:
        checks["every d: every seed linear (>= 6 decades, R^2 >= 0.99)"] = bool(
            all(r["linear_fraction"] == 1.0 for r in rows)
        )
        checks["every d: certified rate positive"] = bool(
            all(r["certified_rate_mean"] > 0 for r in rows)
        )
    for cert, label in (
        ("local_rate", "local rate -(d/dt) log L >= (2/n) lambda_min(H(t))"),
        ("gronwall", "Gronwall envelope"),
        ("schur", "Schur bound lambda_min(H_W) >= lambda_min(K) min G_kk"),
        ("fitted_rate", "fitted rate >= (2/n) mean lambda_min over its window"),
    ):
        counts: dict[str, int] = {}
        for r in rows:
            for status, k in r["checks"].get(cert, {}).items():
                counts[status] = counts.get(status, 0) + k
        checks[f"{label}: no seed fails"] = counts.get("fail", 0) == 0
        checks[f"{label}: seeds by status"] = counts
    return checks


def _feature_checks(slopes: dict[str, Any]) -> dict[str, Any]:
    checks = {}
    for scaling, res in slopes.items():
        for measure in _feature_learning.MEASURES:
            lo, hi = res[measure]["ci"]
            checks[f"{scaling} {measure}: slope interval contains -1/2"] = bool(lo <= -0.5 <= hi)
            checks[f"{scaling} {measure}: does not shrink (slope > -0.1)"] = bool(
                res[measure]["slope"] > -0.1
            )
    return checks


def _generalization_checks(records: list[dict[str, Any]], verdict: dict[str, Any]):
    """Per (task, n) outcome of the main comparison and the verdict (rules in
    `_generalization.verdict`); the other pairs and heads as recorded outcomes."""
    checks: dict[str, Any] = {
        "verdict (claim 4, rules of docs/reproduction.md)": verdict["verdict"]
    }
    for r in records:
        s = r["summary"]
        for head, by_t in s["paired_by_head"].items():
            for pair, stat in by_t["stop"].items():
                lo, hi = stat["ci95"]
                checks[f"{s['task']} n={s['n']} head {head} {pair} (validation stop)"] = (
                    f"{stat['mean']:+.3g} [{lo:+.3g}, {hi:+.3g}], Wilcoxon p "
                    f"{stat['wilcoxon_p']:.3g}, {stat['n_positive']}/{stat['n']} seeds > 0"
                )
    return checks


def _multilayer_verdict(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Claim 2 v2: `_convergence.ratio_verdict` on the main arm (head "W"), and on "Wc"."""
    out = {}
    for head in dict.fromkeys(r["summary"].get("head", "W") for r in records):
        rows = [
            (
                r["summary"]["d"],
                [
                    {"result": res, **p}
                    for p, res in zip(
                        r["summary"]["per_seed"], r["summary"]["results"], strict=True
                    )
                ],
            )
            for r in records
            if r["summary"].get("head", "W") == head
        ]
        out[head] = _convergence.ratio_verdict(rows)
    return out


def reproduce(
    name: str,
    *,
    size: str = "full",
    seeds: int | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run experiment `name` ("shallow-dn", "multilayer-any-d", "feature-learning",
    "generalization") at `size` ("full", "quick", "tiny") with `seeds` seeds per ensemble
    (default: the config's), resuming a sweep already present in `out`.

    Returns:
        The summary dict also written to OUT/NAME/summary.json.
    """
    from . import _figures  # matplotlib, only when drawing

    spec = load_spec(name, size, seeds)
    root = Path(out if out is not None else Path("runs") / "reproduce" / size) / name
    start = time.perf_counter()
    title = f"{spec['title']} ({size}, {spec['settings']['seeds']} seeds)"
    log(f"{name} v{spec['version']} ({size}): output in {root}")
    if name in ("shallow-dn", "multilayer-any-d"):
        records = run_sweep(
            spec,
            _convergence.points(spec),
            lambda p: _convergence.run_point(name, spec, p),
            root,
            log=log,
        )
        result = {"table": _convergence.table(records)}
        result["checks"] = _convergence_checks(name, result["table"])
        fig = _figures.convergence_figure(records, title, mark_n=name == "shallow-dn")
        if "heads" in spec["settings"]:
            result["verdict"] = _multilayer_verdict(records)
            main = result["verdict"].get("W", next(iter(result["verdict"].values())))
            result["checks"]["verdict (claim 2, main arm, rules of docs/reproduction.md)"] = main[
                "verdict"
            ]
            result["checks"]["fitted / certified rate: spread of per-d geometric means"] = main[
                "ratio_spread"
            ]
            _figures.save(_figures.rate_certificate_figure(records, title), root / f"{name}-ratio")
    elif name == "feature-learning":
        records = run_sweep(
            spec,
            _feature_learning.points(spec),
            lambda p: _feature_learning.run_point(spec, p),
            root,
            log=log,
        )
        slopes = _feature_learning.slopes(records)
        result = {"slopes": slopes, "checks": _feature_checks(slopes)}
        fig = _figures.feature_figure(slopes, title)
    else:
        records = run_sweep(
            spec,
            _generalization.points(spec),
            lambda p: _generalization.run_point(spec, p),
            root,
            log=log,
        )
        curves = _generalization.curves(records)
        verdict = _generalization.verdict(records)
        result = {
            "table": _generalization.table(records),
            "curves": curves,
            "verdict": verdict,
            "checks": _generalization_checks(records, verdict),
        }
        fig = _figures.generalization_figure(records, curves, title)
    figures = _figures.save(fig, root / name) + result.pop("_extra_figures", [])
    summary = {
        **{k: spec[k] for k in ("name", "version", "claim", "title", "size", "settings")},
        **result,
        "points": [
            {
                "point": r["point"],
                "wall_seconds": r["wall_seconds"],
                "reused": r["reused"],
                "summary": r["summary"],
            }
            for r in records
        ],
        "n_computed": sum(not r["reused"] for r in records),
        "n_reused": sum(r["reused"] for r in records),
        "wall_seconds_this_call": time.perf_counter() - start,
        "wall_seconds_points": float(sum(r["wall_seconds"] for r in records)),
        "figures": figures,
        "versions": versions(),
    }
    write_json(root / "summary.json", summary)
    table = _report.markdown(summary).encode()
    atomic_write(root / "table.md", lambda f: f.write(table))
    for check, ok in result["checks"].items():
        mark = ok if not isinstance(ok, bool) else ("yes" if ok else "no")
        log(f"  {check}: {mark}")
    return summary


def reproduce_all(**kwargs: Any) -> dict[str, dict[str, Any]]:
    """`reproduce` every experiment in turn."""
    return {name: reproduce(name, **kwargs) for name in EXPERIMENTS}
