"""Save-time grids."""

from __future__ import annotations

import numpy as np


def default_ts(t0: float, t1: float, n_linear: int = 101, n_log: int = 100) -> np.ndarray:
    """Save times dense on a linear *and* a log scale over [t0, t1].

    The union of `n_linear` equispaced times and `n_log` geometrically spaced offsets
    from (t1 - t0) * 1e-4 to (t1 - t0), so that an exponential decay is visible on a
    semilog plot (linear part) and the early transient on a log-log plot (log part).

    Returns:
        Sorted, unique float64 times, starting at t0 and ending at t1.
    """
    t0, t1 = float(t0), float(t1)
    if not t1 > t0:
        raise ValueError(f"t1: must be greater than t0 = {t0}, got {t1}.")
    span = t1 - t0
    lin = np.linspace(t0, t1, n_linear)
    log = t0 + np.geomspace(span * 1e-4, span, n_log)
    ts = np.unique(np.concatenate([lin, log, [t0, t1]]))
    ts = ts[(ts >= t0) & (ts <= t1)]
    # merge near-duplicates (a log point that lands on a linear one up to round-off):
    # they would make finite differences such as the local rate meaningless
    keep = np.concatenate([[True], np.diff(ts) > 1e-9 * span])
    keep[-1] = True
    ts = ts[keep]
    if ts.size > 1 and ts[-1] - ts[-2] <= 1e-9 * span:
        ts = np.delete(ts, -2)
    return ts


def check_ts(ts, t0: float, t1: float, name: str = "ts") -> np.ndarray:
    """Validate user save times: 1-D, finite, non-decreasing, inside [t0, t1]."""
    arr = np.asarray(ts, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name}: must be a non-empty 1-D array of times, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf; pass finite save times.")
    if np.any(np.diff(arr) < 0):
        raise ValueError(f"{name}: must be sorted in increasing order; sort it first.")
    if arr[0] < t0 or arr[-1] > t1:
        raise ValueError(
            f"{name}: save times must lie in [t0, t1] = [{t0}, {t1}], "
            f"got [{arr[0]}, {arr[-1]}]; clip them or extend t1."
        )
    return arr
