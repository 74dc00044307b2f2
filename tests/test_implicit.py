"""The matrix-free implicit solver (Kvaerno5 + Newton + GMRES on Hessian-vector
products) on a stiff linear flow with a closed form, and its exact evaluation counts."""

import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow._flow import _implicit

# L = 1/2 theta^T A theta - b^T theta with A SPD, cond(A) = 1e4 (stiff); eta = 2:
# theta(t) = A^{-1} b + expm(-eta A t)(theta0 - A^{-1} b). A is rotated so the
# Hessian is not diagonal.
_Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
_LAM = np.array([1.0, 3.0, 30.0, 300.0, 1e4])
A = _Q @ np.diag(_LAM) @ _Q.T
B = np.arange(1.0, 6.0)
ETA = 2.0


def _exact(ts):
    star = np.linalg.solve(A, B)
    coef = _Q.T @ (0.0 - star)
    return star[None] + (np.exp(-ETA * np.outer(ts, _LAM)) * coef[None]) @ _Q.T


def _loss(p):
    return 0.5 * p @ jnp.asarray(A) @ p - jnp.asarray(B) @ p


def test_matfree_kvaerno5_matches_closed_form_and_counts():
    ts = np.linspace(0.0, 2.0, 11)
    sol = gflow.simulate(
        _loss,
        jnp.zeros(5),
        2.0,
        eta=ETA,
        ts=ts,
        solver="kvaerno5-matfree",
        rtol=1e-10,
        atol=1e-12,
        save_params=True,
    )
    assert sol.success, sol.message
    err = np.max(np.abs(sol.params - _exact(ts)) / np.max(np.abs(_exact(ts))))
    # Kvaerno5's local error is controlled to rtol 1e-10; the global error observed is
    # ~1e-9 (the fast mode is resolved once, then damped); 1e-7 leaves margin.
    assert err < 1e-7, err
    st = sol.stats
    # Every Newton iterate is one gradient (linearisation point); each step has 5 stages
    # (4 implicit) with >= 1 Newton iteration each, and each Newton solve >= 1 GMRES mv.
    assert st["grad_evals"] >= 4 * st["num_steps"]
    assert st["hvp_evals"] >= st["grad_evals"] - st["num_steps"] * 1 - 10
    assert st["grad_equivalents"] == st["grad_evals"] + 2 * st["hvp_evals"]


def test_counts_are_exact_on_explicit_solver_via_callback():
    # The host counter and the Butcher-tableau count agree for an explicit solver:
    # Tsit5 makes 6 evaluations per step (FSAL) + 1 at the start.
    import diffrax

    from gflow._flow._flatten import flatten_problem
    from gflow._flow._simulate import make_solve_fn

    prob = flatten_problem(_loss, jnp.zeros(5), eta=0.001)
    run = make_solve_fn(
        0.0,
        1.0,
        solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        dt0=None,
        max_steps=10_000,
        count_evals=True,
    )
    _implicit.reset_counts()
    out = run(prob, jnp.array([0.0, 1.0]))
    counts = _implicit.read_counts()
    assert counts["grad"] == 6 * int(out["stats"]["num_steps"]) + 1
    assert counts["hvp"] == 0


def test_matfree_factory_and_bad_input():
    s = gflow.matfree_implicit("kvaerno3", krylov="bicgstab")
    assert _implicit.is_matfree(s)
    with pytest.raises(ValueError, match="krylov"):
        gflow.matfree_implicit(krylov="lu")
    with pytest.raises(ValueError, match="base"):
        gflow.matfree_implicit("tsit5")


def test_checkpointed_path_counts_implicit_evaluations(tmp_path):
    """`gflow run` integrates in checkpointed segments: its implicit-solver counts must be
    exact too (sum over segments), and the solution still matches the closed form."""
    ts = np.linspace(0.0, 2.0, 11)
    sol = gflow.simulate(
        _loss,
        jnp.zeros(5),
        2.0,
        eta=ETA,
        ts=ts,
        solver="kvaerno5-matfree",
        rtol=1e-10,
        atol=1e-12,
        checkpoint=gflow.Checkpoint(tmp_path / "ck.npz", every_seconds=0, segments=4),
    )
    assert sol.success and sol.stats["segments"] == 4
    st = sol.stats
    assert st["grad_evals"] > st["num_steps"] and st["hvp_evals"] > 0
    assert st["grad_equivalents"] == st["grad_evals"] + _implicit.HVP_COST * st["hvp_evals"]
    np.testing.assert_allclose(sol.final, _exact([2.0])[0], rtol=1e-7, atol=1e-9)
