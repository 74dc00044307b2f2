"""Ensembles: one vmapped solve equals B independent `simulate` calls, member by member.

Tolerance for "equal": the ensemble runs the same arithmetic as `simulate`, but XLA may
order the reductions of a batched matmul differently from the unbatched one, so values can
differ by a few ulp per evaluation. Each member keeps its own step-size control under vmap
(checked below: identical step counts), so these differences are not amplified beyond the
flow's own growth over the short horizons used here: 1e-11 relative is ~5e4 ulp, far below
any solver tolerance (rtol = 1e-8) and far above the 1e-14 observed.

Step *times* are more sensitive: the step size comes from the error estimate, a sum of
stage values that cancels down to ~rtol relative, so an eps round-off in the stages is a
relative error ~eps/rtol ~ 2e-8 in the estimate and ~1/5 of that in the next step size
(PID exponent). Event stop times (a step end) are therefore compared at STEP_TOL = 1e-8,
and states at those times at STEP_TOL too (|dtheta/dt| * dt_diff, with |dtheta/dt| <~ 1 |theta|).
That argument needs every error estimate to be ~rtol. gflow's default controller lets the
first step (0.01) grow by up to 10^4, choosing the second step from an estimate that can be
near round-off, so the step *grid* can shift by ~1e-5 between the batched and the single
run (values at save times still agree to ROUNDOFF); the step-time comparison uses the cap
10 after the first step too (`factormax_first=10`, diffrax's step sequence).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import gflow
from gflow import (
    TwoLayer,
    ensemble_models,
    make_synthetic,
    simulate,
    simulate_ensemble,
    simulate_mse,
    simulate_mse_ensemble,
    stack_params,
)

ROUNDOFF = 1e-11
STEP_TOL = 1e-8


def _close(a, b, tol=ROUNDOFF):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(b)), 1e-300)
    assert np.max(np.abs(a - b)) <= tol * scale, np.max(np.abs(a - b)) / scale


def _quadratic_members(b=3, p=4, seed=0):
    """Members with their own SPD matrix A_b (frozen) and start theta_b: L = theta.A.theta/2,
    whose flow is theta(t) = expm(-A t) theta0 and loss L(t) = theta(t).A.theta(t)/2."""
    rng = np.random.default_rng(seed)
    mats, thetas = [], []
    for i in range(b):
        q = rng.standard_normal((p, p))
        mats.append(q @ q.T / p + (0.2 + 0.3 * i) * np.eye(p))
        thetas.append(rng.standard_normal(p))
    return {"theta": jnp.asarray(np.stack(thetas)), "A": jnp.asarray(np.stack(mats))}


def _quad_loss(params):
    th = params["theta"]
    return 0.5 * th @ params["A"] @ th


def test_quadratic_ensemble_matches_closed_form_and_simulate():
    batch = _quadratic_members()
    trainable = {"theta": True, "A": False}
    ts = np.linspace(0.0, 3.0, 7)
    ens = simulate_ensemble(_quad_loss, batch, 3.0, ts=ts, trainable=trainable, rtol=1e-10)
    assert len(ens) == 3 and ens.loss.shape == (3, 7) and ens.theta_final.shape == (3, 4)
    steps = []
    for b in range(3):
        a, th0 = np.asarray(batch["A"][b]), np.asarray(batch["theta"][b])
        exact = np.array([0.5 * v @ a @ v for v in (scipy.linalg.expm(-a * t) @ th0 for t in ts)])
        # the solver's own accuracy: rtol 1e-10 per step, ~100 steps -> 1e-8 relative
        np.testing.assert_allclose(ens.loss[b], exact, rtol=1e-7)
    for b in (0, 2):  # two members with different spectra (compiles are the slow part)
        member = {"theta": batch["theta"][b], "A": batch["A"][b]}
        sol = simulate(_quad_loss, member, 3.0, ts=ts, trainable=trainable, rtol=1e-10)
        assert ens[b].stats["num_steps"] == sol.stats["num_steps"]
        _close(ens[b].loss, sol.loss)
        _close(ens[b].theta_final, sol.theta_final)
        _close(ens.final["theta"][b], sol.final["theta"])
        steps.append(sol.stats["num_steps"])
    # they take different numbers of steps under vmap too: per-member step control
    assert steps[0] != steps[1]
    np.testing.assert_array_equal(ens.stats["num_steps"][[0, 2]], steps)


def test_mse_ensemble_equals_independent_runs_with_early_stops():
    d, m, n = 6, 12, 5
    data = make_synthetic(n, d, n_test=8, seed=1)
    seeds = [3, 4]

    def build(key):
        return TwoLayer(d, m, key=key)

    target = 1e-3
    kw = dict(
        loss_target=target,
        stepsize_controller=gflow.PIDController(rtol=1e-8, atol=1e-8, factormax_first=10.0),
    )
    ens = simulate_mse_ensemble(build, data, 60.0, seeds=seeds, **kw)
    assert isinstance(ens.final, TwoLayer) and ens.final.W.shape == (2, m, d)
    assert set(ens.metrics) == {"test_loss"}
    default = simulate_mse_ensemble(build, data, 60.0, seeds=seeds, loss_target=target)
    for b, s in enumerate(seeds):
        model = build(jax.random.key(s))
        sol = simulate_mse(model, data, 60.0, **kw)
        # gflow's default controller: the same values at the save times, stop times that
        # may differ by the shifted step grid (module docstring)
        sol_default = simulate_mse(model, data, 60.0, loss_target=target)
        assert default[b].stats["num_steps"] == sol_default.stats["num_steps"]
        _close(default[b].loss, sol_default.loss)
        assert default[b].t_final == pytest.approx(sol_default.t_final, rel=1e-4)
        member = ens[b]
        assert member.result == sol.result == "loss_target_reached"
        assert member.stats["num_steps"] == sol.stats["num_steps"]
        assert member.t_final == pytest.approx(sol.t_final, rel=STEP_TOL)
        _close(member.loss, sol.loss)
        _close(member.metrics["test_loss"], sol.metrics["test_loss"])
        _close(member.final.W, sol.final.W, STEP_TOL)
        # batched arrays: the member's record, then NaN after its own stop
        k = sol.loss.size
        _close(ens.loss[b, :k], sol.loss)
        assert np.all(np.isnan(ens.loss[b, k:]))
    assert len(set(ens.t_final.tolist())) == 2  # each member stopped at its own time


def test_sequential_members_equal_the_vmapped_loop_and_auto_picks_by_size():
    """members="sequential" (lax.map of the unbatched solve) gives each member the same
    steps and values as the batched loop (and as `simulate`), early stops included; "auto"
    maps on CPUs from 256 parameters per member and vmaps below."""
    d, m, n = 6, 48, 5  # 6*48 + 48 = 336 trainable parameters per member
    data = make_synthetic(n, d, n_test=4, seed=2)
    seeds = [0, 1, 2]

    def build(key):
        return TwoLayer(d, m, key=key)

    kw = dict(
        loss_target=1e-3,
        ts=np.linspace(0.0, 60.0, 13),
        stepsize_controller=gflow.PIDController(rtol=1e-8, atol=1e-8, factormax_first=10.0),
    )
    seq = simulate_mse_ensemble(build, data, 60.0, seeds=seeds, members="sequential", **kw)
    vec = simulate_mse_ensemble(build, data, 60.0, seeds=seeds, members="vmap", **kw)
    auto = simulate_mse_ensemble(build, data, 60.0, seeds=seeds, **kw)
    assert seq.settings["members"] == auto.settings["members"] == "sequential"
    assert vec.settings["members"] == "vmap"
    np.testing.assert_array_equal(seq.stats["num_steps"], vec.stats["num_steps"])
    assert len(set(seq.stats["num_steps"].tolist())) > 1  # members stop at their own steps
    assert set(seq.results) == {"loss_target_reached"}
    np.testing.assert_allclose(seq.t_final, vec.t_final, rtol=STEP_TOL)
    for b in range(len(seeds)):
        k = vec[b].loss.size
        _close(seq[b].loss, vec[b].loss)
        _close(seq[b].metrics["test_loss"], vec[b].metrics["test_loss"])
        _close(seq[b].theta_final, vec[b].theta_final, STEP_TOL)
        assert np.all(np.isnan(seq.loss[b, k:])) and np.all(np.isfinite(seq.loss[b, :k]))
        _close(auto[b].loss, seq[b].loss)
    sol = simulate_mse(build(jax.random.key(seeds[1])), data, 60.0, **kw)
    assert seq[1].stats["num_steps"] == sol.stats["num_steps"]
    _close(seq[1].loss, sol.loss)
    # below 256 parameters per member "auto" keeps the batched loop
    small = simulate_ensemble(
        _quad_loss, _quadratic_members(), 1.0, trainable={"theta": True, "A": False}
    )
    assert small.settings["members"] == "vmap"
    with pytest.raises(ValueError, match="members: expected one of 'auto', 'vmap', 'sequential'"):
        simulate_ensemble(_quad_loss, _quadratic_members(), 1.0, members="parallel")


def test_mse_ensemble_over_datasets_and_model_list():
    d, m, n = 5, 8, 4
    datasets = [make_synthetic(n, d, n_test=0, seed=s) for s in (10, 11)]
    models = [TwoLayer(d, m, scaling="ntk", key=jax.random.key(s)) for s in (0, 1)]
    ts = np.linspace(0.0, 5.0, 11)
    ens = simulate_mse_ensemble(models, datasets, 5.0, ts=ts)
    assert ens.metrics == {}
    sol = simulate_mse(models[1], datasets[1], 5.0, ts=ts)  # member 1: model 1 on data 1
    _close(ens.loss[1], sol.loss)
    _close(ens[1].theta_final, sol.theta_final)
    assert not np.allclose(ens.loss[0], ens.loss[1])


def test_data_metrics_see_each_members_own_data():
    # fn(model, data): member b's metric is computed on member b's own inputs, with
    # per-member data (frozen leaves) and with shared data (args) alike
    d, m, n = 5, 8, 4
    datasets = [make_synthetic(n, d, n_test=0, seed=s) for s in (10, 11)]
    models = [TwoLayer(d, m, scaling="ntk", key=jax.random.key(s)) for s in (0, 1)]
    ts = np.linspace(0.0, 1.0, 3)

    def pred(model, data):
        return model(data["x_train"])

    own = simulate_mse_ensemble(models, datasets, 1.0, ts=ts, data_metrics={"pred": pred})
    shared = simulate_mse_ensemble(models, datasets[0], 1.0, ts=ts, data_metrics={"pred": pred})
    for b in (0, 1):
        _close(own.metrics["pred"][b, 0], models[b](datasets[b].x_train))
        _close(shared.metrics["pred"][b, 0], models[b](datasets[0].x_train))
        _close(own.members[b].metrics["pred"][-1], own.members[b].final(datasets[b].x_train))


def test_ensemble_models_match_the_builder():
    def build(key):
        return TwoLayer(3, 7, key=key)

    stacked = ensemble_models(build, [0, 5])
    for b, s in enumerate([0, 5]):
        single = build(jax.random.key(s))
        np.testing.assert_array_equal(stacked.W[b], single.W)
        np.testing.assert_array_equal(stacked.c[b], single.c)


def test_bad_ensembles_raise_clear_errors():
    data = make_synthetic(4, 3, n_test=0, seed=0)
    single = TwoLayer(3, 5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="leading ensemble axis"):
        simulate_mse_ensemble(single, data, 1.0)
    with pytest.raises(ValueError, match="identical shapes"):
        stack_params([single, TwoLayer(3, 6, key=jax.random.key(1))])
    with pytest.raises(ValueError, match="seeds: required"):
        simulate_mse_ensemble(lambda k: TwoLayer(3, 5, key=k), data, 1.0)
    stacked = ensemble_models(lambda k: TwoLayer(3, 5, key=k), [0, 1, 2])
    with pytest.raises(ValueError, match="one dataset per"):
        simulate_mse_ensemble(stacked, [data, data], 1.0)
    with pytest.raises(ValueError, match="same leading ensemble axis"):
        simulate_ensemble(_quad_loss, {"theta": jnp.ones((2, 3)), "A": jnp.ones((3, 3, 3))}, 1.0)
    with pytest.raises(ValueError, match="t1"):
        simulate_ensemble(_quad_loss, _quadratic_members(), -1.0)
    bad = eqx.tree_at(lambda t: t.c, stacked, stacked.c.at[1, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"members \[1\]"):
        simulate_mse_ensemble(bad, data, 1.0)
    assert gflow.EnsembleSolution is not None
