"""A low-storage adaptive Runge-Kutta solver for very wide networks.

Diffrax's Tsit5 keeps all 7 stages of a step (a (7, P) array) plus y0, y1 and the error
estimate: about 11 state vectors. When one state vector is half a gigabyte (a two-layer
network of width 10^6), that is the memory limit. `LowStorageRK4` is the 5-stage,
fourth-order 2N-storage scheme of Carpenter & Kennedy (1994, NASA TM-109112, "solution
3"), written as a diffrax solver so that diffeqsolve, the PID controller, events and
saving work unchanged. One step keeps only

    y0 (for a rejected step), f(y0) (first-same-as-last), U, dU (the two 2N registers),
    the error accumulator E, and one stage derivative

= 6 state vectors, whatever the number of stages.

Error estimate: the same five stages with the minimum-norm third-order weights bhat
(all positive: 0.112, 0.116, 0.191, 0.431, 0.150), accumulated on the fly as
E = h sum_i (b_i - bhat_i) k_i, so `error_order` is 4 (the local error of the embedded
third-order solution). The step propagates the fourth-order solution (local
extrapolation), as Tsit5 and Dopri5 do.

Dense output: cubic Hermite interpolation from y0, y1, f(y0), f(y1) (third order), with
f(y1) evaluated at the end of every step and reused as the next step's first stage, so an
accepted step costs 5 gradient evaluations. The interpolant is evaluated on the fly
(no stacked coefficient array, unlike diffrax's ThirdOrderHermitePolynomialInterpolation).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._fsal import DirectInterpolation, FSALSolver

# Carpenter & Kennedy (1994), five-stage fourth-order 2N-storage coefficients:
#   dU <- A_i dU + h f(t0 + C_i h, U);   U <- U + B_i dU.
_A = (
    Fraction(0),
    Fraction(-567301805773, 1357537059087),
    Fraction(-2404267990393, 2016746695238),
    Fraction(-3550918686646, 2091501179385),
    Fraction(-1275806237668, 842570457699),
)
_B = (
    Fraction(1432997174477, 9575080441755),
    Fraction(5161836677717, 13612068292357),
    Fraction(1720146321549, 2090206949498),
    Fraction(3134564353537, 4481467310338),
    Fraction(2277821191437, 14882151754819),
)


def butcher_tableau() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c) of the scheme in Butcher form, computed exactly from the 2N coefficients.

    dU_i = h sum_{j<=i} (prod_{l=j+1..i} A_l) k_j  and  Y_{i+1} = y0 + sum_{m<=i} B_m dU_m.
    """
    s = len(_A)
    d = [[Fraction(0)] * s for _ in range(s)]
    for i in range(s):
        for j in range(i + 1):
            p = Fraction(1)
            for l in range(j + 1, i + 1):
                p *= _A[l]
            d[i][j] = p

    def weight(stop: int, j: int) -> Fraction:
        return sum((_B[m] * d[m][j] for m in range(stop)), Fraction(0))

    a = [[weight(i, j) for j in range(s)] for i in range(s)]
    b = [weight(s, j) for j in range(s)]
    c = [sum(row, Fraction(0)) for row in a]
    return (
        np.array(a, dtype=np.float64),
        np.array(b, dtype=np.float64),
        np.array(c, dtype=np.float64),
    )


def embedded_weights() -> np.ndarray:
    """The minimum-norm weights bhat of a third-order method on the scheme's stages: the
    solution of sum bhat = 1, bhat.c = 1/2, bhat.c^2 = 1/3, bhat.a.c = 1/6 of least
    Euclidean norm."""
    a, _, c = butcher_tableau()
    m = np.stack([np.ones_like(c), c, c**2, a @ c])
    rhs = np.array([1.0, 1 / 2, 1 / 3, 1 / 6])
    return m.T @ np.linalg.solve(m @ m.T, rhs)


_TABLEAU = butcher_tableau()
# Per-stage coefficients as float64 arrays: 2N coefficients A_i, B_i, the stage times
# C_i and the error weights E_i = b_i - bhat_i.
_A_F = np.array(_A, dtype=np.float64)
_B_F = np.array(_B, dtype=np.float64)
_C = _TABLEAU[2]
_E = _TABLEAU[1] - embedded_weights()


def _axpy(alpha, x, y):
    """alpha * x + y on pytrees."""
    return jtu.tree_map(lambda xi, yi: alpha * xi + yi, x, y)


class HermiteInterpolation(DirectInterpolation):
    """Cubic Hermite interpolation on [t0, t1] from y0, y1 and the derivatives f0, f1,
    evaluated directly (one fused elementwise pass, no stored coefficients)."""

    t0: diffrax._custom_types.RealScalarLike
    t1: diffrax._custom_types.RealScalarLike
    y0: diffrax._custom_types.Y
    y1: diffrax._custom_types.Y
    f0: diffrax._custom_types.Y
    f1: diffrax._custom_types.Y

    def _at(self, t):
        h = self.t1 - self.t0
        s = (t - self.t0) / h
        h00 = (1 + 2 * s) * (1 - s) ** 2
        h10 = s * (1 - s) ** 2
        h01 = s**2 * (3 - 2 * s)
        h11 = s**2 * (s - 1)

        def leaf(y0, y1, f0, f1):
            with jax.numpy_dtype_promotion("standard"):
                return (h00 * y0 + h01 * y1 + (h * h10) * f0 + (h * h11) * f1).astype(y0.dtype)

        return jtu.tree_map(leaf, self.y0, self.y1, self.f0, self.f1)


class LowStorageRK4(FSALSolver):
    """Carpenter-Kennedy 5-stage fourth-order 2N-storage Runge-Kutta with an embedded
    third-order error estimate, first-same-as-last and cubic Hermite dense output.

    Peak memory of one step is 6 state vectors (see the module docstring), against 11 for
    Tsit5. Costs 5 vector-field evaluations per attempted step (Tsit5: 6). ODEs only
    (one `diffrax.ODETerm`).
    """

    interpolation_cls: ClassVar[Callable[..., HermiteInterpolation]] = HermiteInterpolation

    num_stages: ClassVar[int] = 5  # Runge-Kutta stages (memory does not grow with them)
    evals_per_step: ClassVar[int] = 5  # 4 stages + f(y1), which is the next f(y0)

    def order(self, terms):
        return 4

    def error_order(self, terms):
        return 4

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0 = self.first_stage(terms, t0, y0, args, solver_state, made_jump)
        h = t1 - t0
        du = jtu.tree_map(lambda f: h * f, f0)
        u = _axpy(_B_F[0], du, y0)
        err = jtu.tree_map(lambda f: (h * _E[0]) * f, f0)
        coeffs = tuple(jnp.asarray(x[1:]) for x in (_A_F, _B_F, _C, _E))

        def stage(carry, coeff):
            u, du, err = carry
            a_i, b_i, c_i, e_i = coeff
            k = terms.vf(t0 + c_i * h, u, args)
            du = jtu.tree_map(lambda d, ki: a_i * d + h * ki, du, k)
            u = _axpy(b_i, du, u)
            err = _axpy(h * e_i, k, err)
            return (u, du, err), None

        (y1, _, err), _ = jax.lax.scan(stage, (u, du, err), coeffs)
        f1 = terms.vf(t1, y1, args)
        dense_info = dict(y0=y0, y1=y1, f0=f0, f1=f1)
        return y1, err, dense_info, f1, diffrax.RESULTS.successful
