"""Bound certificates: does a simulated trajectory obey the linear-rate theory?

Along gradient flow dL/dt = -(1/n^2) r^T H r <= -(2/n) lambda_min(H(t)) L (docs/paper.md). Given
the save times, the loss and lambda_min(H(t)) recorded along a run, `certify` checks

1. local rate: -(d/dt) log L(t) >= (2/n) lambda_min(H(t)) at every save time;
2. Gronwall envelope: L(t) <= L(0) exp(-(2/n) int_0^t lambda_min(H(s)) ds);
3. Schur bound (two-layer / multi-layer): lambda_min(H) >= lambda_min(H_W) >=
   lambda_min(X X^T or Phi Phi^T) min_k G_kk;
4. fitted rate: over the fit window [t_a, t_b], the secant rate
   (log L(t_a) - log L(t_b)) / (t_b - t_a) >= (2/n) mean_[t_a, t_b] lambda_min, and the
   fitted rate's 95% interval reaches the bound.

Quadrature. lambda_min is known only at the save times. On each interval the integral lies
between h min(lambda_j, lambda_j+1) and h max(lambda_j, lambda_j+1) (exactly when
lambda_min is monotone between consecutive save times): quadrature="bracket". The default
"trapezoid" narrows that bracket to trapezoid +- 2 h^3 max|lambda''| / 12 (the trapezoid
error bound, lambda'' estimated by second divided differences: a stated, not a proven,
error). A check *passes* only with the upper estimate (the smaller, stricter envelope, so
quadrature cannot make it pass falsely), *fails* only if violated even with the lower
estimate (so quadrature cannot make it fail falsely), and is *inconclusive* in between.

Tolerances. `rel_tol` is the relative error allowed in the recorded L (solver error,
default 1e-5 for rtol = 1e-8 over long runs). Near a numerical floor of level L_f (an error
e in the residuals with |e|^2 / 2n = L_f) log L is off by up to 2 sqrt(L_f / L), which is
added to the tolerance of each point; points at or after the floor (`fit_rate`'s
floor_time) or with L < floor_margin L_f are excluded and counted. Finite differences of
log L carry an estimated truncation error |central - one-sided|; eigenvalues carry
100 n eps lambda_max.

Coverage. Every check records how much of the trajectory it covers: the save times it
checked and the fraction of the reference span [t_0, t_ref] between t_0 and its last
checked time (for the fitted-rate check: the length of the fit window). t_ref is the floor
time when the floor is confirmed (its level L_f is known and L(0) >= floor_margin L_f: the
loss fell a million-fold before it), else the last save time: a floor time alone cannot
shrink what a check must cover. A check that would pass but checked fewer than
`min_points` (5, as `fit_rate`) save times or covers less than `min_coverage` (50%) of the
reference span (`min_fit_coverage`, 10%, for the fitted-rate window) is "inconclusive",
never "pass": a bound that held on 3 early points says nothing about the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ._rate import RateFit, local_rate


@dataclass(frozen=True)
class Check:
    """One certificate check.

    Fields:
        name: "local_rate", "gronwall", "schur", "schur_total", "fitted_rate".
        status: "pass", "fail" (a violation larger than the tolerances explain),
            "inconclusive" (within quadrature error) or "skipped".
        slack: the smallest margin (observed - bound) over checked points, in `units`.
        rel_slack: slack relative to the bound (None when not meaningful).
        worst_time: time of the smallest margin.
        n_checked, n_violations, n_excluded: points checked, beyond tolerance, excluded.
        units: units of `slack`.
        detail: one line for humans.
        coverage: fraction of the reference span [t_0, t_ref] the check covers (see the
            module docstring), None for a skipped check.
        checked_span: (first, last) time the check covers.
    """

    name: str
    status: str
    slack: float | None = None
    rel_slack: float | None = None
    worst_time: float | None = None
    n_checked: int = 0
    n_violations: int = 0
    n_excluded: int = 0
    units: str = ""
    detail: str = ""
    coverage: float | None = None
    checked_span: tuple[float, float] | None = None

    def covers(self) -> str:
        """'N save times, t in [a, b] (P% of the span)': how much of the run it checked."""
        if self.coverage is None or self.checked_span is None:
            return f"{self.n_checked} save times"
        a, b = self.checked_span
        return (
            f"{self.n_checked} save times, t in [{a:.4g}, {b:.4g}] "
            f"({100 * self.coverage:.0f}% of the span)"
        )


@dataclass(frozen=True)
class CertificateReport:
    """All checks of one trajectory, with the arrays they were computed from.

    Fields:
        checks: tuple of `Check`. ts: (k,) save times.
        lower_rate: (k,) (2/n) lambda_min(H(t)).
        envelope: (k,) strict Gronwall envelope (upper quadrature sum).
        envelope_loose: (k,) loose envelope (lower quadrature sum).
        mean_bound: (2/n) time-averaged lambda_min over the fit window, (lo, hi) sums.
        reference_span: (t_0, t_ref) the coverage of each check is measured against
            (t_ref: the confirmed floor's time, or the last save time).
    """

    checks: tuple[Check, ...]
    ts: np.ndarray
    lower_rate: np.ndarray
    envelope: np.ndarray
    envelope_loose: np.ndarray
    mean_bound: tuple[float, float] | None
    reference_span: tuple[float, float] | None = None

    @property
    def passed(self) -> bool:
        """True when no check failed or was inconclusive (too little coverage included)."""
        return all(c.status in ("pass", "skipped") for c in self.checks)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "mean_bound": None if self.mean_bound is None else list(self.mean_bound),
            "reference_span": None if self.reference_span is None else list(self.reference_span),
            "checks": [asdict(c) for c in self.checks],
        }

    def __str__(self) -> str:
        return "\n".join(f"{c.name}: {c.status}: {c.detail} [{c.covers()}]" for c in self.checks)


def _cumulative(
    ts: np.ndarray, lam: np.ndarray, quadrature: str = "trapezoid"
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper estimates of int_0^t lambda along the save times.

    "bracket": per interval [h min(l_j, l_j+1), h max(l_j, l_j+1)] (exact bounds when
    lambda is monotone between save times). "trapezoid": that bracket intersected with
    trapezoid +- h^3 / 12 max|lambda''| (lambda'' from the second divided differences of
    the neighbouring intervals, times 2 for safety): much tighter when lambda is smooth.
    """
    h = np.diff(ts)
    lo = np.minimum(lam[:-1], lam[1:]) * h
    hi = np.maximum(lam[:-1], lam[1:]) * h
    if quadrature == "trapezoid" and ts.size >= 3:
        slope = np.diff(lam) / h
        d2 = np.abs(np.diff(slope)) / (0.5 * (h[:-1] + h[1:]))  # at interior points
        d2_int = np.maximum(np.r_[d2[0], d2], np.r_[d2, d2[-1]])  # per interval
        trap = 0.5 * (lam[:-1] + lam[1:]) * h
        err = 2.0 * h**3 / 12.0 * d2_int
        lo, hi = np.maximum(lo, trap - err), np.minimum(hi, trap + err)
    return np.concatenate([[0.0], np.cumsum(lo)]), np.concatenate([[0.0], np.cumsum(hi)])


def _status(ok_strict: np.ndarray, bad_loose: np.ndarray) -> str:
    if np.any(bad_loose):
        return "fail"
    return "pass" if np.all(ok_strict) else "inconclusive"


def _local_rate_check(ts, loss, lower, use, rayleigh_rate, log_tol) -> Check:
    lr = local_rate(ts, loss)
    # truncation error estimate |central - one-sided| on the grid without near-duplicate
    # times (see `local_rate`), shared by the duplicates
    new = np.r_[True, np.diff(ts) > 1e-9 * (ts[-1] - ts[0])]
    group = np.cumsum(new) - 1
    tu, lu, ru = ts[new], np.log(loss[new]), lr[new]
    fwd = np.empty_like(ru)
    fwd[:-1] = -np.diff(lu) / np.diff(tu)
    if ru.size >= 2:
        fwd[-1] = ru[-2]  # the end points are one-sided (first order): compare with the
        fwd[0] = ru[1]  # neighbour's central value, an O(h) change like their error
    h = np.gradient(tu) if tu.size >= 2 else np.ones_like(tu)
    tol = (np.abs(ru - fwd) + 2 * log_tol[new] / h)[group]
    idx = np.nonzero(use)[0]
    margin = lr[idx] - lower[idx]
    bad = margin < -tol[idx]
    k = int(np.argmin(margin))
    consistency = ""
    if rayleigh_rate is not None:
        dev = np.max(np.abs(lr[idx] - rayleigh_rate[idx]) / np.maximum(rayleigh_rate[idx], 1e-300))
        consistency = f"; |FD rate - (2/n) r^T H r / r^T r| <= {dev:.1e} relative"
    rel = margin / np.maximum(lower[idx], 1e-300)
    return Check(
        name="local_rate",
        status="fail" if bad.any() else "pass",
        slack=float(margin[k]),
        rel_slack=float(np.min(rel)),
        worst_time=float(ts[idx[k]]),
        n_checked=int(idx.size),
        n_violations=int(bad.sum()),
        n_excluded=int(ts.size - idx.size),
        units="1/time",
        detail=(
            f"-(d/dt) log L >= (2/n) lambda_min at {idx.size - int(bad.sum())}/{idx.size} "
            f"save times; min slack {margin[k]:.3g} at t = {ts[idx[k]]:.4g}{consistency}"
        ),
    )


def _gronwall_check(ts, loss, i_lo, i_hi, n, use, log_tol):
    logl = np.log(loss)
    log_env = logl[0] - (2.0 / n) * i_hi
    log_env_loose = logl[0] - (2.0 / n) * i_lo
    idx = np.nonzero(use)[0]
    idx = idx[idx > 0]  # at t = 0 the envelope equals L(0) by construction
    margin = log_env[idx] - logl[idx]
    tol = log_tol[idx] + log_tol[0]
    status = _status(margin >= -tol, logl[idx] - log_env_loose[idx] > tol)
    k = int(np.argmin(margin))
    return Check(
        name="gronwall",
        status=status,
        slack=float(margin[k]),
        rel_slack=float(np.expm1(margin[k])),
        worst_time=float(ts[idx[k]]),
        n_checked=int(idx.size),
        n_violations=int(np.sum(logl[idx] - log_env_loose[idx] > tol)),
        n_excluded=int(np.sum(~use)),
        units="log L",
        detail=(
            f"L(t) <= L(0) exp(-(2/n) int lambda_min): min slack {margin[k]:.3g} in log L at "
            f"t = {ts[idx[k]]:.4g}; at the last checked time L / envelope = "
            f"{np.exp(logl[idx[-1]] - log_env[idx[-1]]):.3g}"
        ),
    ), (np.exp(log_env), np.exp(log_env_loose))


def _schur_checks(ts, lam_min, lam_max, schur, n) -> list[Check]:
    lam_w, bound = schur[:, 0], schur[:, 1]
    tol = 100 * n * np.finfo(np.float64).eps * np.maximum(lam_max, 1.0)
    out = []
    for name, hi, lo, what in (
        ("schur", lam_w, bound, "lambda_min(H_W) >= lambda_min(Gram) min_k G_kk"),
        ("schur_total", lam_min, lam_w, "lambda_min(H) >= lambda_min(H_W)"),
    ):
        margin = hi - lo
        bad = margin < -tol
        k = int(np.argmin(margin))
        ratio = lo / np.maximum(hi, 1e-300)
        out.append(
            Check(
                name=name,
                status="fail" if bad.any() else "pass",
                slack=float(margin[k]),
                rel_slack=float(np.min(margin / np.maximum(np.abs(lo), 1e-300))),
                worst_time=float(ts[k]),
                n_checked=int(ts.size),
                n_violations=int(bad.sum()),
                units="kernel eigenvalue",
                detail=(
                    f"{what} at all {ts.size} save times: min slack {margin[k]:.3g} at "
                    f"t = {ts[k]:.4g}; bound / value in [{ratio.min():.3g}, {ratio.max():.3g}]"
                    if not bad.any()
                    else f"{what} violated at {int(bad.sum())} save times (worst {margin[k]:.3g})"
                ),
            )
        )
    return out


def _fitted_rate_check(ts, loss, fit: RateFit, i_lo, i_hi, n, log_tol):
    i0, i1 = fit.i_start, fit.i_end - 1
    span = ts[i1] - ts[i0]
    b_lo = (2.0 / n) * (i_lo[i1] - i_lo[i0]) / span
    b_hi = (2.0 / n) * (i_hi[i1] - i_hi[i0]) / span
    secant = (np.log(loss[i0]) - np.log(loss[i1])) / span
    tol = (log_tol[i0] + log_tol[i1]) / span
    fail = secant < b_lo - tol or fit.ci[1] < b_lo - tol
    status = "fail" if fail else ("pass" if secant >= b_hi - tol else "inconclusive")
    return Check(
        name="fitted_rate",
        status=status,
        slack=float(fit.rate - b_hi),
        rel_slack=float(fit.rate / b_hi - 1) if b_hi > 0 else None,
        worst_time=float(ts[i0]),
        n_checked=int(fit.n_points),
        n_violations=int(fail),
        units="1/time",
        detail=(
            f"fitted rate {fit.rate:.4g} (secant {secant:.4g}) vs (2/n) mean lambda_min "
            f"{b_hi:.4g} over t in [{ts[i0]:.4g}, {ts[i1]:.4g}]: ratio {fit.rate / b_hi:.3g}"
            if b_hi > 0
            else f"fitted rate {fit.rate:.4g}; the lower bound is 0 (lambda_min = 0)"
        ),
    ), (float(b_lo), float(b_hi))


def certify(
    ts: Any,
    loss: Any,
    lambda_min: Any,
    n: int,
    *,
    fit: RateFit | None = None,
    lambda_max: Any = None,
    rayleigh: Any = None,
    schur: Any = None,
    floor_time: float | None = None,
    floor_level: float | None = None,
    floor_margin: float = 1e6,
    rel_tol: float = 1e-5,
    quadrature: str = "trapezoid",
    min_points: int = 5,
    min_coverage: float = 0.5,
    min_fit_coverage: float = 0.1,
) -> CertificateReport:
    """Check a trajectory against the linear-rate bounds (see the module docstring).

    Arguments:
        ts: (k,) increasing save times; loss: (k,) positive losses L(t).
        lambda_min: (k,) lambda_min(H(t)) (e.g. `KernelTrace.lambda_min`).
        n: number of training points (the 1/n of the loss).
        fit: a `RateFit` of the same loss (enables the fitted-rate check; its floor_time
            is used when `floor_time` is None).
        lambda_max: (k,) for the eigenvalue round-off tolerance (default lambda_min).
        rayleigh: (k,) r^T H r / r^T r, for the consistency of the local rate.
        schur: (k, >=2) [lambda_min(H_W), lambda_min(Gram) min_k G_kk] (`schur_metrics`).
        floor_time: exclude save times at or after it from checks 1 and 2.
        floor_level: L_f, the loss level of the floor; points with L < floor_margin L_f
            are excluded and the others get 2 sqrt(L_f / L) more tolerance in log L.
            floor_time and floor_level default to the fit's.
        rel_tol: relative error allowed in L.
        quadrature: "trapezoid" (default) or "bracket", see the module docstring.
        min_points, min_coverage, min_fit_coverage: the coverage a check needs to pass
            (module docstring, "Coverage"); below it a passing check is "inconclusive".

    Returns:
        A `CertificateReport`; `passed` is True only when every check passed (or was
        skipped) with enough coverage.
    """
    t = np.asarray(ts, dtype=np.float64)
    loss_arr = np.asarray(loss, dtype=np.float64)
    lam = np.asarray(lambda_min, dtype=np.float64)
    if t.ndim != 1 or t.size < 3:
        raise ValueError(f"ts: need at least 3 save times, got shape {t.shape}.")
    for name, arr in (("loss", loss_arr), ("lambda_min", lam)):
        if arr.shape != t.shape:
            raise ValueError(f"{name}: expected shape {t.shape} like ts, got {arr.shape}.")
    if np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
        raise ValueError("ts: must be finite and strictly increasing.")
    if not np.all(np.isfinite(loss_arr)) or np.any(loss_arr <= 0):
        raise ValueError("loss: must be finite and > 0; trim a diverged or exact-zero tail.")
    if not np.all(np.isfinite(lam)):
        raise ValueError("lambda_min: contains NaN or inf; the kernel was not recorded.")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: must be a positive integer (training points), got {n!r}.")
    if not (np.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol: must be a finite number >= 0, got {rel_tol!r}.")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 3:
        raise ValueError(f"min_points: must be an integer >= 3, got {min_points!r}.")
    for name, v in (("min_coverage", min_coverage), ("min_fit_coverage", min_fit_coverage)):
        if not (np.isfinite(v) and 0 <= v <= 1):
            raise ValueError(f"{name}: must be a fraction in [0, 1], got {v!r}.")
    if fit is not None:
        floor_time = fit.floor_time if floor_time is None else floor_time
        floor_level = fit.floor_level if floor_level is None else floor_level
    use = np.ones(t.size, bool) if floor_time is None else t < floor_time
    log_tol = np.full(t.size, float(rel_tol))
    if floor_level is not None:
        use &= loss_arr >= floor_margin * floor_level
        log_tol += 2.0 * np.sqrt(floor_level / loss_arr)
    if use.sum() < 3:
        use[:3] = True  # a floor from the start: check the first points anyway
    lower = (2.0 / n) * lam
    if quadrature not in ("trapezoid", "bracket"):
        raise ValueError(f"quadrature: must be 'trapezoid' or 'bracket', got {quadrature!r}.")
    i_lo, i_hi = _cumulative(t, lam, quadrature)
    rr = None if rayleigh is None else (2.0 / n) * np.asarray(rayleigh, dtype=np.float64)
    checks = [_local_rate_check(t, loss_arr, lower, use, rr, log_tol)]
    gron, (env, env_loose) = _gronwall_check(t, loss_arr, i_lo, i_hi, n, use, log_tol)
    checks.append(gron)
    if schur is not None:
        lam_max = lam if lambda_max is None else np.asarray(lambda_max, dtype=np.float64)
        checks += _schur_checks(t, lam, lam_max, np.asarray(schur, dtype=np.float64), n)
    mean_bound = None
    if fit is not None:
        chk, mean_bound = _fitted_rate_check(t, loss_arr, fit, i_lo, i_hi, n, log_tol)
        checks.append(chk)
    # the span a check must cover ends at the floor only when the floor is confirmed: its
    # level is known and the loss fell at least floor_margin-fold before it. A floor
    # time alone (or a 'floor' at a high level) cannot shrink the span.
    confirmed = (
        floor_time is not None
        and floor_level is not None
        and loss_arr[0] >= floor_margin * floor_level
    )
    t_ref = float(min(max(floor_time, t[0]), t[-1])) if confirmed else float(t[-1])
    ref = max(t_ref - float(t[0]), np.finfo(float).tiny)
    checks = [
        _with_coverage(c, t, use, fit, ref, min_points, min_coverage, min_fit_coverage)
        for c in checks
    ]
    return CertificateReport(
        checks=tuple(checks),
        ts=t,
        lower_rate=lower,
        envelope=env,
        envelope_loose=env_loose,
        mean_bound=mean_bound,
        reference_span=(float(t[0]), t_ref),
    )


def _with_coverage(c: Check, t, use, fit, ref, min_points, min_coverage, min_fit_coverage) -> Check:
    """`c` with its coverage filled in, downgraded from "pass" to "inconclusive" when it
    covers fewer than `min_points` save times or less than the required fraction."""
    if c.name == "fitted_rate":
        span = (float(fit.window[0]), float(fit.window[1]))
        need = min_fit_coverage
    elif c.name in ("local_rate", "gronwall"):
        idx = np.nonzero(use)[0]
        span = (float(t[0]), float(t[idx[-1]]))
        need = min_coverage
    else:  # Schur checks: every save time
        span = (float(t[0]), float(t[-1]))
        need = min_coverage
    cov = float(min((span[1] - span[0]) / ref, 1.0))
    status, detail = c.status, c.detail
    if status == "pass" and (c.n_checked < min_points or cov < need):
        status = "inconclusive"
        detail += (
            f"; covers only {c.n_checked} save times and {100 * cov:.0f}% of the span "
            f"(needs {min_points} and {100 * need:.0f}%)"
        )
    return replace(c, status=status, detail=detail, coverage=cov, checked_span=span)
