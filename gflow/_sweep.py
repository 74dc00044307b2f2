"""Sweeps: a grid over a run configuration, executed point by point on Dask distributed.

A sweep file (TOML) has three parts:

    name = "width-sweep"              # optional, recorded in sweep.json
    base = "run.toml"                 # or a [base] table; a `gflow run` config (default:
                                      #   the built-in default config)
    [grid]                            # key -> non-empty list of values
    width = [256, 1024]               # aliases: width(s), d, n, scaling(s), seed(s),
    seed = [0, 1, 2]                  #   solver(s); or any dotted config path such as
    "flow.rtol" = [1e-6, 1e-8]        #   "flow.rtol" or "data.target"

Every point of the Cartesian product is validated as a full run config before anything
runs. Each point runs `run_config` on a Dask worker (or, with workers=0, serially here;
both through `_points.run_points`, the engine `gflow reproduce` uses too) in a temporary
folder; its files come back to the client, which writes them to OUT/points/ID/
(ID = readable values + a hash of the point's full config), result.json last. A point
whose result.json exists is finished and skipped on a rerun; a point that raised is
recorded in OUT/points/ID/error.json and retried on the next run, never stopping the
others. OUT/summary.csv has one row per point.
"""

from __future__ import annotations

import copy
import csv
import difflib
import hashlib
import json
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from ._config import SCHEMA, TOP_LEVEL, ConfigError, read_toml, validate
from ._io import to_jsonable, versions, write_json
from ._points import run_points

ALIASES = {
    "width": "model.width",
    "widths": "model.width",
    "d": "data.d",
    "n": "data.n",
    "scaling": "model.scaling",
    "scalings": "model.scaling",
    "seed": "seed",
    "seeds": "seed",
    "solver": "flow.solver",
    "solvers": "flow.solver",
}
SWEEP_KEYS = ("name", "base", "grid")
SUMMARY_FIELDS = [
    "completed",
    "result",
    "loss_initial",
    "loss_final",
    "test_loss_final",
    "t_final",
    "rate",
    "rate_ci_low",
    "rate_ci_high",
    "num_steps",
    "grad_evals",
    "compile_seconds",
    "run_seconds",
    "wall_seconds",
    "error",
]


@dataclass(frozen=True)
class Point:
    """One grid point: its id, its grid values (sweep key -> value) and its full config."""

    id: str
    values: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    name: str
    base: dict[str, Any]
    grid: dict[str, list]  # sweep key (as written) -> values
    paths: dict[str, str]  # sweep key -> dotted config path

    def points(self) -> list[Point]:
        return list(expand(self))


def _all_paths() -> list[str]:
    return list(TOP_LEVEL) + [f"{t}.{k}" for t, fields in SCHEMA.items() for k in fields]


def _config_path(key: str) -> str:
    if key in ALIASES:
        return ALIASES[key]
    if key in _all_paths():
        return key
    known = list(ALIASES) + _all_paths()
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"grid.{key}: unknown grid key.{hint} Use an alias ({', '.join(sorted(ALIASES))}) "
        "or a dotted config path such as 'flow.rtol'."
    )


def parse_sweep(raw: dict[str, Any], *, root: Path | None = None) -> Sweep:
    """Validate a sweep dict (from TOML). Raises `ConfigError` naming the field."""
    for key in raw:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(key, SWEEP_KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key}: unknown sweep key.{hint} A sweep file has: {', '.join(SWEEP_KEYS)}."
            )
    name = raw.get("name", "sweep")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: expected a non-empty string, got {name!r}.")
    base_raw = raw.get("base", {})
    if isinstance(base_raw, str):
        path = Path(base_raw)
        if not path.is_absolute() and root is not None:
            path = root / path
        base_raw = read_toml(path, "base")
    if not isinstance(base_raw, dict):
        raise ConfigError(f"base: expected a [base] table or a config file path, got {base_raw!r}.")
    try:
        base = validate(base_raw)
    except ConfigError as exc:
        raise ConfigError(f"base.{exc}") from None
    grid_raw = raw.get("grid")
    if not isinstance(grid_raw, dict) or not grid_raw:
        raise ConfigError(
            "grid: missing or empty; add a [grid] table such as `width = [64, 256]` and "
            "`seed = [0, 1]`."
        )
    grid, paths = {}, {}
    for key, values in grid_raw.items():
        path = _config_path(key)
        if path in paths.values():
            other = next(k for k, p in paths.items() if p == path)
            raise ConfigError(f"grid.{key}: sets {path} like grid.{other}; keep one of them.")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"grid.{key}: expected a non-empty list of values, got {values!r}; "
                f"write e.g. {key} = [{values!r}]."
            )
        seen = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"grid.{key}: repeated values in {values!r}; list each once.")
        grid[key], paths[key] = values, path
    sweep = Sweep(name=name, base=base, grid=grid, paths=paths)
    for _ in expand(sweep):  # validate every point before anything runs
        pass
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep TOML file (see the module docstring for its format)."""
    return parse_sweep(read_toml(path, "sweep"), root=Path(path).parent)


def _slug(values: dict[str, Any]) -> str:
    text = "_".join(f"{k}={v}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9=.+-]+", "-", text)[:80]


def point_id(values: dict[str, Any], config: dict[str, Any]) -> str:
    """Readable grid values plus 8 hex digits of the hash of the full config, so a point
    keeps its id across reruns and edits of the grid that leave it unchanged."""
    digest = hashlib.sha256(json.dumps(to_jsonable(config), sort_keys=True).encode())
    return f"{_slug(values)}_{digest.hexdigest()[:8]}"


def expand(sweep: Sweep) -> Iterator[Point]:
    """The grid points in order (the last grid key varies fastest), each validated."""
    keys = list(sweep.grid)
    for combo in product(*(sweep.grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        raw = copy.deepcopy(sweep.base)
        for key, value in values.items():
            path = sweep.paths[key]
            if "." in path:
                table, field = path.split(".", 1)
                raw[table][field] = value
            else:
                raw[path] = value
        try:
            cfg = validate(raw)
        except ConfigError as exc:
            raise ConfigError(f"grid point {values}: {exc}") from None
        pid = point_id(values, cfg)  # before naming: renaming a sweep keeps its points
        cfg["name"] = f"{sweep.name}/{_slug(values)}"
        yield Point(id=pid, values=values, config=cfg)


def run_point(config: dict[str, Any], runner: Callable | None = None) -> dict[str, Any]:
    """Run one point (on a Dask worker) in a temporary folder; return its result and its
    files' bytes, or the error. Never raises for a failure of the run itself."""
    import socket

    from ._run import run_config

    runner = run_config if runner is None else runner
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gflow-point-") as tmp:
        try:
            result = runner(config, tmp, progress=False)
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
            return {"ok": True, "result": result, "files": files, "host": socket.gethostname()}
        except Exception as exc:  # one failed point must not lose the others
            return {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
                "host": socket.gethostname(),
                "wall_seconds": time.perf_counter() - start,
            }


def _store(point_dir: Path, files: dict[str, bytes]) -> None:
    """Write a finished point's files into a hidden folder, then rename it into place
    (result.json, the marker of a finished point, appears atomically with the rest)."""
    tmp = point_dir.with_name(f".{point_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    shutil.rmtree(point_dir, ignore_errors=True)
    tmp.rename(point_dir)


def summary_row(point: Point, status: str, result: dict | None, error: str = "") -> dict:
    row: dict[str, Any] = {"id": point.id, "status": status, **point.values}
    if result is not None:
        final, stats, fit = result["final"], result["stats"], result.get("rate_fit") or {}
        row.update(
            completed=result["completed"],
            result=result["result"],
            loss_initial=final.get("loss_initial"),
            loss_final=final.get("loss_final"),
            test_loss_final=final.get("test_loss_final"),
            t_final=final.get("t_final"),
            rate=fit.get("rate"),
            rate_ci_low=(fit.get("ci95") or [None, None])[0],
            rate_ci_high=(fit.get("ci95") or [None, None])[1],
            num_steps=stats.get("num_steps"),
            grad_evals=stats.get("grad_evals"),
            compile_seconds=stats.get("compile_seconds"),
            run_seconds=stats.get("run_seconds"),
            wall_seconds=result.get("wall_seconds"),
        )
    row["error"] = error
    return row


def write_summary(path: Path, sweep: Sweep, rows: list[dict]) -> None:
    fields = ["id", "status", *sweep.grid, *SUMMARY_FIELDS]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    tmp.replace(path)


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    runner: Callable | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every unfinished point of `sweep` on Dask; write OUT/points/, OUT/summary.csv
    and OUT/sweep.json. Returns the summary rows (status "done", "skipped" or "failed").

    Arguments:
        client: a `distributed.Client` to use (e.g. on a dask-jobqueue cluster); else
        scheduler: the address of a running Dask scheduler ("tcp://host:8786"); else a
            `LocalCluster` of `workers` processes (default: one per CPU core), one thread
            each, started and closed here; workers=0 runs the points serially in this
            process (no Dask). The engine is `gflow._points.run_points`.
        runner: (config, out, progress=) -> result dict; default `run_config`.
    """
    out = Path(out)
    points = sweep.points()
    (out / "points").mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    todo = []
    for p in points:
        result_file = out / "points" / p.id / "result.json"
        if result_file.is_file():
            rows[p.id] = summary_row(p, "skipped", json.loads(result_file.read_text()))
        else:
            todo.append(p)
    log(f"sweep {sweep.name!r}: {len(points)} points, {len(points) - len(todo)} already done")
    manifest = {
        "name": sweep.name,
        "grid": sweep.grid,
        "base": sweep.base,
        "points": [{"id": p.id, **p.values} for p in points],
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(out / "sweep.json", manifest)
    start = time.perf_counter()
    if todo:
        _execute(todo, points, out, rows, client, workers, scheduler, runner, log, sweep)
    ordered = [rows[p.id] for p in points]
    write_summary(out / "summary.csv", sweep, ordered)
    failed = sum(r["status"] == "failed" for r in ordered)
    manifest.update(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wall_seconds=time.perf_counter() - start,
        n_run=len(todo),
        n_failed=failed,
        backend={"workers": workers, "scheduler": scheduler, "client": client is not None},
    )
    write_json(out / "sweep.json", manifest)
    log(f"sweep {sweep.name!r}: {len(todo) - failed} run, {failed} failed; see {out}/summary.csv")
    return ordered


def _execute(todo, points, out, rows, client, workers, scheduler, runner, log, sweep) -> None:
    serial = workers == 0 and client is None and scheduler is None
    items = [(p.id, (p.config, runner)) for p in todo]
    by_id = {p.id: p for p in todo}
    outcomes = run_points(
        run_point,
        items,
        serial=serial,
        client=client,
        workers=None if serial else workers,
        scheduler=scheduler,
    )
    for outcome in outcomes:
        p = by_id[outcome.key]
        res = (
            outcome.value
            if outcome.ok
            else {"ok": False, "error": outcome.error, "traceback": outcome.traceback}
        )
        point_dir = out / "points" / p.id
        if res["ok"]:
            _store(point_dir, res["files"])
            rows[p.id] = summary_row(p, "done", res["result"])
            log(f"  done   {p.id}: {res['result']['result']}")
        else:
            point_dir.mkdir(parents=True, exist_ok=True)
            write_json(point_dir / "error.json", {**res, "config": p.config})
            rows[p.id] = summary_row(p, "failed", None, res["error"])
            log(f"  FAILED {p.id}: {res['error']}")
        write_summary(out / "summary.csv", sweep, [rows[q.id] for q in points if q.id in rows])
