"""fit_rate on synthetic exponentials whose rate is known: noise, floors, two phases."""

import numpy as np
import pytest
from scipy.stats import t as student_t

import gflow
from gflow._analysis._rate import find_floor, local_rate


def _grid(t1=100.0, k=201):
    return np.linspace(0.0, t1, k)


def test_exact_exponential_and_local_rate():
    t = _grid()
    fit = gflow.fit_rate(t, 3.0 * np.exp(-0.2 * t))
    # log L is exactly linear: OLS recovers it to round-off.
    assert fit.rate == pytest.approx(0.2, rel=1e-10)
    assert fit.intercept == pytest.approx(np.log(3.0), rel=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.floor_time is None
    # central differences of a linear function are exact (up to round-off).
    np.testing.assert_allclose(fit.local_rate, 0.2, rtol=1e-8)


def test_noise_interval_coverage():
    """With multiplicative log-normal noise the 95% interval covers the true rate in
    about 95% of runs; over 40 seeds we require >= 32 (binomial 40 x 0.95 has a 0.1%
    chance of fewer than 33) and the standard error to match the OLS theory."""
    t = _grid(50.0, 101)
    rate, sigma = 0.3, 0.05
    covered = 0
    for seed in range(40):
        noise = np.random.default_rng(seed).normal(0.0, sigma, t.size)
        fit = gflow.fit_rate(t, np.exp(-rate * t + noise), window=(0.0, 50.0))
        covered += fit.ci[0] <= rate <= fit.ci[1]
        se_theory = sigma / np.sqrt(np.sum((t - t.mean()) ** 2))
        assert fit.stderr == pytest.approx(se_theory, rel=0.35)
    assert covered >= 32


def test_noise_automatic_window():
    t = _grid(50.0, 201)
    noise = np.random.default_rng(1).normal(0.0, 0.02, t.size)
    fit = gflow.fit_rate(t, np.exp(-0.3 * t + noise))
    assert fit.ci[0] <= 0.3 <= fit.ci[1]
    assert fit.n_points >= 100  # a pure exponential: the window should be long


def test_floor_is_detected_and_excluded():
    """Decay at rate 0.5 (with 1e-4 relative solver-like noise) down to a floor of 1e-14
    with round-off noise: the floor is found where the exponential meets it, and the rate
    is not biased by it."""
    t = _grid(150.0, 301)
    rng = np.random.default_rng(0)
    decay = np.exp(-0.5 * t + rng.normal(0.0, 1e-4, t.size))
    loss = decay + 1e-14 * (1.0 + 0.3 * rng.random(t.size))
    fit = gflow.fit_rate(t, loss)
    t_meet = np.log(1e14) / 0.5  # ~64.5: the exponential reaches the floor
    assert fit.floor_time is not None
    assert t_meet - 10 <= fit.floor_time <= t_meet + 5
    assert fit.window[1] <= fit.floor_time
    assert fit.ci[0] <= 0.5 <= fit.ci[1]
    assert fit.rate == pytest.approx(0.5, rel=1e-3)
    # without floor detection a fit over everything would be heavily biased
    naive = gflow.fit_rate(t, loss, window=(0.0, 150.0))
    assert naive.rate < 0.3


def test_two_phases_terminal_rate():
    """Fast phase (rate 1.0) until t = 20, then a slower phase (rate 0.1): the fit keeps
    the terminal phase, and a slow second phase is not mistaken for a floor."""
    t = _grid(200.0, 401)
    logl = np.where(t < 20.0, -1.0 * t, -20.0 - 0.1 * (t - 20.0))
    noise = np.random.default_rng(2).normal(0.0, 0.01, t.size)
    fit = gflow.fit_rate(t, np.exp(logl + noise))
    assert fit.floor_time is None
    assert fit.window[0] >= 20.0
    assert fit.ci[0] <= 0.1 <= fit.ci[1]


def test_transient_is_skipped():
    """L = exp(-0.05 t) (1 + 20 exp(-t / 2)): a transient that dies out by t ~ 30."""
    t = _grid(300.0, 301)
    loss = np.exp(-0.05 * t) * (1.0 + 20.0 * np.exp(-t / 2.0))
    fit = gflow.fit_rate(t, loss)
    assert fit.window[0] >= 15.0  # the transient factor is < 1e-2 from t = 15 on
    assert fit.rate == pytest.approx(0.05, rel=1e-4)
    assert fit.ci[0] <= 0.05 + 1e-6 and fit.ci[1] >= 0.05 - 1e-6


def test_sum_of_exponentials_slowest_mode():
    t = _grid(400.0, 401)
    loss = 1.0 * np.exp(-0.3 * t) + 0.1 * np.exp(-0.02 * t)
    fit = gflow.fit_rate(t, loss)
    assert fit.rate == pytest.approx(0.02, rel=1e-3)


def test_local_rate_second_order():
    """-(d/dt) log L for L = exp(-t^2/2) is t; central differences err by O(h^2) in the
    interior (exactly 0 for a quadratic log L) and O(h) at the two ends."""
    t = np.linspace(0.0, 3.0, 61)
    lr = local_rate(t, np.exp(-(t**2) / 2))
    np.testing.assert_allclose(lr[1:-1], t[1:-1], atol=1e-12)
    assert abs(lr[0] - t[0]) <= 0.05 / 2 + 1e-12


def test_find_floor_none_on_clean_decay():
    t = _grid()
    assert find_floor(t, np.exp(-0.1 * t)) is None


@pytest.mark.parametrize(
    "ts, loss, match",
    [
        (np.arange(10.0), -np.ones(10), "loss: must be finite and > 0"),
        (np.arange(10.0), np.r_[np.ones(9), np.nan], "loss: must be finite"),
        (np.arange(10.0), np.r_[np.ones(9), 0.0], "loss: must be finite and > 0"),
        (np.arange(10.0)[::-1], np.ones(10), "ts: must be finite and strictly increasing"),
        (np.r_[0.0, 0.0, np.arange(1.0, 9.0)], np.ones(10), "strictly increasing"),
        (np.arange(3.0), np.ones(3), "ts: needs at least 5 points"),
        (np.arange(10.0), np.ones(9), "loss: expected shape"),
    ],
)
def test_bad_input(ts, loss, match):
    with pytest.raises(ValueError, match=match):
        gflow.fit_rate(ts, loss)


def test_bad_window():
    t = _grid()
    with pytest.raises(ValueError, match="window: needs t_start < t_end"):
        gflow.fit_rate(t, np.exp(-t), window=(5.0, 1.0))
    with pytest.raises(ValueError, match="window: holds 1 save times"):
        gflow.fit_rate(t, np.exp(-t), window=(0.1, 0.6))


# --- floor detection: a floor is a floor, judged in time (issue 13, part 1) ---------------


def _default_grid(t1=100.0):
    """The default save grid: half linear, half log-spaced (dense early in time)."""
    return gflow.default_ts(0.0, t1)


@pytest.mark.parametrize("rate", [0.01, 0.1, 1.0])
def test_no_floor_on_exponentials_default_grid(rate):
    t = _default_grid()
    loss = 0.5 * np.exp(-rate * t)
    assert find_floor(t, loss) is None
    fit = gflow.fit_rate(t, loss)
    assert fit.floor_time is None and fit.bias_bound == 0.0
    assert fit.rate == pytest.approx(rate, rel=1e-9)


@pytest.mark.parametrize(
    "name, loss_fn",
    [
        ("1/t", lambda t: 1.0 / (1.0 + t)),
        ("1/t^2", lambda t: (1.0 + t) ** -2.0),
        ("1/sqrt(t)", lambda t: (1.0 + t) ** -0.5),
        # the digits run: 0.53 -> 0.012 with a rate falling from 0.17 to 0.04
        ("slowing", lambda t: 0.5 * np.exp(-0.17 * 10 * np.log1p(t / 10))),
        ("two rates", lambda t: np.exp(-np.where(t < 20, t, 20 + 0.05 * (t - 20)))),
    ],
)
@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_no_floor_on_decays_that_slow_down(name, loss_fn, noise):
    """Decays that slow down are not floors on the default (half log-spaced) grid, where
    the old index-based test found a 'floor' at t = 0.01, and on a fine linear grid. The
    bias bound of a phantom floor must not inflate the interval: it is 0."""
    rng = np.random.default_rng(3)
    for t in (_default_grid(), np.linspace(0.0, 100.0, 2001)):
        loss = loss_fn(t) * np.exp(noise * rng.normal(size=t.size))
        assert find_floor(t, loss) is None, name
        fit = gflow.fit_rate(t, loss, window=(50.0, 100.0))
        assert fit.floor_time is None and fit.bias_bound == 0.0
        # with no floor the half-width is the Student t interval alone
        half = 0.5 * (fit.ci[1] - fit.ci[0])
        assert half == pytest.approx(
            float(student_t.ppf(0.975, fit.n_points - 2)) * fit.stderr, rel=1e-12
        )


def test_plateau_then_resume_is_not_a_floor():
    """Decay, a plateau (a saddle) flat to 1e-9 for half the run, then decay again."""
    t = np.linspace(0.0, 200.0, 401)
    logl = np.where(t < 10, -t, np.where(t < 110, -10 - 1e-9 * (t - 10), -10 - (t - 110)))
    assert find_floor(t, np.exp(logl)) is None
    # resuming in the last fifth only
    logl = np.where(t < 10, -t, np.where(t < 160, -10.0, -10 - 0.5 * (t - 160)))
    assert find_floor(t, np.exp(logl)) is None


@pytest.mark.parametrize("sd", [0.1, 1.0, 3.0])
def test_noisy_floor_found_where_decay_meets_it(sd):
    """Decay at rate 0.5 onto a floor 1e-20 with log-normal round-off noise of sd `sd` in
    ln L (sd = 3: values spread over 2.6 decades, with isolated deep dips), on the default
    grid: the floor starts where the decay enters the noise band, within about 6 noise sd
    (in ln L, i.e. 12 sd in time at rate 0.5) of where it meets the floor's median."""
    t = _default_grid(200.0)
    rng = np.random.default_rng(0)
    floor = 1e-20 * np.exp(sd * rng.normal(size=t.size))
    loss = np.exp(-0.5 * t) + floor
    fit = gflow.fit_rate(t, loss)
    t_meet = np.log(1e20) / 0.5  # 92.1
    assert fit.floor_time is not None
    assert t_meet - 12 * sd - 4 <= fit.floor_time <= t_meet + 8 * sd + 5
    assert fit.rate == pytest.approx(0.5, rel=1e-6)
    assert fit.window[1] < fit.floor_time
    assert fit.floor_level == pytest.approx(1e-20, rel=1.0)


def test_drifting_solver_floor():
    """A solver-error floor that still drifts down at a quarter of the earlier rate under
    noise of sd 1.6 in ln L (the linear least-squares run of test_certificates looks like
    this) is a floor; the decay meets it at t = 2150."""
    t = np.linspace(0.0, 3000.0, 301)
    rng = np.random.default_rng(1)
    drift = 1e-21 * np.exp(-0.0045 * (t - 2150) + 1.6 * rng.normal(size=t.size))
    loss = 2e-5 * np.exp(-0.0176 * t) + drift
    fit = gflow.fit_rate(t, loss)
    assert fit.floor_time is not None and 1850 <= fit.floor_time <= 2450
    # the floor's bias 2 sqrt(L_f / L) <= 2e-3 in ln L at the window's end, over a window
    # of ~ 100 ln units: ~1e-5 relative, inside the interval widened by bias_bound
    assert fit.rate == pytest.approx(0.0176, rel=1e-4)
    assert fit.ci[0] <= 0.0176 <= fit.ci[1]


def test_floor_on_a_constant_level():
    """L = L_f + exp(-t) settles on L_f with no noise at all: a floor where the remaining
    decay is below 1% of L."""
    t = np.linspace(0.0, 60.0, 241)
    k = find_floor(t, np.exp(-t) + 1e-20)
    assert k is not None and np.exp(-t[k]) <= 0.02 * 1e-20
    assert np.exp(-t[k - 4]) > 0.01 * 1e-20  # and not long before


def test_real_floor_linear_least_squares():
    """Linear least squares run to its floor on the default grid (half log-spaced): the
    floor is found after the loss has fallen many decades, and the fitted rate is the
    exact terminal rate (2/n) lambda_min(X X^T)."""
    import jax

    n, d = 6, 12
    data = gflow.make_synthetic(n, d, n_test=0, seed=3)
    m = gflow.Linear(d, key=jax.random.key(1))
    sol = gflow.simulate_mse(m, data, 3000.0, rtol=1e-10, atol=1e-14)
    x = np.asarray(data.x_train)
    bound = 2.0 / n * np.linalg.eigvalsh(x @ x.T)[0]
    fit = gflow.fit_rate(sol.ts, sol.loss)
    assert fit.floor_time is not None
    assert sol.loss[0] / fit.floor_level > 1e15
    assert fit.ci[0] <= bound <= fit.ci[1]
    assert fit.rate == pytest.approx(bound, rel=1e-4)


# --- which decay law ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.2, 1.0])
def test_decay_law_exponential(rate):
    t = _default_grid()
    d = gflow.fit_decay(t, 2.0 * np.exp(-rate * t))
    assert d.law == "exponential"
    assert d.rate == pytest.approx(rate, rel=1e-10)
    assert d.window == (50.0, 100.0)
    assert d.rms_exponential < 1e-12 < d.tol < d.rms_power


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_decay_law_power(p):
    t = _default_grid(1000.0)
    d = gflow.fit_decay(t, 3.0 * t.clip(1e-3) ** -p)
    assert d.law == "power"
    assert d.exponent == pytest.approx(p, rel=1e-10)
    assert d.exponent_ci[0] <= p <= d.exponent_ci[1]
    assert d.rms_power < 1e-12 < d.tol < d.rms_exponential


@pytest.mark.parametrize("law", ["exponential", "power"])
def test_decay_law_noisy(law):
    """0.3% log-normal noise: the right law is recognised and its parameter lies in the
    95% interval (checked over 20 seeds: >= 16 covered)."""
    t = np.linspace(0.0, 400.0, 401)
    covered = 0
    for seed in range(20):
        noise = np.exp(0.003 * np.random.default_rng(seed).normal(size=t.size))
        if law == "exponential":
            d = gflow.fit_decay(t, np.exp(-0.05 * t) * noise)
            covered += d.rate_ci[0] <= 0.05 <= d.rate_ci[1]
        else:
            d = gflow.fit_decay(t, 1.0 / t.clip(1.0) * noise)
            covered += d.exponent_ci[0] <= 1.0 <= d.exponent_ci[1]
        assert d.law == law, (seed, str(d))
    assert covered >= 16


def test_decay_law_ambiguous_and_neither():
    t = np.linspace(0.0, 100.0, 201)
    # a 5% decay over the window: both laws fit to 1e-4
    assert gflow.fit_decay(t, np.exp(-0.001 * t)).law == "ambiguous"
    # 1/t with 1% noise over [50, 100]: the exponential's curvature (0.018) hides in it
    noisy = np.exp(0.01 * np.random.default_rng(0).normal(size=t.size)) / t.clip(1.0)
    assert gflow.fit_decay(t, noisy).law == "ambiguous"
    # a stretched exponential exp(-t^0.5 ... ) with a bump: neither law
    loss = np.exp(-np.sqrt(t) * 3.0) * (1.0 + 0.5 * np.sin(t / 5.0) ** 2)
    assert gflow.fit_decay(t, loss).law == "neither"


def test_decay_law_window_and_bad_input():
    t = np.linspace(0.0, 100.0, 201)
    d = gflow.fit_decay(t, np.exp(-0.1 * t), window=(10.0, 20.0))
    assert d.window == (10.0, 20.0) and d.n_points == 21
    with pytest.raises(ValueError, match="window: needs 0 < t_start < t_end"):
        gflow.fit_decay(t, np.exp(-t), window=(0.0, 10.0))
    with pytest.raises(ValueError, match="loss: must be finite and > 0"):
        gflow.fit_decay(t, -np.ones(t.size))
    with pytest.raises(ValueError, match="window: .* holds 2 save times"):
        gflow.fit_decay(t, np.exp(-t), window=(1.0, 1.6))
