"""What a user pays per call: gflow.simulate vs a plain jitted diffrax Tsit5 vs scipy.

The problem (issue 12): a two-layer mean-field tanh network in plain JAX, n = 256
training points in d = 32, width m in {512, 1024, 2048, 4096, 8192}, eta = m, t1 = 40.
Each tool is called as a user calls it: a first call (compile included) and then
`--repeats` later calls, each from NEW initial parameters (paired across tools: call r of
every tool starts from the same draw). The error of a call is the relative trajectory
error max_k |theta(t_k) - theta_ref(t_k)| / |theta_ref(t_k)| at 4 save times, against
Dopri8 at rtol = atol = 1e-13 from the same start. Per tolerance we record the median
per-call wall time of the later calls (the whole call: flattening, the solve, results
back to numpy) and the inner solve time where the tool reports one; the wall time at
equal error 1e-6 and 1e-8 is read off each tool's (error, wall) curve by log-log
interpolation. Writes benchmarks/results/percall.json (or --out).

Tools:
  gflow-<solver>: gflow.simulate(loss, params, t1, eta=m, args=(X, Y), ts=..., rtol=atol=tol,
      save_params=True, solver=...), for tsit5, dopri8 and tsit5-fused;
  diffrax-tsit5: the 20 lines a user would write: jax.jit of diffrax.diffeqsolve with
      Tsit5, diffrax.PIDController(rtol, atol) (tolerances traced), SaveAt(ts);
  scipy-dop853: scipy.integrate.solve_ivp(method="DOP853") with the jitted JAX gradient.

Run: python benchmarks/percall.py [--quick] [--widths 512 1024] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np

import gflow  # noqa: F401  (float64 before JAX is imported)

N, D, T1 = 256, 32, 40.0
TS = np.array([0.0, 5.0, 15.0, T1])
TOLS = [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]


def loss(p, a):
    """L = (1/2n) |f(X) - Y|^2, f(x) = (1/m) sum_i c_i tanh(w_i . x)."""
    x, y = a
    f = jnp.tanh(x @ p["W"].T) @ p["c"] / p["c"].shape[0]
    return 0.5 * jnp.mean((f - y) ** 2)


def data():
    kx, kv = jax.random.split(jax.random.key(1234))
    x = jax.random.normal(kx, (N, D)) / np.sqrt(D)
    v = jax.random.normal(kv, (D,))
    z = x @ v / jnp.linalg.norm(v) * np.sqrt(D)
    return x, jnp.tanh(z) + 0.5 * z


def params(m, r):
    k1, k2 = jax.random.split(jax.random.key(r))
    return {"W": jax.random.normal(k1, (m, D)), "c": jax.random.normal(k2, (m,))}


def flat(p):
    return np.concatenate([np.asarray(p["W"]).ravel(), np.asarray(p["c"])])


def rel_error(traj, ref):
    return float(
        max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(traj, ref, strict=True))
    )


# --- the plain diffrax a user would write ------------------------------------------------
@jax.jit
def plain_solve(p0, a, eta, rtol, atol):
    def field(t, p, args):
        g = jax.grad(loss)(p, args)
        return jax.tree_util.tree_map(lambda gi: -eta * gi, g)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        0.0,
        T1,
        None,
        p0,
        args=a,
        saveat=diffrax.SaveAt(ts=jnp.asarray(TS)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )
    return sol.ys


def run_plain(p0, a, m, tol):
    start = time.perf_counter()
    ys = plain_solve(p0, a, float(m), tol, tol)
    traj = [flat(jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], ys)) for k in range(len(TS))]
    return traj, time.perf_counter() - start, None


def run_gflow(solver):
    def go(p0, a, m, tol):
        start = time.perf_counter()
        sol = gflow.simulate(
            loss,
            p0,
            T1,
            eta=float(m),
            args=a,
            ts=TS,
            rtol=tol,
            atol=tol,
            save_params=True,
            solver=solver,
            max_steps=100_000,
        )
        traj = [
            flat(jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], sol.params))
            for k in range(len(TS))
        ]
        wall = time.perf_counter() - start
        return traj, wall, sol.stats

    return go


_FIELDS: dict = {}  # width -> jitted field, compiled once per width like a user would


def run_scipy(p0, a, m, tol):
    from scipy.integrate import solve_ivp

    _cache = _FIELDS
    key = m
    if key not in _cache:
        unravel = jax.flatten_util.ravel_pytree(p0)[1]

        @jax.jit
        def field(theta, a):
            return -m * jax.flatten_util.ravel_pytree(jax.grad(loss)(unravel(theta), a))[0]

        _cache[key] = field
    field = _cache[key]
    start = time.perf_counter()
    theta0 = np.asarray(jax.flatten_util.ravel_pytree(p0)[0])
    sol = solve_ivp(
        lambda t, y: np.asarray(field(jnp.asarray(y), a)),
        (0.0, T1),
        theta0,
        method="DOP853",
        t_eval=TS,
        rtol=tol,
        atol=tol,
    )
    wall = time.perf_counter() - start
    return [sol.y[:, k] for k in range(len(TS))], wall, {"nfev": int(sol.nfev)}


def reference(p0, a, m):
    sol = gflow.simulate(
        loss,
        p0,
        T1,
        eta=float(m),
        args=a,
        ts=TS,
        rtol=1e-13,
        atol=1e-13,
        save_params=True,
        solver="dopri8",
        max_steps=1_000_000,
    )
    return [
        flat(jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], sol.params)) for k in range(len(TS))
    ]


def at_error(rows, target):
    """Wall time at relative error `target` by log-log interpolation of (error, wall)."""
    pts = sorted((r["error"], r["wall_median"]) for r in rows if r["error"] and r["error"] > 0)
    for (e0, w0), (e1, w1) in zip(pts[:-1], pts[1:], strict=True):
        if e0 <= target <= e1:
            if e1 == e0:
                return w0
            s = (np.log(target) - np.log(e0)) / (np.log(e1) - np.log(e0))
            return float(np.exp(np.log(w0) + s * (np.log(w1) - np.log(w0))))
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="widths 512 1024, 2 repeats")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "percall.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.repeats = [512, 1024], 2
    a = data()
    tools = {
        "gflow-tsit5": run_gflow("tsit5"),
        "gflow-dopri8": run_gflow("dopri8"),
        "gflow-tsit5-fused": run_gflow("tsit5-fused"),
        "diffrax-tsit5": run_plain,
        "scipy-dop853": run_scipy,
    }
    results = {"widths": {}}
    for m in args.widths:
        draws = list(range(args.repeats + 1))  # draw 0: the first call; 1..R: later calls
        refs = {r: reference(params(m, r), a, m) for r in draws}
        per_tool = {}
        for name, fn in tools.items():
            rows = []
            for tol in TOLS:
                walls, errors, first, stats = [], [], None, None
                for r in draws:
                    traj, wall, stats = fn(params(m, r), a, m, tol)
                    err = rel_error(traj, refs[r])
                    if r == 0:
                        first = wall
                    else:
                        walls.append(wall)
                        errors.append(err)
                row = {
                    "tol": tol,
                    "first_call": first,
                    "wall_median": statistics.median(walls),
                    "walls": walls,
                    "error": float(np.median(errors)),
                }
                if stats and "run_seconds" in stats:
                    row["run_seconds"] = stats["run_seconds"]
                    row["cache_hit"] = stats["cache_hit"]
                    row["grad_evals"] = stats["grad_evals"]
                elif stats:
                    row["grad_evals"] = stats.get("nfev")
                rows.append(row)
                print(
                    f"m={m} {name} tol={tol:g}: err {row['error']:.2e} "
                    f"first {first:.3f} s, later {row['wall_median']:.4f} s",
                    flush=True,
                )
            per_tool[name] = {
                "rows": rows,
                **{f"wall_at_{t:g}": at_error(rows, t) for t in (1e-6, 1e-8)},
            }
        summary = {}
        for t in ("1e-06", "1e-08"):
            gf = {k: v[f"wall_at_{t}"] for k, v in per_tool.items() if k.startswith("gflow")}
            gf = {k: v for k, v in gf.items() if v is not None}
            best = min(gf, key=gf.get) if gf else None
            plain = per_tool["diffrax-tsit5"][f"wall_at_{t}"]
            sci = per_tool["scipy-dop853"][f"wall_at_{t}"]
            summary[t] = {
                "gflow_choice": best,
                "gflow_wall": gf.get(best),
                "diffrax_tsit5_wall": plain,
                "scipy_wall": sci,
                "speedup_vs_diffrax": None if not (best and plain) else plain / gf[best],
                "speedup_vs_scipy": None if not (best and sci) else sci / gf[best],
            }
        results["widths"][str(m)] = {"tools": per_tool, "summary": summary}
        print(json.dumps({m: summary}, indent=1), flush=True)
    results["meta"] = {
        "problem": f"two-layer MF tanh, n={N}, d={D}, eta=m, t1={T1}, 4 save times",
        "reference": "gflow dopri8 rtol=atol=1e-13, same start",
        "repeats": args.repeats,
        "tols": TOLS,
        "versions": {
            "jax": jax.__version__,
            "diffrax": diffrax.__version__,
            "python": sys.version.split()[0],
            "gflow": gflow.__version__,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
