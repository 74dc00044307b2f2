"""Writing results: atomic files, JSON-safe values, package versions."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


def versions() -> dict[str, str]:
    """Versions of Python, gflow and the numerical stack, and the JAX backend."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("gflow", "jax", "jaxlib", "diffrax", "equinox", "numpy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    import jax

    out["jax_backend"] = jax.default_backend()
    out["jax_devices"] = str(jax.devices())
    out["x64"] = str(jax.config.jax_enable_x64)
    return out


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types; non-finite floats to strings."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; use the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: dict[str, Any]) -> None:
    """Write `obj` as indented JSON atomically (temp file + rename)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file + rename)."""
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (temp file + rename)."""
    atomic_write(Path(path), lambda f: f.write(data))


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to .npz atomically; object arrays are refused (no pickle)."""
    clean = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object:
            raise ValueError(f"{k}: object arrays cannot be stored without pickle.")
        clean[k] = a
    atomic_write(Path(path), lambda f: np.savez(f, **clean))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz written by gflow (never unpickles: object arrays raise ValueError)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file.")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip/format/pickle errors: a bad file
        raise ValueError(
            f"{p}: not a readable .npz ({type(exc).__name__}: {exc}); the file is corrupt "
            "or foreign (gflow never unpickles)."
        ) from None


def read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file.")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc}); the file is corrupt or foreign.") from None
