"""Markdown tables of an experiment's summary (written to OUT/NAME/table.md), the tables
that docs/reproduction.md quotes."""

from __future__ import annotations

from typing import Any

import numpy as np


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
            f"| {r['d']}{' (' + r['head'] + ')' if 'head' in r else ''} | {r['n']} "
            f"| {_g(r['rate_mean'])} ± {_g(r['rate_std'], 2)} "
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


def _ci(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci95"]
    return (
        f"{stat['mean']:+.2g} [{lo:+.2g}, {hi:+.2g}] p={_g(stat['wilcoxon_p'], 2)} "
        f"({stat['n_positive']}/{stat['n']})"
    )


def generalization_table(summary: dict[str, Any]) -> str:
    arms = ("mf", "mf-sqrt", "ntk", "ntk-std")
    base = ("constant", "ridge-linear", "random-features", "ntk-linearized")
    lines = [
        "Test loss at the validation-chosen time, mean over seeds, paper's model (head W: "
        "W trained, c fixed); paired differences as mean [95% t CI] Wilcoxon p "
        "(seeds > 0).\n",
        "| task | n | seeds | " + " | ".join(arms + base) + " | ntk − mf (W) | mf-sqrt − mf (W) "
        "| ntk-std − mf (W) | ntk − mf (W + c) |",
        "|---" * (3 + len(arms) + len(base) + 4) + "|",
    ]
    for r in summary["table"]:
        w, pbh = r["W"], r["paired_by_head"]
        lines.append(
            f"| {r['task']} | {r['n']} | {r['seeds']} | "
            + " | ".join(_g(w[a]) for a in arms + base)
            + f" | {_ci(pbh['W']['stop']['ntk_minus_mf'])}"
            + f" | {_ci(pbh['W']['stop']['mfsqrt_minus_mf'])}"
            + f" | {_ci(pbh['W']['stop']['ntkstd_minus_mf'])}"
            + f" | {_ci(pbh['Wc']['stop']['ntk_minus_mf'])} |"
        )
    lines += [
        "",
        "Same at t1 (no early stopping), ntk − mf: "
        + "; ".join(
            f"{r['task']} n={r['n']}: W {_ci(r['paired_by_head']['W']['end']['ntk_minus_mf'])}, "
            f"W+c {_ci(r['paired_by_head']['Wc']['end']['ntk_minus_mf'])}"
            for r in summary["table"]
        ),
        "",
        "Head W + c, test loss at the validation-chosen time: "
        + "; ".join(
            f"{r['task']} n={r['n']}: " + ", ".join(f"{a} {_g(r['Wc'][a])}" for a in arms)
            for r in summary["table"]
        ),
    ]
    r2_rows = [r for r in summary["table"] if "r2" in r["W"]]
    if r2_rows:
        lines += [
            "",
            "Feature learning (single-index, head W): out-of-sample R^2 of a linear "
            "regression of z = v.x and He2(z) on the hidden pre-activations W h(x), at "
            "t = 0 -> t1 (mean over seeds).",
            "",
            "| n | " + " | ".join(f"{a}: z | {a}: He2(z)" for a in arms) + " |",
            "|---" * (1 + 2 * len(arms)) + "|",
        ]
        for r in r2_rows:
            cells = []
            for a in arms:
                q = r["W"]["r2"][a]
                cells += [
                    f"{q['r2_z_init']:.2f} -> {q['r2_z']:.2f}",
                    f"{q['r2_he2_init']:.2f} -> {q['r2_he2']:.2f}",
                ]
            lines.append(f"| {r['n']} | " + " | ".join(cells) + " |")
    curves = summary.get("curves", {})
    if curves:
        lines += ["", "Learning-curve slopes (log test loss vs log n, head W, 95% CI):", ""]
        for task, c in curves.items():
            parts = []
            for arm, q in c["W"].items():
                lo, hi = q["slope"]["ci95"]
                parts.append(f"{arm} {q['slope']['slope']:+.2f} [{_g(lo, 2)}, {_g(hi, 2)}]")
            lines.append(f"- {task}: " + "; ".join(parts))
    v = summary.get("verdict")
    if v:
        lines += [
            "",
            f"Verdict by the rules: **{v['verdict']}** ("
            + ", ".join(f"{p['task']} n={p['n']}: {p['outcome']}" for p in v["per_point"])
            + ")",
            "",
            "Qualifier, mf (head W) minus the best baseline: "
            + "; ".join(
                f"{p['task']} n={p['n']}: {p['best_baseline']} "
                f"{_ci(p['mf_minus_best_baseline'])} -> {p['mf_vs_best_baseline']}"
                for p in v["per_point"]
                if "best_baseline" in p
            ),
        ]
    return "\n".join(lines)


def ratio_table(summary: dict[str, Any]) -> str:
    lines = [
        "| head | d | t1 | min angle (min over seeds) | λ_min(ΦΦ^T)/D (min) | fitted rate "
        "(geo mean) | certified (geo mean) | fitted / certified (min–max) | seeds linear |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pt in summary["points"]:
        s = pt["summary"]
        ps = s["per_seed"]
        fitted = np.array([p["rate"] for p in ps])
        cert = np.array([p["certified_rate"] for p in ps])
        ratio = np.array([p["ratio"] for p in ps])
        lines.append(
            f"| {s.get('head', '-')} | {s['d']} | {_g(s.get('t1', float('nan')))} "
            f"| {_g(min(s.get('min_angle', [float('nan')])))} "
            f"| {_g(min(s.get('feature_gram_lam_min', [float('nan')])))} "
            f"| {_g(np.exp(np.mean(np.log(np.abs(fitted)))))} "
            f"| {_g(np.exp(np.mean(np.log(np.abs(cert)))))} "
            f"| {_g(np.nanmin(ratio))}–{_g(np.nanmax(ratio))} "
            f"| {sum(p['linear'] for p in ps)}/{len(ps)} |"
        )
    for head, v in summary.get("verdict", {}).items():
        lines.append(
            f"\nHead {head}: verdict by the rules **{v['verdict']}**; spread of the per-d "
            f"geometric-mean ratio {_g(v['ratio_spread'])} (raw rate spread "
            f"{_g(v['raw_rate_spread'])}); all converged (loss target or >= 6 decades, under "
            f"the envelope) "
            f"{v['all_converged']}, all linear (R^2 >= 0.99 too) {v['all_linear']}, all certified "
            f"{v['all_certified']}."
        )
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The experiment's table and its checks as Markdown."""
    name = summary["name"]
    if name in ("shallow-dn", "multilayer-any-d"):
        body = convergence_table(summary)
        if "verdict" in summary:
            body += "\n\n" + ratio_table(summary)
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
