"""Bound certificates on flows with known answers (linear model: tight bound), on
constructed trajectories (violations, quadrature ambiguity, floors) and small networks."""

import jax
import numpy as np
import pytest

import gflow


@pytest.fixture(scope="module")
def linear_run():
    """Linear least squares with n = 6 <= d = 12: H = X X^T is constant and
    L(t) = (1/2n) sum_i (u_i . r0)^2 exp(-2 lambda_i t / n) exactly."""
    n, d = 6, 12
    data = gflow.make_synthetic(n, d, n_test=0, seed=3)
    m = gflow.Linear(d, key=jax.random.key(1))
    ts = np.linspace(0.0, 3000.0, 301)
    sol = gflow.simulate_mse(
        m,
        data,
        3000.0,
        ts=ts,
        rtol=1e-10,
        atol=1e-14,
        metrics=gflow.kernel_metrics(m, data.x_train, data.y_train),
    )
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    lam, u = np.linalg.eigh(x @ x.T)
    c = u.T @ (np.asarray(m(x)) - y)
    return n, sol, lam, c


def test_linear_bound_is_tight(linear_run):
    n, sol, lam, c = linear_run
    kt = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    np.testing.assert_allclose(kt.eigvals, np.broadcast_to(lam, kt.eigvals.shape), atol=1e-12)
    fit = gflow.fit_rate(sol.ts, sol.loss)
    rep = gflow.certify(sol.ts, sol.loss, kt.lambda_min, n, fit=fit, rayleigh=kt.rayleigh)
    assert rep.passed, str(rep)
    # The terminal rate is the bound itself: (2/n) lambda_min, within the fit's interval,
    # and the fitted-rate check reports a ratio of 1.
    bound = 2.0 / n * lam[0]
    assert fit.ci[0] <= bound <= fit.ci[1]
    assert rep.check("fitted_rate").rel_slack == pytest.approx(0.0, abs=1e-4)
    assert rep.mean_bound[0] == pytest.approx(bound, rel=1e-12)
    assert rep.mean_bound[1] == pytest.approx(bound, rel=1e-12)
    # lambda_min is constant, so both quadrature sums are exact: the envelope is
    # L(0) exp(-(2/n) lambda_min t), and L / envelope -> c_1^2 / |c|^2.
    np.testing.assert_allclose(rep.envelope, sol.loss[0] * np.exp(-bound * sol.ts), rtol=1e-10)
    np.testing.assert_array_equal(rep.envelope, rep.envelope_loose)
    exact = (c[None, :] ** 2 * np.exp(-2.0 * np.outer(sol.ts, lam) / n)).sum(1) / (2 * n)
    use = sol.ts <= fit.window[1]
    # the simulated loss matches the closed form up to the floor's contamination
    # 2 sqrt(L_f / L) (an O(rtol |theta|) error in the residuals) plus the solver's rtol.
    err = np.abs(np.log(sol.loss[use] / exact[use]))
    assert np.all(err <= 2.0 * np.sqrt(fit.floor_level / exact[use]) + 1e-7)
    ratio = sol.loss / rep.envelope
    assert ratio[use][-1] == pytest.approx(c[0] ** 2 / np.sum(c**2), rel=1e-3)
    # the floor at the end is found and excluded, not reported as a violation
    assert fit.floor_time is not None
    assert rep.check("gronwall").n_excluded > 0


def _synthetic(rate=1.0, k=101, t1=10.0):
    ts = np.linspace(0.0, t1, k)
    return ts, np.exp(-rate * ts)


def test_violation_is_flagged():
    """L decays at rate 1 but lambda_min claims (2/n) lambda_min = 1.5: every check fails."""
    ts, loss = _synthetic()
    n = 4
    rep = gflow.certify(ts, loss, np.full(ts.size, 1.5 * n / 2), n, fit=gflow.fit_rate(ts, loss))
    assert not rep.passed
    for name in ("local_rate", "gronwall", "fitted_rate"):
        assert rep.check(name).status == "fail", name
    g = rep.check("gronwall")
    # log L - log envelope = 0.5 t: the worst point is the end with slack -5.
    assert g.slack == pytest.approx(-5.0, rel=1e-12)
    assert g.worst_time == 10.0


def test_exact_bound_passes_within_tolerance():
    """L = L0 exp(-(2/n) lambda t) exactly on the envelope: passes with slack ~ 0."""
    ts, loss = _synthetic()
    n = 4
    rep = gflow.certify(ts, loss, np.full(ts.size, n / 2.0), n, fit=gflow.fit_rate(ts, loss))
    assert rep.passed, str(rep)
    assert abs(rep.check("gronwall").slack) < 1e-12


def test_quadrature_ambiguity_is_inconclusive():
    """lambda_min alternates 1, 3, 1, 3 between save times: the integral is only known to
    lie between the lower sum (1 per unit time) and the upper sum (3). A loss decaying at
    the mean (2) is neither certified nor refuted."""
    ts, _ = _synthetic()
    n = 2
    lam = np.where(np.arange(ts.size) % 2 == 0, 1.0, 3.0)
    loss = np.exp(-2.0 * ts)
    rep = gflow.certify(ts, loss, lam, n, quadrature="bracket")
    assert rep.check("gronwall").status == "inconclusive"
    assert not rep.passed
    np.testing.assert_allclose(rep.envelope, np.exp(-3.0 * ts))
    np.testing.assert_allclose(rep.envelope_loose, np.exp(-1.0 * ts))
    # trapezoid +- 2 h^3 |lambda''| / 12 with |lambda''| = 4 / h^2 per interval: the rate
    # is known within 2 +- 2/3, narrower than the bracket but still inconclusive.
    rep = gflow.certify(ts, loss, lam, n)
    assert rep.check("gronwall").status == "inconclusive"
    np.testing.assert_allclose(rep.envelope[1:], np.exp(-(2 + 2 / 3) * ts[1:]), rtol=1e-10)


def test_trapezoid_is_exact_for_linear_lambda():
    """lambda_min linear in t: the second differences vanish, the trapezoid is exact, and a
    loss on the exact envelope L(0) exp(-(2/n) int lambda) passes with slack ~ 0."""
    ts = np.linspace(0.0, 4.0, 41)
    n = 2
    lam = 1.0 + 0.5 * ts
    loss = np.exp(-(ts + 0.25 * ts**2))
    rep = gflow.certify(ts, loss, lam, n)
    assert rep.passed, str(rep)
    np.testing.assert_allclose(rep.envelope, loss, rtol=1e-12)
    assert rep.check("gronwall").slack == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="quadrature: must be"):
        gflow.certify(ts, loss, lam, n, quadrature="simpson")


def test_floor_points_are_excluded():
    """Exact decay at the bound, then a floor at 1e-20: without the floor information the
    floor violates the envelope; with it, those points are excluded."""
    ts = np.linspace(0.0, 60.0, 241)
    loss = np.exp(-ts) + 1e-20
    n = 2
    lam = np.full(ts.size, 1.0)
    fit = gflow.fit_rate(ts, loss)
    assert fit.floor_time is not None
    bad = gflow.certify(ts, loss, lam, n, floor_time=None)
    assert bad.check("gronwall").status == "fail"
    rep = gflow.certify(ts, loss, lam, n, fit=fit)
    assert rep.check("gronwall").status == "pass", str(rep)
    assert rep.check("gronwall").n_excluded > 0


@pytest.mark.parametrize("kind", ["two-layer", "multilayer"])
def test_small_networks_pass(kind):
    """d >= n two-layer MF and a D >= n multilayer MF: all checks pass, and the Schur bound
    recorded along the flow is below lambda_min(H_W) which is below lambda_min(H)."""
    n = 6
    data = gflow.make_synthetic(n, 8, n_test=0, seed=0)
    key = jax.random.key(2)
    if kind == "two-layer":
        m = gflow.TwoLayer(8, 32, key=key)
    else:
        m = gflow.MultiLayer(8, 16, 32, train_output=True, key=key)
    metrics = gflow.kernel_metrics(m, data.x_train, data.y_train) | gflow.schur_metrics(
        m, data.x_train
    )
    sol = gflow.simulate_mse(m, data, 100.0, ts=np.linspace(0, 100, 101), metrics=metrics)
    kt = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    fit = gflow.fit_rate(sol.ts, sol.loss)
    rep = gflow.certify(
        sol.ts,
        sol.loss,
        kt.lambda_min,
        n,
        fit=fit,
        lambda_max=kt.lambda_max,
        rayleigh=kt.rayleigh,
        schur=sol.metrics["schur"],
    )
    assert rep.passed, str(rep)
    assert {c.name for c in rep.checks} == {
        "local_rate",
        "gronwall",
        "schur",
        "schur_total",
        "fitted_rate",
    }
    schur = sol.metrics["schur"]
    # the closed-form H_W at the final parameters matches the recorded lambda_min(H_W)
    hw, gram, g = gflow.first_layer_kernel(sol.final, data.x_train)
    assert np.linalg.eigvalsh(np.asarray(hw))[0] == pytest.approx(schur[-1, 0], rel=1e-10)
    assert np.min(np.diag(np.asarray(g))) == pytest.approx(schur[-1, 2], rel=1e-12)
    assert np.all(schur[:, 1] > 0)


def test_schur_not_applicable():
    with pytest.raises(ValueError, match="does not apply"):
        gflow.schur_metrics(gflow.Linear(3, key=jax.random.key(0)), np.ones((2, 3)))
    m = gflow.TwoLayer(3, 4, train_first=False, key=jax.random.key(0))
    with pytest.raises(ValueError, match="train_first=False"):
        gflow.first_layer_kernel(m, np.ones((2, 3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ts": np.arange(2.0)}, "ts: need at least 3"),
        ({"loss": np.ones(4)}, "loss: expected shape"),
        ({"loss": -np.ones(5)}, "loss: must be finite and > 0"),
        ({"lambda_min": np.r_[np.ones(4), np.nan]}, "lambda_min: contains NaN"),
        ({"ts": np.arange(5.0)[::-1]}, "ts: must be finite and strictly increasing"),
        ({"n": 0}, "n: must be a positive integer"),
        ({"rel_tol": -1.0}, "rel_tol: must be"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"ts": np.arange(5.0), "loss": np.exp(-np.arange(5.0)), "lambda_min": np.ones(5)}
    args |= {"n": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        gflow.certify(args.pop("ts"), args.pop("loss"), args.pop("lambda_min"), **args)


# --- coverage: a check on a sliver of the run is inconclusive (issue 13, part 1) ---------


def test_coverage_recorded_on_full_run():
    ts, loss = _synthetic()
    n = 4
    rep = gflow.certify(ts, loss, np.full(ts.size, n / 2.0), n, fit=gflow.fit_rate(ts, loss))
    assert rep.reference_span == (0.0, 10.0)
    for name in ("local_rate", "gronwall", "fitted_rate"):
        c = rep.check(name)
        assert c.status == "pass" and c.coverage == 1.0 and c.checked_span == (0.0, 10.0)
        assert "101 save times" in c.covers() or "100 save times" in c.covers()
        assert "(100% of the span)" in c.covers()


def test_phantom_floor_makes_checks_inconclusive():
    """The issue's failure: a 'floor' at t = 0.0105 left 3 points to check, which held,
    and the report passed. The same exact decay with that floor_time: nothing passes."""
    ts = gflow.default_ts(0.0, 50.0)
    loss = 0.5 * np.exp(-0.1 * ts)
    n = 4
    lam = np.full(ts.size, 0.05 * n / 2)  # a true lower bound: (2/n) lambda = 0.05 < 0.1
    rep = gflow.certify(ts, loss, lam, n, floor_time=0.0105)
    for name in ("local_rate", "gronwall"):
        c = rep.check(name)
        assert c.status == "inconclusive", str(rep)
        # a floor time without a level confirming it does not shrink the span: the
        # coverage is measured against the whole run
        assert c.coverage == pytest.approx(c.checked_span[1] / 50.0)
        assert c.coverage < 1e-3
        assert "covers only" in c.detail
    assert not rep.passed
    # without the phantom floor every check passes over the whole run
    full = gflow.certify(ts, loss, lam, n, fit=gflow.fit_rate(ts, loss))
    assert full.passed, str(full)
    assert all(c.coverage >= 0.5 for c in full.checks)


def test_too_few_points_or_short_window_is_inconclusive():
    ts, loss = _synthetic(k=4)
    n = 4
    lam = np.full(ts.size, n / 4.0)
    rep = gflow.certify(ts, loss, lam, n)
    assert rep.check("gronwall").status == "inconclusive"  # 3 points < min_points = 5
    assert rep.check("local_rate").status == "inconclusive"  # 4 points
    assert gflow.certify(ts, loss, lam, n, min_points=3).passed
    # a fit window over 5% of the run: the fitted-rate check cannot pass
    ts, loss = _synthetic(k=201)
    lam = np.full(ts.size, n / 4.0)
    short = gflow.fit_rate(ts, loss, window=(9.5, 10.0))
    rep = gflow.certify(ts, loss, lam, n, fit=short, min_points=5)
    assert rep.check("fitted_rate").status == "inconclusive"
    assert rep.check("fitted_rate").coverage == pytest.approx(0.05)
    assert rep.check("gronwall").status == "pass"
    assert not rep.passed


def test_violation_on_little_coverage_still_fails():
    ts, loss = _synthetic()
    n = 4
    rep = gflow.certify(ts, loss, np.full(ts.size, 1.5 * n / 2), n, floor_time=0.35)
    assert rep.check("gronwall").status == "fail"
    assert rep.check("gronwall").coverage < 0.5
    # a 'floor' at a high level (L(0) < 1e6 L_f) is not confirmed either
    lam = np.full(ts.size, 0.5 * n / 2)
    rep = gflow.certify(ts, loss, lam, n, floor_time=5.0, floor_level=1e-3)
    assert rep.reference_span == (0.0, 10.0)
    rep = gflow.certify(ts, loss, lam, n, floor_time=5.0, floor_level=1e-7)
    assert rep.reference_span == (0.0, 5.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_points": 2}, "min_points: must be an integer >= 3"),
        ({"min_coverage": 1.5}, "min_coverage: must be a fraction"),
        ({"min_fit_coverage": -0.1}, "min_fit_coverage: must be a fraction"),
    ],
)
def test_bad_coverage_input(kwargs, match):
    ts, loss = _synthetic()
    with pytest.raises(ValueError, match=match):
        gflow.certify(ts, loss, np.ones(ts.size), 2, **kwargs)


def test_issue_two_layer_example():
    """The issue's Python example: TwoLayer(d=32, m=256) on make_synthetic(16, 32) to
    t1 = 100 on the default grid. No floor, a rate fitted on the later part of the run,
    and every check covers most of the run."""
    data = gflow.make_synthetic(16, 32, seed=2)
    model = gflow.TwoLayer(d=32, m=256, key=jax.random.key(0))
    sol = gflow.simulate_mse(
        model, data, 100.0, metrics=gflow.kernel_metrics(model, data.x_train, data.y_train)
    )
    fit = gflow.fit_rate(sol.ts, sol.loss)
    assert fit.floor_time is None and fit.bias_bound == 0.0
    assert fit.window[0] >= 20.0 and fit.window[1] == 100.0
    kt = gflow.KernelTrace.from_metric(sol.metrics["kernel"])
    rep = gflow.certify(sol.ts, sol.loss, kt.lambda_min, data.n, fit=fit)
    for c in rep.checks:
        assert c.n_checked >= 5, str(rep)
    for name in ("local_rate", "gronwall"):
        assert rep.check(name).coverage == 1.0
    assert rep.passed == all(c.status == "pass" for c in rep.checks)
