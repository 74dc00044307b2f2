"""Implicit solvers with a matrix-free linear solve, and exact evaluation counting.

An implicit Runge-Kutta step solves  z - h gamma f(y + z) = r  for each stage with a
Newton iteration whose linear systems have the matrix  I + h gamma diag(eta) H
(H the Hessian of the loss). gflow never forms that P x P matrix: the Jacobian of the
vector field is linearised at each Newton iterate (`jax.linearize`, i.e. forward-over-reverse
differentiation of the gradient) and applied as Hessian-vector products inside a Krylov
solver (lineax GMRES or BiCGStab).

Counting is exact: `counted_field` wraps the vector field with a host callback (one
count per gradient evaluation, linearisation points included) and `CountingLinearSolver`
counts every Hessian-vector product the Krylov solver applies. The counts live in the
module-level `EVAL_COUNTS` and are reset and read by `integrate` around one run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import lineax as lx
import optimistix as optx

# Exact counts of the current run (reset by `reset_counts`). A gradient-equivalent is
# grad_evals + HVP_COST * hvp_evals: a Hessian-vector product applied from a stored
# linearisation is one tangent pass of forward-over-reverse AD, about the cost of two
# gradient evaluations (Pearlmutter 1994; measured in benchmarks/ as `hvp_over_grad`).
# jac_rows: rows of a residual Jacobian (one vector-Jacobian product each), built by the
# Rosenbrock-W solver (_rosenbrock.py).
EVAL_COUNTS: dict[str, int] = {"grad": 0, "hvp": 0, "jac_rows": 0}
HVP_COST = 2.0


def reset_counts() -> None:
    EVAL_COUNTS["grad"] = 0
    EVAL_COUNTS["hvp"] = 0
    EVAL_COUNTS["jac_rows"] = 0


def read_counts() -> dict[str, int]:
    """The counts of the run just finished (waits for pending host callbacks)."""
    jax.effects_barrier()
    return dict(EVAL_COUNTS)


def _bump_grad() -> None:
    EVAL_COUNTS["grad"] += 1


def _bump_hvp() -> None:
    EVAL_COUNTS["hvp"] += 1


def counted_field(field: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """`field` with one host-side count per evaluation (also when it is only evaluated as
    the primal point of a linearisation)."""

    def wrapped(theta: jax.Array) -> jax.Array:
        jax.debug.callback(_bump_grad)
        return field(theta)

    return wrapped


class CountingLinearSolver(lx.AbstractLinearSolver):
    """A lineax Krylov solver (GMRES or BiCGStab) that counts its matrix-vector products.

    The inner solver's state is the linearised operator; `compute` hands it a
    `FunctionLinearOperator` whose `mv` first bumps the host-side HVP counter.
    """

    inner: lx.AbstractLinearSolver

    def __check_init__(self):
        if not isinstance(self.inner, lx.GMRES | lx.BiCGStab):
            raise ValueError(
                f"linear_solver: CountingLinearSolver wraps lineax.GMRES or lineax.BiCGStab, "
                f"got {type(self.inner).__name__}."
            )

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]) -> Any:
        return self.inner.init(operator, options)

    def compute(self, state: Any, vector: Any, options: dict[str, Any]):
        operator = state

        def mv(v):
            jax.debug.callback(_bump_hvp)
            return operator.mv(v)

        counted = lx.FunctionLinearOperator(mv, operator.in_structure())
        return self.inner.compute(counted, vector, options)

    def transpose(self, state: Any, options: dict[str, Any]):
        return self.inner.transpose(state, options)

    def conj(self, state: Any, options: dict[str, Any]):
        return self.inner.conj(state, options)

    def assume_full_rank(self) -> bool:
        return self.inner.assume_full_rank()


IMPLICIT_BASES = {
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
    "implicit_euler": diffrax.ImplicitEuler,
}
KRYLOV = {"gmres": lx.GMRES, "bicgstab": lx.BiCGStab}


def matfree_implicit(
    base: str = "kvaerno5",
    *,
    krylov: str = "gmres",
    krylov_rtol: float = 1e-6,
    krylov_atol: float = 1e-12,
    krylov_max_steps: int | None = 200,
) -> diffrax.AbstractSolver:
    """An implicit diffrax solver whose Newton (chord) systems are solved matrix-free.

    Arguments:
        base: "kvaerno3" | "kvaerno4" | "kvaerno5" | "implicit_euler".
        krylov: "gmres" | "bicgstab" (lineax), applied to the linearised Jacobian
            I - h gamma d f/d theta = I + h gamma diag(eta) H by Hessian-vector products.
        krylov_rtol, krylov_atol: Krylov tolerances. An inexact inner solve only slows the
            Newton iteration (which itself stops at the step-size controller's rtol/atol),
            so 1e-6 is enough for trajectories accurate to 1e-10.
        krylov_max_steps: cap on Krylov iterations per linear solve.

    Returns:
        The diffrax solver; the Newton iteration uses the step-size controller's
        tolerances (`diffrax.with_stepsize_controller_tols(optimistix.Newton)`).
    """
    if base not in IMPLICIT_BASES:
        raise ValueError(
            f"base: unknown implicit solver {base!r}; use one of {list(IMPLICIT_BASES)}."
        )
    if krylov not in KRYLOV:
        raise ValueError(f"krylov: unknown Krylov solver {krylov!r}; use one of {list(KRYLOV)}.")
    inner = KRYLOV[krylov](rtol=krylov_rtol, atol=krylov_atol, max_steps=krylov_max_steps)
    # Newton rather than (Very)Chord: a chord iteration keeps the linearised Jacobian in
    # its state, which lax.stop_gradient rejects with lineax 0.1.1 / diffrax 0.7.2
    # ("Jaxpr is not a valid JAX type"); Newton re-linearises at every iterate instead.
    root_finder = diffrax.with_stepsize_controller_tols(optx.Newton)(
        linear_solver=CountingLinearSolver(inner)
    )
    return IMPLICIT_BASES[base](root_finder=root_finder, scan_kind="lax")


def is_matfree(solver: diffrax.AbstractSolver) -> bool:
    """Whether `solver` is an implicit solver using a `CountingLinearSolver`."""
    finder = getattr(solver, "root_finder", None)
    return isinstance(getattr(finder, "linear_solver", None), CountingLinearSolver)


def counts_exactly(solver: diffrax.AbstractSolver) -> bool:
    """Whether every evaluation `solver` makes is seen by the host counters (matrix-free
    implicit solvers, and solvers that say so with `exact_counts`)."""
    return is_matfree(solver) or bool(getattr(solver, "exact_counts", False))


def is_implicit(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, diffrax.AbstractImplicitSolver)
