"""One compiled program per *structure* of a solve, reused by every later call.

A solve is described by a pytree (the problem, solver, controller, times, tolerances,
data). `eqx.partition(spec, eqx.is_array)` splits it into

- the dynamic part: every array leaf (initial parameters, eta, frozen leaves, data, t0,
  t1, save times, rtol, atol, dt0, loss target): arguments of the compiled program, so a
  new value never recompiles;
- the static part: everything else (the loss function object, the tree structure, the
  solver and controller types and their non-array fields, which metrics are saved, the
  number of save times, shapes and dtypes): it keys the cache.

`compiled_call(fn, spec)` looks the key up in a bounded LRU cache of AOT-compiled
executables (`jax.jit(...).lower(...).compile()`), compiling on a miss, and returns the
outputs with whether the call compiled and how long compiling and running took. The cache
holds at most `cache_size()` programs (default 64; `GFLOW_CACHE_SIZE`); `clear_cache()`
empties it. Functions are compared by identity, as jax.jit does: pass the same loss
function object (and data through `args`) to reuse a program.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np

PyTree = Any

_LOCK = threading.Lock()
_CACHE: OrderedDict[Hashable, Any] = OrderedDict()
_COUNTS = {"hits": 0, "misses": 0, "uncacheable": 0}
_SIZE = [int(os.environ.get("GFLOW_CACHE_SIZE", "64"))]


def cache_size(size: int | None = None) -> int:
    """The most compiled programs kept (least recently used dropped first); with `size`,
    set it (0 disables caching). Returns the size in force."""
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size: must be an integer >= 0, got {size!r}.")
        with _LOCK:
            _SIZE[0] = size
            while len(_CACHE) > size:
                _CACHE.popitem(last=False)
    return _SIZE[0]


def clear_cache() -> None:
    """Drop every compiled program gflow holds (JAX's own caches are not touched)."""
    with _LOCK:
        _CACHE.clear()
        for k in _COUNTS:
            _COUNTS[k] = 0


def cache_info() -> dict[str, int]:
    """{"hits", "misses", "uncacheable", "size", "maxsize"} of gflow's compile cache."""
    with _LOCK:
        return {**_COUNTS, "size": len(_CACHE), "maxsize": _SIZE[0]}


def _leaf_signature(leaf: Any) -> tuple:
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return (tuple(np.shape(leaf)), np.dtype(leaf.dtype).str, sharding)


def structure_key(fn: Callable, spec: PyTree) -> tuple[Hashable | None, PyTree, PyTree]:
    """(key, dynamic part, static part) of a solve spec; key is None when a static leaf
    is not hashable (then the call compiles without caching)."""
    dyn, static = eqx.partition(spec, eqx.is_array)
    dyn = jtu.tree_map(_as_device, dyn)
    dyn_leaves, dyn_def = jtu.tree_flatten(dyn)
    static_leaves, static_def = jtu.tree_flatten(static)
    key = (fn, dyn_def, static_def, tuple(static_leaves), tuple(map(_leaf_signature, dyn_leaves)))
    try:
        hash(key)
    except TypeError:
        return None, dyn, static
    return key, dyn, static


def _as_device(leaf: Any) -> Any:
    return leaf if isinstance(leaf, jax.Array) else jax.numpy.asarray(leaf)


def compile_for(
    fn: Callable[[PyTree], PyTree], spec: PyTree
) -> tuple[Callable[[PyTree], PyTree], PyTree, bool, float]:
    """The compiled program of `fn` for the structure of `spec`, from the cache or
    compiled now.

    Returns:
        (exe, dyn, hit, compile_seconds): `exe(dynamic(other_spec))` runs `fn` on any
        spec of the same structure; dyn is this spec's dynamic part; hit says whether
        the program came from the cache (compile_seconds is then 0.0).
    """
    key, dyn, static = structure_key(fn, spec)
    with _LOCK:
        exe = _CACHE.get(key) if key is not None else None
        if exe is not None:
            _CACHE.move_to_end(key)
            _COUNTS["hits"] += 1
    if exe is not None:
        return exe, dyn, True, 0.0
    start = time.perf_counter()
    exe = jax.jit(lambda d: fn(eqx.combine(d, static))).lower(dyn).compile()
    compile_seconds = time.perf_counter() - start
    with _LOCK:
        if key is None:
            _COUNTS["uncacheable"] += 1
        else:
            _COUNTS["misses"] += 1
            if _SIZE[0] > 0:
                _CACHE[key] = exe
                while len(_CACHE) > _SIZE[0]:
                    _CACHE.popitem(last=False)
    return exe, dyn, False, compile_seconds


def dynamic(spec: PyTree) -> PyTree:
    """The array part of a spec, as the compiled program takes it."""
    return jtu.tree_map(_as_device, eqx.filter(spec, eqx.is_array))


def compiled_call(fn: Callable[[PyTree], PyTree], spec: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Run `fn(spec)` through a cached compiled program.

    Arguments:
        fn: a pure function of the spec (module-level, so that its identity is stable).
        spec: the pytree fn takes; array leaves become program arguments.

    Returns:
        (outputs, timing) with timing = {"cache_hit": bool, "compile_seconds",
        "run_seconds"}; compile_seconds is 0.0 on a hit. Outputs are ready (blocked on).
    """
    exe, dyn, hit, compile_seconds = compile_for(fn, spec)
    start = time.perf_counter()
    out = jax.block_until_ready(exe(dyn))
    run_seconds = time.perf_counter() - start
    return out, {
        "cache_hit": hit,
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
    }
