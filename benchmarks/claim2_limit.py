"""Claim-2 d = 2 runs followed to loss 1e-12 (issue 15's target: within 2 minutes each).

The runs of `multilayer-any-d` (full size) at d = 2, the paper's model (head W: W trained,
c fixed) and head W + c (n = 16 separated inputs, D = m = 128, mean-field scaling), seeds
0-3 with
the experiment's own data and initializations. Each is followed with
`gflow.follow_to_limit(loss_tol=1e-12, solver="auto", residual_fn=...)` from t = 0 in
growing windows (t_first, then 4x each) up to t_max, in a fresh process (so each wall time
includes its compiles, as a user pays them).

    python benchmarks/claim2_limit.py [--seeds 0 1 2 3] [--heads W Wc] [--t-max 1e10]
        # writes benchmarks/results/claim2_limit.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _subprocess_row import emit, run_row, show

ROOT = Path(__file__).resolve().parents[1]


def one(
    seed: int, head: str, d: int, size: str, loss_tol: float, t_first: float, t_max: float
) -> dict:
    start = time.perf_counter()
    import jax

    import gflow
    from gflow._experiments._convergence import _builder, _dataset
    from gflow._experiments._spec import load_spec

    s = load_spec("multilayer-any-d", size)["settings"]
    data = _dataset(s, d, 1000 + seed)
    model = _builder("multilayer-any-d", s, d, head == "Wc")(jax.random.key(seed))
    loss_fn, _ = gflow.mse_problem(model, data)
    lim = gflow.follow_to_limit(
        loss_fn,
        model,
        eta=model.eta(),
        trainable=model.trainable(),
        residual_fn=gflow.mse_residual(model, data),
        loss_tol=loss_tol,
        grad_tol=1e-30,  # stop on the loss target (or t_max / a stall), not on |grad|
        stall_rtol=1e-6,
        t_first=t_first,
        t_max=t_max,
        solver="auto",
        rtol=float(s["rtol"]),
        atol=float(s["atol"]) * 1e-3,
        max_steps=int(s["max_steps"]),
    )
    return {
        "seed": seed,
        "head": head,
        "d": d,
        "loss0": float(loss_fn(model)),
        "loss": lim.loss,
        "grad_norm": lim.grad_norm,
        "t": lim.t,
        "stop_reason": lim.stop_reason,
        "classification": lim.classification,
        "lambda_min": lim.lambda_min,
        "lambda_max": lim.lambda_max,
        "windows": [list(w) for w in lim.windows],
        "grad_equivalents": lim.grad_equivalents,
        "reached": bool(lim.loss <= loss_tol),
        "wall_seconds": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--heads", nargs="+", default=["W", "Wc"], choices=["W", "Wc"])
    ap.add_argument("--d", type=int, default=2)
    ap.add_argument("--size", default="full")
    ap.add_argument("--loss-tol", type=float, default=1e-12)
    ap.add_argument("--t-first", type=float, default=1e3)
    ap.add_argument("--t-max", type=float, default=1e10)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "claim2_limit.json"))
    args = ap.parse_args()
    if args.one is not None:
        seed, head = int(args.one[0]), args.one[1]
        row = one(seed, head, args.d, args.size, args.loss_tol, args.t_first, args.t_max)
        emit(row)
        return
    rows, start, load = [], time.perf_counter(), os.getloadavg()
    for head, seed in [(h, s) for h in args.heads for s in args.seeds]:
        cmd = [sys.executable, __file__, "--one", str(seed), head, "--d", str(args.d)]
        cmd += ["--size", args.size, "--loss-tol", str(args.loss_tol)]
        cmd += ["--t-first", str(args.t_first), "--t-max", str(args.t_max)]
        t0 = time.perf_counter()
        row = run_row(cmd, {"seed": seed, "head": head})
        row["process_wall_seconds"] = time.perf_counter() - t0
        rows.append(row)
        show(
            row,
            (
                "seed",
                "head",
                "loss0",
                "loss",
                "t",
                "stop_reason",
                "classification",
                "grad_equivalents",
                "wall_seconds",
                "process_wall_seconds",
                "reached",
                "error",
            ),
        )
    import gflow._io as io

    io.write_json(
        Path(args.out),
        {
            "benchmark": "claim2_limit",
            "settings": {k: v for k, v in vars(args).items() if k not in ("one", "out")},
            "rows": rows,
            "all_reached_within_120_s": all(
                r.get("reached") and r["process_wall_seconds"] <= 120 for r in rows
            ),
            "wall_seconds": time.perf_counter() - start,
            "load_average_at_start": load,
            "versions": io.versions(),
        },
    )


if __name__ == "__main__":
    main()
