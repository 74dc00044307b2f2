"""Checkpointed integration: segments, atomic checkpoint files, resume, clean stop.

`integrate_checkpointed` runs the segmented solve of `_segments.py` and, after a segment,
writes a checkpoint when `every_seconds` of wall clock have passed since the last one
(and always on SIGINT/SIGTERM, which stop the run cleanly after the current segment).
A checkpoint (an .npz, no pickle, written to a temp file and renamed) holds: the index
of the next segment, the state vector, the solver/controller carry, everything saved so
far, the solver statistics, and an identity (settings, hashes of theta0, eta and the time
grid, and the caller's config) that must match on resume, or the file is refused.

A run of `solver="auto"` in two phases (Tsit5, then a least-squares solver; _phases.py)
checkpoints its first phase to a file of its own next to `path` (`Checkpoint.phase_path`,
e.g. checkpoint.tsit5-phase.npz) and writes it once more when that phase has finished
(`final_checkpoint`), so a resume finds phase 1 complete and goes on in phase 2 (`path`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import diffrax
import jax
import numpy as np

from .._io import SCHEMA_VERSION, read_npz, to_jsonable, write_npz
from . import _implicit
from ._cache import dynamic
from ._engine import make_spec
from ._flatten import FlatProblem
from ._results import solution_from_raw
from ._segments import (
    STAT_KEYS,
    carry_from_leaves,
    carry_leaves,
    compile_segments,
    segment_grid,
    to_host,
)
from ._solution import Solution
from ._solvers import evals_per_step

PyTree = Any
FORMAT = "gflow-checkpoint"
DELAY_ENV = "GFLOW_SEGMENT_DELAY"  # testing aid: seconds to sleep after each segment
PHASE_TAG = "tsit5-phase"  # the first phase of a two-phase auto run (Checkpoint.phase_path)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """How to checkpoint a simulation (pass as `simulate(..., checkpoint=)`).

    Fields:
        path: the checkpoint file (.npz), written atomically.
        every_seconds: wall-clock seconds between checkpoints (0: after every segment).
            Checkpoints are written at segment ends only.
        resume: continue from `path` (which must exist and match this run).
        segments: number of time segments [t0, t1] is cut into (at save times); more
            segments allow more frequent checkpoints at the cost of one extra step each.
        identity: extra JSON-able data identifying the run (e.g. its config); stored,
            and compared on resume.
    """

    path: str | Path
    every_seconds: float = 60.0
    resume: bool = False
    segments: int = 20
    identity: dict[str, Any] | None = None

    def __post_init__(self):
        s = self.every_seconds
        if isinstance(s, bool) or not isinstance(s, int | float) or not s >= 0 or s == np.inf:
            raise ValueError(
                f"checkpoint.every_seconds: must be a finite number >= 0, got {s!r}; "
                "use 0 to checkpoint after every segment."
            )
        n = self.segments
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"checkpoint.segments: must be an integer >= 1, got {n!r}.")

    def phase_path(self) -> Path:
        """The first phase's file of a two-phase auto run: `path` with PHASE_TAG inserted
        before the suffix (checkpoint.npz -> checkpoint.tsit5-phase.npz)."""
        p = Path(self.path)
        return p.with_name(f"{p.stem}.{PHASE_TAG}{p.suffix}")

    def files(self) -> list[Path]:
        """Every file this checkpoint may write (delete them once the results are safe)."""
        return [Path(self.path), self.phase_path()]

    def for_phase(self, first: bool) -> Checkpoint:
        """The checkpoint of one phase of a two-phase run: the first phase's at
        `phase_path`, the second's at `path`; each resumes only if its file exists (a
        run stopped in phase 1 starts phase 2 afresh)."""
        path = self.phase_path() if first else Path(self.path)
        return dataclasses.replace(self, path=path, resume=self.resume and path.is_file())

    def check_resumable(self) -> None:
        """With `resume`, the file (or a first phase's, `phase_path`) must exist (checked
        before anything is compiled)."""
        if self.resume and not any(f.is_file() for f in self.files()):
            raise _no_checkpoint(self.path)


def _no_checkpoint(path: str | Path) -> ValueError:
    return ValueError(
        f"resume: no checkpoint at {str(path)!r}; the run finished or never reached its "
        "first checkpoint. Run again without --resume."
    )


def _sha(a: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def run_identity(problem, ts, bounds, settings, save_params, metric_names, extra) -> dict:
    """What must be equal for a checkpoint to continue this run: not the progress flag,
    nor the wall time of auto's stiffness probe (its other outputs are deterministic)."""
    settings = {k: v for k, v in settings.items() if k != "progress"}
    if isinstance(settings.get("auto"), dict):
        settings["auto"] = {k: v for k, v in settings["auto"].items() if k != "probe_seconds"}
    return to_jsonable(
        {
            "config": extra,
            "settings": settings,
            "save_params": bool(save_params),
            "metrics": sorted(metric_names),
            "theta0": _sha(problem.theta0),
            "eta": _sha(problem.eta),
            "ts": _sha(ts),
            "segments": _sha(bounds),
        }
    )


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:  # in order: most telling first
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    if a == b:
        return None
    return f"{path}: {_short(b)} in the checkpoint, {_short(a)} now"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _flat(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflat(arrays: dict[str, np.ndarray], prefix: str) -> dict:
    out: dict = {}
    for key, v in arrays.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].split("/")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def write_checkpoint(path: Path, identity: dict, state: dict[str, Any]) -> None:
    """Atomically write the resumable state (see the module docstring)."""
    meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "identity": identity}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({k: np.asarray(state[k]) for k in ("segment", "y", "run_seconds")})
    arrays.update({f"carry/{i}": a for i, a in enumerate(state["carry_leaves"])})
    arrays.update(_flat(state["saved"], "saved/"))
    arrays.update({f"stats/{k}": np.asarray(v) for k, v in state["stats"].items()})
    write_npz(path, arrays)


def read_checkpoint(path: Path, identity: dict) -> dict[str, Any]:
    """Load a checkpoint, refusing a corrupt file or one written for another run."""
    if not Path(path).is_file():
        raise _no_checkpoint(path)
    try:
        arrays = read_npz(path)
        meta = json.loads(str(arrays["meta"]))
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a bad file
        raise ValueError(
            f"resume: {str(path)!r} is corrupt or not a gflow checkpoint "
            f"({type(exc).__name__}: {exc}); delete it and run without --resume."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"resume: {str(path)!r} is not a gflow checkpoint; delete it.")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"resume: {str(path)!r} has schema version {meta.get('schema_version')!r}, this "
            f"gflow writes {SCHEMA_VERSION}; rerun without --resume."
        )
    diff = _first_difference(identity, meta.get("identity"))
    if diff:
        raise ValueError(
            f"resume: the checkpoint {str(path)!r} belongs to another run ({diff}); resume "
            "with the original config, or use a new --out folder."
        )
    n_carry = sum(1 for k in arrays if k.startswith("carry/"))
    return {
        "segment": int(arrays["segment"]),
        "y": arrays["y"],
        "run_seconds": float(arrays["run_seconds"]),
        "carry_leaves": [arrays[f"carry/{i}"] for i in range(n_carry)],
        "saved": _unflat(arrays, "saved/"),
        "stats": {k: int(v) for k, v in _unflat(arrays, "stats/").items()},
    }


@contextlib.contextmanager
def stop_signals():
    """Within the block SIGINT/SIGTERM set a flag (returned) instead of raising; a second
    signal raises KeyboardInterrupt at once. Only in the main thread."""
    flag = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag["signal"] is not None:
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name

    for s in old:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _concat(pieces: list[dict]) -> dict:
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *pieces)


def _counted(before: dict[str, int]) -> dict[str, int]:
    """Evaluations counted so far: those of earlier processes plus this one's."""
    now = _implicit.read_counts()
    return {k: before[k] + int(now.get(k, 0)) for k in before}


def _counted_stats(before: dict[str, int], count_evals: bool) -> dict[str, int]:
    if not count_evals:
        return {}
    return {f"counted_{k}": v for k, v in _counted(before).items()}


def integrate_checkpointed(
    problem: FlatProblem,
    t0: float,
    t1: float,
    ts: np.ndarray,
    *,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    max_steps: int,
    checkpoint: Checkpoint,
    save_params: bool = False,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    loss_target: float | None = None,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    final_checkpoint: bool = False,
) -> Solution:
    """Like `integrate`, in segments, checkpointing to `checkpoint.path`.

    The step limit `max_steps` is checked after each segment (a run may overshoot it by
    at most one segment's steps). The checkpoint file is left in place; delete it once
    the results are safe. With `final_checkpoint`, a run that completes every segment
    writes one more checkpoint of its end state (the first phase of a two-phase run); a
    resume from it returns that result without compiling or solving.
    """

    if isinstance(stepsize_controller, diffrax.StepTo):
        raise ValueError(
            "checkpoint: a StepTo controller fixes every step time and cannot be cut into "
            "segments; use ConstantStepSize (dt0) or an adaptive controller."
        )
    settings = {**(settings or {}), "segments": checkpoint.segments}
    path = Path(checkpoint.path)
    bounds, ts_pad, counts = segment_grid(np.asarray(ts, np.float64), t0, t1, checkpoint.segments)
    metric_names = list((metrics or {}).keys())
    identity = run_identity(
        problem, ts, bounds, settings, save_params, metric_names, checkpoint.identity
    )
    ck = read_checkpoint(path, identity) if checkpoint.resume else None  # before compiling
    # Solvers without a fixed cost per step (implicit) are counted by host callbacks;
    # the counts of segments run before an interruption are kept in the checkpoint.
    count_evals = evals_per_step(solver) is None
    counted = {"grad": 0, "hvp": 0, "jac_rows": 0}  # jac_rows: Rosenbrock-W, any solver

    def spec_of(j: int):  # segment j's solve (values only differ between segments)
        return make_spec(
            problem,
            bounds[j],
            bounds[j + 1],
            ts_pad[j],
            solver=solver,
            stepsize_controller=stepsize_controller,
            dt0=dt0,
            max_steps=max_steps,
            save_params=save_params,
            metrics=metrics,
            loss_target=loss_target,
            count_evals=count_evals,
        )

    n_seg = bounds.size - 1
    done = ck is not None and ck["segment"] >= n_seg  # a finished phase: nothing to run
    if done:
        step_exe, carry0, compile_seconds, source = None, None, 0.0, "checkpoint"
    else:
        spec0 = spec_of(0)
        step_exe, carry0, compile_seconds, source = compile_segments(spec0, spec0.problem.theta0)
    saved_pieces: list[dict] = []
    stats = dict.fromkeys(STAT_KEYS, 0)
    run_before = 0.0
    if checkpoint.resume:
        carry = None if done else carry_from_leaves(carry0, ck["carry_leaves"])
        y, first, run_before = ck["y"], ck["segment"], ck["run_seconds"]
        saved_pieces.append(ck["saved"])
        stats.update({k: ck["stats"][k] for k in STAT_KEYS})
        counted.update({k: int(ck["stats"].get(f"counted_{k}", 0)) for k in counted})
    else:
        y, first = np.asarray(problem.theta0), 0
        carry = carry0  # types only: the first segment starts the solver anew (fresh)
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=float(t1 - t0),
            initial=float(bounds[first] - t0),
            bar_format="{l_bar}{bar}| t = {n:.4g} of {total:.4g} [{elapsed}<{remaining}]",
        )
    _implicit.reset_counts()
    start = last_ck = time.perf_counter()
    out: dict[str, Any] = {}
    stop = None
    written = 0
    finished = False

    def save(segment: int, seconds: float) -> None:
        """Checkpoint the state reached (the next segment to run is `segment`)."""
        state = {
            "segment": segment,
            "y": y,
            "run_seconds": seconds,
            "carry_leaves": carry_leaves(carry),
            "saved": _concat(saved_pieces),
            "stats": {**stats, **_counted_stats(counted, True)},
        }
        write_checkpoint(path, identity, state)

    with stop_signals() as flag:
        for j in range(first, n_seg):
            fresh = np.asarray(j == 0 and not checkpoint.resume)
            raw = step_exe(dynamic((spec_of(j), y, carry, fresh)))
            out = to_host(raw)
            saved_pieces.append(jax.tree_util.tree_map(lambda a, j=j: a[: counts[j]], out["saved"]))
            for k in STAT_KEYS:
                stats[k] += int(out["stats"][k])
            y, carry = out["y"], out["carry"]
            if bar is not None:
                bar.update(float(bounds[j + 1] - bounds[j]))
            if delay:
                time.sleep(delay)
            if int(out["result"]) != int(diffrax.RESULTS.successful._value):
                break
            if j + 1 == n_seg:
                finished = True
                break
            if stats["num_steps"] >= max_steps:
                stop = "max_steps"
                break
            now = time.perf_counter()
            if flag["signal"] or now - last_ck >= checkpoint.every_seconds:
                save(j + 1, run_before + now - start)
                written += 1
                last_ck = time.perf_counter()
            if flag["signal"]:
                stop = flag["signal"]
                break
    if bar is not None:
        bar.close()
    run_seconds = run_before + time.perf_counter() - start
    if final_checkpoint and finished:  # the end state, for a resume of a later phase
        save(n_seg, run_seconds)
        written += 1
    ts_done = np.concatenate([ts_pad[j][: counts[j]] for j in range(n_seg)])
    saved = _concat(saved_pieces)
    k = jax.tree_util.tree_leaves(saved)[0].shape[0]
    raw_all = {
        "ts": ts_done[:k],
        "saved": saved,
        "t_final": out["t_final"] if out else bounds[first],
        "theta_final": y,
        "result": out["result"] if out else diffrax.RESULTS.successful._value,
        "event_mask": out["event_mask"] if out else {},
        "stats": stats,
    }
    sol = solution_from_raw(
        raw_all,
        problem,
        t0,
        t1,
        solver=solver,
        max_steps=max_steps,
        save_params=save_params,
        loss_target=loss_target,
        settings=settings,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        counts=_counted(counted),
        cache_hit=source == "memory",
        program_source=source,
    )
    sol.stats.update(
        segments=n_seg,
        resumed_from_segment=first if checkpoint.resume else None,
        checkpoints_written=written,
    )
    if stop == "max_steps":
        return dataclasses.replace(
            sol,
            success=False,
            result="max_steps_reached",
            message=(
                f"stopped at t = {sol.t_final:.6g} before t1 = {t1:g}: {stats['num_steps']} "
                f"steps reached max_steps = {max_steps}. Fix: increase max_steps, loosen "
                f"rtol/atol, or shorten t1. Everything up to t = {sol.t_final:.6g} is kept."
            ),
        )
    if stop is not None:
        return dataclasses.replace(
            sol,
            success=False,
            result="interrupted",
            message=(
                f"interrupted by {stop} at t = {sol.t_final:.6g} (t1 = {t1:g}); a checkpoint "
                f"was written to {path}; continue with --resume (or Checkpoint(resume=True))."
            ),
        )
    return sol
