"""`gflow sweep SWEEP.toml --out DIR [--workers N | --scheduler ADDRESS]`."""

from __future__ import annotations

import argparse

from . import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of configurations (widths, d, n, scalings, seeds, solvers) on Dask",
        description=(
            "Expand the [grid] of SWEEP.toml over its base run config and run every point "
            "with `gflow run`'s engine on Dask distributed: a local cluster of --workers "
            "processes by default, or the cluster behind --scheduler ADDRESS (e.g. a "
            "dask-jobqueue / Slurm scheduler). Points already finished in DIR are skipped; a "
            "failed point is recorded in DIR/points/ID/error.json and retried on the next "
            "run. Writes DIR/points/ID/ (result files of each point), DIR/summary.csv and "
            "DIR/sweep.json. Format: docs/scaling.md."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("sweep", help="sweep TOML file (name, base, [grid])")
    p.add_argument("--out", default="runs/sweep", help="output folder")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: CPU cores); 0 runs the points serially here",
    )
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    if args.workers is not None and args.workers < 0:
        raise ValueError(
            f"--workers: must be >= 1 (Dask processes) or 0 (serial), got {args.workers}."
        )
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("--workers: not used with --scheduler (the cluster has its workers).")
    points = sweep.points()
    if args.dry_run:
        for p in points:
            print(p.id)
        print(f"{len(points)} points")
        return 0
    rows = run_sweep(sweep, args.out, workers=args.workers, scheduler=args.scheduler)
    return 1 if any(r["status"] == "failed" for r in rows) else 0
