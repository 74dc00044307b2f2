"""What gflow's own explicit solvers (`LowStorageRK4`, `FusedTsit5`) share: both are
first-same-as-last (f(y1) of a step is the next step's f(y0), carried as the solver
state) and both evaluate their dense output directly from stored vectors."""

from __future__ import annotations

import abc
from typing import ClassVar

import diffrax
import equinox.internal as eqxi
import jax
import jax.tree_util as jtu


class DirectInterpolation(diffrax.AbstractLocalInterpolation):
    """A local interpolation given by `_at(t)`, the state at time t."""

    @abc.abstractmethod
    def _at(self, t): ...

    def evaluate(self, t0, t1=None, left: bool = True):
        del left
        if t1 is not None:
            return jtu.tree_map(lambda a, b: a - b, self._at(t1), self._at(t0))
        return self._at(t0)


class FSALSolver(diffrax.AbstractAdaptiveSolver):
    """An explicit first-same-as-last solver for one ODE term: the solver state is f(y0).

    `evals_per_step` vector-field evaluations per attempted step, plus one at the start
    (`init`)."""

    term_structure: ClassVar = diffrax.AbstractTerm
    evals_per_step: ClassVar[int]

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def first_stage(self, terms, t0, y0, args, solver_state, made_jump):
        """f(y0): the carried value, or re-evaluated after a jump in the vector field
        (diffrax's jump_ts), where the stored one is stale."""
        return jax.lax.cond(
            eqxi.unvmap_any(made_jump),
            lambda: terms.vf(t0, y0, args),
            lambda: solver_state,
        )

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
