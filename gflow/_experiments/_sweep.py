"""Resumable sweeps: every finished point is written atomically to its own files and
skipped when the command is run again.

A point with coordinates like {"scaling": "mf", "m": 256} lives in
OUT/points/scaling=mf_m=256.npz (arrays) and .json (scalars, the settings hash, wall
time). The JSON is written last, so its presence with a matching hash marks the point as
done; an interrupted point is recomputed, a finished one never is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_json, read_npz, write_json, write_npz
from .._points import run_points
from ._spec import settings_hash

PointFn = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, np.ndarray]]]


def point_key(point: dict[str, Any]) -> str:
    """File stem of a point: "k1=v1_k2=v2" in the given key order."""
    return "_".join(f"{k}={v}" for k, v in point.items())


def _timed(fn: PointFn, point: dict[str, Any]):
    start = time.perf_counter()
    summary, arrays = fn(point)
    return summary, arrays, time.perf_counter() - start


def run_sweep(
    spec: dict[str, Any],
    points: list[dict[str, Any]],
    fn: PointFn,
    out: str | Path,
    *,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run `fn(point) -> (summary, arrays)` for every point not already stored in OUT/points.

    Returns:
        One record per point, in order: {"point", "summary", "arrays", "wall_seconds",
        "reused"} (reused: True when read back from disk instead of computed).
    """
    folder = Path(out) / "points"
    records = []
    for point in points:
        key = point_key(point)
        digest = settings_hash(spec, point)
        jpath, npath = folder / f"{key}.json", folder / f"{key}.npz"
        stored = None
        if jpath.is_file() and npath.is_file():
            try:
                stored = read_json(jpath)
            except ValueError:
                stored = None
        if stored is not None and stored.get("hash") == digest:
            log(f"  {spec['name']} {key}: done earlier, reusing {jpath}")
            records.append(
                {
                    "point": point,
                    "summary": stored["summary"],
                    "arrays": read_npz(npath),
                    "wall_seconds": stored["wall_seconds"],
                    "reused": True,
                }
            )
            continue
        log(f"  {spec['name']} {key}: running ...")
        outcome = next(run_points(_timed, [(key, (fn, point))], serial=True))
        if not outcome.ok:
            raise RuntimeError(
                f"{spec['name']} point {key} failed ({outcome.error}); the points before it "
                f"are stored in {folder} and are reused on the next run.\n{outcome.traceback}"
            )
        summary, arrays, wall = outcome.value
        write_npz(npath, arrays)
        write_json(
            jpath, {"hash": digest, "point": point, "wall_seconds": wall, "summary": summary}
        )
        log(f"  {spec['name']} {key}: {wall:.1f} s")
        records.append(
            {
                "point": point,
                "summary": summary,
                "arrays": arrays,
                "wall_seconds": wall,
                "reused": False,
            }
        )
    return records
