"""`gflow bench [--quick] [--out DIR]`: the solver benchmarks of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import HelpFormatter


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
        formatter_class=HelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: a new folder runs/bench-YYYYMMDD-HHMMSS, so the "
        "committed benchmarks/results are never overwritten; pass --out benchmarks/results "
        "to regenerate them)",
    )
    p.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these benchmarks"
    )
    p.add_argument("--figures", default=None, help="figure folder (default: --out)")
    p.set_defaults(func=run)


def find_suite() -> Path:
    """The repository's benchmarks/ folder (it holds the `gflow_bench` package): the one
    in the current folder, else the one beside the installed (editable) gflow package."""
    import gflow

    for root in (Path.cwd(), Path(gflow.__file__).resolve().parents[1]):
        if (root / "benchmarks" / "gflow_bench" / "__init__.py").is_file():
            return root / "benchmarks"
    raise ValueError(
        "gflow bench: the benchmark code lives in the repository's benchmarks/ folder, "
        "which was not found here nor beside the installed gflow; run it from a clone of "
        "the repository (python benchmarks/run.py, or gflow bench from its root)."
    )


def fresh_bench_folder(root: str | Path = "runs") -> Path:
    """A folder that does not exist yet: root/bench-YYYYMMDD-HHMMSS (with -2, -3, ... when
    taken)."""
    base = Path(root) / time.strftime("bench-%Y%m%d-%H%M%S")
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def run(args: argparse.Namespace) -> int:
    suite = str(find_suite())
    if suite not in sys.path:
        sys.path.insert(0, suite)
    from gflow_bench._run import run_all, summary

    out = fresh_bench_folder() if args.out is None else args.out
    print(f"writing benchmark results to {out}")
    results = run_all(out, quick=args.quick, only=args.only, figures=args.figures)
    for line in summary(results):
        print(line)
    return 0
