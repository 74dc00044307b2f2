"""fit_rate on synthetic exponentials whose rate is known: noise, floors, two phases."""

import numpy as np
import pytest

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
