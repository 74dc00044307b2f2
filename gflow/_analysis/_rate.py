"""Fitting an exponential (linear-rate) decay L(t) ~ C exp(-rate t) to a loss trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit


@dataclass(frozen=True)
class RateFit:
    """Least-squares fit of log L(t) = log C - rate * t over a window of save times.

    Fields:
        rate: fitted exponential rate (1 / time units of the flow).
        stderr: its standard error (ordinary least squares).
        ci: (low, high) 95% confidence interval (Student t with n_points - 2 dof), widened
            by `bias_bound`.
        intercept: log C.
        window: (t_start, t_end) of the points used; i_start, i_end their indices
            (i_end exclusive).
        r2: coefficient of determination of the linear fit of log L.
        n_points: points in the window.
        floor_time: time where the numerical floor begins (None when no floor).
        local_rate: -(d/dt) log L at every input time (finite differences, 2nd order).
        bias_bound: bound on the slope bias the floor can cause over the window. A floor
            comes from an error e in the residuals (|e|^2 / 2n = the floor level L_f), which
            shifts log L by at most 2 sqrt(L_f / L); hence the bound
            sum_j |t_j - t_mean| 2 sqrt(L_f / L_j) / sum_j (t_j - t_mean)^2, added to the
            half-width of `ci` (0 when there is no floor).
        floor_level: L_f, the median loss from the floor on (None when no floor).
    """

    rate: float
    stderr: float
    ci: tuple[float, float]
    intercept: float
    window: tuple[float, float]
    i_start: int
    i_end: int
    r2: float
    n_points: int
    floor_time: float | None
    local_rate: np.ndarray
    bias_bound: float = 0.0
    floor_level: float | None = None

    def __str__(self) -> str:
        return (
            f"linear rate {self.rate:.6g} +- {0.5 * (self.ci[1] - self.ci[0]):.2g} "
            f"over t in [{self.window[0]:.4g}, {self.window[1]:.4g}] (R^2 = {self.r2:.6f})"
        )


def t_quantile_975(dof: int) -> float:
    """Student t 97.5% quantile with `dof` degrees of freedom (inf for dof <= 0):
    scipy.special.stdtrit, the same bits as scipy.stats.t.ppf(0.975, dof), without
    importing scipy.stats (0.4 s of every `gflow run`)."""
    if dof <= 0:
        return float("inf")
    return float(stdtrit(dof, 0.975))


def ols(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Slope, intercept, slope standard error and R^2 of y ~ a + b t."""
    n = t.size
    tm, ym = t.mean(), y.mean()
    stt = np.sum((t - tm) ** 2)
    b = np.sum((t - tm) * (y - ym)) / stt
    a = ym - b * tm
    res = y - (a + b * t)
    sse = float(np.sum(res**2))
    syy = float(np.sum((y - ym) ** 2))
    se = np.sqrt(sse / (n - 2) / stt) if n > 2 else float("inf")
    r2 = 1.0 - sse / syy if syy > 0 else 1.0
    return float(b), float(a), float(se), float(r2)


def local_rate(ts: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """-(d/dt) log L(t) by second-order finite differences on the (non-uniform) grid
    (first order at the two ends). Save times closer than 1e-9 of the time span (e.g. a
    linear and a log grid that both hold t = 6 up to round-off) count as one point and
    share its value, instead of producing a 0 / tiny difference."""
    t = np.asarray(ts, dtype=np.float64)
    logl = np.log(np.asarray(loss, dtype=np.float64))
    if t.size < 2:
        return np.zeros_like(t)
    new = np.r_[True, np.diff(t) > 1e-9 * max(t[-1] - t[0], np.finfo(float).tiny)]
    group = np.cumsum(new) - 1
    if new.sum() < 2:
        return np.zeros_like(t)
    return -np.gradient(logl[new], t[new])[group]


def noise_sd(t: np.ndarray, y: np.ndarray) -> float:
    """Robust standard deviation of the noise in y(t): 1.4826 x the median absolute
    deviation of each point's residual from the chord through its two neighbours, over
    sqrt(1.5) (iid noise of sd s gives residuals of sd between s sqrt(1.5) and s sqrt(2)).
    A smooth curve contributes only its curvature, about h^2 |y''| / 8."""
    if t.size < 3:
        return 0.0
    w = (t[1:-1] - t[:-2]) / (t[2:] - t[:-2])
    e = y[1:-1] - ((1.0 - w) * y[:-2] + w * y[2:])
    return float(1.4826 * np.median(np.abs(e - np.median(e))) / np.sqrt(1.5))


def find_floor(
    ts: np.ndarray,
    loss: np.ndarray,
    *,
    flat_tol: float = 0.01,
    significance: float = 3.0,
    rate_drop: float = 3.0,
    min_points: int = 5,
) -> int | None:
    """Index where the numerical floor begins, or None.

    A floor is a final stretch of the run where the loss has stopped decreasing relative
    to its own noise (round-off, or the solver's error), although the decay just before it
    was clearly visible. All comparisons are in flow time, not save-time index (the default
    grid is half log-spaced: its early points are dense in time). With y = ln L, the tail
    S = [t_k, t_end] of duration D, its first and last thirds in time A = [t_k, t_k + D/3]
    and B = [t_end - D/3, t_end], sigma the robust noise sd of y on S (`noise_sd`: 1.4826
    MAD of the residuals from neighbour chords; a trend does not count as noise), r_S and
    r_P the least-squares decay rates -dy/dt over S and over the points P in
    [t_k - D, t_k] (at least the previous point), and

        thr(a, b) = 5 sigma sqrt(1/a + 1/b) + flat_tol + 1e-12

    (4 standard errors of a difference of two medians of a and b noisy values, the median's
    sd being 1.25 sigma / sqrt(size), plus flat_tol = 0.01 in ln L, i.e. 1%), point k
    starts the floor when

    1. S holds at least `min_points` save times;
    2. S starts at its level: median(y_k, y_k+1, y_k+2) - median(y_B) <= thr(3, |B|);
    3. S stopped decreasing: it is flat, median(y_A) - median(y_B) <= thr(|A|, |B|), or
       its decay is buried in its noise, r_S h <= sigma (h = D / (|S| - 1), the mean save
       interval) while r_P >= `rate_drop` r_S (the rate fell at least 3-fold);
    4. the decay before was visible: r_P D >= `significance` thr(|A|, |B|): at the
       earlier rate the tail would have lost 3 x what the flatness test allows (itself
       4 standard errors), so the change of regime is not noise.

    The first such k is returned. A decay that slows down (power law 1/t, a slower second
    phase, a plateau that resumes) is not a floor: its level keeps falling by more than 1%
    plus noise across any tail long enough for 4., so it fails 2. A round-off floor (noisy,
    with dips decades deep at isolated points: medians ignore them), a solver-error floor
    that still drifts down slowly under noise of order 1, and a loss settling on a constant
    (L = L_f + decay) are floors.

    Arguments:
        ts: (k,) increasing times; loss: (k,) positive losses.
        flat_tol: decay in ln L (beyond the noise) a flat floor may still show.
        significance: how many times larger the decay at the earlier rate must be.
        rate_drop: how much slower a noise-dominated floor must decay than the loss before.
        min_points: fewest save times in a floor.

    Returns:
        The index of the first floor point, or None when there is no floor.
    """
    y = np.log(np.asarray(loss, dtype=np.float64))
    t = np.asarray(ts, dtype=np.float64)
    n = t.size
    for k in range(1, n - min_points + 1):
        ys, tt = y[k:], t[k:]
        span = tt[-1] - tt[0]
        in_a = tt <= tt[0] + span / 3.0
        in_b = tt >= tt[-1] - span / 3.0
        na, nb = int(in_a.sum()), int(in_b.sum())
        sigma = noise_sd(tt, ys)
        level = np.median(ys[in_b])
        if np.median(ys[:3]) - level > 5.0 * sigma * np.sqrt(1.0 / 3 + 1.0 / nb) + flat_tol:
            continue
        p = np.nonzero(t[: k + 1] >= t[k] - span)[0]
        p = np.arange(min(int(p[0]), k - 1), k + 1)
        if p.size >= 3:
            r_p = -ols(t[p], y[p])[0]
        else:
            r_p = (y[p[0]] - y[k]) / (t[k] - t[p[0]])
        thr = 5.0 * sigma * np.sqrt(1.0 / na + 1.0 / nb) + flat_tol + 1e-12
        if r_p * span < significance * thr:
            continue
        flat = np.median(ys[in_a]) - level <= thr
        r_s = -ols(tt, ys)[0]
        buried = r_s * span / (tt.size - 1) <= sigma and r_p >= rate_drop * r_s
        if flat or buried:
            return k
    return None


def _auto_window(
    t: np.ndarray, y: np.ndarray, i1: int, min_points: int, curvature_tol: float
) -> int:
    """Start index of the terminal linear regime of y = log L on [0, i1).

    The window grows backwards from the last `min_points` points. A candidate start s is
    accepted while the mean of the first h = 3 points of [s, i1) lies on the straight line
    fitted to the rest, within `curvature_tol` (log units) plus 4 standard deviations of
    that mean (noise estimated from the rest's residuals, plus the line's own prediction
    error). The first rejection ends the search: what precedes is transient or an earlier
    phase.
    """
    h = 3
    i0 = i1 - min_points
    for s in range(i1 - min_points - 1, -1, -1):
        tt, yy = t[s + h : i1], y[s + h : i1]
        if tt.size < 3:
            i0 = s
            continue
        b, a, _, _ = ols(tt, yy)
        res = yy - (a + b * tt)
        sigma = np.sqrt(np.sum(res**2) / max(1, tt.size - 2))
        th = t[s : s + h].mean()
        stt = np.sum((tt - tt.mean()) ** 2)
        pred_sd = sigma * np.sqrt(1.0 / h + 1.0 / tt.size + (th - tt.mean()) ** 2 / stt)
        dev = abs(y[s : s + h].mean() - (a + b * th))
        if dev > curvature_tol + 4.0 * pred_sd:
            break
        i0 = s
    return i0


def fit_rate(
    ts,
    loss,
    *,
    window: tuple[float, float] | None = None,
    min_points: int = 5,
    curvature_tol: float = 1e-3,
    floor_margin: float = 1e6,
) -> RateFit:
    """Fit L(t) ~ C exp(-rate t) by least squares on log L.

    Arguments:
        ts: (k,) increasing times; loss: (k,) positive finite losses.
        window: (t_start, t_end) to fit over; default: found automatically:
            1. the numerical floor is detected (`find_floor`); the window ends at the last
               time before it where L is at least `floor_margin` times the floor level
               L_f (the median loss after the floor), so the floor biases log L by less than
               2 / sqrt(floor_margin) there (0.2% for the default 1e6), and less before;
            2. the window grows backwards from its end while the earlier points stay on
               the line of the later ones within `curvature_tol` in log L plus 4 noise
               standard deviations (`_auto_window`): this drops the initial transient or
               a faster first phase and keeps the terminal linear regime.
        min_points: fewest points in a window (>= 3).
        curvature_tol: deviation from straightness tolerated, in log L units (1e-3: 0.1%).
        floor_margin: how far above the floor level the window must end.

    Returns:
        A `RateFit`: rate = -slope of log L, its OLS standard error and 95% interval
        (Student t, n_points - 2 dof), the window, R^2, floor_time, local rate.
    """
    t = np.asarray(ts, dtype=np.float64)
    l_arr = np.asarray(loss, dtype=np.float64)
    if t.ndim != 1 or l_arr.shape != t.shape:
        raise ValueError(f"loss: expected shape {t.shape} like ts, got {l_arr.shape}.")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 3:
        raise ValueError(f"min_points: must be an integer >= 3, got {min_points!r}.")
    if not (np.isfinite(curvature_tol) and curvature_tol >= 0):
        raise ValueError(f"curvature_tol: must be a finite number >= 0, got {curvature_tol!r}.")
    if not (np.isfinite(floor_margin) and floor_margin >= 1):
        raise ValueError(f"floor_margin: must be a finite number >= 1, got {floor_margin!r}.")
    if t.size < min_points:
        raise ValueError(
            f"ts: needs at least {min_points} points to fit a rate, got {t.size}; save more "
            "times (simulate(..., ts=...))."
        )
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("ts: must be finite and strictly increasing; sort and deduplicate.")
    if not np.all(np.isfinite(l_arr)) or np.any(l_arr <= 0):
        raise ValueError(
            "loss: must be finite and > 0 to fit log L; drop the points where the loss is "
            "0, negative or non-finite (a diverged run), or pass a window before them."
        )
    y = np.log(l_arr)
    lr = local_rate(t, l_arr)
    floor = find_floor(t, l_arr)
    floor_time = None if floor is None else float(t[floor])
    level = None if floor is None else float(np.median(l_arr[floor:]))
    if window is not None:
        t_lo, t_hi = float(window[0]), float(window[1])
        if not t_hi > t_lo:
            raise ValueError(f"window: needs t_start < t_end, got {window!r}.")
        idx = np.nonzero((t >= t_lo) & (t <= t_hi))[0]
        if idx.size < min_points:
            raise ValueError(
                f"window: holds {idx.size} save times, fewer than min_points = {min_points}; "
                "widen it."
            )
        i0, i1 = int(idx[0]), int(idx[-1]) + 1
    else:
        i1 = t.size
        if floor is not None:
            above = np.nonzero(l_arr[:floor] >= floor_margin * level)[0]
            i1 = int(above[-1]) + 1 if above.size else floor + 1
            i1 = max(i1, min_points)
        i0 = _auto_window(t, y, i1, min_points, curvature_tol)
    b, a, se, r2 = ols(t[i0:i1], y[i0:i1])
    rate = -b
    bias = 0.0
    if level is not None:
        tw = t[i0:i1]
        shift = 2.0 * np.sqrt(level / l_arr[i0:i1])
        bias = float(np.sum(np.abs(tw - tw.mean()) * shift) / np.sum((tw - tw.mean()) ** 2))
    half = t_quantile_975(i1 - i0 - 2) * se + bias
    return RateFit(
        rate=rate,
        stderr=se,
        ci=(rate - half, rate + half),
        intercept=a,
        window=(float(t[i0]), float(t[i1 - 1])),
        i_start=i0,
        i_end=i1,
        r2=r2,
        n_points=i1 - i0,
        floor_time=floor_time,
        local_rate=lr,
        bias_bound=bias,
        floor_level=level,
    )
