"""Tsit5 with its stages unrolled: the same method as `diffrax.Tsit5`, less memory traffic.

diffrax's Runge-Kutta step keeps the stage derivatives in one (stages, P) array and loops
over the stages. Every stage then (1) forms its input y0 + h sum_j a_ij k_j as a dot
product over the *whole* (7, P) array (7 P reads for every stage, zeros included), and
(2) writes its derivative back into that array (a dynamic-update-slice). With P large and
the gradient cheap (wide two-layer networks) these passes are a measurable part of a step:
on the width-8192 network of `gflow bench` they took about 0.6 ms of the 2.8 ms each
stage costs (docs/benchmarks.md).

`FusedTsit5` writes the step out stage by stage in Python (the tableau is a constant):
stage i reads only y0 and the i derivatives it needs, in one fused elementwise pass per
leaf, and each derivative is its own buffer. The error estimate is one more fused pass.
Dense output is diffrax's Tsit5 interpolation, evaluated from the separate stages (its
weights come from diffrax's own polynomials; no stacked (7, P) copy). Same tableau, same
error order, same FSAL structure: the step sequence equals diffrax's Tsit5 and the values
agree to rounding (tests/test_fused.py). The price is compile time: the gradient is traced
six times instead of once (inside a loop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._fsal import DirectInterpolation, FSALSolver

_TABLEAU: diffrax.ButcherTableau = diffrax.Tsit5.tableau
_BASE_INTERPOLATION = diffrax.Tsit5.interpolation_cls


def _combine(y0, h, coeffs: Sequence[float], fs: Sequence):
    """y0 + h sum_j coeffs[j] fs[j] (or h sum_j ... when y0 is None), skipping zero
    coefficients: one fused elementwise pass per leaf."""
    pairs = [(float(a), f) for a, f in zip(coeffs, fs, strict=False) if float(a) != 0.0]
    weights = [a for a, _ in pairs]
    leaves = [f for _, f in pairs]

    def leaf(y, *ks):
        acc = weights[0] * ks[0]
        for a, k in zip(weights[1:], ks[1:], strict=True):
            acc = acc + a * k
        out = h.astype(acc.dtype) * acc
        return out if y is None else (y + out).astype(y.dtype)

    if y0 is None:
        return jtu.tree_map(lambda *ks: leaf(None, *ks), *leaves)
    return jtu.tree_map(leaf, y0, *leaves)


class StagesInterpolation(DirectInterpolation):
    """diffrax's Tsit5 dense output, y(t) = y0 + h sum_i b_i(s) f_i, evaluated from the
    separately stored stage derivatives f_i in one fused pass per leaf.

    The seven weights b_i(s) are read off diffrax's own interpolation by evaluating it on
    a probe (y0 = 0, k = the 7 x 7 identity, so that y0 + b . k = b): the polynomials are
    diffrax's, and no (7, P) stack is formed (XLA would hoist such a stack out of the
    save loop and build it at every step)."""

    t0: diffrax._custom_types.RealScalarLike
    t1: diffrax._custom_types.RealScalarLike
    y0: diffrax._custom_types.Y
    y1: diffrax._custom_types.Y
    fs: tuple

    def _at(self, t):
        h = jnp.asarray(self.t1 - self.t0)
        zero = jnp.zeros(len(self.fs), h.dtype)
        probe = _BASE_INTERPOLATION(
            t0=self.t0, t1=self.t1, y0=zero, y1=zero, k=jnp.eye(len(self.fs), dtype=h.dtype)
        )
        b = h * probe.evaluate(t)

        def leaf(y, *fs):
            acc = y + b[0].astype(y.dtype) * fs[0]
            for i in range(1, len(fs)):
                acc = acc + b[i].astype(y.dtype) * fs[i]
            return acc

        return jtu.tree_map(leaf, self.y0, *self.fs)


class FusedTsit5(FSALSolver):
    """Tsitouras' 5(4) method (`diffrax.Tsit5`'s tableau, error estimate and dense output)
    with the stages unrolled and each stage's linear combination fused into one pass.

    7 stages, first-same-as-last: 6 vector-field evaluations per attempted step plus one
    at the start. ODEs only (one `diffrax.ODETerm`)."""

    interpolation_cls: ClassVar[Callable[..., StagesInterpolation]] = StagesInterpolation

    # Stages after the first (each costs one evaluation): f(y0) is carried over (FSAL).
    evals_per_step: ClassVar[int] = len(_TABLEAU.c)

    def order(self, terms):
        return 5

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0 = self.first_stage(terms, t0, y0, args, solver_state, made_jump)
        h = jnp.asarray(t1 - t0)
        fs = [f0]
        y_stage = y0
        for a_row, c in zip(_TABLEAU.a_lower, _TABLEAU.c, strict=True):
            y_stage = _combine(y0, h, a_row, fs)
            fs.append(terms.vf(t0 + float(c) * h, y_stage, args))
        # Tsit5 is "same stage as last": the last stage's input is the solution y1, and
        # its derivative is f(y1), the next step's first stage.
        y1 = y_stage
        y_error = _combine(None, h, _TABLEAU.b_error, fs)
        dense_info = dict(y0=y0, y1=y1, fs=tuple(fs))
        return y1, y_error, dense_info, fs[-1], diffrax.RESULTS.successful


def _check_tableau() -> None:
    """The unrolled step relies on Tsit5 being FSAL and SSAL (checked once at import)."""
    b_sol = list(map(float, _TABLEAU.b_sol))
    last_row = list(map(float, _TABLEAU.a_lower[-1]))
    assert _TABLEAU.fsal and float(_TABLEAU.c[-1]) == 1.0
    assert b_sol[:-1] == last_row and b_sol[-1] == 0.0


_check_tableau()
