"""Tolerances a floating type can honour: a warning when rtol is below its resolution."""

from __future__ import annotations

import warnings

import jax
import numpy as np


class PrecisionWarning(UserWarning):
    """A requested tolerance is finer than the floating type of the state can resolve."""


def check_rtol_resolution(rtol: float, dtype=None) -> bool:
    """Warn (`PrecisionWarning`) when `rtol` is below the resolution of `dtype`.

    Arguments:
        rtol: the solver's relative tolerance.
        dtype: the floating type of the state; default: JAX's default float, float64 when
            x64 is on (gflow's default, GFLOW_X64=1) and float32 otherwise.

    Returns:
        True when rtol >= eps(dtype) (no warning), False after warning. Below eps
        (1.19e-7 for float32, 2.2e-16 for float64) the error estimate is round-off: the
        controller shrinks the step without gaining accuracy, and a run can exhaust
        max_steps.
    """
    dt = np.dtype(jax.dtypes.canonicalize_dtype(np.float64) if dtype is None else dtype)
    eps = float(np.finfo(dt).eps)
    if float(rtol) >= eps:
        return True
    hint = (
        "leave x64 on (do not set GFLOW_X64=0) or use rtol >= 1e-5 in float32 (docs/float32.md)"
        if dt == np.float32
        else "use a larger rtol"
    )
    warnings.warn(
        f"rtol = {rtol:g} is below the resolution of {dt.name} (eps = {eps:.3g}): the solver "
        f"cannot meet it and takes needlessly small steps; {hint}.",
        PrecisionWarning,
        stacklevel=3,
    )
    return False
