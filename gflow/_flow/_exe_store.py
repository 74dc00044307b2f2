"""A disk tier for gflow's compile cache: compiled solve programs stored whole, so that
another process running a solve of the same structure (a second `gflow run`, a rerun of
`gflow reproduce`) skips tracing and lowering, not only XLA.

JAX's persistent compilation cache is keyed by the lowered program, so every process
still traces and lowers the solve (about a second for the default problem) before it
can look the program up. Here the key is computed from what determines the program
before tracing:

- a *description* of the static part of the solve spec, walked by `describe`: types
  and functions by module and qualified name (functions also by their defaults and
  closure cells, whose arrays are baked into the program and so enter by content),
  scalars and strings by value, containers and dataclasses (equinox modules) field by
  field, dynamic arrays by shape, dtype and sharding;
- the code: a digest of every source file of the installed gflow package, and the
  versions of jax, jaxlib, diffrax, equinox, lineax, optimistix, numpy, ml_dtypes and
  Python;
- the state that changes how JAX traces and compiles: every JAX config value (except
  the cache folder settings), equinox's error mode, XLA_FLAGS, the GFLOW_* environment
  variables, the backend and its devices.

Only what can be described stably is stored. Code outside gflow and the libraries it
builds on (a loss function the user wrote in a script, say) cannot be: its source is not
in the digest. Such a solve gets no key, and compiles as before (JAX's persistent cache
still saves its XLA time). An object `describe` does not know has no key either. So the
tier can only miss where it could have hit, never return another program: two specs
with equal keys trace to the same program.

Entries are `<folder>/gflow-programs/<key>.pkl` (the serialized executable and its output
tree structure), written atomically; the least recently used are removed above
`MAX_ENTRIES`. A file that fails to load is deleted and the solve compiles. The tier is
on exactly when JAX's persistent cache is (`enable_persistent_cache`: the CLI's default,
off with --no-compile-cache or GFLOW_COMPILE_CACHE=0), and uses a sub-folder of its
folder.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import os
import pickle
import platform
import re
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import jax
import numpy as np

MAX_ENTRIES = 64
SUBFOLDER = "gflow-programs"
_FORMAT = 2

# Functions and types are described by name only where their code is in the key: gflow's
# own (the source digest) and the pinned libraries below (their versions).
_LIBRARIES = ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "numpy", "ml_dtypes")
_TRUSTED_MODULES = ("gflow", "builtins", *_LIBRARIES)


# Environment variables that cannot change a program: cache locations and sizes, and
# how the `gflow` command exits.
_NOT_IN_KEY = ("GFLOW_CACHE_DIR", "GFLOW_TEST_XLA_DIR", "GFLOW_CACHE_SIZE", "GFLOW_FAST_EXIT")


class Unstable(Exception):
    """Raised by `describe` for an object with no description stable across processes."""


def _trusted(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in _TRUSTED_MODULES


def _named(obj: Any, kind: str) -> tuple:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not _trusted(module) or not isinstance(qualname, str):
        raise Unstable(f"{kind} {obj!r} from module {module!r}")
    if kind != "function" and "<locals>" in qualname:
        raise Unstable(f"{kind} {qualname} defined inside a function")
    return (kind, module, qualname)


def _array_content(x: Any) -> tuple:
    a = np.asarray(x)
    return ("const", a.shape, a.dtype.str, hashlib.sha256(a.tobytes()).hexdigest())


def _array_signature(x: Any) -> tuple:
    sharding = getattr(x, "sharding", None)
    return ("arg", tuple(np.shape(x)), np.dtype(x.dtype).str, repr(sharding))


def describe(obj: Any, *, const: bool = False, _seen: frozenset = frozenset()) -> Any:
    """A nested tuple of strings and numbers that determines how `obj` traces.

    Arrays are program arguments (shape, dtype, sharding) where `const` is False, and
    constants (their content) inside functions' closures and defaults. Raises `Unstable`
    for anything it cannot describe."""
    if id(obj) in _seen:
        raise Unstable("a reference cycle")
    seen = _seen | {id(obj)}
    if isinstance(obj, enum.Enum):  # before the scalars: an IntEnum is an int
        return (*_named(type(obj), "enum"), obj.name)
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return (type(obj).__name__, repr(obj))
    if isinstance(obj, np.ndarray | np.generic | jax.Array):
        return _array_content(obj) if const else _array_signature(obj)
    if isinstance(obj, np.dtype):
        return ("dtype", obj.str)
    if isinstance(obj, type):
        return _named(obj, "type")
    if type(obj) in (tuple, list):
        return (type(obj).__name__, tuple(describe(v, const=const, _seen=seen) for v in obj))
    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):  # a named tuple
        items = tuple(describe(v, const=const, _seen=seen) for v in obj)
        return (*_named(type(obj), "namedtuple"), items)
    if isinstance(obj, dict):
        if type(obj) is not dict:
            raise Unstable(f"mapping type {type(obj)!r}")
        items = [
            (describe(k, _seen=seen), describe(v, const=const, _seen=seen)) for k, v in obj.items()
        ]
        return ("dict", tuple(items))  # insertion order: it orders the traced program too
    if isinstance(obj, functools.partial):
        return (
            "partial",
            describe(obj.func, _seen=seen),
            describe(obj.args, const=True, _seen=seen),
            describe(obj.keywords, const=True, _seen=seen),
        )
    if isinstance(obj, types.MethodType):
        return (
            "method",
            describe(obj.__func__, _seen=seen),
            describe(obj.__self__, const=True, _seen=seen),
        )
    if isinstance(obj, types.FunctionType):
        cells = []
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:
                raise Unstable(f"empty closure cell {name!r} of {obj.__qualname__}") from None
            cells.append((name, describe(value, const=True, _seen=seen)))
        return (
            *_named(obj, "function"),
            # the code itself: two lambdas of one scope share a qualified name
            _code_digest(obj.__code__),
            describe(obj.__defaults__, const=True, _seen=seen),
            describe(obj.__kwdefaults__, const=True, _seen=seen),
            tuple(cells),
        )
    if isinstance(obj, types.BuiltinFunctionType | types.ModuleType):
        if isinstance(obj, types.ModuleType):
            if not _trusted(obj.__name__):
                raise Unstable(f"module {obj.__name__}")
            return ("module", obj.__name__)
        return _named(obj, "builtin")
    if isinstance(obj, jax.tree_util.PyTreeDef):
        return ("treedef", _describe_treedef(obj, seen))
    if dataclasses.is_dataclass(obj):
        fields = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name, None)
            static = bool(f.metadata.get("static", False))
            fields.append((f.name, describe(value, const=const or static, _seen=seen)))
        return (*_named(type(obj), "dataclass"), tuple(fields))
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and not hasattr(type(obj), "__slots__"):
        # a plain object of a library type (a sentinel, a custom_jvp wrapper): its type
        # and its attributes
        return (*_named(type(obj), "object"), describe(state, const=True, _seen=seen))
    raise Unstable(f"object of type {type(obj).__module__}.{type(obj).__qualname__}")


def _code_digest(code: types.CodeType) -> str:
    """sha256 of a code object's bytecode, names and constants (nested code included).
    Not `marshal.dumps`: its output depends on reference counts, so it differs between
    processes for the same code."""
    h = hashlib.sha256()
    for part in (
        code.co_code,
        code.co_qualname,
        code.co_filename,
        code.co_firstlineno,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
    ):
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\0")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            text = _code_digest(const)
        elif isinstance(const, frozenset):  # iteration order follows string hashing
            text = repr(sorted(map(repr, const)))
        else:
            text = repr(const)
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def _describe_treedef(treedef: Any, seen: frozenset) -> tuple:
    data = treedef.node_data()
    node = (
        None
        if data is None
        else (describe(data[0], _seen=seen), describe(data[1], const=True, _seen=seen))
    )
    return (node, treedef.num_leaves, tuple(_describe_treedef(c, seen) for c in treedef.children()))


@functools.cache
def _source_digest() -> str:
    """sha256 over the path and content of every .py file of the gflow package."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _versions() -> tuple:
    out = []
    for name in _LIBRARIES:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, None))
    return (*out, ("python", sys.version))


def _environment() -> tuple:
    holders = getattr(jax.config, "_value_holders", None)
    if holders is None:  # pragma: no cover - a JAX without it: no key
        raise Unstable("jax.config has no _value_holders")
    config = tuple(
        (name, repr(holder.value))
        for name, holder in sorted(holders.items())
        if "compilation_cache" not in name and "persistent_cache" not in name
    )
    try:
        from equinox import _errors

        eqx_mode = repr(getattr(_errors, "EQX_ON_ERROR", None))
    except ImportError:  # pragma: no cover
        eqx_mode = None
    env = tuple(
        sorted(
            (k, v)
            for k, v in os.environ.items()
            if k == "XLA_FLAGS" or k.startswith(("GFLOW_", "EQX_", "JAX_"))
            if k not in _NOT_IN_KEY
        )
    )
    devices = tuple((d.platform, d.device_kind, d.id) for d in jax.devices())
    return (
        config,
        eqx_mode,
        env,
        jax.default_backend(),
        devices,
        jax.process_count(),
        _host_cpu(),
    )


@functools.cache
def _host_cpu() -> tuple:
    """The machine and its CPU's instruction-set flags: a cache folder shared by machines
    of different CPUs (a home folder on a cluster) must not hand one machine's compiled
    code to another."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (platform.machine(), platform.system(), hashlib.sha256(flags.encode()).hexdigest())


def program_key(fn: Any, dyn: Any, static: Any) -> str | None:
    """The store's key of the program `fn(combine(dyn, static))`, or None when some part
    has no stable description (then it is not stored)."""
    try:
        leaves = jax.tree_util.tree_leaves(dyn)
        one = jax.devices()[0]
        for leaf in leaves:  # single-device programs only: the executable is device-bound
            if not isinstance(leaf, jax.Array) or leaf.sharding.device_set != {one}:
                return None
        text = repr(
            (
                _FORMAT,
                describe(fn),
                describe(dyn),
                describe(static),
                _source_digest(),
                _versions(),
                _environment(),
            )
        )
    except Unstable:
        return None
    return hashlib.sha256(text.encode()).hexdigest()


_JAX_CACHE_HITS = [0]
_LISTENING = [False]


def _count_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _JAX_CACHE_HITS[0] += 1


def jax_cache_hits() -> int:
    """How many programs this process has taken from JAX's persistent cache (counted
    from the first call on). `store` must not be given such a program: an executable
    JAX loaded from its cache serializes without its compiled functions on CPU (a copy
    loaded from it fails with "NOT_FOUND: Function ... not found"; jaxlib 0.10.2)."""
    if not _LISTENING[0]:
        _LISTENING[0] = True
        jax.monitoring.register_event_listener(_count_hit)
    return _JAX_CACHE_HITS[0]


def folder() -> Path | None:
    """The store's folder: under JAX's persistent cache folder, None when that is off."""
    base = jax.config.jax_compilation_cache_dir
    if not base or os.environ.get("GFLOW_COMPILE_CACHE", "1") == "0":
        return None
    return Path(base) / SUBFOLDER


def load(key: str, dyn: Any) -> Any | None:
    """The stored executable of `key`, loaded for arguments like `dyn`; None when absent
    or unreadable (an unreadable file is removed)."""
    where = folder()
    if where is None:
        return None
    path = where / f"{key}.pkl"
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        entry = pickle.loads(blob)
        if entry.get("format") != _FORMAT:
            raise ValueError("another format")
        in_tree = jax.tree_util.tree_structure(((dyn,), {}))
        if not set(entry["custom_calls"]) <= _LOADABLE_CUSTOM_CALLS:
            raise ValueError("a custom call this process has not registered")
        exe = _deserialize(entry["executable"], in_tree, entry["out_tree"])
    except Exception:  # noqa: BLE001 - a stale or broken entry: drop it and compile
        path.unlink(missing_ok=True)
        return None
    try:
        os.utime(path)  # recently used
    except OSError:
        pass
    return exe


def discard(key: str) -> None:
    """Remove the entry of `key` (a program that failed to run once loaded)."""
    where = folder()
    if where is not None:
        (where / f"{key}.pkl").unlink(missing_ok=True)


def _lapack_targets() -> frozenset[str]:
    try:
        from jaxlib import lapack

        return frozenset(lapack._lapack.registrations())
    except Exception:  # noqa: BLE001 - another jaxlib layout: nothing is loadable
        return frozenset()


_LOADABLE_CUSTOM_CALLS = _lapack_targets()


def custom_calls(exe: Any) -> set[str]:
    """The custom-call targets in a compiled program's optimized HLO."""
    return set(re.findall(r'custom_call_target="([^"]+)"', exe.as_text() or ""))


def _deserialize(blob: bytes, in_tree: Any, out_tree: Any) -> Any:
    """`deserialize_and_load`, after initializing the CPU's LAPACK handlers: JAX
    registers them when it first lowers a linear-algebra call, which a process that
    loads a program instead of tracing it never does; a loaded program calling LAPACK
    (eigh in the kernel metrics) then jumps to a null handler and the process dies
    (segfault; jax.export initializes them the same way before calling a module)."""
    from jax.experimental import serialize_executable

    if jax.default_backend() == "cpu":
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    return serialize_executable.deserialize_and_load(blob, in_tree, out_tree)


def store(key: str, exe: Any, dyn: Any) -> bool:
    """Write `exe` under `key` (atomically); False when it cannot be serialized or
    written, which only means the next process compiles again."""
    where = folder()
    if where is None:
        return False
    try:
        from jax.experimental import serialize_executable

        unloaded = getattr(exe._executable, "_unloaded_executable", None)
        if unloaded is None or any(
            getattr(unloaded, name, None)
            for name in ("host_callbacks", "keepalive", "ordered_effects", "unordered_effects")
        ):
            # host callbacks (progress meter, exact evaluation counts, test delays) are
            # registered per process: a loaded copy could not call them
            return False
        calls = custom_calls(exe)
        if not calls <= _LOADABLE_CUSTOM_CALLS:
            # a handler another process may not have registered (see `_deserialize`)
            return False
        blob, in_tree, out_tree = serialize_executable.serialize(exe)
        if in_tree != jax.tree_util.tree_structure(((dyn,), {})):
            return False
        data = pickle.dumps(
            {
                "format": _FORMAT,
                "executable": blob,
                "out_tree": out_tree,
                "custom_calls": sorted(calls),
            }
        )
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, where / f"{key}.pkl")
    except Exception:  # noqa: BLE001 - not storable (e.g. an output tree pickle refuses)
        return False
    _evict(where)
    return True


def _evict(where: Path) -> None:
    try:
        entries = sorted(where.glob("*.pkl"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    for path in entries[: max(0, len(entries) - MAX_ENTRIES)]:
        path.unlink(missing_ok=True)
