"""Run every benchmark, write results/*.json and the figures (docs/figures/*.png)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import _figures, _machine, _orders, _peers, _work

BENCHMARKS = {
    "gd_vs_flow": _orders.run,
    "work_precision": _work.work_precision,
    "stiff": _work.stiff,
    "peers": _peers.run,
    "roofline": _machine.roofline,
    "latency": _machine.latency,
}


def run_all(
    out: str | Path,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    figures: str | Path | None = None,
    log=print,
) -> dict[str, Any]:
    """Run the benchmarks named in `only` (default all) into `out`/NAME.json; draw the
    figures into `figures` (default `out`). Returns name -> result dict."""
    names = list(BENCHMARKS) if not only else only
    for name in names:
        if name not in BENCHMARKS:
            raise ValueError(f"only: unknown benchmark {name!r}; choose from {list(BENCHMARKS)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        start = time.perf_counter()
        log(f"[bench] {name} ...")
        results[name] = BENCHMARKS[name](str(out), quick=quick)
        log(f"[bench] {name} done in {time.perf_counter() - start:.1f} s -> {out}/{name}.json")
    fig_dir = Path(figures) if figures is not None else out
    written = _figures.draw(results, fig_dir)
    for path in written:
        log(f"[bench] figure {path}")
    return results


def summary(results: dict[str, Any]) -> list[str]:
    """One line per target: the measured ratio and whether it is met."""
    lines = []
    if "work_precision" in results:
        r = results["work_precision"]
        lines.append(
            f"GD evals / best solver evals at {r['target_error']:g}: "
            f"{r['gd_over_best_evals']:.0f}x (target >= 1000x: "
            f"{'met' if r['target_1000x_fewer_evals_met'] else 'NOT met'})"
        )
    if "peers" in results:
        for w in results["peers"]["widths"]:
            for x in w["at_equal_error"]:
                s = x["speedup_vs_best_peer"]
                lines.append(
                    f"width {w['width']}, error {x['error']:g}: gflow vs best peer "
                    f"{'n/a' if s is None else f'{s:.2f}x'} (target >= 3x)"
                )
    if "roofline" in results:
        for row in results["roofline"]["rows"]:
            lines.append(
                f"width {row['width']}: RK step / roofline = "
                f"{row['step_over_roofline']:.2f} (target <= 2)"
            )
    if "latency" in results:
        r = results["latency"]
        lines.append(
            f"first-call compile of the default problem: "
            f"{r['median_compile_seconds']:.1f} s (target <= 3 s)"
        )
    if "stiff" in results:
        for k, case in results["stiff"]["cases"].items():
            for x in case["at_equal_error"]:
                s = x["ratio_tsit5_over_implicit"]
                lines.append(
                    f"stiff ({k} spectrum), error {x['error']:g}: Tsit5 / implicit "
                    f"evals {'n/a' if s is None else f'{s:.1f}x'} (target >= 5x)"
                )
    if "gd_vs_flow" in results:
        for o in results["gd_vs_flow"]["orders"]:
            lines.append(
                f"{o['problem']}: GD-to-flow order {o['order_gd_to_flow']:.3f}, "
                f"GD-to-modified order {o['order_gd_to_modified']:.3f}"
            )
    return lines
