"""Saving and loading a `Solution`: PATH.npz (every array) + PATH.json (everything else).

No pickle anywhere: the arrays go through `numpy.savez` (object arrays refused) and are
read with `allow_pickle=False`; the parameter pytrees are stored leaf by leaf under their
key paths (`jax.tree_util.keystr`, e.g. "final.W", "params['a']"). Plain containers
(dicts with string keys, lists, tuples, None) are described in the JSON and rebuilt on
load; any other structure (an equinox Module) is rebuilt onto `like`, a pytree of the same
structure (typically the model that was simulated), or else returned as a dict
key path -> array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

from .._io import SCHEMA_VERSION, read_json, read_npz, to_jsonable, versions, write_json, write_npz
from ._solution import Solution

FORMAT = "gflow.Solution"
_FIELDS = ("t_final", "success", "result", "message", "stopped_early", "diverged")


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(PATH.json, PATH.npz) for PATH, PATH.json or PATH.npz."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return Path(f"{p}.json"), Path(f"{p}.npz")


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, np.ndarray | np.generic | jax.Array)


def _spec(tree: Any, path: tuple = ()) -> Any:
    """A JSON description of a tree of plain containers, or None if it has other nodes."""
    if tree is None:
        return {"none": True}
    if _is_array(tree):
        return {"leaf": jtu.keystr(path)}
    if isinstance(tree, dict) and all(isinstance(k, str) for k in tree):
        out = {}
        for k, v in tree.items():
            s = _spec(v, (*path, jtu.DictKey(k)))
            if s is None:
                return None
            out[k] = s
        return {"dict": out}
    if type(tree) in (list, tuple):
        items = []
        for i, v in enumerate(tree):
            s = _spec(v, (*path, jtu.SequenceKey(i)))
            if s is None:
                return None
            items.append(s)
        return {type(tree).__name__: items}
    return None


def _build(spec: dict[str, Any], leaves: dict[str, np.ndarray]) -> Any:
    if "none" in spec:
        return None
    if "leaf" in spec:
        return leaves[spec["leaf"]]
    if "dict" in spec:
        return {k: _build(v, leaves) for k, v in spec["dict"].items()}
    if "list" in spec:
        return [_build(v, leaves) for v in spec["list"]]
    return tuple(_build(v, leaves) for v in spec["tuple"])


def _tree_record(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put the array leaves of `tree` into `arrays` under prefix + key path; return the
    JSON record (structure, leaf keys, JSON scalars, leaves not saved)."""
    rec: dict[str, Any] = {"spec": _spec(tree), "type": type(tree).__name__, "leaves": []}
    scalars, skipped = {}, {}
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        key = jtu.keystr(path)
        if _is_array(leaf):
            arrays[prefix + key] = np.asarray(leaf)
            rec["leaves"].append(key)
        elif isinstance(leaf, bool | int | float | str):
            scalars[key] = leaf
        else:
            skipped[key] = type(leaf).__name__
    rec["scalars"], rec["not_saved"] = scalars, skipped
    return rec


def save_solution(sol: Solution, path: str | Path) -> Path:
    """Write `sol` to PATH.npz and PATH.json (atomically each; the JSON last, so a JSON
    file always names a complete npz). Returns the JSON path."""
    json_path, npz_path = _paths(path)
    arrays: dict[str, np.ndarray] = {
        "ts": sol.ts,
        "loss": sol.loss,
        "grad_norm": sol.grad_norm,
        "theta_final": sol.theta_final,
    }
    for k, v in sol.metrics.items():
        arrays[f"metric/{k}"] = np.asarray(v)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "npz": npz_path.name,
        "fields": {k: getattr(sol, k) for k in _FIELDS},
        "metrics": list(sol.metrics),
        "final": _tree_record(sol.final, "final", arrays),
        "params": None if sol.params is None else _tree_record(sol.params, "params", arrays),
        "dense": None,
        "stats": sol.stats,
        "settings": sol.settings,
        "versions": versions(),
    }
    if sol.dense is not None:
        arrays["dense/ts"] = sol.dense["ts"]
        for k, v in sol.dense["infos"].items():
            arrays[f"dense/info/{k}"] = v
        meta["dense"] = {
            "interpolation": sol.dense["interpolation"],
            "infos": list(sol.dense["infos"]),
        }
    write_npz(npz_path, arrays)
    write_json(json_path, to_jsonable(meta))
    return json_path


def _rebuild(rec: dict[str, Any], prefix: str, arrays: dict, like: Any, field: str) -> Any:
    leaves = {k: arrays[prefix + k] for k in rec["leaves"]}
    leaves.update(rec["scalars"])
    if like is None:
        if rec["spec"] is not None:
            return _build(rec["spec"], leaves)
        return leaves  # e.g. an equinox Module without `like`: key path -> array
    flat, treedef = jtu.tree_flatten_with_path(like)
    keys = [jtu.keystr(p) for p, _ in flat]
    extra = sorted(set(leaves) - set(keys))
    if extra:
        raise ValueError(
            f"like: its structure has no leaf {extra[0]!r} that the file's {field} holds "
            f"(file leaves {sorted(leaves)}); pass a pytree of the structure that was "
            "simulated (the same model class and sizes)."
        )
    new = []
    for key, (_, leaf) in zip(keys, flat, strict=True):
        if key not in leaves:
            new.append(leaf)  # not stored (a function held by a Module): from `like`
            continue
        got = leaves[key]
        want = np.shape(leaf)
        shape = np.shape(got)[1:] if field == "params" else np.shape(got)
        if _is_array(leaf) and shape != want:
            raise ValueError(
                f"like: leaf {key!r} has shape {want} but the file's {field} has {shape}; "
                "pass a model of the sizes that were simulated."
            )
        new.append(got)
    return jtu.tree_unflatten(treedef, new)


def load_solution(path: str | Path, *, like: Any = None) -> Solution:
    """Read a Solution written by `Solution.save(path)`.

    Arguments:
        path: PATH, PATH.json or PATH.npz as given to `save`.
        like: optional pytree of the simulated structure (e.g. the model): `final` and
            `params` are rebuilt onto it (its non-array leaves, such as functions held by
            a Module, are taken from it). Without it, plain containers (dict, list,
            tuple) are rebuilt and any other structure comes back as a dict
            key path -> array.

    Returns:
        The `Solution`, every field as saved (arrays bit for bit; stats and settings as
        JSON gives them back: tuples become lists, non-finite floats strings).
    """
    json_path, npz_path = _paths(path)
    if not json_path.is_file():
        raise ValueError(
            f"path: no such file {str(json_path)!r}; a Solution is saved as PATH.json + "
            "PATH.npz by Solution.save(PATH)."
        )
    meta = read_json(json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"path: {str(json_path)!r} is not a saved gflow Solution (format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
            f"{FORMAT!r}); write one with Solution.save."
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"path: {str(json_path)!r} has schema version {meta.get('schema_version')!r}; "
            f"this gflow reads version {SCHEMA_VERSION}."
        )
    arrays = read_npz(json_path.with_name(meta["npz"]))
    wanted = ["ts", "loss", "grad_norm", "theta_final"]
    wanted += [f"metric/{k}" for k in meta["metrics"]]
    wanted += ["final" + k for k in meta["final"]["leaves"]]
    if meta["params"] is not None:
        wanted += ["params" + k for k in meta["params"]["leaves"]]
    if meta["dense"] is not None:
        wanted += ["dense/ts"] + [f"dense/info/{k}" for k in meta["dense"]["infos"]]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise ValueError(
            f"path: {str(npz_path)!r} lacks the arrays {missing[:5]} that {json_path.name} "
            "lists; the two files do not belong together (or the npz is truncated)."
        )
    dense = None
    if meta["dense"] is not None:
        dense = {
            "ts": arrays["dense/ts"],
            "infos": {k: arrays[f"dense/info/{k}"] for k in meta["dense"]["infos"]},
            "interpolation": meta["dense"]["interpolation"],
        }
    f = meta["fields"]
    return Solution(
        ts=arrays["ts"],
        loss=arrays["loss"],
        grad_norm=arrays["grad_norm"],
        metrics={k: arrays[f"metric/{k}"] for k in meta["metrics"]},
        params=None
        if meta["params"] is None
        else _rebuild(meta["params"], "params", arrays, like, "params"),
        final=_rebuild(meta["final"], "final", arrays, like, "final"),
        theta_final=arrays["theta_final"],
        t_final=float(f["t_final"]),
        success=bool(f["success"]),
        result=str(f["result"]),
        message=str(f["message"]),
        stopped_early=bool(f["stopped_early"]),
        diverged=bool(f["diverged"]),
        stats=meta["stats"],
        settings=meta["settings"],
        dense=dense,
    )
