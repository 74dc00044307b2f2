"""Very wide network: a two-layer mean-field network of width m (default 1,000,000) on
n = 32 points in d = 64, simulated until the loss has dropped by a factor 1e-8.

Records wall time (compile and run separately), solver work, and peak memory, and checks
peak memory against the engine's budget

    (solver stages + 4) x state size + data,

where state size = P x 8 bytes (P = m (d + 1) float64 parameters). The 4 extra states are
the initial model, the flat initial state theta0, the per-entry time scale eta and the
final state; the stages are the Runge-Kutta stages of one step. Peak memory is the
process's peak resident set size (ru_maxrss) minus its size after importing JAX and gflow
(the runtime itself, not the problem). "data" counts the dataset and the (n, m)
activations of one forward and backward pass (3 arrays of n x m float64).

    python benchmarks/wide_network.py --out benchmarks/results/wide_network.json
    python benchmarks/wide_network.py --width 100000 --out /tmp/w.json   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

import gflow
from gflow._flow._simulate import evals_per_step
from gflow._io import versions, write_json


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def stages(solver) -> int:
    """Runge-Kutta stages kept during one step (the tableau's size)."""
    if isinstance(solver, gflow.LowStorageRK4):
        return solver.num_stages
    tableau = getattr(solver, "tableau", None)
    if tableau is not None:
        return int(tableau.num_stages)
    per = evals_per_step(solver)
    return 1 if per is None else per[0]


def program_memory(model, data, solver, args, target) -> dict[str, float]:
    """XLA's buffer assignment for the solve program, in units of one state vector:
    arguments (theta0, eta), outputs (final state), temporaries (stages, step, gradient).
    Shape-dependent only, so a smaller width gives the same ratios."""
    import jax

    from gflow._flow._flatten import flatten_problem
    from gflow._flow._simulate import make_solve_fn
    from gflow._problem import mse_problem

    loss_fn, _ = mse_problem(model, data)
    prob = flatten_problem(
        loss_fn, model, eta=model.eta(), trainable=model.trainable(), state=args.state
    )
    run = make_solve_fn(
        0.0,
        args.t1,
        solver=solver,
        stepsize_controller=gflow.PIDController(rtol=args.rtol, atol=args.atol),
        dt0=None,
        max_steps=200_000,
        loss_target=target,
    )
    ts = np.concatenate([[0.0], np.geomspace(1e-3, args.t1, 40)])
    ma = jax.jit(run).lower(prob, ts).compile().memory_analysis()
    state = prob.n_params * prob.dtype.itemsize
    return {
        "arguments": ma.argument_size_in_bytes / state,
        "outputs": ma.output_size_in_bytes / state,
        "temporaries": ma.temp_size_in_bytes / state,
        "total": (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)
        / state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--drop", type=float, default=1e-8, help="stop at loss0 * drop")
    parser.add_argument("--t1", type=float, default=1e4, help="time limit")
    parser.add_argument("--solver", default="lserk4", help="lserk4 (default) or tsit5, ...")
    parser.add_argument(
        "--state", default="tree", choices=["tree", "flat"], help="gflow.simulate(state=)"
    )
    # 1e-6: half the steps of 1e-8 (48 vs 102 at width 1e4), same stop within 3% in t
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/wide_network.json")
    parser.add_argument(
        "--program-memory-only",
        action="store_true",
        help="only compile and print XLA's memory analysis of the solve (in states)",
    )
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    rss_runtime = rss_bytes()
    wall0 = time.perf_counter()
    data = gflow.make_synthetic(args.n, args.d, n_test=0, seed=args.seed)
    model = gflow.TwoLayer(args.d, args.width, scaling="mf", key=jax.random.key(args.seed))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    loss0 = float(gflow.mse_loss(model, x, y))
    target = loss0 * args.drop
    solver = gflow.make_solver(args.solver)
    if args.program_memory_only:
        print(json.dumps(program_memory(model, data, solver, args, target), indent=1))
        return
    ts = np.concatenate([[0.0], np.geomspace(1e-3, args.t1, 40)])
    sol = gflow.simulate_mse(
        model,
        data,
        args.t1,
        ts=ts,
        solver=solver,
        rtol=args.rtol,
        atol=args.atol,
        loss_target=target,
        state=args.state,
    )
    wall = time.perf_counter() - wall0
    peak = peak_rss_bytes()
    # the loss at t_final (sol.loss ends at the last save time before the stop)
    loss_final = float(gflow.mse_loss(sol.final, x, y))

    n_params = int(sol.settings["n_params"])
    state = n_params * 8
    data_bytes = (data.x_train.nbytes + data.y_train.nbytes) + 3 * args.n * args.width * 8
    k = stages(solver)
    bound = (k + 4) * state + data_bytes
    used = peak - rss_runtime
    drop = loss_final / loss0
    result = {
        "benchmark": "wide_network",
        "width": args.width,
        "n": args.n,
        "d": args.d,
        "n_params": n_params,
        "state_bytes": state,
        "solver": type(solver).__name__,
        "state": args.state,
        "stages": k,
        "rtol": args.rtol,
        "atol": args.atol,
        "loss_initial": loss0,
        "loss_final": loss_final,
        "loss_drop": drop,
        "target_drop": args.drop,
        "reached_target": bool(sol.stopped_early),
        "result": sol.result,
        "t_final": sol.t_final,
        "num_steps": sol.stats["num_steps"],
        "num_rejected_steps": sol.stats["num_rejected_steps"],
        "grad_evals": sol.stats["grad_evals"],
        "save_evals": sol.stats["save_evals"],
        "compile_seconds": sol.stats["compile_seconds"],
        "run_seconds": sol.stats["run_seconds"],
        "run_seconds_per_step": sol.stats["run_seconds"] / max(sol.stats["num_steps"], 1),
        "wall_seconds": wall,
        "rss_runtime_bytes": rss_runtime,
        "peak_rss_bytes": peak,
        "peak_used_bytes": used,
        "memory_bound_bytes": bound,
        "peak_over_state": used / state,
        "within_bound": bool(used <= bound),
        "load_average_after": list(os.getloadavg()),
        "machine": f"{os.cpu_count()} CPU cores (see load_average_after for other load)",
        "versions": versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    gib = 2.0**30
    print(sol.summary())
    print(
        f"width {args.width}: P = {n_params:,} ({state / gib:.2f} GiB per state); loss drop "
        f"{drop:.2e} at t = {sol.t_final:.4g} in {wall:.0f} s wall "
        f"({sol.stats['compile_seconds']:.1f} s compile); peak memory {used / gib:.2f} GiB "
        f"= {used / state:.1f} states, bound {bound / gib:.2f} GiB ({k} stages + 4): "
        f"{'within' if used <= bound else 'OVER'}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
