"""`gflow reproduce NAME|all [--quick] [--seeds K] [--out DIR] [--jobs J]`.

'all --quick' runs its experiments in parallel processes (`--jobs`, default the CPU
cores, at most 4; the full size runs them in turn unless --jobs is given): each compiles
its own programs, and compiling is most of a quick run. Each experiment writes only
OUT/NAME; they share the compile caches on disk (gflow's program store writes by atomic
rename; a partly written entry of JAX's cache reads as a miss: JAX warns and compiles)."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time

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
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=(
            "with 'all': experiments run at once, each in its own process (default with "
            "--quick: the CPU cores, at most 4; at full size 1); 1 runs them in turn in "
            "this process"
        ),
    )
    p.set_defaults(func=run)


# The experiments of 'all', longest first (measured with --quick, 2 at once on 2 cores,
# 2026-12-03: 42, 35, 28 and 19 s), so that parallel jobs end close together.
LONGEST_FIRST = ("generalization", "multilayer-any-d", "feature-learning", "shallow-dn")


def default_jobs() -> int:
    return max(1, min(len(EXPERIMENTS), os.cpu_count() or 1))


def child_command(name: str, args: argparse.Namespace) -> list[str]:
    """The `gflow reproduce NAME ...` command line of one experiment of 'all'."""
    cmd = [sys.executable, "-m", "gflow._cli._main", "reproduce", name]
    cmd += ["--quick"] if args.quick else []
    cmd += [] if args.seeds is None else ["--seeds", str(args.seeds)]
    cmd += [] if args.out is None else ["--out", str(args.out)]
    return cmd


def run_parallel(commands: dict[str, list[str]], jobs: int, echo=print) -> dict[str, int]:
    """Run `commands` (name -> argv), at most `jobs` at once, in the given order; every
    output line is echoed with its name in front. Returns name -> exit code. On
    KeyboardInterrupt the running children get SIGINT (they stop cleanly; finished sweep
    points are kept) and the interrupt is re-raised."""
    lock = threading.Lock()
    codes: dict[str, int] = {}

    def one(name: str, argv: list[str]) -> None:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        running[name] = proc
        for line in proc.stdout:
            with lock:
                echo(f"[{name}] {line.rstrip()}")
        codes[name] = proc.wait()
        running.pop(name, None)

    running: dict[str, subprocess.Popen] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(one, name, argv) for name, argv in commands.items()]
        for f in futures:
            f.result()
    except KeyboardInterrupt:
        for proc in list(running.values()):
            proc.send_signal(signal.SIGINT)
        raise
    finally:  # experiments not yet started are not started
        pool.shutdown(wait=True, cancel_futures=True)
    return codes


def run(args: argparse.Namespace) -> int:
    if args.name != "all" and args.name not in EXPERIMENTS:
        raise ValueError(
            f"name: unknown experiment {args.name!r}; use one of {list(EXPERIMENTS)} or 'all'."
        )
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds: must be an integer >= 1, got {args.seeds}.")
    # Full size stays serial unless asked: its peak memory per experiment is not measured.
    jobs = (default_jobs() if args.quick else 1) if args.jobs is None else args.jobs
    if jobs < 1:
        raise ValueError(f"--jobs: must be an integer >= 1, got {args.jobs}.")
    if args.name == "all" and jobs > 1:
        start = time.perf_counter()
        names = [n for n in LONGEST_FIRST if n in EXPERIMENTS]
        names += [n for n in EXPERIMENTS if n not in names]
        codes = run_parallel({n: child_command(n, args) for n in names}, jobs)
        failed = [n for n in names if codes.get(n) != 0]
        wall = time.perf_counter() - start
        if failed:
            print(
                f"gflow: error: {', '.join(failed)} failed (exit codes "
                f"{[codes.get(n) for n in failed]}; output above); rerun to reuse the "
                "finished sweep points.",
                file=sys.stderr,
            )
            return 1
        print(f"all: {len(names)} experiments in {wall:.1f} s ({jobs} at once)")
        return 0
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
