"""Print the Markdown tables of docs/benchmarks.md from benchmarks/results/*.json.

python benchmarks/tables.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x, fmt=".3g"):
    return "n/a" if x is None else format(x, fmt)


def main(folder: str = "benchmarks/results") -> None:
    d = Path(folder)
    load = {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}
    if "gd_vs_flow" in load:
        r = load["gd_vs_flow"]
        print("| problem | P | order GD-to-flow | order GD-to-modified |")
        print("|---|---|---|---|")
        for o in r["orders"]:
            print(
                f"| {o['problem']} | {o['n_params']} | {o['order_gd_to_flow']:.3f} | "
                f"{o['order_gd_to_modified']:.3f} |"
            )
        e = r["edge_of_stability"]
        print(f"\nlambda_max(diag(eta) H) at init: {e['lambda_max_at_init']:.4g}\n")
        print("| h x lambda0 / 2 | h | lambda_max range along GF | departure time (10%) |")
        print("|---|---|---|---|")
        for run in e["runs"]:
            lam = run["lambda_max_flow"]
            print(
                f"| {run['h_times_lambda0_over_2']} | {run['h']:.4g} | "
                f"{min(lam):.4g} - {max(lam):.4g} | {_f(run['departure_time'])} |"
            )
    if "work_precision" in load:
        r = load["work_precision"]
        print(f"\nwork-precision, P = {r['problem']['n_params']}")
        print("| solver | tol or dt | error | grad evals | HVPs | grad-equivalents | wall s |")
        print("|---|---|---|---|---|---|---|")
        for name, rows in r["curves"].items():
            for x in rows:
                k = "tol" if "tol" in x else "dt"
                print(
                    f"| {name} | {k}={x[k]:.3g} | {_f(x['error'])} | {x['grad_evals']} | "
                    f"{x['hvp_evals']} | {x['grad_equivalents']:.0f} | "
                    f"{x['run_seconds']:.4f} |"
                )
        print("\nat error 1e-6:")
        for k, v in r["at_target"].items():
            print(f"- {k}: {_f(v['grad_equivalents'])} grad-equivalents, {_f(v['run_seconds'])} s")
        print(f"- gd: {r['gd_at_target']}")
        print(f"- GD / best = {r['gd_over_best_evals']:.0f}x")
    if "stiff" in load:
        for k, case in load["stiff"]["cases"].items():
            print(f"\nstiff, {k} spectrum, P = {case['n_params']}")
            print("| solver | tol | error | steps | grad evals | HVPs | grad-equivalents |")
            print("|---|---|---|---|---|---|---|")
            for name, rows in case["curves"].items():
                for x in rows:
                    print(
                        f"| {name} | {x['tol']:.0e} | {_f(x['error'])} | {x['num_steps']} | "
                        f"{x['grad_evals']} | {x['hvp_evals']} | "
                        f"{x['grad_equivalents']:.0f} |"
                    )
            for x in case["at_equal_error"]:
                print(
                    f"- error {x['error']:g}: Tsit5 {_f(x['tsit5'])}, implicit "
                    f"{_f(x['implicit'])}, ratio {_f(x['ratio_tsit5_over_implicit'])}"
                )
    if "peers" in load:
        for w in load["peers"]["widths"]:
            print(f"\npeers, width {w['width']} (P = {w['n_params']})")
            print("| tool | tol | error | grad evals | wall s |")
            print("|---|---|---|---|---|")
            for name, rows in w["curves"].items():
                if not isinstance(rows, list):
                    print(f"| {name} | {rows} | | | |")
                    continue
                for x in rows:
                    print(
                        f"| {name} | {x['tol']:.0e} | {_f(x['error'])} | {x['grad_evals']} "
                        f"| {x['run_seconds']:.4f} |"
                    )
            for x in w["at_equal_error"]:
                print(
                    f"- error {x['error']:g}: {json.dumps(x['seconds'])}; speedup vs best "
                    f"peer {_f(x['speedup_vs_best_peer'])}"
                )
    if "roofline" in load:
        r = load["roofline"]
        lim = r["limits"]
        print(
            f"\nmatmul {lim['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, read bandwidth "
            f"{lim['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s, read+write "
            f"{lim['read_write_bandwidth_bytes_per_s'] / 1e9:.2f} GB/s"
        )
        print(
            "| width | solver | P | step FLOPs | step bytes | measured step s | roofline s "
            "| ratio |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for x in r["rows"]:
            print(
                f"| {x['width']} | {x.get('solver', 'Tsit5')} | {x['n_params']} | "
                f"{x['step_flops']:.3g} | "
                f"{x['step_bytes']:.3g} | {x['measured_step_seconds']:.4g} | "
                f"{x['roofline_step_seconds']:.4g} | {x['step_over_roofline']:.2f} |"
            )
    if "latency" in load:
        r = load["latency"]
        print(
            f"\nlatency: compile median {r['median_compile_seconds']:.2f} s, first call "
            f"{r['median_first_call_seconds']:.2f} s, runs {r['runs']}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
