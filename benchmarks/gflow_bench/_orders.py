"""Benchmark 1: GD vs gradient flow vs GD's modified flow, and the edge of stability.

For each problem, GD with step h (learning rate h * eta) is compared at fixed times with
the exact flow (error O(h), fitted order ~1) and with the modified flow
d theta/dt = -E grad(L + (h/4)|grad L|_E^2) (error O(h^2), order ~2). Then
lambda_max(diag(eta) H) along the flow is compared with 2/h for steps around the
threshold, and the time where GD departs from the flow is recorded.
"""

from __future__ import annotations

import time
from typing import Any

import diffrax
import numpy as np

from gflow._analysis._hessian import hessian_lambda_max, lambda_max_along

from . import _common as c

REF_TOL = 1e-12  # flows solved with Dopri8 at rtol = atol = 1e-12: errors << GD's
_DOPRI8, _EULER = diffrax.Dopri8(), diffrax.Euler()


def _orders_one(name: str, spec: dict[str, Any], t1: float, ns: list[int]) -> dict[str, Any]:
    ts = np.linspace(t1 / 4, t1, 4)
    prob = c.flat(spec)
    gf = c.sweep_solve(prob, ts, solver=_DOPRI8, tol=REF_TOL)
    rows = []
    for n in ns:
        h = t1 / n
        gd = c.sweep_solve(prob, ts, solver=_EULER, dt=h)
        mod = c.sweep_solve(prob, ts, solver=_DOPRI8, tol=REF_TOL, h=h)
        rows.append(
            {
                "h": h,
                "n_steps": n,
                "gd_to_flow": c.rel_error(gd["thetas"], gf["thetas"]),
                "gd_to_modified": c.rel_error(gd["thetas"], mod["thetas"]),
            }
        )
    hs = [r["h"] for r in rows]
    fit1 = c.fit_order(hs, [r["gd_to_flow"] for r in rows])
    fit2 = c.fit_order(hs, [r["gd_to_modified"] for r in rows])
    return {
        "problem": name,
        "n_params": int(c.flat(spec).theta0.size),
        "t1": t1,
        "rows": rows,
        "order_gd_to_flow": fit1["order"],
        "order_gd_to_modified": fit2["order"],
        "check_order1": abs(fit1["order"] - 1.0) < 0.15,
        "check_order2": abs(fit2["order"] - 2.0) < 0.15,
    }


def _edge_of_stability(spec: dict[str, Any], horizon: float, factors: list[float]) -> dict:
    """GD at h = factor * 2 / lambda_max(E H)(theta0) for `horizon` * 2 / lambda0 time."""
    prob = c.flat(spec)
    lam0 = hessian_lambda_max(
        spec["loss"], spec["params"], eta=spec["eta"], trainable=spec["trainable"]
    )
    t1 = horizon * 2.0 / lam0
    runs = []
    for f in factors:
        h = f * 2.0 / lam0
        n = int(np.ceil(t1 / h))
        # 24 save times on GD's grid (a fixed count, so one compile serves every h)
        ts = np.unique(np.round(np.linspace(1, n, 24))) * h
        gd = c.sweep_solve(prob, ts, solver=_EULER, dt=h)
        gf = c.sweep_solve(prob, ts, solver=_DOPRI8, tol=1e-10)
        lam = lambda_max_along(prob, gf["thetas"])
        gd_th = gd["thetas"]
        finite = np.all(np.isfinite(gd_th), axis=1)
        dist = np.full(ts.size, np.inf)
        dist[finite] = np.linalg.norm(
            gd_th[finite] - gf["thetas"][finite], axis=1
        ) / np.linalg.norm(gf["thetas"][finite], axis=1)
        depart = np.nonzero(dist > 0.1)[0]
        k = int(depart[0]) if depart.size else None
        runs.append(
            {
                "h_times_lambda0_over_2": f,
                "h": h,
                "ts": ts.tolist(),
                "lambda_max_flow": lam.tolist(),
                "two_over_h": 2.0 / h,
                "rel_distance": [float(x) if np.isfinite(x) else None for x in dist],
                "departure_time": None if k is None else float(ts[k]),
                "lambda_at_departure_times_h": None if k is None else float(lam[k] * h),
            }
        )
    return {
        "lambda_max_at_init": lam0,
        "t1": t1,
        "runs": runs,
        "departure_threshold": "relative distance 0.1",
    }


def run(out: str, *, quick: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    ns = [20, 40, 80] if quick else [20, 40, 80, 160, 320]
    m = 16 if quick else 64
    problems = {
        "two_layer_mf": c.two_layer(m, n=16, d=4),
        "three_layer_partial": c.three_layer(m, n=16, d=4, D=8),
        "linear": c.linear(n=32, d=8, cond=10.0),
    }
    t1 = {"two_layer_mf": 1.0, "three_layer_partial": 1.0, "linear": 0.5}
    orders = [_orders_one(k, v, t1[k], ns) for k, v in problems.items()]
    eos = _edge_of_stability(
        problems["two_layer_mf"],
        40 if quick else 100,
        [0.5, 1.5] if quick else [0.5, 0.9, 1.1, 1.5, 2.5],
    )
    result = {
        "benchmark": "gd_vs_flow",
        "quick": quick,
        "settings": {
            "flow_solver": "Dopri8",
            "flow_rtol_atol": REF_TOL,
            "gd": "Euler+StepTo",
            "error": "max over 4 fixed times of |a - b| / |b|",
            "width": m,
        },
        "orders": orders,
        "edge_of_stability": eos,
        "wall_seconds": time.perf_counter() - start,
    }
    c.save(result, out, "gd_vs_flow")
    return result
