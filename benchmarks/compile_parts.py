"""What each part of a solve adds to its first compile (issue 12: "measure where the time
goes ... how much the save function, events, progress meter, checkpoint carry add").

The built-in default problem (`gflow run`'s: two-layer MF network, Tsit5, 201 save times,
test-loss metric) is solved once per variant, each in a fresh process with JAX's
persistent cache off, and its solve program(s) traced, lowered and XLA-compiled as three
timed steps (the same calls gflow's compile cache makes). Variants change one thing from
the base:

    base          simulate_mse as `gflow run` calls it, without a checkpoint
    no_metrics    no test-loss metric at the save times
    two_saves     2 save times instead of 201 (the save loop still exists)
    loss_target   a loss target (a diffrax Event, checked at every step)
    progress      diffrax's progress meter (host callbacks: JAX does not store the program)
    save_params   theta saved at every save time
    checkpoint    the segmented, checkpointed solve (`gflow run`'s path): both programs
    euler_fixed   gradient descent (Euler, constant step: no controller, no error
                  estimate), 800 steps
    plain_diffrax not gflow: the lines a user would write instead (`jax.jit` of
                  `diffrax.diffeqsolve`: Tsit5, diffrax's PIDController with the same
                  rtol/atol, SaveAt at the same 201 times, forward-mode adjoint), on the
                  same loss, parameters and data: the floor that diffrax's own solve
                  program sets, against which gflow's additions are measured

Writes benchmarks/results/compile_parts.json (or --out); medians over --repeats fresh
processes. Run from the repository root:
    python benchmarks/compile_parts.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _subprocess_row import emit, run_row, show  # noqa: E402

VARIANTS = (
    "base",
    "no_metrics",
    "two_saves",
    "loss_target",
    "progress",
    "save_params",
    "checkpoint",
    "euler_fixed",
    "plain_diffrax",
)


def plain_diffrax(problem, ts, t1: float, rtol: float, atol: float) -> dict:
    """Trace, lower and XLA-compile the plain jitted diffrax solve of the same flow:
    d params/dt = -eta * grad L(params, args), trainable leaves only."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    spec = eqx.is_inexact_array if problem.trainable is None else problem.trainable
    dyn, static = eqx.partition(problem.params, spec)
    scalar_eta = eqx.is_array_like(problem.eta) and jnp.ndim(problem.eta) == 0
    eta = problem.eta if scalar_eta else eqx.partition(problem.eta, spec)[0]

    def loss(d, args):
        return problem.loss(eqx.combine(d, static), args)

    def field(t, d, args):
        g = jax.grad(loss)(d, args)
        if scalar_eta:
            return jax.tree_util.tree_map(lambda gi: -eta * gi, g)
        return jax.tree_util.tree_map(lambda gi, e: -e * gi, g, eta)

    def solve(d, args, ts):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            d,
            args=args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
            adjoint=diffrax.ForwardMode(),
        )
        return sol.ys, sol.stats["num_steps"]

    ts = jnp.asarray(ts)
    t0 = time.perf_counter()
    traced = jax.jit(solve).trace(dyn, problem.args, ts)
    t_1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    exe = lowered.compile()
    t3 = time.perf_counter()
    ys, steps = exe(dyn, problem.args, ts)
    final = jax.tree_util.tree_map(lambda a: a[-1], ys)
    return {
        "fn": "plain_diffrax",
        "trace": t_1 - t0,
        "lower": t2 - t_1,
        "xla": t3 - t2,
        "stablehlo_lines": lowered.as_text().count("\n"),
        "num_steps": int(steps),
        "final_loss": float(loss(final, problem.args)),
    }


def child(variant: str) -> None:
    os.environ["GFLOW_COMPILE_CACHE"] = "0"
    start = time.perf_counter()
    import equinox as eqx
    import jax
    import numpy as np

    import gflow
    from gflow._config import build_data, build_model, default_config
    from gflow._flow import _cache
    from gflow._flow._problem import Problem
    from gflow._flow._times import default_ts

    programs: list[dict] = []

    def timed_compile(fn, spec):
        key, dyn, static = _cache.structure_key(fn, spec)
        t0 = time.perf_counter()
        with _cache.tracing():
            traced = jax.jit(lambda d: fn(eqx.combine(d, static))).trace(dyn)
        t1 = time.perf_counter()
        lowered = traced.lower()
        t2 = time.perf_counter()
        exe = lowered.compile()
        t3 = time.perf_counter()
        programs.append(
            {
                "fn": getattr(fn, "__name__", str(fn)),
                "trace": t1 - t0,
                "lower": t2 - t1,
                "xla": t3 - t2,
                "stablehlo_lines": lowered.as_text().count("\n"),
            }
        )
        return exe, dyn, "compiled", t3 - t0

    _cache.compile_for = timed_compile
    # the segmented path imported compile_for by name
    from gflow._flow import _segments

    _segments.compile_for = timed_compile

    cfg = default_config()
    data, model = build_data(cfg), build_model(cfg)
    fc = cfg["flow"]
    n_save = fc["n_save"]
    ts = default_ts(0.0, fc["t1"], n_linear=n_save // 2 + 1, n_log=n_save - n_save // 2)
    problem = Problem.from_model(model, data, fc["loss"])
    kwargs = dict(ts=ts, rtol=fc["rtol"], atol=fc["atol"])
    method, t1 = gflow.Flow(), fc["t1"]
    if variant == "no_metrics":
        problem = problem.replace(metrics={})
    elif variant == "two_saves":
        kwargs["ts"] = np.array([0.0, fc["t1"]])
    elif variant == "loss_target":
        kwargs["loss_target"] = 1e-30
    elif variant == "progress":
        kwargs["progress"] = True
    elif variant == "save_params":
        kwargs["save_params"] = True
    elif variant == "checkpoint":
        folder = tempfile.mkdtemp(prefix="gflow-compile-parts-")
        kwargs["checkpoint"] = gflow.Checkpoint(Path(folder) / "ck.npz")
    elif variant == "euler_fixed":
        method, t1 = gflow.GradientDescent(dt=0.05), 0.1 * fc["t1"]  # 800 steps
        kwargs = {}
    setup = time.perf_counter() - start
    if variant == "plain_diffrax":
        programs.append(plain_diffrax(problem, ts, t1, fc["rtol"], fc["atol"]))
        sol = None
    else:
        sol = gflow.solve(problem, t1, method=method, **kwargs)
    emit(
        {
            "variant": variant,
            "setup_seconds": setup,
            "programs": programs,
            "trace": sum(p["trace"] for p in programs),
            "lower": sum(p["lower"] for p in programs),
            "xla": sum(p["xla"] for p in programs),
            "total": sum(p["trace"] + p["lower"] + p["xla"] for p in programs),
            "stablehlo_lines": sum(p["stablehlo_lines"] for p in programs),
            "run_seconds": sol.stats["run_seconds"] if sol is not None else None,
            "num_steps": sol.stats["num_steps"] if sol is not None else programs[0]["num_steps"],
            # the same flow: the plain solve's final loss against gflow's
            "final_loss": float(sol.loss[-1]) if sol is not None else programs[0]["final_loss"],
        }
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile_parts.json"))
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return
    res: dict = {"loadavg_at_start": os.getloadavg(), "rows": []}
    wall0 = time.perf_counter()
    for rep in range(args.repeats):  # variants interleaved, so drift hits all alike
        for v in args.variants:
            row = run_row([sys.executable, __file__, "--child", v], {"variant": v})
            row["repeat"] = rep
            res["rows"].append(row)
            show(row, ("variant", "repeat", "trace", "lower", "xla", "total", "error"))
    summary = {}
    for v in args.variants:
        rows = [r for r in res["rows"] if r["variant"] == v and "error" not in r]
        if not rows:
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in ("trace", "lower", "xla", "total")}
        med["stablehlo_lines"] = rows[0]["stablehlo_lines"]
        med["n_programs"] = len(rows[0]["programs"])
        summary[v] = med
    if "base" in summary:
        for m in summary.values():
            m["total_minus_base"] = m["total"] - summary["base"]["total"]
    res["summary"] = summary
    import jax

    res["meta"] = {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_at_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - wall0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
