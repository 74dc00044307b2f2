"""`gflow reproduce NAME|all [--quick] [--seeds K] [--out DIR]`."""

from __future__ import annotations

import argparse

from .._experiments._spec import EXPERIMENTS
from . import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a claim of the paper (figures, summary.json); resumable",
        description=(
            "Run one of the paper's experiments (or all of them) as a sweep of vmapped seed "
            "ensembles, then draw its figure (PNG, PDF) and write OUT/NAME/summary.json. "
            "Finished sweep points are stored in OUT/NAME/points and reused when the "
            "command is run again. Experiments: "
            + ", ".join(EXPERIMENTS)
            + ". See docs/reproduction.md."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", help="experiment name, or 'all'")
    p.add_argument(
        "--quick", action="store_true", help="reduced size (a few minutes per experiment)"
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds per ensemble (default: the config's)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder; results go to OUT/NAME (None: runs/reproduce/full or .../quick)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name != "all" and args.name not in EXPERIMENTS:
        raise ValueError(
            f"name: unknown experiment {args.name!r}; use one of {list(EXPERIMENTS)} or 'all'."
        )
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds: must be an integer >= 1, got {args.seeds}.")
    from .._experiments._reproduce import reproduce

    size = "quick" if args.quick else "full"
    names = EXPERIMENTS if args.name == "all" else (args.name,)
    for name in names:
        summary = reproduce(name, size=size, seeds=args.seeds, out=args.out)
        print(
            f"{name}: {summary['n_computed']} points computed, {summary['n_reused']} reused, "
            f"{summary['wall_seconds_this_call']:.1f} s; wrote {', '.join(summary['figures'])} "
            "and summary.json"
        )
    return 0
