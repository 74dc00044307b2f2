"""`gflow` command line: one subcommand per module in this folder.

Each subcommand module provides `add_parser(subparsers)`; the parser it adds sets
`func` (args -> exit code). Errors that come from bad input (ValueError, and OSError for
unreadable or unwritable paths) are printed as one line `gflow: error: ...` with exit
code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

from . import _bench_cmd, _reproduce_cmd, _run_cmd, _sweep_cmd

SUBCOMMANDS = [_run_cmd, _reproduce_cmd, _sweep_cmd, _bench_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gflow",
        description=(
            "Simulate the continuous-time gradient flow d theta/dt = -eta grad L(theta) of "
            "neural networks precisely (adaptive ODE solvers, float64), and check "
            "linear-rate convergence theory."
        ),
        epilog="Run 'gflow SUBCOMMAND --help' for each subcommand. Docs: docs/ in the repo.",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help=(
            "do not use JAX's persistent compilation cache (on by default, in "
            "$GFLOW_CACHE_DIR or ~/.cache/gflow/xla; GFLOW_COMPILE_CACHE=0 does the same)"
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    if args.no_compile_cache:
        os.environ["GFLOW_COMPILE_CACHE"] = "0"
    try:
        if os.environ.get("GFLOW_COMPILE_CACHE", "1") != "0":
            from .._flow._cache import enable_persistent_cache

            enable_persistent_cache()
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"gflow: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else ""
        print(
            f"gflow: error: cannot access{where}: {exc.strerror or exc}; check the path "
            "and its permissions.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("gflow: interrupted", file=sys.stderr)
        return 130


def command() -> None:
    """The `gflow` console script: `main()`, then exit without tearing the interpreter
    down.

    After a run, Python's finalization (JAX's backend, compiled programs, module
    teardown) takes 0.3-0.7 s, which a user waits for and which does nothing for them.
    So once `main` has returned, the output streams are flushed, the `atexit` handlers
    run as at a normal exit, and the process ends with `os._exit`. Where a non-daemon
    thread is still alive (a normal exit would wait for it), or GFLOW_FAST_EXIT=0, it
    exits the normal way instead."""
    code = main()
    waited_for = [
        t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
    ]
    if os.environ.get("GFLOW_FAST_EXIT", "1") == "0" or waited_for:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written to it
            pass
    os._exit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    command()
