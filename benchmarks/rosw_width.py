"""Rosenbrock-W (`solver="rosw"`) at large width: does it scale like the explicit path in
P, and does its memory stay within O(n P + state vectors)?

Problem: a two-layer mean-field tanh network (W and c trained, eta = m) on n = 256
teacher points in d = 2 (a stiff flow: d << n), widths m = 1e3, 1e4, 1e5 (P = 3 m).
For every width, in its own process (so that the peak resident memory is that width's):

- rosw: `simulate_mse(..., solver="rosw", rtol, atol)` over [0, t1];
- tsit5: the same problem over [0, t1] with Tsit5 at the same tolerances.

Recorded per width and solver: wall of the whole call, compile and run seconds, steps,
gradient-equivalents (gradients + Jacobian rows), Jacobian refreshes, run seconds per step
and per gradient-equivalent, the final loss, and the process's peak RSS next to the
predicted size of the Gauss-Newton Jacobian n P (8 bytes each). "Scales like the explicit
path" is read as: run seconds per step of rosw / of tsit5 stays within a constant factor
as P grows 100x (a P^2 or n P^2 cost would show as a ratio growing with m).

    python benchmarks/rosw_width.py [--widths 1000 10000 100000] [--t1 20]
        # writes benchmarks/results/rosw_width.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from _subprocess_row import emit, run_row, show

ROOT = Path(__file__).resolve().parents[1]


def one(width: int, solver: str, t1: float, n: int, d: int, rtol: float, atol: float) -> dict:
    import jax

    import gflow

    start = time.perf_counter()
    data = gflow.make_synthetic(n, d, n_test=0, seed=0)
    model = gflow.TwoLayer(d, width, scaling="mf", key=jax.random.key(0))
    sol = gflow.simulate_mse(
        model, data, t1, solver=solver, rtol=rtol, atol=atol, max_steps=1_000_000
    )
    wall = time.perf_counter() - start
    st = sol.stats
    p = sol.settings["n_params"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    steps = int(st["num_steps"])
    ge = st.get("grad_equivalents")
    return {
        "width": width,
        "solver": solver,
        "n_params": p,
        "n": n,
        "d": d,
        "t1": t1,
        "result": sol.result,
        "t_final": sol.t_final,
        "loss0": float(sol.loss[0]),
        "loss_final": float(sol.loss[-1]),
        "steps": steps,
        "rejected": int(st["num_rejected_steps"]),
        "grad_equivalents": ge,
        "jacobian_rows": st.get("jacobian_rows"),
        "jacobian_refreshes": st.get("jacobian_refreshes"),
        "wall_seconds": wall,
        "compile_seconds": st["compile_seconds"],
        "run_seconds": st["run_seconds"],
        "run_seconds_per_step": st["run_seconds"] / max(steps, 1),
        "run_seconds_per_grad_equivalent": None if not ge else st["run_seconds"] / ge,
        "peak_rss_bytes": rss,
        "jacobian_bytes_predicted": 8 * n * p,
        "state_bytes": 8 * p,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--solvers", nargs="+", default=["rosw", "tsit5"])
    ap.add_argument("--t1", type=float, default=20.0)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--one", nargs=2, metavar=("WIDTH", "SOLVER"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rosw_width.json"))
    args = ap.parse_args()
    if args.one:
        row = one(int(args.one[0]), args.one[1], args.t1, args.n, args.d, args.rtol, args.atol)
        emit(row)
        return
    rows, start = [], time.perf_counter()
    load = os.getloadavg()
    for width in args.widths:
        for solver in args.solvers:
            cmd = [sys.executable, __file__, "--one", str(width), solver, "--t1", str(args.t1)]
            cmd += ["--n", str(args.n), "--d", str(args.d), "--rtol", str(args.rtol)]
            cmd += ["--atol", str(args.atol)]
            row = run_row(cmd, {"width": width, "solver": solver})
            rows.append(row)
            show(
                row,
                (
                    "width",
                    "solver",
                    "steps",
                    "grad_equivalents",
                    "wall_seconds",
                    "run_seconds",
                    "run_seconds_per_step",
                    "loss_final",
                    "peak_rss_bytes",
                    "error",
                ),
            )
    ratio = {}
    for width in args.widths:
        by = {r["solver"]: r for r in rows if r["width"] == width and "error" not in r}
        if "rosw" in by and "tsit5" in by:
            ratio[str(width)] = {
                "per_step_rosw_over_tsit5": by["rosw"]["run_seconds_per_step"]
                / by["tsit5"]["run_seconds_per_step"],
                "run_tsit5_over_rosw": by["tsit5"]["run_seconds"] / by["rosw"]["run_seconds"],
                "grad_equivalents_tsit5_over_rosw": (
                    by["tsit5"]["grad_equivalents"] / by["rosw"]["grad_equivalents"]
                    if by["tsit5"]["grad_equivalents"] and by["rosw"]["grad_equivalents"]
                    else None
                ),
            }
    import gflow._io as io

    out = {
        "benchmark": "rosw_width",
        "settings": vars(args) | {"one": None},
        "rows": rows,
        "ratios": ratio,
        "wall_seconds": time.perf_counter() - start,
        "load_average_at_start": load,
        "versions": io.versions(),
        "machine": {"cpus": os.cpu_count()},
    }
    io.write_json(Path(args.out), out)
    print(json.dumps(ratio, indent=1))


if __name__ == "__main__":
    main()
