"""A linearly implicit Rosenbrock-W solver for least-squares gradient flows.

For a loss of least-squares form L(theta) = (1/2n) |r(theta)|^2 (r: (n,) residuals, e.g.
f(x_k; theta) - y_k) the gradient-flow field is F(theta) = -(1/n) E J^T r, E = diag(eta),
J = dr/dtheta (n x P), and its Jacobian is -(1/n) E (J^T J + sum_k r_k Hess r_k). The
Gauss-Newton part

    W = -(1/n) E J^T J

has rank <= n. A Rosenbrock-W method needs only an approximation W of the Jacobian (its
order conditions hold for *any* W; Steihaug & Wolfbrandt 1979), so gflow takes the
Gauss-Newton W, computes J from n vector-Jacobian products (in chunks), keeps it for as
long as it describes the flow, and solves every stage system

    (I - h gamma W) x = (I + (h gamma / n) E J^T J) x = b

through the n x n system of the Woodbury identity (never a P x P matrix):

    x = b - c E J^T (I_n + c K)^{-1} J b,    c = h gamma / n,   K = J E J^T (n x n).

K is diagonalised once per Jacobian (K = Q diag(lam) Q^T, `jnp.linalg.eigh`), so a
solve for any step size costs two products with the stored J and two with Q.

Method: ROS34PW2 of Rang & Angermann (2005, BIT 45:761-787, "New Rosenbrock W-methods
of order 3 for partial differential algebraic equations of index 1"): 4 stages, order
3 for any W, an embedded order-2 solution for error control (error order 3), L-stable
and stiffly accurate. It is written in the transformed variables u_i = sum_j Gamma_ij k_i
(Hairer & Wanner, Solving ODEs II, IV.7), which need no products with W:

    (1/(h gamma) - W) u_i = F(y0 + sum_{j<i} a_ij u_j) + (1/h) sum_{j<i} c_ij u_j,
    y1 = y0 + sum_i m_i u_i,   error = sum_i (m_i - mhat_i) u_i,

with a = alpha Gamma^{-1}, c = diag(1/gamma) - Gamma^{-1}, m = b Gamma^{-1}; the
coefficients are computed here from the published (alpha, Gamma, b, bhat).

Dense output: cubic Hermite interpolation from y0, y1, F(y0), F(y1) (third order, as
the method); F(y1) is computed at the end of every step and is the next step's first
stage (first-same-as-last). A step costs 4 gradient evaluations (stages 2-4 and F(y1)).

When J is refreshed: at the start (`init`), and at the start of a step after an
accepted step whose secant defect

    delta = h |F(y1) - F(y0) - W (y1 - y0)| / |y1 - y0|

exceeded `jacobian_tol`, or after `max_age(n)` accepted steps (`jacobian_max_age`, by
default max(20, ceil(n / evals_per_step)): a refresh of n rows then costs at most about
the gradients of the steps between refreshes). The defect
estimates h |(A - W) dy| / |dy| for the true Jacobian A along the step: the part of A
that W misses is treated explicitly by the method, which is stable while h times its
size stays O(1); when it grows, W has to be refreshed. For a linear
least-squares problem delta is at rounding level and J is computed once. A refresh
costs n Jacobian rows (one vector-Jacobian product each), counted exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from . import _implicit
from ._fsal import DirectInterpolation

# ROS34PW2 (Rang & Angermann 2005, Table 4.3): alpha (strictly lower), Gamma (lower,
# diagonal gamma), b, bhat.
_GAMMA = 4.3586652150845900e-01
_ALPHA = np.zeros((4, 4))
_ALPHA[1, 0] = 8.7173304301691801e-01
_ALPHA[2, 0] = 8.4457060015369423e-01
_ALPHA[2, 1] = -1.1299064236484185e-01
_ALPHA[3, 2] = 1.0
_GAMMA_MAT = np.diag([_GAMMA] * 4)
_GAMMA_MAT[1, 0] = -8.7173304301691801e-01
_GAMMA_MAT[2, 0] = -9.0338057013044082e-01
_GAMMA_MAT[2, 1] = 5.4180672388095326e-02
_GAMMA_MAT[3, 0] = 2.4212380706095346e-01
_GAMMA_MAT[3, 1] = -1.2232505839045147
_GAMMA_MAT[3, 2] = 5.4526025533510214e-01
_B = np.array([2.4212380706095346e-01, -1.2232505839045147, 1.5452602553351020, _GAMMA])
_BHAT = np.array([3.7810903145819369e-01, -9.6042292212423178e-02, 0.5, 2.1793326075422950e-01])


def transformed_tableau() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, c, m, mhat) of ROS34PW2 in the variables u = Gamma k (see the module doc)."""
    g_inv = np.linalg.inv(_GAMMA_MAT)
    a = _ALPHA @ g_inv
    c = np.diag(np.diag(g_inv)) - g_inv
    return a, c, _B @ g_inv, _BHAT @ g_inv


_A_T, _C_T, _M, _MHAT = transformed_tableau()
# Relative secant defect below which W counts as exact (linear least squares): no
# refresh by age then.
_EXACT = 1e-8


class GaussNewton(eqx.Module):
    """The stored Gauss-Newton factor: J (n x P), K = J E J^T = Q diag(lam) Q^T."""

    jac: jax.Array
    lam: jax.Array
    q: jax.Array


# Numbers that `chunk` simultaneous backward passes may hold: chunk n P <= 2^28 (2 GiB in
# float64). A backward pass of a residual over n points holds activations of size up to
# ~n P (a two-layer net: n m per layer), so 64 passes at width 1e5 and n = 256 peaked at
# 14 GiB; measured at that size, chunk 4 built J in 9.8 s with 2.6 GiB peak, chunk 64 in
# 17.7 s with 14.2 GiB (benchmarks/rosw_width.py, docs/stiff.md).
_JACOBIAN_BUDGET = 2**28
MAX_CHUNK = 64


def jacobian_chunk(n: int, n_params: int) -> int:
    """Backward passes per batch when J (n x P) is built: MAX_CHUNK, or fewer so that
    chunk * n * P stays within 2^28 numbers; at least 1."""
    return int(max(1, min(MAX_CHUNK, n, _JACOBIAN_BUDGET // max(1, n * n_params))))


def residual_jacobian(
    residual: Callable[[jax.Array], jax.Array], theta: jax.Array, chunk: int | None = None
) -> jax.Array:
    """J = dr/dtheta (n x P) at `theta` from n vector-Jacobian products, `chunk` at a
    time (default `jacobian_chunk(n, P)`; memory: chunk backward passes at once, plus the
    n x P result)."""
    r, vjp = jax.vjp(residual, theta)
    n = r.shape[0]
    chunk = jacobian_chunk(n, theta.size) if chunk is None else int(chunk)
    rows = jax.lax.map(lambda e: vjp(e)[0], jnp.eye(n, dtype=r.dtype), batch_size=min(chunk, n))
    return rows


def gauss_newton(jac: jax.Array, eta: jax.Array) -> GaussNewton:
    """The factor of J: K = J diag(eta) J^T diagonalised (eigenvalues clipped at 0,
    K being positive semi-definite)."""
    k = (jac * eta[None, :]) @ jac.T
    lam, q = jnp.linalg.eigh(0.5 * (k + k.T))
    return GaussNewton(jac=jac, lam=jnp.maximum(lam, 0.0), q=q)


class _Range(eqx.Module):
    """The operators of the Gauss-Newton linearisation W = -(1/n) E J^T J on one factor
    (J, K = J E J^T = Q diag(lam) Q^T):

        proj(v) = Q^T J v          (n,)  coordinates of v in K's eigenbasis
        lift(c) = E J^T Q c        (P,)
        W v = lift(-proj(v) / n),  proj(lift(c)) = lam * c,
        phi_k(s W) v = v / k! + lift(-(s / n) phi_{k+1}(-s lam / n) * proj(v)).

    The last line is the power series of phi_k(sW): W^m = (-1/n)^m E J^T K^(m-1) J for
    m >= 1, so every term but the first acts through K's eigenvalues; on the null space of
    J, phi_k(sW) is 1/k!."""

    gn: GaussNewton
    eta: jax.Array

    def proj(self, v):
        return self.gn.q.T @ (self.gn.jac @ v)

    def lift(self, c):
        return self.eta * (self.gn.jac.T @ (self.gn.q @ c))

    def lift_rows(self, z):
        """`lift` of each row of z (k, n) -> (k, P), in one pass over J (rows of the
        result contiguous)."""
        return self.eta * ((z @ self.gn.q.T) @ self.gn.jac)


def woodbury_solve(gn: GaussNewton, eta: jax.Array, c: jax.Array, b: jax.Array) -> jax.Array:
    """x = (I + c diag(eta) J^T J)^{-1} b through the n x n system (Woodbury identity):

        x = b - c E J^T Q diag(1 / (1 + c lam)) Q^T J b.

    Arguments:
        gn: the stored factor (J, lam, Q) with J diag(eta) J^T = Q diag(lam) Q^T.
        eta: (P,) time scale per entry.
        c: scalar >= 0 (h gamma / n in a Rosenbrock stage).
        b: (P,) right-hand side.

    Returns:
        (P,) solution x; costs two products with J (n x P) and two with Q (n x n).
    """
    rng = _Range(gn=gn, eta=eta)
    return b - c * rng.lift(rng.proj(b) / (1.0 + c * gn.lam))


def _bump_rows(n) -> None:
    _implicit.EVAL_COUNTS["jac_rows"] += int(n)


class HermiteInterpolation(DirectInterpolation):
    """Cubic Hermite interpolation from y0, y1, f0 = F(y0), f1 = F(y1)."""

    t0: Any
    t1: Any
    y0: Any
    y1: Any
    f0: Any
    f1: Any

    def _at(self, t):
        h = self.t1 - self.t0
        s = (t - self.t0) / jnp.where(h == 0, 1.0, h)
        h00 = (1 + 2 * s) * (1 - s) ** 2
        h10 = s * (1 - s) ** 2
        h01 = s**2 * (3 - 2 * s)
        h11 = s**2 * (s - 1)
        return h00 * self.y0 + h01 * self.y1 + h * (h10 * self.f0 + h11 * self.f1)


class GaussNewtonSolver(diffrax.AbstractAdaptiveSolver):
    """What the two least-squares solvers share: the Jacobian-refresh fields, the factor
    of J, and the solver state (F(y0), factor, refresh flag, age) started at `init`.
    Every subclass uses the problem's residual function (`needs_residual`) and costs
    `evals_per_step` gradients per attempted step plus F(y0) once (`evals_per_step` in
    _solvers.py)."""

    jacobian_tol: float = 0.02
    jacobian_max_age: int | None = None
    chunk: int | None = None

    term_structure: ClassVar = diffrax.AbstractTerm
    evals_per_step: ClassVar[int]

    def __check_init__(self):
        if not float(self.jacobian_tol) > 0:
            raise ValueError(
                f"jacobian_tol: must be > 0 (the secant defect that triggers a Jacobian "
                f"refresh; 0.02 is the default), got {self.jacobian_tol!r}."
            )
        age = self.jacobian_max_age
        if (age is not None and int(age) < 1) or (self.chunk is not None and int(self.chunk) < 1):
            raise ValueError(
                f"jacobian_max_age, chunk: must be integers >= 1, got "
                f"{self.jacobian_max_age!r}, {self.chunk!r}."
            )

    def _factor(self, args, theta):
        residual = args.residual
        jac = residual_jacobian(residual, theta, self.chunk)
        jax.debug.callback(_bump_rows, jac.shape[0])
        return gauss_newton(jac, args.eta)

    def init(self, terms, t0, t1, y0, args):
        f0 = terms.vf(t0, y0, args)
        gn = self._factor(args, y0)
        return f0, gn, jnp.asarray(False), jnp.asarray(0, dtype=jnp.int32)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _start(self, terms, t0, y0, args, solver_state, made_jump):
        """(F(y0), factor, age) at a step's start: F(y0) re-evaluated after a jump in the
        vector field, the factor rebuilt when the last accepted step flagged it stale."""
        f0, gn, refresh, age = solver_state
        f0 = jax.lax.cond(eqxi.unvmap_any(made_jump), lambda: terms.vf(t0, y0, args), lambda: f0)
        gn = jax.lax.cond(eqxi.unvmap_any(refresh), lambda: self._factor(args, y0), lambda: gn)
        return f0, gn, jnp.where(refresh, 0, age)

    def max_age(self, n: int) -> int:
        """Accepted steps after which J is rebuilt at the latest: `jacobian_max_age`, or
        by default max(20, ceil(n / evals_per_step)), so that the refreshes (n rows each)
        cost at most about as much as the steps between them. 20 was tuned on the claim-2
        network (n = 16); on a digits run with n = 256 (rosw, rtol 1e-7) 64 instead of
        20 halved the gradient-equivalents (25,665 -> 12,773) at the same error and wall
        time (docs/stiff.md)."""
        if self.jacobian_max_age is not None:
            return int(self.jacobian_max_age)
        return max(20, -(-int(n) // self.evals_per_step))

    def _stale(self, h, dy, df, w_dy, age, n):
        """Whether J must be rebuilt before the next step: the secant defect
        h |df - W dy| / |dy| of the step exceeded `jacobian_tol` (NaN counts as
        exceeded), or the factor reached `max_age(n)` while W is not exact (module
        doc)."""
        miss = jnp.linalg.norm(df - w_dy)
        defect = h * miss / jnp.maximum(jnp.linalg.norm(dy), 1e-300)
        exact = miss <= _EXACT * jnp.linalg.norm(df)  # linear least squares: W is exact
        old = (age + 1 >= self.max_age(n)) & jnp.logical_not(exact)
        return jnp.logical_not(defect <= float(self.jacobian_tol)) | old


class RosenbrockW(GaussNewtonSolver):
    """ROS34PW2 (Rang & Angermann 2005) with the Gauss-Newton W of a least-squares loss,
    stage systems solved through the n x n Woodbury system (module doc).

    The flow's `FlatProblem` (diffrax's `args`) must carry a `residual_fn` with
    loss = (1/2n)|r|^2 (`simulate(..., residual_fn=)`; the MSE front ends pass theirs).
    Flat state only. Solver state: (F(y0), stored factor, refresh flag, age).

    Fields:
        jacobian_tol: refresh J after an accepted step whose secant defect (module doc)
            exceeds this.
        jacobian_max_age: refresh J after this many accepted steps at the latest
            (None: max(20, ceil(n / 4)) for n residuals, `max_age`).
        chunk: vector-Jacobian products computed at once when J is built (None: as many
            as fit in the memory budget, `jacobian_chunk`; at most 64).
    """

    interpolation_cls: ClassVar[Callable[..., HermiteInterpolation]] = HermiteInterpolation
    # Gradient evaluations per attempted step (stages 2-4 and F(y1)) plus F(y0) once at
    # the start; Jacobian rows are counted by a host callback at each refresh.
    evals_per_step: ClassVar[int] = 4

    def order(self, terms):
        return 3

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        """One step in 8 passes over the stored J (n x P) instead of 10: every stage
        increment is kept as u_i = a_i - lift(b_i) (a_i in R^P, b_i in R^n) together with
        its coordinates proj(u_i), so the Woodbury solves need J only for proj(F) of each
        stage (4 passes) and J^T only to form the 3 stage points and, in one pass with
        three columns, y1, the error estimate and W dy (module doc of `_Range`).

        With c = h gamma / n, D = 1 / (1 + c lam) and p = proj(rhs):
        u = h gamma (rhs - c lift(D p)) and proj(u) = h gamma D p (proj(lift(z)) = lam z);
        W dy = lift(-proj(dy) / n) with proj(dy) = sum_i m_i proj(u_i)."""
        f0, gn, age = self._start(terms, t0, y0, args, solver_state, made_jump)
        rng = _Range(gn=gn, eta=args.eta)
        n = gn.jac.shape[0]
        h = jnp.asarray(t1 - t0, dtype=y0.dtype)
        hg = h * _GAMMA
        d = 1.0 / (1.0 + (hg / n) * gn.lam)
        a_parts, b_parts, projs = [], [], []  # u_i = a_i - lift(b_i), proj(u_i)
        for i in range(4):
            if i == 0:
                f_stage = f0
            else:
                a_sum = sum(float(_A_T[i, j]) * a_parts[j] for j in range(i) if _A_T[i, j])
                b_sum = sum(float(_A_T[i, j]) * b_parts[j] for j in range(i) if _A_T[i, j])
                f_stage = terms.vf(t0 + h, y0 + a_sum - rng.lift(b_sum), args)
            a_rhs, b_rhs, p_rhs = f_stage, 0.0, rng.proj(f_stage)
            for j in range(i):
                k = float(_C_T[i, j]) / h
                a_rhs = a_rhs + k * a_parts[j]
                b_rhs = b_rhs + k * b_parts[j]
                p_rhs = p_rhs + k * projs[j]
            a_parts.append(hg * a_rhs)
            b_parts.append(hg * (b_rhs + (hg / n) * d * p_rhs))
            projs.append(hg * d * p_rhs)
        err = [float(_M[i] - _MHAT[i]) for i in range(4)]
        p_dy = sum(float(_M[i]) * projs[i] for i in range(4))
        z = jnp.stack(
            [
                sum(float(_M[i]) * b_parts[i] for i in range(4)),
                sum(err[i] * b_parts[i] for i in range(4)),
                -p_dy / n,
            ]
        )
        lifted = rng.lift_rows(z)  # (3, P): one pass over J
        y1 = y0 + sum(float(_M[i]) * a_parts[i] for i in range(4)) - lifted[0]
        y_error = sum(err[i] * a_parts[i] for i in range(4)) - lifted[1]
        f1 = terms.vf(t1, y1, args)
        # Secant defect of the Gauss-Newton model over this step (module doc).
        dy, df = y1 - y0, f1 - f0
        w_dy = lifted[2]
        stale = self._stale(h, dy, df, w_dy, age, n)
        dense_info = dict(y0=y0, y1=y1, f0=f0, f1=f1)
        state = (f1, gn, stale, age + 1)
        return y1, y_error, dense_info, state, diffrax.RESULTS.successful


# ---------------------------------------------------------------------------------------
# Exponential Rosenbrock (exprb43) with the Gauss-Newton linearisation.


def phi_functions(z: jax.Array, kmax: int) -> list[jax.Array]:
    """[phi_0(z), ..., phi_kmax(z)] elementwise for real z, where phi_0 = exp and
    phi_{k+1}(z) = (phi_k(z) - 1/k!) / z (phi_k(0) = 1/k!).

    For |z| < 2 the Taylor series phi_k(z) = sum_j z^j / (j + k)! (30 terms: the first
    term left out is below 2^30 / 31! ~ 1e-25 of phi_k); otherwise the recurrence from
    exp(z), each step of which divides a difference of O(1/k!) terms by |z| >= 2 (relative
    error at most 1e-13 up to k = 5 against 150-digit arithmetic, tests/test_exprb.py)."""
    small = jnp.abs(z) < 2.0
    zs = jnp.where(small, z, 0.0)
    out_small = []
    for k in range(kmax + 1):
        acc = jnp.zeros_like(z)
        for j in reversed(range(30)):
            acc = acc * zs + 1.0 / math.factorial(j + k)
        out_small.append(acc)
    zl = jnp.where(small, -2.0, z)
    out = [jnp.where(small, out_small[0], jnp.exp(zl))]
    phi = jnp.exp(zl)
    for k in range(1, kmax + 1):
        phi = (phi - 1.0 / math.factorial(k - 1)) / zl
        out.append(jnp.where(small, out_small[k], phi))
    return out


class ExponentialInterpolation(DirectInterpolation):
    """The step's exponential dense output (ExpRosenbrock's doc): with the nonlinear
    remainder D(tau) interpolated through D(0) = 0, D(h/2) = D2, D(h) = D3 as alpha tau +
    beta tau^2,

        y(t0 + s) = y0 + s phi_1(sW) F0 + s^2 phi_2(sW) alpha + 2 s^3 phi_3(sW) beta,

    exact for a linear least-squares flow (D = 0); each coefficient vector is stored with
    its projection (`_Range.proj`) so an evaluation costs one lift."""

    t0: Any
    t1: Any
    y0: Any
    f0: Any
    alpha: Any
    beta: Any
    a_f0: Any
    a_alpha: Any
    a_beta: Any
    rng: _Range

    def _at(self, t):
        s = jnp.asarray(t - self.t0, dtype=self.y0.dtype)
        n = self.a_f0.shape[0]
        z = -s * self.rng.gn.lam / n
        _, _, p2, p3, p4 = phi_functions(z, 4)
        base = self.y0 + s * self.f0 + s**2 / 2 * self.alpha + s**3 / 3 * self.beta
        c = -(s / n) * (s * p2 * self.a_f0 + s**2 * p3 * self.a_alpha + 2 * s**3 * p4 * self.a_beta)
        return base + self.rng.lift(c)


class ExpRosenbrock(GaussNewtonSolver):
    """exprb43, the exponential Rosenbrock method of Hochbruck, Ostermann & Schweitzer
    (2009, SIAM J. Numer. Anal. 47:786-803), with its own error estimate (below) and the
    Gauss-Newton linearisation
    W = -(1/n) E J^T J of a least-squares flow and its matrix functions evaluated through
    the n x n kernel K = J E J^T = Q diag(lam) Q^T (`_Range`), never a P x P matrix.

    With D_i = F(U_i) - F(y0) - W (U_i - y0) (the part of the flow W does not describe):

        U2 = y0 + (h/2) phi_1(hW/2) F0
        U3 = y0 + h phi_1(hW) (F0 + D2)
        y1 = y0 + h phi_1(hW) F0 + h phi_3(hW) (16 D2 - 2 D3) + h phi_4(hW) (-48 D2 + 12 D3)

    Order 4 when W is the flow's Jacobian at y0: for a linear least-squares flow W is
    exact and the method is exact (D = 0) whatever the step, so the steps grow by the
    controller's cap until the save times or t1 bound them. For a nonlinear residual W
    misses the term sum_k r_k Hess r_k / n, which the method treats explicitly: its
    classical order is then 2 (as W -> 0 its weights give a second-order Runge-Kutta
    method). The term vanishes with the residuals; as h -> infinity a step tends to a
    Gauss-Newton step on the range of J, so long steps stay stable.

    Error estimate: h phi_3(hW) (D3 - 2 D2). In D_i = c_i h (A - W) F0 + O(h^2) (A the
    flow's Jacobian, c = 1/2, 1) the first-order parts cancel, so the estimate is O(h^3),
    the local error of the propagated solution when W is inexact (at W = 0 its
    F'F'F term is the method's own, -h^3/12 F'F'F), and exactly 0 when D = 0. The
    published partner (16 phi_3, -2 phi_3) is first order when W is inexact; its
    difference from y1 is O(h^2) and held the default `gflow run` problem to 12,627
    steps (this estimate: 555; Tsit5: 86). As the estimate is the propagated solution's
    own, the global error runs above rtol by the accumulation over steps (2-20x on the
    networks tested; docs/stiff.md). `order` is 2 and `error_order` 3 for the step-size controller.

    A step costs 3 gradient evaluations (F(U2), F(U3), F(y1), the next step's F0) and
    about 10 products with the stored J (n x P). The Jacobian refresh rule is
    `RosenbrockW`'s (secant defect or age). Dense output: `ExponentialInterpolation`
    (not storable for `dense=True`, which would keep J for every step).

    Fields: as `RosenbrockW` (jacobian_tol, jacobian_max_age, chunk).
    """

    interpolation_cls: ClassVar[Callable[..., ExponentialInterpolation]] = ExponentialInterpolation
    evals_per_step: ClassVar[int] = 3

    def order(self, terms):
        # 4 when W is the flow's Jacobian; 2 with the Gauss-Newton W of a nonlinear
        # residual, the case the step-size controller has to serve.
        return 2

    def error_order(self, terms):
        return 3

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0, gn, age = self._start(terms, t0, y0, args, solver_state, made_jump)
        rng = _Range(gn=gn, eta=args.eta)
        lam = gn.lam
        n = lam.shape[0]
        h = jnp.asarray(t1 - t0, dtype=y0.dtype)
        z = -h * lam / n
        _, p1, p2, _, p4, p5 = phi_functions(z, 5)  # phi_k(z) for each eigenvalue
        _, h1, h2 = phi_functions(z / 2, 2)
        a_f = rng.proj(f0)
        # Stage 2: U2 - y0 = (h/2) phi_1(hW/2) F0.
        d_u2 = (h / 2) * (f0 + rng.lift(-(h / (2 * n)) * h2 * a_f))
        a_du2 = (h / 2) * h1 * a_f
        f2 = terms.vf(t0 + h / 2, y0 + d_u2, args)
        # D2 = F2 - F0 - W (U2 - y0); W v = lift(-proj(v) / n), proj(lift(c)) = lam c.
        c_d2 = a_du2 / n
        d2 = f2 - f0 + rng.lift(c_d2)
        a_d2 = rng.proj(f2) - a_f + lam * c_d2
        # Stage 3: U3 - y0 = h phi_1(hW) (F0 + D2).
        g = f0 + d2
        a_g = a_f + a_d2
        d_u3 = h * (g + rng.lift(-(h / n) * p2 * a_g))
        a_du3 = h * p1 * a_g
        f3 = terms.vf(t1, y0 + d_u3, args)
        c_d3 = a_du3 / n
        d3 = f3 - f0 + rng.lift(c_d3)
        a_d3 = rng.proj(f3) - a_f + lam * c_d3
        # y1 = y0 + h phi_1 F0 + h phi_3 G3 + h phi_4 G4 (phi_k(hW) v = v/k! + lift(...)).
        g3, a_g3 = 16 * d2 - 2 * d3, 16 * a_d2 - 2 * a_d3
        g4, a_g4 = -48 * d2 + 12 * d3, -48 * a_d2 + 12 * a_d3
        c1 = -(h * h / n) * (p2 * a_f + p4 * a_g3 + p5 * a_g4)
        y1 = y0 + h * (f0 + g3 / 6 + g4 / 24) + rng.lift(c1)
        # Error estimate h phi_3(hW) (D3 - 2 D2) (class doc): the O(h) parts of D2, D3
        # (c_i h (A - W) F0) cancel, the O(h^2) parts do not: an O(h^3) estimate, the
        # local error of the method when W is inexact; exactly 0 when D = 0.
        g_e, a_ge = d3 - 2 * d2, a_d3 - 2 * a_d2
        y_error = h * g_e / 6 + rng.lift(-(h * h / n) * p4 * a_ge)
        f1 = terms.vf(t1, y1, args)
        # Secant defect of W over the step, as in RosenbrockW.
        dy, df = y1 - y0, f1 - f0
        stale = self._stale(h, dy, df, rng.lift(-rng.proj(dy) / n), age, n)
        # Dense output: D(tau) = alpha tau + beta tau^2 through D(h/2) = D2, D(h) = D3.
        hs = jnp.where(h == 0, 1.0, h)
        alpha, a_alpha = (4 * d2 - d3) / hs, (4 * a_d2 - a_d3) / hs
        beta, a_beta = (-4 * d2 + 2 * d3) / hs**2, (-4 * a_d2 + 2 * a_d3) / hs**2
        dense_info = dict(
            y0=y0,
            f0=f0,
            alpha=alpha,
            beta=beta,
            a_f0=a_f,
            a_alpha=a_alpha,
            a_beta=a_beta,
            rng=rng,
        )
        state = (f1, gn, stale, age + 1)
        return y1, y_error, dense_info, state, diffrax.RESULTS.successful


def needs_residual(solver: Any) -> bool:
    """Whether `solver` uses the problem's residual function."""
    return isinstance(solver, GaussNewtonSolver)
