"""How should one device run an ensemble's members: one batched loop (vmap) or one member
after the other (lax.map)?  The measurement behind `simulate_ensemble(members="auto")`.

Problem: B two-layer mean-field tanh networks (W and c trained, eta = m, seeds 0..B-1) on
one synthetic dataset (n points in d dimensions), Tsit5 at rtol 1e-8, atol 1e-10, 101 save
times. Per case and per way of running the members, as a user pays it:

- `first_call_s`: the first `simulate_mse_ensemble` call (compile included);
- `call_s`: the best of 3 further calls with new seeds (the program is reused);
- `run_s`: the best inner run time of those calls; steps of the slowest member and of all
  members together (the batched loop steps B x slowest, the mapped one the sum).

Next to them, the simplest thing a user would write: one jitted `jax.vmap` of a plain
diffrax Tsit5 solve of the same flow (same controller, same save times), timed the same way.
Verdict rule (stated before measuring): "auto" is right for a case when the mode it picks
has the lower `call_s`, or is within 10% of the other.

    python benchmarks/ensemble_members.py [--quick]
        # writes benchmarks/results/ensemble_members.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (n, d, m, B, t1)
    (8, 4, 16, 16, 20.0),
    (8, 4, 32, 16, 20.0),
    (32, 4, 64, 16, 20.0),
    (32, 8, 128, 16, 20.0),
    (64, 16, 256, 4, 10.0),
    (256, 32, 2048, 4, 40.0),
]
QUICK = [(8, 4, 16, 8, 5.0), (32, 4, 64, 4, 5.0)]


def _plain(n, d, m, seeds, t1, data, ts):
    """A jitted vmap of a plain diffrax Tsit5 solve (the user's own 20 lines)."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import gflow

    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def solve(model):
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def field(t, p, args):
            def loss(p):
                return 0.5 * jnp.mean((eqx.combine(p, static)(x) - y) ** 2)

            return jax.tree.map(lambda g: -m * g, jax.grad(loss)(p))

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            params,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10, dtmin=None),
            saveat=diffrax.SaveAt(ts=ts),
            max_steps=200_000,
        )
        return sol.stats["num_steps"]

    run = eqx.filter_jit(eqx.filter_vmap(solve))
    build = lambda k: gflow.TwoLayer(d, m, scaling="mf", key=k)  # noqa: E731
    models = [gflow.ensemble_models(build, [s + 100 * r for s in seeds]) for r in range(4)]
    start = time.perf_counter()
    jax.block_until_ready(run(models[0]))
    first = time.perf_counter() - start
    calls = []
    for model in models[1:]:
        start = time.perf_counter()
        steps = jax.block_until_ready(run(model))
        calls.append(time.perf_counter() - start)
    return {"first_call_s": first, "call_s": min(calls), "max_steps": int(steps.max())}


def one_case(n, d, m, b, t1) -> dict:
    import numpy as np

    import gflow

    data = gflow.make_synthetic(n, d, n_test=0, seed=0)
    ts = np.linspace(0.0, t1, 101)
    build = lambda k: gflow.TwoLayer(d, m, scaling="mf", key=k)  # noqa: E731
    row = {"n": n, "d": d, "m": m, "members": b, "t1": t1, "n_params": d * m + m}
    for mode in ("vmap", "sequential", "auto"):
        calls, runs = [], []
        for r in range(4):
            seeds = [s + 100 * r for s in range(b)]
            start = time.perf_counter()
            ens = gflow.simulate_mse_ensemble(
                build, data, t1, seeds=seeds, members=mode, ts=ts, rtol=1e-8, atol=1e-10
            )
            wall = time.perf_counter() - start
            if r == 0:
                first = wall
            else:
                calls.append(wall)
                runs.append(ens.stats["run_seconds"])
        steps = np.asarray(ens.stats["num_steps"])
        row[mode] = {
            "resolved": ens.settings["members"],
            "first_call_s": first,
            "call_s": min(calls),
            "run_s": min(runs),
            "max_steps": int(steps.max()),
            "sum_steps": int(steps.sum()),
            "final_loss": [float(v) for v in ens.loss[:, -1]],
        }
    row["plain_diffrax_vmap"] = _plain(n, d, m, list(range(b)), t1, data, ts)
    assert row["vmap"]["sum_steps"] == row["sequential"]["sum_steps"], row
    chosen = row["auto"]["resolved"]
    other = "vmap" if chosen == "sequential" else "sequential"
    row["sequential_over_vmap_call"] = row["sequential"]["call_s"] / row["vmap"]["call_s"]
    row["auto_right"] = row[chosen]["call_s"] <= 1.1 * row[other]["call_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    from gflow_bench._common import save

    rows = []
    for case in QUICK if args.quick else CASES:
        row = one_case(*case)
        rows.append(row)
        print(
            f"n={row['n']} d={row['d']} m={row['m']} B={row['members']} P={row['n_params']}: "
            f"call vmap {row['vmap']['call_s']:.3f} s, sequential "
            f"{row['sequential']['call_s']:.3f} s, plain diffrax vmap "
            f"{row['plain_diffrax_vmap']['call_s']:.3f} s; auto -> {row['auto']['resolved']}"
            f" ({'right' if row['auto_right'] else 'WRONG'})",
            flush=True,
        )
    result = {
        "benchmark": "ensemble_members",
        "quick": args.quick,
        "rows": rows,
        "auto_right_in": f"{sum(r['auto_right'] for r in rows)} of {len(rows)} cases",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    name = "ensemble_members_quick" if args.quick else "ensemble_members"
    path = save(result, args.out, name)  # adds versions, CPU and load (machine())
    print(result["auto_right_in"], "->", path)


if __name__ == "__main__":
    main()
