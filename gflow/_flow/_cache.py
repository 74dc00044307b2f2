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

import contextlib
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

from . import _exe_store
from ._flatten import device_array

PyTree = Any

_LOCK = threading.Lock()
_CACHE: OrderedDict[Hashable, Any] = OrderedDict()
_COUNTS = {"hits": 0, "disk_hits": 0, "misses": 0, "uncacheable": 0}
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
    """{"hits", "disk_hits", "misses", "uncacheable", "size", "maxsize"} of gflow's
    compile cache (disk_hits: programs loaded from the disk store, `_exe_store`)."""
    with _LOCK:
        return {**_COUNTS, "size": len(_CACHE), "maxsize": _SIZE[0]}


PERSISTENT_ENV = "GFLOW_COMPILE_CACHE"


def default_cache_dir() -> str:
    """$GFLOW_CACHE_DIR, else $XDG_CACHE_HOME/gflow/xla, else ~/.cache/gflow/xla."""
    if os.environ.get("GFLOW_CACHE_DIR"):
        return os.environ["GFLOW_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gflow", "xla")


def enable_persistent_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache, so that another process compiling the
    same program (a second `gflow run` of the same shapes, say) loads it from disk.

    Arguments:
        path: the cache folder; default `default_cache_dir()`.

    Returns:
        The folder in use, or None when GFLOW_COMPILE_CACHE=0 turned it off (the CLI's
        `--no-compile-cache` sets that). Programs holding host callbacks (progress bars,
        exact evaluation counts of implicit solvers) are not cached by JAX.
    """
    if os.environ.get(PERSISTENT_ENV, "1") == "0":
        return None
    folder = os.fspath(path) if path is not None else default_cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"compile cache: cannot create the folder {folder!r} ({exc.strerror}); set "
            "GFLOW_CACHE_DIR to a writable folder or turn the cache off with "
            "GFLOW_COMPILE_CACHE=0."
        ) from None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


@contextlib.contextmanager
def checks_without_callbacks():
    """While tracing gflow's solves, compile equinox's runtime checks (`eqx.error_if`,
    which diffrax uses on its traced inputs: save times inside [t0, t1], dt0's sign) in
    its "nan" mode instead of "raise".

    "raise" lowers each check to a host callback, and JAX does not store programs with
    host callbacks in its persistent compilation cache. Every condition these checks
    guard is validated on the host before the solve (`prepare_flow`, `check_ts`), and a
    NaN would surface as a failed or diverged result, never as a silent answer. This sets
    equinox's module-level default (equinox._errors.EQX_ON_ERROR) for the duration of the
    trace only, and only when the user has not chosen a mode with EQX_ON_ERROR.
    """
    try:
        from equinox import _errors
    except ImportError:  # pragma: no cover - another equinox layout: leave it alone
        yield
        return
    if os.environ.get("EQX_ON_ERROR") or getattr(_errors, "EQX_ON_ERROR", None) != "raise":
        yield
        return
    _errors.EQX_ON_ERROR = "nan"
    try:
        yield
    finally:
        _errors.EQX_ON_ERROR = "raise"


def _leaf_signature(leaf: Any) -> tuple:
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return (tuple(np.shape(leaf)), np.dtype(leaf.dtype).str, sharding)


def structure_key(fn: Callable, spec: PyTree) -> tuple[Hashable | None, PyTree, PyTree]:
    """(key, dynamic part, static part) of a solve spec; key is None when a static leaf
    is not hashable (then the call compiles without caching)."""
    dyn, static = eqx.partition(spec, eqx.is_array)
    dyn = jtu.tree_map(device_array, dyn)
    dyn_leaves, dyn_def = jtu.tree_flatten(dyn)
    static_leaves, static_def = jtu.tree_flatten(static)
    key = (fn, dyn_def, static_def, tuple(static_leaves), tuple(map(_leaf_signature, dyn_leaves)))
    try:
        hash(key)
    except TypeError:
        return None, dyn, static
    return key, dyn, static


def _compile(fn: Callable, static: PyTree, dyn: PyTree, disk_key: str | None) -> Any:
    """Trace, lower and compile `fn` for `dyn`; store the program on disk under
    `disk_key` when XLA compiled it here (see `_exe_store.jax_cache_hits`).

    A storable program is named after its key (`jit_gflow_<key>`): JAX's persistent cache
    keys on the module name too, so a program whose key is new (gflow upgraded, say) is
    compiled by XLA and stored, instead of being found in JAX's cache under the
    program's old name and never stored."""

    def program(d: PyTree) -> PyTree:
        return fn(eqx.combine(d, static))

    if disk_key is not None:
        program.__name__ = program.__qualname__ = f"gflow_{disk_key[:24]}"
    with tracing():
        lowered = jax.jit(program).lower(dyn)
    jax_hits = _exe_store.jax_cache_hits() if disk_key is not None else 0
    exe = lowered.compile()
    if disk_key is not None and _exe_store.jax_cache_hits() == jax_hits:
        _exe_store.store(disk_key, exe, dyn)
    return exe


def _prevbefore_step(i: Any, x: Any) -> Any:
    from equinox.internal import prevbefore

    return prevbefore(x)


_FOLD_LOCK = threading.Lock()
_FOLD_DEPTH = [0]


class _FoldedPrevbefore:
    """`equinox.internal` as diffrax's `_integrate` module sees it, with `prevbefore`
    evaluated so that a chain of calls compiles as one small loop.

    diffrax's step loop computes t1 less 100 ULPs as 100 chained `prevbefore(x)` calls
    (`_integrate.loop`). With t1 a constant XLA folds them; with t1 a program argument,
    as in every gflow solve, they are ~1,200 scalar operations that XLA compiles into one
    fused function: 0.27 s of XLA time alone, about a sixth of the default problem's
    first compile. Here a call on a value that an earlier call returned, the k-th of a
    chain, returns `fori_loop(0, k, prevbefore, x0)` from the chain's start x0: the same
    function applied as often, so the same bits; the loops of the intermediate links are
    dead code, which XLA removes, and what is compiled is one loop of one `prevbefore`.
    A single call (k = 1) is the original call."""

    def __init__(self, module: Any):
        self._module = module
        self._chains: dict[int, tuple[Any, Any, int]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def prevbefore(self, x: Any) -> Any:
        link = self._chains.get(id(x))
        # outside a trace (eager code in another thread while this is installed) every
        # call is the original one: a loop per k would compile a program per k there
        if link is None or link[0] is not x or not isinstance(x, jax.core.Tracer):
            y = self._module.prevbefore(x)
            self._chains[id(y)] = (y, x, 1)
            return y
        _, start, k = link
        y = jax.lax.fori_loop(0, k + 1, _prevbefore_step, start)
        self._chains[id(y)] = (y, start, k + 1)
        return y


@contextlib.contextmanager
def folded_clip_floor():
    """While tracing gflow's solves, diffrax's `_integrate` sees `_FoldedPrevbefore`
    in place of `equinox.internal` (its t1 - 100 ULP threshold costs one small loop
    instead of 1,200 compiled operations; same values). Reentrant and thread-safe: the
    first entry installs it, the last exit restores the module. An equinox or diffrax
    without this layout is left alone."""
    try:
        from diffrax import _integrate
    except ImportError:  # pragma: no cover - another diffrax layout
        yield
        return
    module = getattr(_integrate, "eqxi", None)
    if module is None or not hasattr(module, "prevbefore"):  # pragma: no cover
        yield
        return
    with _FOLD_LOCK:
        if _FOLD_DEPTH[0] == 0:
            _integrate.eqxi = _FoldedPrevbefore(module)
        _FOLD_DEPTH[0] += 1
    try:
        yield
    finally:
        with _FOLD_LOCK:
            _FOLD_DEPTH[0] -= 1
            if _FOLD_DEPTH[0] == 0:  # the proxy holds the module it stands for
                _integrate.eqxi = _integrate.eqxi._module


@contextlib.contextmanager
def tracing():
    """The settings under which gflow traces its solve programs:
    `checks_without_callbacks` and `folded_clip_floor`."""
    with checks_without_callbacks(), folded_clip_floor():
        yield


class _Loaded:
    """A program loaded from the disk store. Its first run is checked: should it fail in
    the runtime (a damaged or foreign entry), the entry is removed and the program is
    compiled here and run instead, so a bad entry costs a compile, never a result."""

    def __init__(self, exe: Any, disk_key: str, recompile: Callable[[], Any]):
        self._exe, self._disk_key, self._recompile = exe, disk_key, recompile
        self._checked = False

    def __call__(self, dyn: PyTree) -> PyTree:
        if self._checked:
            return self._exe(dyn)
        try:
            out = jax.block_until_ready(self._exe(dyn))
        except jax.errors.JaxRuntimeError:
            _exe_store.discard(self._disk_key)
            self._exe = self._recompile()
            out = self._exe(dyn)
        self._checked = True
        return out


def compile_for(
    fn: Callable[[PyTree], PyTree], spec: PyTree
) -> tuple[Callable[[PyTree], PyTree], PyTree, str, float]:
    """The compiled program of `fn` for the structure of `spec`, from the cache, from the
    disk store of compiled programs (`_exe_store`, on with the persistent cache), or
    compiled now.

    Returns:
        (exe, dyn, source, compile_seconds): `exe(dynamic(other_spec))` runs `fn` on any
        spec of the same structure; dyn is this spec's dynamic part; source is "memory"
        (this process's cache; compile_seconds is then 0.0), "disk" (loaded without
        tracing; compile_seconds is the load time) or "compiled".
    """
    key, dyn, static = structure_key(fn, spec)
    with _LOCK:
        exe = _CACHE.get(key) if key is not None else None
        if exe is not None:
            _CACHE.move_to_end(key)
            _COUNTS["hits"] += 1
    if exe is not None:
        return exe, dyn, "memory", 0.0
    start = time.perf_counter()
    source = "compiled"
    disk_key = _exe_store.program_key(fn, dyn, static) if _exe_store.folder() else None
    exe = _exe_store.load(disk_key, dyn) if disk_key is not None else None
    if exe is not None:
        source = "disk"
        exe = _Loaded(exe, disk_key, lambda: _compile(fn, static, dyn, None))
    else:
        exe = _compile(fn, static, dyn, disk_key)
    compile_seconds = time.perf_counter() - start
    with _LOCK:
        if key is None:
            _COUNTS["uncacheable"] += 1
        else:
            _COUNTS["disk_hits" if source == "disk" else "misses"] += 1
            if _SIZE[0] > 0:
                _CACHE[key] = exe
                while len(_CACHE) > _SIZE[0]:
                    _CACHE.popitem(last=False)
    return exe, dyn, source, compile_seconds


def dynamic(spec: PyTree) -> PyTree:
    """The array part of a spec, as the compiled program takes it."""
    return jtu.tree_map(device_array, eqx.filter(spec, eqx.is_array))


def compiled_call(fn: Callable[[PyTree], PyTree], spec: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Run `fn(spec)` through a cached compiled program.

    Arguments:
        fn: a pure function of the spec (module-level, so that its identity is stable).
        spec: the pytree fn takes; array leaves become program arguments.

    Returns:
        (outputs, timing) with timing = {"cache_hit": bool, "program_source" ("memory",
        "disk" or "compiled"), "compile_seconds", "run_seconds"}; compile_seconds is 0.0
        on a hit. Outputs are ready (blocked on).
    """
    exe, dyn, source, compile_seconds = compile_for(fn, spec)
    start = time.perf_counter()
    out = jax.block_until_ready(exe(dyn))
    run_seconds = time.perf_counter() - start
    return out, {
        "cache_hit": source == "memory",
        "program_source": source,
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
    }
