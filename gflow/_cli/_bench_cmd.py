"""`gflow bench [--quick] [--out DIR]`: the solver benchmarks of docs/benchmarks.md."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark solvers: GD vs flow, work-precision, peers, roofline, latency, stiff",
        description=(
            "Run gflow's benchmarks and write one JSON per benchmark and PNG figures into "
            "DIR: gd_vs_flow (GD vs gradient flow vs modified flow orders, edge of "
            "stability), work_precision (error vs gradient evaluations and wall time), "
            "peers (torchdiffeq dopri5 and scipy DOP853 at equal tolerance; torch needs "
            "pip install 'gflow[bench]'), roofline (machine FLOP/s and bandwidth vs one RK "
            "step), latency (first-call compile), stiff (implicit matrix-free vs Tsit5). "
            "--quick runs small sizes in a few minutes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    p.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these benchmarks"
    )
    p.add_argument("--figures", default=None, help="figure folder (default: --out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._bench._run import run_all, summary

    results = run_all(args.out, quick=args.quick, only=args.only, figures=args.figures)
    for line in summary(results):
        print(line)
    return 0
