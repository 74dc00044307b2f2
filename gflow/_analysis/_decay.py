"""Which law a loss decay follows: exponential L ~ C exp(-rate t), power L ~ C t^(-p),
both (too little decay to tell them apart) or neither."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._rate import find_floor, noise_sd, ols, t_quantile_975

LAWS = ("exponential", "power", "ambiguous", "neither")


@dataclass(frozen=True)
class DecayFit:
    """Exponential and power-law fits of one loss over one window, and the verdict.

    Fields:
        law: "exponential" (only the exponential fits), "power" (only the power law fits),
            "ambiguous" (both fit: the window holds too little decay, or too much noise,
            to tell them apart) or "neither".
        rate, rate_ci: L ~ C exp(-rate t): least-squares slope of -ln L on t and its 95%
            interval (Student t, n_points - 2 dof).
        exponent, exponent_ci: L ~ C t^(-exponent): slope of -ln L on ln t, 95% interval.
        rms_exponential, rms_power: root-mean-square residual of ln L about each fit.
        noise: robust standard deviation of the noise in ln L on the window (1.4826 MAD of
            the residuals from neighbour chords, free of any trend).
        tol: the largest RMS residual that counts as a fit: 1.5 noise + curvature_tol.
        window: (t_start, t_end) of the points used; n_points: how many.
    """

    law: str
    rate: float
    rate_ci: tuple[float, float]
    exponent: float
    exponent_ci: tuple[float, float]
    rms_exponential: float
    rms_power: float
    noise: float
    tol: float
    window: tuple[float, float]
    n_points: int

    def __str__(self) -> str:
        return decay_line(asdict(self))


def decay_line(d: dict) -> str:
    """The one-line verdict of a `DecayFit` given as a dict of its fields (as in
    result.json's "decay_law", where the intervals are named rate_ci95 / exponent_ci95)."""
    what = {
        "exponential": f"exponential, L ~ exp(-{d['rate']:.4g} t)",
        "power": f"power law, L ~ t^-{d['exponent']:.4g}",
        "ambiguous": "exponential and power law both fit (too little decay to tell)",
        "neither": "neither exponential nor power law (closer to "
        + ("exponential)" if d["rms_exponential"] <= d["rms_power"] else "power law)"),
    }[d["law"]]
    return (
        f"decay law: {what} over t in [{d['window'][0]:.4g}, {d['window'][1]:.4g}] "
        f"({d['n_points']} save times; RMS residual of ln L: exponential "
        f"{d['rms_exponential']:.2g}, power {d['rms_power']:.2g}; a fit needs <= {d['tol']:.2g})"
    )


def fit_decay(
    ts,
    loss,
    *,
    window: tuple[float, float] | None = None,
    curvature_tol: float = 0.005,
    floor_margin: float = 1e6,
    min_points: int = 8,
) -> DecayFit:
    """Fit ln L linearly in t (exponential) and in ln t (power law) and say which fits.

    Rule: a law fits when the RMS residual of ln L about its least-squares line is at most
    tol = 1.5 sigma + curvature_tol, sigma the noise sd of ln L (a correct law leaves
    residuals of RMS ~ sigma; a wrong one adds its curvature). Then law = "exponential" or
    "power" when exactly that one fits, "ambiguous" when both do, "neither" when none does.

    Arguments:
        ts: (k,) increasing times; loss: (k,) positive losses.
        window: (t_start, t_end) with t_start > 0; default: the later half in time of the
            run before the numerical floor, [t_b / 2, t_b] for a run from t = 0, where t_b
            is the last save time before the floor (`find_floor`) with
            L >= floor_margin x the floor level (the end when there is no floor).
        curvature_tol: systematic deviation in ln L tolerated on top of the noise (0.005:
            0.5% of L; over [T/2, T] a power law t^-p leaves an RMS residual of about
            0.018 p about the best exponential, and an exponential exp(-r t) about
            0.013 r T about the best power law).
        floor_margin: as in `fit_rate`.
        min_points: fewest points in the window (>= 4).

    Returns:
        A `DecayFit`.
    """
    t = np.asarray(ts, dtype=np.float64)
    l_arr = np.asarray(loss, dtype=np.float64)
    if t.ndim != 1 or l_arr.shape != t.shape:
        raise ValueError(f"loss: expected shape {t.shape} like ts, got {l_arr.shape}.")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 4:
        raise ValueError(f"min_points: must be an integer >= 4, got {min_points!r}.")
    if not (np.isfinite(curvature_tol) and curvature_tol >= 0):
        raise ValueError(f"curvature_tol: must be a finite number >= 0, got {curvature_tol!r}.")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("ts: must be finite and strictly increasing; sort and deduplicate.")
    if not np.all(np.isfinite(l_arr)) or np.any(l_arr <= 0):
        raise ValueError(
            "loss: must be finite and > 0 to fit ln L; drop the points where it is not."
        )
    if t.size < min_points:
        raise ValueError(f"ts: needs at least {min_points} points, got {t.size}.")
    if window is None:
        i1 = t.size
        floor = find_floor(t, l_arr)
        if floor is not None:
            level = float(np.median(l_arr[floor:]))
            above = np.nonzero(l_arr[:floor] >= floor_margin * level)[0]
            i1 = int(above[-1]) + 1 if above.size else floor + 1
        t_hi = float(t[i1 - 1])
        t_lo = float(t[0]) + 0.5 * (t_hi - float(t[0]))
        if t_lo <= 0:
            t_lo = 0.5 * t_hi
    else:
        t_lo, t_hi = float(window[0]), float(window[1])
        if not (t_hi > t_lo > 0):
            raise ValueError(
                f"window: needs 0 < t_start < t_end (a power law needs t > 0), got {window!r}."
            )
    idx = np.nonzero((t >= t_lo) & (t <= t_hi) & (t > 0))[0]
    if idx.size < min_points:
        raise ValueError(
            f"window: [{t_lo:.4g}, {t_hi:.4g}] holds {idx.size} save times with t > 0, fewer "
            f"than min_points = {min_points}; save more times or widen it."
        )
    tw, y = t[idx], np.log(l_arr[idx])
    q = t_quantile_975(idx.size - 2)
    fits = {}
    for name, x in (("exponential", tw), ("power", np.log(tw))):
        b, a, se, _ = ols(x, y)
        rms = float(np.sqrt(np.mean((y - (a + b * x)) ** 2)))
        fits[name] = (-b, (-b - q * se, -b + q * se), rms)
    noise = noise_sd(tw, y)
    tol = 1.5 * noise + curvature_tol
    ok_e = fits["exponential"][2] <= tol
    ok_p = fits["power"][2] <= tol
    law = {(True, True): "ambiguous", (True, False): "exponential"}.get((ok_e, ok_p))
    law = law or ("power" if ok_p else "neither")
    return DecayFit(
        law=law,
        rate=fits["exponential"][0],
        rate_ci=fits["exponential"][1],
        exponent=fits["power"][0],
        exponent_ci=fits["power"][1],
        rms_exponential=fits["exponential"][2],
        rms_power=fits["power"][2],
        noise=noise,
        tol=tol,
        window=(float(tw[0]), float(tw[-1])),
        n_points=int(idx.size),
    )
