"""Fitting an exponential (linear-rate) decay L(t) ~ C exp(-rate t) to a loss trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def _t_quantile_975(dof: int) -> float:
    """Student t 97.5% quantile, Cornish-Fisher expansion (error < 1e-3 for dof >= 3)."""
    z = 1.959963984540054
    if dof <= 0:
        return float("inf")
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}
    if dof in table:
        return table[dof]
    v = float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def _ols(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
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


def find_floor(ts: np.ndarray, loss: np.ndarray, *, decades: float = 3.0) -> int | None:
    """Index where the numerical floor begins, or None.

    A point k starts the floor when (a) less than one decade of decay remains after it,
    median_{j>=k} log10 L_j > log10 L_k - 1, and (b) at the rate of the points just
    before k the remaining time would have bought more than `decades` decades. A slower
    second phase fails (b); a true floor (solver tolerance or round-off) satisfies both.
    (a) uses the median, not the minimum, of what follows: a floor made of round-off
    noise dips decades below its level at isolated points (log of a noisy small number).
    """
    logl = np.log10(np.asarray(loss, dtype=np.float64))
    t = np.asarray(ts, dtype=np.float64)
    n = t.size
    w = max(3, n // 20)
    for k in range(w, n - 2):
        if logl[k] - np.median(logl[k:]) >= 1.0:
            continue
        pre = (logl[k - w] - logl[k]) / (t[k] - t[k - w])
        if pre > 0 and pre * (t[-1] - t[k]) > decades:
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
        b, a, _, _ = _ols(tt, yy)
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
    b, a, se, r2 = _ols(t[i0:i1], y[i0:i1])
    rate = -b
    bias = 0.0
    if level is not None:
        tw = t[i0:i1]
        shift = 2.0 * np.sqrt(level / l_arr[i0:i1])
        bias = float(np.sum(np.abs(tw - tw.mean()) * shift) / np.sum((tw - tw.mean()) ** 2))
    half = _t_quantile_975(i1 - i0 - 2) * se + bias
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
