"""Toward the mean-field limit: trajectories of two-layer MF networks of width m approach
the infinite-width trajectory like m^-1/2.

For each width m, an ensemble of B seeds is simulated as one vmapped solve
(`simulate_mse_ensemble`) on the same data, recording the predictions f_t(x) on test
inputs at common save times t in [0, T]. The reference trajectory is the mean over B seeds
at the widest width M (its own error ~ (B M)^-1/2). The distance of member b at width m is

    D_b(m) = sqrt( mean_{t, x} (f_t^{(m, b)}(x) - fbar_t^{(M)}(x))^2 ),

D(m) is its mean over the seeds, and the slope of log D(m) against log m is fitted by least
squares, with a 95% interval from a bootstrap over the seeds (resampling members of every
width, reference included). The mean-field CLT predicts slope -1/2.

    python benchmarks/mf_limit.py            # writes benchmarks/results/mf_limit.json and
                                             # docs/figures/mf_limit.png
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import gflow
from gflow._io import versions, write_json


def distances(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(B, k, n_test) predictions vs (k, n_test) reference -> (B,) RMS distances."""
    return np.sqrt(np.mean((f - ref[None]) ** 2, axis=(1, 2)))


def fit_slope(ms: np.ndarray, dist: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of log dist against log m."""
    slope, intercept = np.polyfit(np.log(ms), np.log(dist), 1)
    return float(slope), float(intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--ref-width", type=int, default=65536)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--t1", type=float, default=20.0)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/mf_limit.json")
    parser.add_argument("--figure", default="docs/figures/mf_limit.png")
    args = parser.parse_args()

    data = gflow.make_synthetic(args.n, args.d, n_test=args.n_test, seed=123)
    import jax.numpy as jnp

    x_test = jnp.asarray(data.x_test)
    ts = np.linspace(0.0, args.t1, 41)
    seeds = list(range(args.seeds))
    preds, losses, timing = {}, {}, {}
    for m in [*args.widths, args.ref_width]:
        start = time.perf_counter()
        ens = gflow.simulate_mse_ensemble(
            lambda key, m=m: gflow.TwoLayer(args.d, m, scaling="mf", key=key),
            data,
            args.t1,
            seeds=[1000 * m + s for s in seeds],
            ts=ts,
            metrics={"f_test": lambda model: model(x_test)},
        )
        if not np.all(ens.success):
            raise RuntimeError(f"width {m}: {ens.results}")
        preds[m], losses[m] = ens.metrics["f_test"], ens.loss
        timing[m] = {
            "compile_seconds": ens.stats["compile_seconds"],
            "run_seconds": ens.stats["run_seconds"],
            "wall_seconds": time.perf_counter() - start,
            "max_steps_taken": int(ens.stats["num_steps"].max()),
        }
        print(f"width {m}: {ens.summary()}", flush=True)

    ms = np.array(args.widths, dtype=float)
    ref = preds[args.ref_width].mean(axis=0)
    per_seed = np.stack([distances(preds[m], ref) for m in args.widths])  # (W, B)
    mean_d = per_seed.mean(axis=1)
    slope, intercept = fit_slope(ms, mean_d)

    rng = np.random.default_rng(0)
    boot = np.empty(args.bootstrap)
    b = len(seeds)
    for i in range(args.bootstrap):
        ref_i = preds[args.ref_width][rng.integers(0, b, b)].mean(axis=0)
        d_i = [distances(preds[m][rng.integers(0, b, b)], ref_i).mean() for m in args.widths]
        boot[i] = fit_slope(ms, np.array(d_i))[0]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    consistent = bool(lo <= -0.5 <= hi)
    print(
        f"slope of log D vs log m: {slope:.3f}, 95% bootstrap interval [{lo:.3f}, {hi:.3f}] "
        f"(mean-field CLT: -0.5; {'consistent' if consistent else 'NOT consistent'})"
    )

    result = {
        "benchmark": "mf_limit",
        "widths": args.widths,
        "ref_width": args.ref_width,
        "seeds": args.seeds,
        "n": args.n,
        "d": args.d,
        "n_test": args.n_test,
        "t1": args.t1,
        "save_times": ts,
        "distance": "RMS over save times and test inputs of f_t^(m) - mean-over-seeds f_t^(M)",
        "distance_mean": mean_d,
        "distance_per_seed": per_seed,
        "slope": slope,
        "intercept": intercept,
        "slope_ci95_bootstrap": [float(lo), float(hi)],
        "bootstrap_samples": args.bootstrap,
        "expected_slope": -0.5,
        "consistent_with_expected": consistent,
        "final_loss_mean": {str(m): float(np.mean(losses[m][:, -1])) for m in losses},
        "timing": {str(m): t for m, t in timing.items()},
        "solver": "Tsit5, rtol 1e-8, atol 1e-10 (simulate defaults)",
        "machine": f"{os.cpu_count()} CPU cores, shared with other jobs while measuring",
        "versions": versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    plot(args.figure, ms, per_seed, slope, intercept, (lo, hi), ts, preds, args)
    print(f"wrote {args.out} and {args.figure}")


def plot(path, ms, per_seed, slope, intercept, ci, ts, preds, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    mean_d = per_seed.mean(axis=1)
    err = per_seed.std(axis=1, ddof=1) / np.sqrt(per_seed.shape[1])
    ax.errorbar(ms, mean_d, yerr=err, fmt="o", label=f"D(m), mean of {per_seed.shape[1]} seeds")
    grid = np.geomspace(ms[0], ms[-1], 50)
    ax.loglog(grid, np.exp(intercept) * grid**slope, "-", label=f"fit: slope {slope:.3f}")
    ax.loglog(
        grid, mean_d[0] * (grid / ms[0]) ** -0.5, "--", color="gray", label="slope -1/2 (MF CLT)"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel(f"RMS distance to width {args.ref_width} (t <= {args.t1:g})")
    ax.set_title(f"slope {slope:.3f}, 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]")
    ax.legend(fontsize=8)
    for m in (int(ms[0]), int(ms[-1]), args.ref_width):
        ax2.plot(ts, preds[m][0, :, 0], label=f"m = {m}, seed 0")
    ax2.plot(ts, preds[args.ref_width][:, :, 0].mean(axis=0), "k--", label="reference mean")
    ax2.set_xlabel("time t")
    ax2.set_ylabel("f_t(x) at one test input")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
