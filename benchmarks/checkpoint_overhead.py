"""Cost of segmented, checkpointed integration on the default `gflow run` problem.

Compares, on the built-in default config (two-layer mean-field net, m = 1024, d = 64,
n = 32, t1 = 400, Tsit5, rtol 1e-8):
    plain      one diffrax solve over [0, t1] (`simulate` without a checkpoint)
    segmented  20 segments, checkpoint interval 60 s (no file written: the run is short)
    every      20 segments, a checkpoint written after every segment
Reports solver steps, gradient evaluations, compile and run seconds (median of repeats,
each a fresh compile), and the largest difference of the final state from the plain
solve. Writes benchmarks/results/checkpoint_overhead.json.

    PYTHONPATH=. python benchmarks/checkpoint_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

import gflow
from gflow._config import build_data, build_model, default_config
from gflow._flow._times import default_ts
from gflow._io import versions


def run(kind: str, cfg: dict, tmp: Path):
    fc = cfg["flow"]
    ts = default_ts(0.0, fc["t1"], n_linear=fc["n_save"] // 2 + 1, n_log=fc["n_save"] // 2 + 1)
    ck = None
    if kind != "plain":
        every = 60.0 if kind == "segmented" else 0.0
        ck = gflow.Checkpoint(tmp / f"{kind}.npz", every_seconds=every, segments=20)
    return gflow.simulate_mse(
        build_model(cfg),
        build_data(cfg),
        fc["t1"],
        ts=ts,
        rtol=fc["rtol"],
        atol=fc["atol"],
        checkpoint=ck,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/checkpoint_overhead.json")
    args = parser.parse_args()
    cfg = default_config()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sols = {}
        for kind in ("plain", "segmented", "every"):
            reps = [run(kind, cfg, Path(tmp)) for _ in range(args.repeats)]
            sols[kind] = reps[0]
            rows[kind] = {
                "num_steps": reps[0].stats["num_steps"],
                "grad_evals": reps[0].stats["grad_evals"],
                "compile_seconds_median": statistics.median(
                    r.stats["compile_seconds"] for r in reps
                ),
                "run_seconds_median": statistics.median(r.stats["run_seconds"] for r in reps),
                "run_seconds_all": [r.stats["run_seconds"] for r in reps],
                "checkpoints_written": reps[0].stats.get("checkpoints_written", 0),
                "repeats_bitwise_equal": all(
                    np.array_equal(r.theta_final, reps[0].theta_final) for r in reps
                ),
            }
        ref = sols["plain"]
        for kind, sol in sols.items():
            rows[kind]["max_abs_theta_diff_vs_plain"] = float(
                np.max(np.abs(sol.theta_final - ref.theta_final))
            )
            rows[kind]["max_rel_loss_diff_vs_plain"] = float(
                np.max(np.abs(sol.loss - ref.loss) / ref.loss)
            )
    for kind in ("segmented", "every"):
        rows[kind]["run_ratio_vs_plain"] = (
            rows[kind]["run_seconds_median"] / rows["plain"]["run_seconds_median"]
        )
        rows[kind]["steps_ratio_vs_plain"] = rows[kind]["num_steps"] / rows["plain"]["num_steps"]
    out = {"config": cfg, "results": rows, "versions": versions(), "repeats": args.repeats}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
