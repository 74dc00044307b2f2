"""Benchmark 3: gflow vs the tools a user would otherwise pick, in one run.

The same mean-field two-layer flow d theta/dt = -m grad L solved by
  - gflow (gflow's engine with its default controller, `gflow.PIDController`): diffrax's
    Tsit5 and Dopri8 on the flat state, and `FusedTsit5` (the same method with the stages
    unrolled) on the pytree state (`state="tree"`, no flatten/concatenate copies),
  - torchdiffeq `odeint(method="dopri5")` with a torch autograd gradient (float64),
  - scipy `solve_ivp(method="DOP853")` with the jitted JAX gradient as a numpy callback,
at equal rtol = atol, against a Dopri8 reference at 1e-13. Wall time at equal accuracy
is read off each tool's time-vs-error curve by log-log interpolation.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gflow._flow._fused import FusedTsit5

from . import _common as c

REF_TOL = 1e-13


def _median_time(fn, repeats: int) -> tuple[Any, float]:
    fn()  # warm-up (lazy initialisation, caches), not timed
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def _scipy_rows(prob, ts, ref, tols, repeats) -> list[dict]:
    from scipy.integrate import solve_ivp

    jitted = jax.jit(lambda p, y: p.vector_field(y))

    def field(y):
        return jitted(prob, y)

    theta0 = np.asarray(prob.theta0)
    field(prob.theta0).block_until_ready()
    calls = {"n": 0}

    def fun(t, y):
        calls["n"] += 1
        return np.asarray(field(jnp.asarray(y)))

    rows = []
    for tol in tols:

        def go(tol=tol):
            calls["n"] = 0
            return solve_ivp(
                fun, (0.0, ts[-1]), theta0, method="DOP853", t_eval=ts, rtol=tol, atol=tol
            )

        sol, secs = _median_time(go, repeats)
        rows.append(
            {
                "tol": tol,
                "ok": bool(sol.success),
                "grad_evals": int(sol.nfev),
                "error": c.rel_error(sol.y.T, ref) if sol.success else None,
                "run_seconds": secs,
            }
        )
    return rows


def _torch_rows(spec, prob, ts, ref, tols, repeats) -> list[dict]:
    import torch
    from torchdiffeq import odeint

    torch.set_default_dtype(torch.float64)
    model = spec["params"]
    data_x, data_y = spec["data"]
    x = torch.tensor(np.asarray(data_x))
    y = torch.tensor(np.asarray(data_y))
    m, d = model.W.shape
    eta = float(m)
    calls = {"n": 0}

    def loss(theta):
        w = theta[: m * d].reshape(m, d)
        cc = theta[m * d :]
        f = torch.tanh(x @ w.T) @ cc / m
        return 0.5 * torch.mean((f - y) ** 2)

    def field(t, theta):
        calls["n"] += 1
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(loss(th), th)
        return -eta * g

    theta0 = torch.tensor(np.asarray(prob.theta0))
    t_all = torch.tensor(np.concatenate([[0.0], ts]))
    rows = []
    for tol in tols:

        def go(tol=tol):
            calls["n"] = 0
            with torch.no_grad():
                return odeint(field, theta0, t_all, rtol=tol, atol=tol, method="dopri5")

        out, secs = _median_time(go, repeats)
        thetas = out[1:].numpy()
        ok = bool(np.all(np.isfinite(thetas)))
        rows.append(
            {
                "tol": tol,
                "ok": ok,
                "grad_evals": calls["n"],
                "error": c.rel_error(thetas, ref) if ok else None,
                "run_seconds": secs,
            }
        )
    return rows


def _gflow_rows(prob, ts, ref, solver, tols, repeats) -> list[dict]:
    rows = []
    for tol in tols:
        r = c.solve(prob, ts, solver=solver, controller=c.pid(tol), repeats=repeats)
        rows.append(
            {
                "tol": tol,
                "ok": r["ok"],
                "grad_evals": r["grad_evals"],
                "error": c.rel_error(r["thetas"], ref) if r["ok"] else None,
                "run_seconds": r["run_seconds"],
                "compile_seconds": r["compile_seconds"],
            }
        )
    return rows


def _at(rows, key, target):
    good = [r for r in rows if r["ok"] and r["error"]]
    return c.interp_at([r[key] for r in good], [r["error"] for r in good], target)


def one_width(m: int, *, n: int, d: int, t1: float, tols, targets, repeats) -> dict[str, Any]:
    from gflow._data._synthetic import make_synthetic

    spec = c.two_layer(m, n=n, d=d)
    data = make_synthetic(n, d, seed=0)
    spec["data"] = (data.x_train, data.y_train)
    prob = c.flat(spec)
    tree = c.flat(spec, state="tree")
    ts = np.linspace(t1 / 4, t1, 4)
    ref = c.solve(prob, ts, solver=diffrax.Dopri8(), controller=c.pid(REF_TOL))["thetas"]
    curves = {
        "gflow_tsit5": _gflow_rows(prob, ts, ref, diffrax.Tsit5(), tols, repeats),
        "gflow_tsit5_fused_tree": _gflow_rows(tree, ts, ref, FusedTsit5(), tols, repeats),
        "gflow_dopri8": _gflow_rows(prob, ts, ref, diffrax.Dopri8(), tols, repeats),
        "scipy_dop853": _scipy_rows(prob, ts, ref, tols, repeats),
    }
    try:
        curves["torchdiffeq_dopri5"] = _torch_rows(spec, prob, ts, ref, tols, repeats)
    except ImportError as exc:  # benchmark-only extra: pip install 'gflow[bench]'
        curves["torchdiffeq_dopri5"] = {"skipped": f"torch/torchdiffeq not installed: {exc}"}
    compare = []
    for target in targets:
        t = {k: _at(v, "run_seconds", target) for k, v in curves.items() if isinstance(v, list)}
        gflow_best = min((v for k, v in t.items() if k.startswith("gflow") and v), default=None)
        peers = [v for k, v in t.items() if not k.startswith("gflow") and v]
        peer_best = min(peers, default=None)
        compare.append(
            {
                "error": target,
                "seconds": t,
                "gflow_best": gflow_best,
                "peer_best": peer_best,
                "speedup_vs_best_peer": None
                if not (gflow_best and peer_best)
                else peer_best / gflow_best,
            }
        )
    return {
        "width": m,
        "n": n,
        "d": d,
        "t1": t1,
        "n_params": int(prob.theta0.size),
        "curves": curves,
        "at_equal_error": compare,
    }


def run(out: str, *, quick: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    widths = [64] if quick else [1024, 8192]
    tols = [1e-5, 1e-7, 1e-9] if quick else [1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
    targets = [1e-6, 1e-8]
    results = [
        one_width(m, n=64, d=16, t1=10.0, tols=tols, targets=targets, repeats=1 if quick else 7)
        for m in widths
    ]
    speedups = [x["speedup_vs_best_peer"] for r in results for x in r["at_equal_error"]]
    result = {
        "benchmark": "peers",
        "quick": quick,
        "settings": {
            "reference": f"gflow Dopri8 rtol=atol={REF_TOL}",
            "tolerances": "rtol = atol, same for every tool",
            "error": "max over 4 save times of |theta - ref| / |ref|",
            "timing": "median wall time, compile/warm-up excluded",
        },
        "widths": results,
        "target_3x_met": bool(speedups) and all(s is not None and s >= 3 for s in speedups),
        "wall_seconds": time.perf_counter() - start,
    }
    try:
        import torch
        import torchdiffeq

        result["peer_versions"] = {
            "torch": torch.__version__,
            "torchdiffeq": torchdiffeq.__version__,
        }
    except ImportError:
        pass
    import scipy

    result.setdefault("peer_versions", {})["scipy"] = scipy.__version__
    c.save(result, out, "peers")
    return result
