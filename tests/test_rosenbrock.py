"""The Rosenbrock-W solver (ROS34PW2 with the Gauss-Newton W, Woodbury solves): order 3
on a closed form, order 3 with a frozen (inexact) W, agreement with a tight Dopri8 on a
network, the Woodbury solve against a dense P x P solve, and exact evaluation counts."""

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from _least_squares import ETA as _ETA
from _least_squares import LAM as _LAM
from _least_squares import THETA0_NL as _THETA0
from _least_squares import N as _N
from _least_squares import P as _P
from _least_squares import exact as _exact
from _least_squares import loss as _loss
from _least_squares import loss_nl as _loss_nl
from _least_squares import res as _res
from _least_squares import res_nl as _res_nl

import gflow
from gflow._flow import _implicit
from gflow._flow._rosenbrock import RosenbrockW, gauss_newton, woodbury_solve


def _fixed_step_error(loss, res, theta0, t1, n_steps, reference, solver=None):
    sol = gflow.simulate(
        loss,
        theta0,
        t1,
        eta=_ETA,
        ts=np.array([t1]),
        solver=solver or RosenbrockW(),
        residual_fn=res,
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=t1 / n_steps,
    )
    assert sol.success, sol.message
    return np.linalg.norm(sol.theta_final - reference) / np.linalg.norm(reference)


def test_order_three_on_linear_least_squares():
    # The Gauss-Newton W is the exact Jacobian here; with constant steps the global error
    # must fall by 2^3 = 8 per halving (observed slopes 2.95-3.0; 2.8 allows the
    # pre-asymptotic first halving).
    t1 = 4.0
    errs = [
        _fixed_step_error(_loss, _res, jnp.zeros(_P), t1, m, _exact([t1])[0]) for m in (8, 16, 32)
    ]
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(slopes > 2.8) and np.all(slopes < 3.3), (errs, slopes)


def test_order_three_with_frozen_inexact_w():
    """A W-method keeps its order with any W: J frozen at theta0 (never refreshed)."""
    t1, theta0 = 3.0, jnp.asarray(_THETA0)
    ref = gflow.simulate(
        _loss_nl, theta0, t1, eta=_ETA, ts=np.array([t1]), solver="dopri8", rtol=1e-13, atol=1e-15
    ).theta_final
    frozen = RosenbrockW(jacobian_tol=1e300, jacobian_max_age=10**9)
    errs = [
        _fixed_step_error(_loss_nl, _res_nl, theta0, t1, m, ref, solver=frozen) for m in (4, 8, 16)
    ]
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(slopes > 2.7), (errs, slopes)


def test_steps_equal_a_dense_second_implementation():
    """Five constant steps with J frozen at theta0 equal ROS34PW2 written with dense P x P
    solves (I / (h gamma) - W) u_i = F(stage_i) + sum_j c_ij u_j / h, W = -(1/n) E J0^T J0,
    on a nonlinear residual with n = 5 < P = 12 and a time scale per entry: the Woodbury
    form, its n-space bookkeeping and the tableau, step for step."""
    from gflow._flow._rosenbrock import transformed_tableau

    rng = np.random.default_rng(7)
    n, p, t1, steps = 5, 12, 2.0, 5
    a_mat = jnp.asarray(rng.normal(size=(n, p)) / 2)
    b_vec = jnp.asarray(rng.normal(size=n) / 2)
    eta = np.repeat([0.7, 1.8], p // 2)  # two leaves, a time scale each
    theta0 = jnp.asarray(rng.normal(size=p) / 2)

    def res(th):
        return jnp.tanh(a_mat @ th) + 0.1 * jnp.sum(th**2) - b_vec

    def loss(th):
        return 0.5 * jnp.mean(res(th) ** 2)

    def tree_res(params):
        return res(jnp.concatenate(params))

    def tree_loss(params):
        return loss(jnp.concatenate(params))

    frozen = RosenbrockW(jacobian_tol=1e300, jacobian_max_age=10**9)
    sol = gflow.simulate(
        tree_loss, (theta0[: p // 2], theta0[p // 2 :]), t1, eta=(0.7, 1.8),
        ts=np.array([t1]), solver=frozen, residual_fn=tree_res,
        stepsize_controller=diffrax.ConstantStepSize(), dt0=t1 / steps,
    )  # fmt: skip
    a_t, c_t, m_t, _ = transformed_tableau()
    gamma = 4.3586652150845900e-01
    grad = jax.grad(loss)

    def field(th):
        return -eta * np.asarray(grad(jnp.asarray(th)))

    j0 = np.asarray(jax.jacrev(res)(theta0))
    w = -np.diag(eta) @ j0.T @ j0 / n
    h = t1 / steps
    y = np.asarray(theta0)
    for _ in range(steps):
        us = []
        for i in range(4):
            stage = y + sum(a_t[i, j] * us[j] for j in range(i))
            rhs = field(stage) + sum(c_t[i, j] / h * us[j] for j in range(i))
            us.append(np.linalg.solve(np.eye(p) / (h * gamma) - w, rhs))
        y = y + sum(m_t[i] * us[i] for i in range(4))
    np.testing.assert_allclose(sol.theta_final, y, rtol=1e-12, atol=1e-14)


def test_agrees_with_tight_dopri8_on_a_network():
    data = gflow.make_synthetic(n=8, d=3, seed=1)
    model = gflow.TwoLayer(d=3, m=16, scaling="mf", key=jax.random.key(2))
    ts = np.linspace(0.0, 20.0, 11)
    kw = dict(ts=ts, save_params=False)
    ref = gflow.simulate_mse(model, data, 20.0, solver="dopri8", rtol=1e-12, atol=1e-14, **kw)
    sol = gflow.simulate_mse(model, data, 20.0, solver="rosw", rtol=1e-8, atol=1e-10, **kw)
    assert sol.success and ref.success
    err = np.linalg.norm(sol.theta_final - ref.theta_final) / np.linalg.norm(ref.theta_final)
    # Local error controlled to rtol 1e-8; the global relative error observed is ~1e-8
    # (a contracting flow); 1e-6 leaves margin.
    assert err < 1e-6, err
    np.testing.assert_allclose(sol.loss, ref.loss, rtol=1e-5)


def test_woodbury_solve_matches_dense_solve():
    rng = np.random.default_rng(3)
    n, p = 5, 30
    jac = jnp.asarray(rng.normal(size=(n, p)))
    eta = jnp.asarray(rng.uniform(0.5, 3.0, size=p))
    b = jnp.asarray(rng.normal(size=p))
    gn = gauss_newton(jac, eta)
    for c in (0.0, 1e-3, 1.0, 1e4):
        x = np.asarray(woodbury_solve(gn, eta, jnp.asarray(c), b))
        dense = np.eye(p) + c * np.diag(np.asarray(eta)) @ np.asarray(jac).T @ np.asarray(jac)
        expect = np.linalg.solve(dense, np.asarray(b))
        # cond(dense) <= 1 + c |E J^T J| ~ 1e6 at c = 1e4: rounding ~1e-10 relative.
        np.testing.assert_allclose(x, expect, rtol=1e-9, atol=1e-12 * np.abs(expect).max())


def test_counts_are_exact():
    from gflow._flow._flatten import flatten_problem
    from gflow._flow._simulate import make_solve_fn

    sol = gflow.simulate(
        _loss, jnp.zeros(_P), 50.0, eta=_ETA, solver="rosw", residual_fn=_res, rtol=1e-6
    )
    st = sol.stats
    # 4 gradients per attempted step + F(y0) at the start; one Jacobian (n rows) for a
    # linear problem (the secant defect is at rounding level, no refresh).
    assert st["grad_evals"] == 4 * st["num_steps"] + 1
    assert st["jacobian_rows"] == _N
    assert st["grad_equivalents"] == st["grad_evals"] + _N
    # The same count by the host callback on every vector-field evaluation.
    prob = flatten_problem(_loss, jnp.zeros(_P), eta=_ETA, residual_fn=_res)
    run = make_solve_fn(
        0.0,
        50.0,
        solver=RosenbrockW(),
        stepsize_controller=gflow.PIDController(rtol=1e-6, atol=1e-10),
        dt0=None,
        max_steps=10_000,
        count_evals=True,
    )
    _implicit.reset_counts()
    out = run(prob, jnp.array([0.0, 50.0]))
    counts = _implicit.read_counts()
    assert counts["grad"] == 4 * int(out["stats"]["num_steps"]) + 1
    assert counts["jac_rows"] == _N


def test_bad_inputs():
    with pytest.raises(ValueError, match="residual_fn"):
        gflow.simulate(_loss, jnp.zeros(_P), 1.0, solver="rosw")
    with pytest.raises(ValueError, match="residual_fn"):  # (1/2n)|r|^2 is not the loss
        gflow.simulate(_loss, jnp.zeros(_P), 1.0, solver="rosw", residual_fn=lambda p: 2 * _res(p))
    with pytest.raises(ValueError, match="residual_fn: must return a real array"):  # a scalar
        gflow.simulate(_loss, jnp.zeros(_P), 1.0, residual_fn=lambda p: jnp.sum(p))
    with pytest.raises(ValueError, match="jacobian_tol"):
        RosenbrockW(jacobian_tol=0.0)


def _multi_output():
    """k = 3 outputs at 6 points from a tanh layer (P = 12): (6, 3) residuals."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(6, 4)))
    y = jnp.asarray(np.random.default_rng(4).normal(size=(6, 3)))
    w0 = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4)))

    def res(w):
        return jnp.tanh(x @ w.T) - y

    return res, w0


def test_multi_output_residuals_are_flattened():
    """(n, k) residuals with loss = 0.5 * mean(r**2) over all n k entries (gflow's own
    mse_loss convention) give what the flattened (n k,) residuals give (rosw itself is
    checked against Dopri8 above; auto's probe reads them in the next test)."""
    res, w0 = _multi_output()

    def loss(w):
        return 0.5 * jnp.mean(res(w) ** 2)

    t1, kw = 1e3, dict(ts=np.array([0.0, 10.0, 1e3]), rtol=1e-7, atol=1e-10, save_params=True)
    two_d = gflow.simulate(loss, w0, t1, solver="rosw", residual_fn=res, **kw)
    flat = gflow.simulate(
        loss, w0, t1, solver="rosw", residual_fn=lambda w: res(w).reshape(-1), **kw
    )
    assert two_d.success and flat.success
    np.testing.assert_allclose(two_d.params, flat.params, rtol=1e-12, atol=1e-14)
    assert two_d.stats["jacobian_rows"] == flat.stats["jacobian_rows"] > 0
    assert two_d.stats["jacobian_rows"] % 18 == 0  # n k = 6 x 3 rows per refresh


def test_residuals_of_another_scale_are_refused_before_the_solve():
    """A loss that sums the k outputs per point is k times 0.5 * mean(r**2): rosw and
    auto (from its probe, whatever it would choose) refuse it and name the factor."""
    res, w0 = _multi_output()

    def loss_sum(w):
        return 0.5 * jnp.mean(jnp.sum(res(w) ** 2, axis=1))

    for solver, t1 in (("rosw", 3e3), ("auto", 3e3), ("auto", 1.0)):
        with pytest.raises(ValueError, match=r"residual_fn: .* \(3 times it\).*sqrt\(k\)"):
            gflow.simulate(loss_sum, w0, t1, solver=solver, residual_fn=res)
    # With the loss of the right scale, auto's probe reads all n k = 18 entries.
    ok = gflow.simulate(lambda w: loss_sum(w) / 3, w0, 1.0, solver="auto", residual_fn=res)
    assert ok.success and ok.settings["auto"]["jacobian_rows"] == 18


def test_auto_chooses_by_stiffness_and_linearity_and_records_it():
    # lambda_max of the Gauss-Newton kernel = eta * max(lam) = 2: S = 2 (t1 - t0).
    kw = dict(eta=_ETA, residual_fn=_res, rtol=1e-6, atol=1e-9)
    easy = gflow.simulate(_loss, jnp.zeros(_P), 50.0, solver="auto", **kw)
    stiff = gflow.simulate(_loss, jnp.zeros(_P), 2000.0, solver="auto", save_params=True, **kw)
    for sol, chosen, t1 in ((easy, "tsit5", 50.0), (stiff, "exprb", 2000.0)):
        auto = sol.settings["auto"]
        np.testing.assert_allclose(auto["lambda_max"], _ETA * _LAM.max(), rtol=1e-10)
        np.testing.assert_allclose(auto["stiffness"], _ETA * _LAM.max() * t1, rtol=1e-10)
        assert auto["chosen"] == chosen and auto["switch_times"] == []
        assert auto["linearity_defect"] < 1e-12  # affine residual: rounding level
        assert sol.stats["jacobian_rows"] >= _N  # the probe's rows are counted
    assert easy.settings["solver"] == "Tsit5" and stiff.settings["solver"] == "ExpRosenbrock"
    # exprb: the probe (n rows, one residual evaluation) + one Jacobian (n rows).
    assert stiff.stats["jacobian_rows"] == 2 * _N
    assert stiff.stats["grad_equivalents"] == stiff.stats["grad_evals"] + 2 * _N + 1
    err = np.abs(stiff.params - _exact(stiff.ts)).max() / np.abs(_exact(stiff.ts)).max()
    assert err < 1e-10, err  # exact method on a linear flow; observed ~1e-14
    # A stiff nonlinear residual gets Rosenbrock-W: test_auto_switches_from_tsit5_to_rosw...
    no_res = gflow.simulate(_loss, jnp.zeros(_P), 2000.0, eta=_ETA, solver="auto", rtol=1e-4)
    assert no_res.settings["auto"]["chosen"] == "tsit5"
    assert "residual_fn" in no_res.settings["auto"]["reason"]


def test_auto_probe_for_many_residuals_uses_lanczos_not_the_jacobian():
    """n > LANCZOS_MIN_N: lambda_max comes from 24 Lanczos products with J E J^T (2
    gradient-equivalents each), not from n Jacobian rows. Exact against the closed form
    of a linear least-squares kernel with a known spectrum (n = 120, eigenvalues 1 to
    1e-3, the top two 10% apart) and against a dense eigensolve on a network; affine is
    still told apart from nonlinear; and auto's overhead on a non-stiff flow is the 50
    probe evaluations (with the Jacobian it was n = 256 rows: 4x Tsit5's run here)."""
    from gflow._flow._auto import LANCZOS_ITERS, LANCZOS_MIN_N
    from gflow._flow._rosenbrock import residual_jacobian

    n, p, eta = 120, 150, 2.0
    assert n > LANCZOS_MIN_N
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(p, n)))
    lam = np.concatenate([[1.0, 0.9], np.logspace(-0.1, -3, n - 2)])
    x = jnp.asarray(u @ np.diag(np.sqrt(lam * n)) @ v.T)  # X^T X / n = V diag(lam) V^T
    y = jnp.asarray(rng.normal(size=n))

    def res(th):
        return x @ th - y

    def loss(th):
        return 0.5 * jnp.mean(res(th) ** 2)

    stiff = gflow.simulate(loss, jnp.zeros(p), 2e3, eta=eta, residual_fn=res, solver="auto")
    auto = stiff.settings["auto"]
    assert auto["probe_method"] == "lanczos" and auto["chosen"] == "exprb"
    np.testing.assert_allclose(auto["lambda_max"], eta * 1.0, rtol=1e-12)
    assert auto["linearity_defect"] < 1e-12 and auto["jacobian_rows"] == 0
    probe = 2 * LANCZOS_ITERS + 2
    assert auto["probe_evals"] == probe
    # exprb's own Jacobian (n rows) is the only one; the probe adds its 50 evaluations.
    assert stiff.stats["jacobian_rows"] == n
    assert stiff.stats["grad_equivalents"] == stiff.stats["grad_evals"] + n + probe

    # A network (nonlinear, not stiff over t1 = 20): Tsit5 plus the probe.
    data = gflow.make_synthetic(256, 8, inputs="sphere", target="teacher", seed=1)
    model = gflow.TwoLayer(8, 64, activation="tanh", scaling="mf", key=jax.random.key(1))
    sol = gflow.simulate_mse(model, data, 20.0, solver="auto")
    ref = gflow.simulate_mse(model, data, 20.0, solver="tsit5")
    auto = sol.settings["auto"]
    assert auto["probe_method"] == "lanczos" and auto["chosen"] == "tsit5"
    assert auto["linearity_defect"] > 1e-3
    assert sol.stats["grad_equivalents"] == ref.stats["grad_equivalents"] + probe
    np.testing.assert_array_equal(sol.theta_final, ref.theta_final)
    residual = gflow.mse_residual(model, data)
    theta, unravel = jax.flatten_util.ravel_pytree(eqx.filter(model, model.trainable()))
    rest = eqx.filter(model, model.trainable(), inverse=True)

    def flat_res(th):
        return residual(eqx.combine(unravel(th), rest))

    jac = residual_jacobian(flat_res, theta)
    kernel = 64.0 * (jac @ jac.T) / 256  # eta = m for the mean-field model
    np.testing.assert_allclose(auto["lambda_max"], np.linalg.eigvalsh(kernel)[-1], rtol=1e-10)


def test_jacobian_age_limit_grows_with_n():
    """By default J is rebuilt after max(20, ceil(n / evals per step)) accepted steps at
    the latest, so that n rows per refresh do not outweigh the steps between them; an
    explicit jacobian_max_age is kept. On a network with n = 200 residuals (limit 50)
    this spends fewer Jacobian rows than the old limit 20, at the same error against a
    tight Dopri8 run (measured 7.6e-7 vs 8.0e-7, rows 5,400 vs 7,200)."""
    from gflow._flow._rosenbrock import ExpRosenbrock

    assert RosenbrockW().max_age(16) == 20 and RosenbrockW().max_age(200) == 50
    assert ExpRosenbrock().max_age(200) == 67 and RosenbrockW(jacobian_max_age=7).max_age(200) == 7
    with pytest.raises(ValueError, match="jacobian_max_age"):
        RosenbrockW(jacobian_max_age=0)
    data = gflow.make_synthetic(200, 4, inputs="sphere", target="teacher", seed=0)
    model = gflow.TwoLayer(4, 16, activation="tanh", scaling="mf", key=jax.random.key(0))
    ts = np.linspace(0.0, 3e3, 7)
    kw = dict(ts=ts, save_params=True)
    ref = gflow.simulate_mse(model, data, 3e3, solver="dopri8", rtol=1e-10, atol=1e-12, **kw)
    spec = model.trainable()

    def flat(sol):
        leaves = jax.tree_util.tree_leaves(eqx.filter(sol.params, spec))
        return np.concatenate([np.asarray(a).reshape(len(ts), -1) for a in leaves], axis=1)

    out = {}
    for age in (None, 20):
        sol = gflow.simulate_mse(
            model, data, 3e3, solver=RosenbrockW(jacobian_max_age=age), rtol=1e-6, atol=1e-9, **kw
        )
        err = np.abs(flat(sol) - flat(ref)).max() / np.abs(flat(ref)).max()
        out[age] = (sol.stats["jacobian_rows"], err)
    assert out[None][0] < 0.85 * out[20][0], out
    assert out[None][1] < 2e-6 and out[20][1] < 2e-6, out  # rtol 1e-6: ~8e-7 observed


def test_checkpointed_run_matches_one_solve_and_counts_rows(tmp_path):
    """`gflow run` integrates in checkpointed segments: the Jacobian rows are counted there
    too, and the result matches the closed form."""
    ts = np.linspace(0.0, 200.0, 5)
    kw = dict(eta=_ETA, ts=ts, solver="rosw", residual_fn=_res, rtol=1e-8, atol=1e-11)
    sol = gflow.simulate(
        _loss,
        jnp.zeros(_P),
        200.0,
        checkpoint=gflow.Checkpoint(tmp_path / "ck.npz", every_seconds=0, segments=3),
        **kw,
    )
    assert sol.success and sol.stats["segments"] == 3
    # Each segment's solve starts with its own Jacobian (the solver state's J is carried,
    # but `init` of a segment computes one): between 1 and 3 Jacobians of n rows.
    assert sol.stats["jacobian_rows"] in (_N, 2 * _N, 3 * _N)
    np.testing.assert_allclose(sol.final, _exact([200.0])[0], rtol=1e-6, atol=1e-8)


def test_jacobian_in_memory_bounded_chunks_equals_jacrev():
    from gflow._flow._rosenbrock import jacobian_chunk, residual_jacobian

    # chunk * n * P within 2^28 numbers, between 1 and 64
    assert jacobian_chunk(256, 300_000) == 3
    assert jacobian_chunk(256, 30_000) == 34
    assert jacobian_chunk(256, 300) == 64
    assert jacobian_chunk(8, 300) == 8
    assert jacobian_chunk(4096, 10**6) == 1
    a = jax.random.normal(jax.random.key(0), (7, 5))

    def residual(th):
        return jnp.tanh(a @ th) * th[0]

    th = jnp.linspace(-1.0, 1.0, 5)
    want = jax.jacrev(residual)(th)
    for chunk in (None, 1, 3, 64):  # 3 does not divide n = 7
        got = residual_jacobian(residual, th, chunk)
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_auto_switches_from_tsit5_to_rosw_on_a_stiff_nonlinear_flow():
    """A stiff nonlinear least-squares flow under auto: Tsit5 until t0 + 200 / lambda_max,
    then Rosenbrock-W from where Tsit5 ended; one joined Solution on the requested save
    times, equal to a tight Dopri8 run, with both phases' counts."""
    theta0 = jnp.asarray(_THETA0)
    t1 = 1e5
    ts = np.concatenate([[0.0], np.logspace(-1, 5, 30)])
    kw = dict(eta=_ETA, ts=ts, save_params=True, metrics={"sq": lambda p: jnp.sum(p**2)})
    sol = gflow.simulate(
        _loss_nl, theta0, t1, residual_fn=_res_nl, solver="auto", rtol=1e-7, atol=1e-10, **kw
    )
    ref = gflow.simulate(_loss_nl, theta0, t1, solver="dopri8", rtol=1e-11, atol=1e-13, **kw)
    auto = sol.settings["auto"]
    t_switch = 200.0 / auto["lambda_max"]
    # Rosenbrock-W (order 3 whatever W; exprb would drop to 2 on a nonlinear residual).
    assert auto["stiffness"] >= 2e3 and auto["linearity_defect"] > 1e-3, auto
    assert auto["chosen"] == "rosw" and auto["switch_times"] == [pytest.approx(t_switch)]
    assert sol.settings["solver"] == "RosenbrockW"
    assert [p["solver"] for p in auto["phases"]] == ["tsit5", "rosw"], auto["phases"]
    assert sol.success and not sol.stopped_early and sol.t_final == t1
    np.testing.assert_array_equal(sol.ts, ts)  # the switch time is not a save time
    assert sol.params.shape == (len(ts), 4) and sol.metrics["sq"].shape == (len(ts),)
    # Local error control at 1e-7 on a contracting flow: observed ~1e-7 relative.
    scale = np.abs(ref.params).max()
    np.testing.assert_allclose(sol.params, ref.params, atol=2e-5 * scale)
    np.testing.assert_allclose(sol.metrics["sq"], np.sum(sol.params**2, axis=1), rtol=1e-12)
    # Both phases are counted, and the probe (n rows + one residual evaluation).
    st = sol.stats
    assert st["grad_equivalents"] == st["grad_evals"] + st["jacobian_rows"] + 1
    assert st["jacobian_rows"] >= 2 * 6 and st["num_steps"] == (
        st["num_accepted_steps"] + st["num_rejected_steps"]
    )


def test_auto_two_phases_stop_in_the_first_at_the_loss_target():
    theta0 = jnp.asarray(_THETA0)
    base = gflow.simulate(_loss_nl, theta0, 1e5, eta=_ETA, residual_fn=_res_nl, solver="auto")
    t_switch = base.settings["auto"]["switch_times"][0]
    target = float(np.interp(t_switch / 4, base.ts, base.loss))  # reached before the switch
    sol = gflow.simulate(
        _loss_nl, theta0, 1e5, eta=_ETA, residual_fn=_res_nl, solver="auto", loss_target=target
    )
    assert sol.stopped_early and sol.success and sol.t_final < t_switch
    assert [p["solver"] for p in sol.settings["auto"]["phases"]] == ["tsit5"]
    assert sol.settings["auto"]["switch_times"] == [] and sol.settings["solver"] == "Tsit5"
    assert np.all(sol.ts <= sol.t_final) and sol.loss[-1] <= target * (1 + 1e-9)


def test_auto_keeps_one_solver_with_dense_output():
    """dense=True records one solver's interpolation for the whole run: no switch."""
    theta0 = jnp.asarray(_THETA0)
    sol = gflow.simulate(
        _loss_nl,
        theta0,
        1e5,
        eta=_ETA,
        residual_fn=_res_nl,
        solver="auto",
        rtol=1e-4,
        dense=True,
        max_steps=5000,
    )
    assert sol.settings["auto"]["chosen"] == "rosw" and sol.settings["auto"]["switch_times"] == []
    assert sol.settings["solver"] == "RosenbrockW"
    np.testing.assert_allclose(sol.evaluate(sol.t_final), sol.theta_final, rtol=1e-10)


def test_auto_switch_off_runs_rosw_throughout():
    theta0 = jnp.asarray(_THETA0)
    kw = dict(eta=_ETA, residual_fn=_res_nl, rtol=1e-5, atol=1e-8)
    off = gflow.simulate(_loss_nl, theta0, 1e5, solver="auto", auto_switch=False, **kw)
    rosw = gflow.simulate(_loss_nl, theta0, 1e5, solver="rosw", **kw)
    assert off.settings["auto"]["switch_times"] == [] and "phases" not in off.settings["auto"]
    assert off.stats["num_steps"] == rosw.stats["num_steps"]
    np.testing.assert_array_equal(off.theta_final, rosw.theta_final)
