"""Run gflow's benchmarks (the same code as `gflow bench`) and write JSON + figures.

    python benchmarks/run.py                  # full sizes -> benchmarks/results/, docs/figures/
    python benchmarks/run.py --quick --out /tmp/b
    python benchmarks/run.py --only peers roofline

Benchmarks: gd_vs_flow, work_precision, stiff, peers, roofline, latency (see
docs/benchmarks.md). The peers benchmark needs the `bench` extra (torch, torchdiffeq):
pip install 'gflow[bench]'.
"""

from __future__ import annotations

import argparse

from gflow_bench._run import BENCHMARKS, run_all, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    args = parser.parse_args()
    results = run_all(args.out, quick=args.quick, only=args.only, figures=args.figures)
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main()
