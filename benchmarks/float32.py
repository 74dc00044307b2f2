"""float32 vs float64: speed and accuracy of one gradient flow (docs/float32.md).

    python benchmarks/float32.py [--out benchmarks/results/float32.json]

Runs each case in a fresh process (GFLOW_X64 is read at import): the default two-layer
mean-field network (n = 32, d = 64, m = 1024, tanh) to t1 = 100, in float64 at rtol 1e-10
(the reference), float64 at the default rtol 1e-8, and float32 at rtol 1e-5, 1e-6 and the
default 1e-8 (below float32's resolution: gflow warns). Records steps, gradient
evaluations, compile and run seconds, the final loss, the largest relative error of L(t)
against the reference at the save times, and the fitted rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CASES = [
    ("64", 1e-10, 1e-12),
    ("64", 1e-8, 1e-10),
    ("32", 1e-5, 1e-7),
    ("32", 1e-6, 1e-8),
    ("32", 1e-8, 1e-10),
]

SETUP = r"""
import sys, jax, numpy as np, gflow
data = gflow.make_synthetic(32, 64, seed=0)
model = gflow.TwoLayer(64, 1024, key=jax.random.key(0))
leaves = [np.asarray(v, dtype=np.float32) for v in jax.tree_util.tree_leaves(model)]
np.savez(sys.argv[1], x=np.float32(data.x_train), y=np.float32(data.y_train),
         **{f"leaf{i}": v for i, v in enumerate(leaves)})
"""

CHILD = r"""
import json, sys, warnings, jax, jax.numpy as jnp, numpy as np, gflow
rtol, atol, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
z = np.load(path)  # the same float32-rounded initial state and data in every case
data = gflow.from_arrays(z["x"], z["y"])
shape = gflow.TwoLayer(64, 1024, key=jax.random.key(0))
leaves, tree = jax.tree_util.tree_flatten(shape)
model = jax.tree_util.tree_unflatten(tree, [jnp.asarray(z[f"leaf{i}"], dtype=jnp.result_type(float))
                                            for i in range(len(leaves))])
ts = np.linspace(0.0, 100.0, 101)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    sol = gflow.simulate_mse(model, data, 100.0, ts=ts, rtol=rtol, atol=atol, max_steps=20000)
    sol2 = gflow.simulate_mse(model, data, 100.0, ts=ts, rtol=rtol, atol=atol, max_steps=20000)
fit = gflow.fit_rate(sol.ts, sol.loss) if sol.success else None
print(json.dumps({
    "state_dtype": str(sol.theta_final.dtype),
    "result": sol.result, "steps": int(sol.stats["num_steps"]),
    "grad_evals": int(sol.stats["grad_evals"]),
    "compile_seconds": sol.stats["compile_seconds"],
    "run_seconds": sol2.stats["run_seconds"],
    "loss": [float(v) for v in sol.loss],
    "rate": None if fit is None else fit.rate,
    "warnings": sorted({str(x.message) for x in w if "resolution" in str(x.message)}),
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/float32.json")
    args = ap.parse_args()
    rows = []
    init = os.path.join(tempfile.mkdtemp(), "float32_init.npz")
    subprocess.run([sys.executable, "-c", SETUP, init], check=True)
    for x64, rtol, atol in CASES:
        env = {**os.environ, "GFLOW_X64": "1" if x64 == "64" else "0"}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(rtol), str(atol), init],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(x64=x64 == "64", rtol=rtol, atol=atol)
        rows.append(row)
        print(
            f"float{x64} rtol {rtol:g}: {row['result']}, {row['steps']} steps, "
            f"run {row['run_seconds']:.3f} s",
            flush=True,
        )
    import numpy as np

    ref = np.asarray(rows[0]["loss"])
    for row in rows:
        loss = np.asarray(row["loss"])
        k = min(loss.size, ref.size)
        row["max_rel_error"] = float(np.max(np.abs(loss[:k] / ref[:k] - 1)))
        row["final_loss"] = float(loss[-1])
        del row["loss"]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"note": "measured on a shared, loaded 2-core CPU", "cases": rows}, f, indent=1)
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
