"""The solvers gflow offers by name (`SOLVERS`, `make_solver`) and what each costs per
step in gradient evaluations (`evals_per_step`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import diffrax

from . import _implicit
from ._fsal import FSALSolver
from ._fused import FusedTsit5
from ._lowstorage import LowStorageRK4
from ._rosenbrock import ExpRosenbrock, GaussNewtonSolver, RosenbrockW


def _rk(cls: type) -> Callable[[], diffrax.AbstractSolver]:
    """A Runge-Kutta solver whose stage loop is a plain `lax.scan` (the solve is never
    differentiated, so diffrax's checkpointed scan is not needed; faster to trace)."""
    return functools.partial(cls, scan_kind="lax")


SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": _rk(diffrax.Heun),
    "midpoint": _rk(diffrax.Midpoint),
    "ralston": _rk(diffrax.Ralston),
    "bosh3": _rk(diffrax.Bosh3),
    "tsit5": _rk(diffrax.Tsit5),
    "dopri5": _rk(diffrax.Dopri5),
    "dopri8": _rk(diffrax.Dopri8),
    "kvaerno3": _rk(diffrax.Kvaerno3),
    "kvaerno4": _rk(diffrax.Kvaerno4),
    "kvaerno5": _rk(diffrax.Kvaerno5),
    "implicit_euler": diffrax.ImplicitEuler,
    # Matrix-free Newton-Krylov (Hessian-vector products, no P x P Jacobian); _implicit.py.
    "kvaerno3-matfree": lambda: _implicit.matfree_implicit("kvaerno3"),
    "kvaerno5-matfree": lambda: _implicit.matfree_implicit("kvaerno5"),
    # 2N-storage fourth order: 6 state vectors per step whatever the stages; _lowstorage.py.
    "lserk4": LowStorageRK4,
    # Tsit5 with the stages unrolled and fused (less memory traffic per step); _fused.py.
    "tsit5-fused": FusedTsit5,
    # Rosenbrock-W (ROS34PW2) with the Gauss-Newton W of a least-squares loss, solved
    # through the n x n Woodbury system; needs residual_fn. _rosenbrock.py.
    "rosw": RosenbrockW,
    # Exponential Rosenbrock (exprb43) with the same Gauss-Newton linearisation, its
    # matrix functions through the n x n kernel; exact on linear least squares.
    "exprb": ExpRosenbrock,
}


def make_solver(solver: str | diffrax.AbstractSolver | None) -> diffrax.AbstractSolver:
    """A diffrax solver from a name (see `SOLVERS`) or a solver object (returned as is)."""
    if solver is None:
        return SOLVERS["tsit5"]()
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in SOLVERS:
        return SOLVERS[solver.lower()]()
    raise ValueError(
        f"solver: unknown solver {solver!r}; use one of {sorted(SOLVERS)} "
        "or pass a diffrax solver object such as diffrax.Dopri8()."
    )


def evals_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int] | None:
    """(vector-field evaluations per attempted step, evaluations at start) for explicit
    Runge-Kutta solvers, from their Butcher tableau; None when it is not fixed (implicit
    solvers, whose Newton iterations vary)."""
    if isinstance(solver, diffrax.Euler):
        return 1, 0
    if isinstance(solver, FSALSolver | GaussNewtonSolver):  # gflow's own: f(y0) once at start
        return solver.evals_per_step, 1
    tableau = getattr(solver, "tableau", None)
    if isinstance(solver, diffrax.AbstractERK) and isinstance(tableau, diffrax.ButcherTableau):
        if tableau.fsal:
            return tableau.num_stages - 1, 1
        return tableau.num_stages, 0
    return None
