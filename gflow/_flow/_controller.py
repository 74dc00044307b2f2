"""Step-size controllers: the default adaptive one (diffrax's PID controller with a larger
growth limit on the first step) and gradient descent's fixed grid (`GridSteps`, at the
end).

When dt0 is not given, diffrax starts with a step of 0.01 whatever the problem's time
scale: its Hairer initial-step heuristic only applies to a bare `ODETerm`, and
`diffeqsolve` wraps every term (diffrax 0.7, `_select_initial_step`). The PID controller
then grows the step by at most `factormax` = 10 per accepted step, so the first two or
three steps (12 to 18 gradient evaluations with Tsit5) only grow the step: on the
mean-field networks of `gflow bench` the natural step at rtol 1e-6 is about 2.5. CVODE
(SUNDIALS) caps the growth after the first step at 10^4 for this reason (`etamx1`) and at
10 afterwards; `PIDController` does the same. The first step then serves as the probe of
the error's size, and the next step is chosen from its error estimate,
safety * error^(-1/order), with only the cap raised. On the two-layer mean-field problem
of `gflow bench` this takes Tsit5 at rtol 1e-6 from 43 to 31 gradient evaluations at the
same error (docs/benchmarks.md).

One consequence: the first step's error estimate can be near round-off (a step of 0.01
where the natural step is ~1), and it sets the second step. The step grid is then
sensitive to the last bits of that estimate: a batched (vmapped) run and a single run of
the same problem can place their steps ~1e-5 apart (relative), while their values at the
save times agree to ~1e-12. `factormax_first=10` gives diffrax's step sequence exactly.
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp


class PIDController(diffrax.PIDController):
    """`diffrax.PIDController` whose step may grow by up to `factormax_first` (10^4, as in
    CVODE) after the first accepted step, and by `factormax` (10) after later ones.

    With `factormax_first == factormax` it is diffrax's controller step for step. The state
    is diffrax's state plus a flag "no step accepted yet".
    """

    factormax_first: float = 1e4

    def __check_init__(self):
        if not float(self.factormax_first) >= 1.0:
            raise ValueError(
                f"factormax_first: must be >= 1 (the largest growth of the first step), "
                f"got {self.factormax_first!r}."
            )

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = super().init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, jnp.asarray(True))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner, first = state
        cap = jnp.where(first, self.factormax_first, self.factormax)
        capped = eqx.tree_at(lambda c: c.factormax, self, cap)
        keep, next_t0, next_t1, jump, inner, result = diffrax.PIDController.adapt_step_size(
            capped, t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        return keep, next_t0, next_t1, jump, (inner, first & jnp.logical_not(keep)), result


class GridSteps(diffrax.AbstractStepSizeController):
    """Steps to t_k = k * dt, k = 1 .. n, ending exactly at t1: gradient descent's grid.

    The same steps as `diffrax.StepTo(ts=arange(n + 1) * dt)` (each t_k is the float product
    k * dt, as numpy's grid computes it), but dt, n and t1 are arrays, not the shape of a
    grid: GD runs with another step size or another number of steps are new values of
    the same compiled program. t0 must be 0 and dt0 None. The loop ends when t_n = t1
    is reached, so the solve needs no step limit (`max_steps=None`).
    """

    dt: Any = eqx.field(converter=jnp.asarray)
    n: Any = eqx.field(converter=jnp.asarray)
    t1: Any = eqx.field(converter=jnp.asarray)

    def wrap(self, direction):
        return self

    def _time(self, k):
        # t_k = k * dt; the last grid point is t1 itself (no sliver step from rounding)
        return jnp.where(k >= self.n, self.t1, k.astype(self.t1.dtype) * self.dt)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del terms, t0, t1, y0, args, func, error_order
        if dt0 is not None:
            raise ValueError("GridSteps: dt0 must be None (the grid fixes every step).")
        return self._time(jnp.asarray(1, self.n.dtype)), jnp.asarray(2, self.n.dtype)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        del t0, y0, y1_candidate, args, y_error, error_order
        return True, t1, self._time(state), False, state + 1, diffrax.RESULTS.successful


def _limited_wrap(self, direction):
    return type(self)(self.inner.wrap(direction), self.limit, self.t_end * direction)


def _limited_init(self, terms, t0, t1, y0, dt0, args, func, error_order):
    tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
    return tnext, (state, jnp.zeros((), self.limit.dtype))


def _limited_step(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
    inner, count = state
    keep, next_t0, next_t1, jump, inner, result = self.inner.adapt_step_size(
        t0, t1, y0, y1_candidate, args, y_error, error_order, inner
    )
    count = count + 1
    # diffrax's own bound: after max_steps steps (accepted or rejected) the run ends, and
    # ends as max_steps_reached unless the end time was reached by that last step
    over = (count >= self.limit) & (next_t0 < self.t_end)
    ok = result == diffrax.RESULTS.successful
    result = diffrax.RESULTS.where(over & ok, diffrax.RESULTS.max_steps_reached, result)
    return keep, next_t0, next_t1, jump, (inner, count), result


class StepLimit(diffrax.AbstractStepSizeController):
    """`inner`, ending the solve after `limit` steps (accepted or rejected) with diffrax's
    `max_steps_reached` unless that step reached `t_end`: diffrax's `max_steps`, with the
    limit an array, so a new step limit is a new value of the same compiled program.

    Steps, saved values (to rounding) and the result are those of
    `diffeqsolve(..., max_steps=limit)`: the limit's last step is kept or rejected as the
    inner controller says, and the loop then ends on the unsuccessful result (diffrax's
    loop condition), which an event at that step overrides as it does in diffrax. The
    solve runs without a static bound (`max_steps=None`), so it cannot be used with dense
    output or `StepTo`.
    """

    inner: diffrax.AbstractStepSizeController
    limit: Any = eqx.field(converter=jnp.asarray)
    t_end: Any = eqx.field(converter=jnp.asarray)

    wrap = _limited_wrap
    init = _limited_init
    adapt_step_size = _limited_step


class AdaptiveWrapper(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive controller around an adaptive `inner` one, with inner's rtol, atol and
    norm: diffrax still sees an adaptive controller (an implicit solver takes these
    tolerances for its Newton iterations, and no divergence event is added)."""

    inner: eqx.AbstractVar[diffrax.AbstractAdaptiveStepSizeController]

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm


class AdaptiveStepLimit(AdaptiveWrapper):
    """`StepLimit` of an adaptive controller."""

    inner: diffrax.AbstractAdaptiveStepSizeController
    limit: Any = eqx.field(converter=jnp.asarray)
    t_end: Any = eqx.field(converter=jnp.asarray)

    wrap = _limited_wrap
    init = _limited_init
    adapt_step_size = _limited_step


def limit_steps(
    controller: diffrax.AbstractStepSizeController, limit: Any, t_end: Any
) -> diffrax.AbstractStepSizeController:
    """`controller` with the step limit `limit` (an int32 array) checked in the loop."""
    if isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        return AdaptiveStepLimit(controller, limit, t_end)
    return StepLimit(controller, limit, t_end)
