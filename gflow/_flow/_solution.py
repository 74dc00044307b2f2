"""The result of a simulation: a small immutable object of arrays and plain numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PyTree = Any


@dataclass(frozen=True)
class Solution:
    """A simulated gradient-flow (or gradient-descent) trajectory.

    Fields:
        ts: (k,) save times that were reached (trimmed where the run stopped early).
        loss: (k,) training loss L(theta(t)) at `ts`.
        grad_norm: (k,) Euclidean norm of grad L at `ts` (unweighted by eta).
        metrics: name -> (k, ...) values of the user's save-time metrics.
        params: parameter pytree with a leading time axis of length k, or None when the
            simulation was run with `save_params=False` (the default).
        final: parameter pytree at `t_final`.
        theta_final: (P,) flat trainable state at `t_final`.
        t_final: the time the integration reached (t1 unless it stopped early).
        success: True when the integration finished normally or stopped at the loss target.
        stopped_early: True when the loss target event ended the run before t1.
        diverged: True when the state or loss became non-finite.
        result: short code: "successful", "loss_target_reached", "diverged",
            "max_steps_reached", "dt_min_reached", "interrupted" (SIGINT/SIGTERM with a
            `Checkpoint`), or another diffrax result name.
        message: a human-readable explanation, with the fix when something went wrong.
        stats: solver statistics: num_steps, num_accepted_steps, num_rejected_steps,
            grad_evals (gradient evaluations by the solver), save_evals (gradient evaluations
            for save-time metrics), compile_seconds, run_seconds.
        settings: the solver settings used (solver name, rtol, atol, max_steps, eta, ...).
        dense: the solver's dense output when simulated with `dense=True`, else None:
            {"ts": (s + 1,) step boundaries, "infos": name -> (s, ...) per-step
            interpolation coefficients, "interpolation": the interpolation's import path}.
            Read it with `evaluate`.
    """

    ts: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    final: PyTree
    theta_final: np.ndarray
    t_final: float
    success: bool
    result: str
    message: str
    stats: dict[str, Any]
    settings: dict[str, Any]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    params: PyTree | None = None
    stopped_early: bool = False
    diverged: bool = False
    dense: dict[str, Any] | None = None

    @property
    def completed(self) -> bool:
        """True when the run reached t1 or its loss target (alias of `success`)."""
        return self.success

    def evaluate(self, t: Any) -> np.ndarray:
        """theta(t) from the solver's dense output, at any t in [t0, t_final].

        Arguments:
            t: a time or an array of times.

        Returns:
            The flat trainable state (like `theta_final`): (P,) for a scalar t, else
            t.shape + (P,). Between save times this is the solver's own interpolant of
            the step containing t (e.g. Tsit5's 4th-order one), accurate to about the
            solve's tolerance; at the save times it equals what was saved.

        Raises ValueError when the run was not simulated with `dense=True` or a time is
        outside [t0, t_final].
        """
        if self.dense is None:
            raise ValueError(
                "dense: this Solution has no dense output; simulate with dense=True to "
                "evaluate between save times (or save parameters at chosen ts)."
            )
        from ._dense import evaluate_dense

        return evaluate_dense(self.dense, t, self.t_final)

    def save(self, path: str | Path) -> Path:
        """Write the solution to PATH.npz (arrays) and PATH.json (everything else), no
        pickle; read it back with `gflow.load_solution(path)`. Returns the .json path.
        Non-array leaves of the parameters (functions held by a Module) are not written:
        `load_solution(path, like=model)` takes them from `like`."""
        from ._persist import save_solution

        return save_solution(self, path)

    def summary(self) -> str:
        """One line: how far it got, the loss drop and the solver's work."""
        drop = self.loss[-1] / self.loss[0] if self.loss.size and self.loss[0] > 0 else np.nan
        return (
            f"{self.result}: t = {self.t_final:.4g}, loss {self.loss[0]:.3e} -> "
            f"{self.loss[-1]:.3e} (x{drop:.2e}), {self.stats.get('num_steps')} steps, "
            f"{self.stats.get('grad_evals')} gradient evaluations, "
            f"compile {self.stats.get('compile_seconds', 0):.2f} s, "
            f"run {self.stats.get('run_seconds', 0):.2f} s"
        )
