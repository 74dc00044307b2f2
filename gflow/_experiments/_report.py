"""Markdown tables of an experiment's summary (written to OUT/NAME/table.md), the tables
that docs/reproduction.md quotes."""

from __future__ import annotations

from typing import Any


def _g(x: Any, digits: int = 3) -> str:
    try:
        return f"{float(x):.{digits}g}"
    except (TypeError, ValueError):
        return str(x)


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def convergence_table(summary: dict[str, Any]) -> str:
    lines = [
        "| d | n | fitted rate (mean ± sd) | 95% CI (seed 0) | seeds linear | min decades "
        "| certified (2/n) min λ_min | Schur rate | Gronwall | Schur | fitted ≥ bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        lo, hi = r["rate_ci_seed0"]
        c = r["checks"]
        lines.append(
            f"| {r['d']} | {r['n']} | {_g(r['rate_mean'])} ± {_g(r['rate_std'], 2)} "
            f"| [{_g(lo)}, {_g(hi)}] | {_g(r['linear_fraction'], 2)} | {_g(r['decades_min'])} "
            f"| {_g(r['certified_rate_mean'])} | {_g(r['schur_rate_mean'])} "
            f"| {_statuses(c.get('gronwall', {}))} | {_statuses(c.get('schur', {}))} "
            f"| {_statuses(c.get('fitted_rate', {}))} |"
        )
    return "\n".join(lines)


def feature_table(summary: dict[str, Any]) -> str:
    lines = [
        "| scaling | measure | values at m = widths (mean over seeds) | log-log slope | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for scaling, res in summary["slopes"].items():
        for measure in ("movement", "kernel", "lazy_gap"):
            q = res[measure]
            vals = ", ".join(_g(v) for v in q["mean"])
            lo, hi = q["ci"]
            lines.append(
                f"| {scaling} | {measure} | {vals} | {q['slope']:+.3f} | [{lo:+.3f}, {hi:+.3f}] |"
            )
    widths = ", ".join(str(w) for w in next(iter(summary["slopes"].values()))["widths"])
    return f"Widths m = {widths}.\n\n" + "\n".join(lines)


def generalization_table(summary: dict[str, Any]) -> str:
    lines = [
        "| task | scaling | test loss at t1 (mean ± sd) | min over t of mean test loss (at t) "
        "| test loss at t = 0 | train loss at t1 | (1/2) var(y_test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        lines.append(
            f"| {r['task']} | {r['scaling']} | {_g(r['test_final_mean'])} ± "
            f"{_g(r['test_final_std'], 2)} | {_g(r['test_min_of_mean'])} (t = "
            f"{_g(r['t_test_min'])}) | {_g(r['test_init_mean'])} | {_g(r['train_final_mean'])} "
            f"| {_g(r['half_var_y_test'])} |"
        )
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The experiment's table and its checks as Markdown."""
    name = summary["name"]
    if name in ("shallow-dn", "multilayer-any-d"):
        body = convergence_table(summary)
    elif name == "feature-learning":
        body = feature_table(summary)
    else:
        body = generalization_table(summary)
    checks = "\n".join(f"- {k}: {v}" for k, v in summary["checks"].items())
    s = summary["settings"]
    head = (
        f"### {name} v{summary['version']} ({summary['size']}, {s['seeds']} seeds, "
        f"{summary['wall_seconds_points']:.0f} s of sweep points)\n"
    )
    return f"{head}\n{body}\n\nChecks:\n\n{checks}\n"
