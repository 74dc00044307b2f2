"""Benchmarks 2 and 6: work-precision of the solvers, and a stiff flow.

Relative trajectory error at 4 fixed times against a Dopri8 reference at rtol = atol =
1e-13, versus gradient(-equivalent) evaluations and versus wall time (median of runs,
compile excluded), for GD (Euler, constant step), Heun, Tsit5, Dopri5, Dopri8 and the
matrix-free implicit Kvaerno5 (Newton-GMRES on Hessian-vector products).
"""

from __future__ import annotations

import time
from typing import Any

import diffrax
import numpy as np

from gflow._flow._implicit import matfree_implicit

from . import _common as c

REF_TOL = 1e-13
TARGET = 1e-6


def _curve(prob, ts, ref, solver, *, tols=None, dts=None, repeats=1) -> list[dict]:
    rows = []
    for value in tols if tols is not None else dts:
        kw = {"tol": value} if tols is not None else {"dt": value}
        r = c.sweep_solve(prob, ts, solver=solver, repeats=repeats, **kw)
        rows.append(
            {
                "tol" if tols is not None else "dt": value,
                "ok": r["ok"],
                "error": c.rel_error(r["thetas"], ref) if r["ok"] else None,
                **{
                    k: r[k]
                    for k in (
                        "num_steps",
                        "grad_evals",
                        "hvp_evals",
                        "grad_equivalents",
                        "run_seconds",
                    )
                },
            }
        )
    return rows


def _at(rows: list[dict], key: str, target: float) -> float | None:
    good = [r for r in rows if r["ok"] and r["error"]]
    return c.interp_at([r[key] for r in good], [r["error"] for r in good], target)


def _gd_at(rows: list[dict], t1: float, target: float) -> dict[str, Any]:
    """GD evaluations for `target`: interpolated when bracketed, else extrapolated on the
    fitted order-1 line error = C h^p through the measured points."""
    got = _at(rows, "grad_evals", target)
    if got is not None:
        return {"evals": got, "extrapolated": False}
    good = [r for r in rows if r["ok"] and r["error"]]
    fit = c.fit_order([r["dt"] for r in good], [r["error"] for r in good])
    h = np.exp((np.log(target) - fit["log_constant"]) / fit["order"])
    return {"evals": float(t1 / h), "extrapolated": True, "fitted_order": fit["order"]}


def work_precision(out: str, *, quick: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    m = 32 if quick else 1024
    t1 = 10.0  # mean-field time: the loss falls by orders of magnitude on [0, 10]
    prob = c.flat(c.two_layer(m, n=32, d=8))
    ts = np.linspace(t1 / 4, t1, 4)
    ref = c.sweep_solve(prob, ts, solver=diffrax.Dopri8(), tol=REF_TOL)["thetas"]
    tols = [1e-3, 1e-5, 1e-7] if quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12]
    repeats = 1 if quick else 3
    solvers = {
        "heun": (diffrax.Heun(), [t for t in tols if t >= 1e-8]),
        "tsit5": (diffrax.Tsit5(), tols),
        "dopri5": (diffrax.Dopri5(), tols),
        "dopri8": (diffrax.Dopri8(), tols),
        "kvaerno5-matfree": (matfree_implicit("kvaerno5"), [t for t in tols if t >= 1e-10]),
    }
    curves = {
        name: _curve(prob, ts, ref, s, tols=tl, repeats=repeats)
        for name, (s, tl) in solvers.items()
    }
    ns = [64, 256, 1024] if quick else [64, 256, 1024, 4096, 16384, 65536]
    curves["gd"] = _curve(prob, ts, ref, diffrax.Euler(), dts=[t1 / n for n in ns], repeats=repeats)
    at = {
        name: {
            "grad_equivalents": _at(rows, "grad_equivalents", TARGET),
            "run_seconds": _at(rows, "run_seconds", TARGET),
        }
        for name, rows in curves.items()
        if name != "gd"
    }
    gd = _gd_at(curves["gd"], t1, TARGET)
    best = min((v["grad_equivalents"], k) for k, v in at.items() if v["grad_equivalents"])
    ratio = gd["evals"] / best[0]
    result = {
        "benchmark": "work_precision",
        "quick": quick,
        "problem": {
            "model": "TwoLayer tanh, mean-field, eta = m",
            "width": m,
            "n": 32,
            "d": 8,
            "n_params": int(prob.theta0.size),
            "t1": t1,
            "save_times": ts.tolist(),
        },
        "settings": {
            "reference": f"Dopri8 rtol=atol={REF_TOL}",
            "controller": "PID rtol=atol",
            "error": "max over save times of |theta - ref| / |ref|",
            "hvp_cost_in_gradients": 2.0,
            "repeats": repeats,
        },
        "curves": curves,
        "target_error": TARGET,
        "at_target": at,
        "gd_at_target": gd,
        "best_solver_at_target": best[1],
        "gd_over_best_evals": ratio,
        "target_1000x_fewer_evals_met": bool(ratio >= 1000),
        "wall_seconds": time.perf_counter() - start,
    }
    c.save(result, out, "work_precision")
    return result


def stiff(out: str, *, quick: bool = False) -> dict[str, Any]:
    """A linear model whose Hessian has condition number 1e4: Tsit5 is held to steps
    below its stability limit ~3.3 / lambda_max whatever the tolerance, the implicit
    solver is not."""
    start = time.perf_counter()
    cond = 1e4
    t1 = 5.0  # lambda_min = 1: the slow mode decays by e^-5 over the run
    ts = np.linspace(t1 / 4, t1, 4)
    tols = [1e-4, 1e-6, 1e-8] if quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    cases = {}
    for spectrum in ("outliers", "log"):
        prob = c.flat(c.linear(n=128, d=32 if quick else 64, cond=cond, spectrum=spectrum))
        ref = c.sweep_solve(prob, ts, solver=diffrax.Dopri8(), tol=REF_TOL)["thetas"]
        curves = {
            "tsit5": _curve(prob, ts, ref, diffrax.Tsit5(), tols=tols),
            "kvaerno5-matfree": _curve(prob, ts, ref, matfree_implicit("kvaerno5"), tols=tols),
        }
        compare = []
        for target in (1e-4, 1e-6):
            a = _at(curves["tsit5"], "grad_equivalents", target)
            b = _at(curves["kvaerno5-matfree"], "grad_equivalents", target)
            compare.append(
                {
                    "error": target,
                    "tsit5": a,
                    "implicit": b,
                    "ratio_tsit5_over_implicit": None if not (a and b) else a / b,
                }
            )
        ratios = [x["ratio_tsit5_over_implicit"] for x in compare]
        cases[spectrum] = {
            "n_params": int(prob.theta0.size),
            "curves": curves,
            "at_equal_error": compare,
            "target_5x_met": all(r is not None and r >= 5 for r in ratios),
        }
    result = {
        "benchmark": "stiff",
        "quick": quick,
        "problem": {
            "model": "Linear, MSE",
            "cond_H": cond,
            "t1": t1,
            "save_times": ts.tolist(),
            "spectra": {
                "outliers": "4 eigenvalues in [cond/10, cond], bulk in [1, 10]",
                "log": "log-spaced over [1, cond]",
            },
        },
        "settings": {"reference": f"Dopri8 rtol=atol={REF_TOL}", "hvp_cost_in_gradients": 2.0},
        "cases": cases,
        "target_5x_met": {k: v["target_5x_met"] for k, v in cases.items()},
        "wall_seconds": time.perf_counter() - start,
    }
    c.save(result, out, "stiff")
    return result
