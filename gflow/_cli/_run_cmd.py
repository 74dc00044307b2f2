"""`gflow run [CONFIG.toml] --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="simulate one configuration and write result.json, trajectory.npz, loss.png",
        description=(
            "Simulate the gradient flow for one TOML configuration (tables [data], [model], "
            "[flow], [analysis], [output]; see docs/config.md). Without CONFIG it runs the "
            "built-in default: a two-layer mean-field network with d >= n, which converges at "
            "a linear rate. Writes DIR/result.json, DIR/trajectory.npz, DIR/loss.png, "
            "DIR/kernel.png (when the kernel is recorded) and DIR/config.toml, and prints the "
            "fitted loss decay and the bound certificates (docs/analysis.md). The run is "
            "checkpointed to DIR/checkpoint.npz ([output] checkpoint_seconds); Ctrl-C stops "
            "it cleanly and "
            "--resume continues it. Exit status: 0 completed, 1 not completed (partial "
            "results saved), 2 bad input, 130 interrupted."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "config", nargs="?", default=None, help="TOML config (default: the built-in config)"
    )
    p.add_argument("--out", default="runs/default", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--print-config", action="store_true", help="print the complete config and exit")
    p.add_argument(
        "--follow-to-limit",
        action="store_true",
        help="after t1, follow the flow to its end and report the limit point "
        "(sets [limit] follow = true; docs/stiff.md)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.npz (config: CONFIG, else DIR/config.toml)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._config import default_config, dumps_toml, load_config
    from .._run import run_config, verdict

    config = args.config
    if config is None and args.resume and (Path(args.out) / "config.toml").is_file():
        config = Path(args.out) / "config.toml"
    cfg = default_config() if config is None else load_config(config)
    if args.follow_to_limit:
        cfg["limit"]["follow"] = True
    if args.print_config:
        print(dumps_toml(cfg), end="")
        return 0
    progress = False if args.no_progress else None
    result = run_config(cfg, args.out, progress=progress, resume=args.resume)
    print(verdict(result))
    out = Path(args.out)
    files = ["result.json", "trajectory.npz", "loss.png", "kernel.png", "config.toml"]
    print(f"wrote {out}/" + ", ".join(f for f in files if (out / f).is_file()))
    if result["result"] == "interrupted":
        return 130
    return 0 if result["completed"] else 1
