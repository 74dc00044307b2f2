"""Statistics of the reproduction experiments: paired differences over seeds, stopping
times chosen on a validation split, closed-form linear (kernel) gradient flows for the
baselines, and R^2 of a linear probe. Pure functions of arrays.

Paired comparison of two arms A and B measured on the same seeds (same data, same raw
weight draws): per-seed differences delta_s = L_A,s - L_B,s, their mean, the Student-t
95% interval mean +- t_{0.975, S-1} sd / sqrt(S), and the two-sided Wilcoxon signed-rank
p-value (scipy.stats.wilcoxon; exact for small S). With S = 5 seeds the smallest
possible Wilcoxon p is 2^-4 = 0.0625, so the verdict rules use the t interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired difference a - b over seeds.

    Arguments:
        a, b: (S,) per-seed values of the two arms, seed s paired with seed s.

    Returns:
        {"mean": mean(delta), "ci95": [lo, hi] (Student t, S - 1 dof), "per_seed": delta,
        "wilcoxon_p": two-sided signed-rank p-value (NaN when S < 2 or every delta is 0),
        "n_positive": #(delta > 0), "n": S}. delta = a - b; pairs with a NaN are dropped.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a, b: need two 1-d arrays of equal length, got {a.shape}, {b.shape}.")
    delta = a - b
    delta = delta[np.isfinite(delta)]
    s = delta.size
    mean = float(np.mean(delta)) if s else float("nan")
    if s >= 2:
        half = float(_st.t.ppf(0.975, s - 1) * np.std(delta, ddof=1) / np.sqrt(s))
        ci = [mean - half, mean + half]
        p = float(_st.wilcoxon(delta).pvalue) if np.any(delta != 0) else float("nan")
    else:
        ci, p = [float("nan"), float("nan")], float("nan")
    return {
        "mean": mean,
        "ci95": ci,
        "per_seed": delta.tolist(),
        "wilcoxon_p": p,
        "n_positive": int(np.sum(delta > 0)),
        "n": int(s),
    }


def outcome(stat: dict[str, Any]) -> str:
    """ "a>b" when the 95% interval of a - b lies above 0, "a<b" when below, else "none"."""
    lo, hi = stat["ci95"]
    if np.isfinite(lo) and lo > 0:
        return "a>b"
    if np.isfinite(hi) and hi < 0:
        return "a<b"
    return "none"


def validation_stop(val: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Early stopping on the validation split, per row (member).

    Arguments:
        val, test: (B, k) validation and test loss at k save times (NaN where a member
            had stopped; rows must have at least one finite validation value).

    Returns:
        (index (B,), test loss at that index (B,)) with index_b = argmin_t val_b(t): the
        test curve is read only at the chosen index, never used to choose it.
    """
    val = np.asarray(val, dtype=np.float64)
    masked = np.where(np.isfinite(val), val, np.inf)
    idx = np.argmin(masked, axis=1)
    return idx, np.asarray(test, dtype=np.float64)[np.arange(val.shape[0]), idx]


def kernel_flow(
    k_train: np.ndarray,
    k_cross: np.ndarray,
    r0: np.ndarray,
    f0_other: np.ndarray,
    ts: np.ndarray,
    n: int,
) -> np.ndarray:
    """Predictions of the linear gradient flow of a kernel (linearized) model, closed form.

    The flow d theta/dt = -eta grad (1/2n)|f(X) - y|^2 of a model linear in theta with
    eta-weighted tangent kernel K = eta J J^T has train residual r_t = exp(-t K/n) r_0 and,
    at other inputs x*, f_t(x*) = f_0(x*) - K(x*, X) K^+ (I - exp(-t K/n)) r_0. With
    K = U diag(lam) U^T the matrix K^+ (I - exp(-tK/n)) is U diag(g_t(lam)) U^T,
    g_t(lam) = (1 - exp(-t lam/n))/lam (-> t/n as lam -> 0); t = inf gives the minimum-norm
    interpolant (g = 1/lam on lam > 0, 0 on the null space).

    Arguments:
        k_train: (n, n) K(X, X). k_cross: (q, n) K(x*, X). r0: (n,) f_0(X) - y.
        f0_other: (q,) f_0(x*). ts: (k,) times (np.inf allowed). n: training points.

    Returns:
        (k, q) predictions f_t(x*) at each time.
    """
    lam, u = np.linalg.eigh(np.asarray(k_train, dtype=np.float64))
    tol = 100 * lam.size * np.finfo(np.float64).eps * max(lam[-1], 0.0)
    pos = lam > tol
    proj = u.T @ np.asarray(r0, dtype=np.float64)
    left = np.asarray(k_cross, dtype=np.float64) @ u
    out = []
    for t in np.asarray(ts, dtype=np.float64):
        g = np.zeros_like(lam)
        if np.isinf(t):
            g[pos] = 1.0 / lam[pos]
        else:
            g[pos] = -np.expm1(-t * lam[pos] / n) / lam[pos]
            g[~pos] = t / n
        out.append(np.asarray(f0_other) - left @ (g * proj))
    return np.stack(out)


def probe_r2(features: np.ndarray, target: np.ndarray, ridge: float = 1e-6) -> float:
    """How well a linear function of `features` explains `target` on fresh points.

    Arguments:
        features: (N, p) e.g. hidden pre-activations on N probe inputs. target: (N,).
        ridge: relative ridge lam = ridge * trace(F^T F)/p (for rank-deficient features).

    Returns:
        Out-of-sample R^2 = 1 - |y_2 - yhat_2|^2 / |y_2 - mean(y_2)|^2 of least squares
        with intercept fitted on the first half of the points, evaluated on the second.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    half = f.shape[0] // 2
    f = np.concatenate([f, np.ones((f.shape[0], 1))], axis=1)
    a, ya = f[:half], y[:half]
    gram = a.T @ a
    lam = ridge * np.trace(gram) / gram.shape[0]
    coef = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), a.T @ ya)
    resid = y[half:] - f[half:] @ coef
    return float(1.0 - np.sum(resid**2) / np.sum((y[half:] - np.mean(y[half:])) ** 2))


def loglog_fit(ns: Sequence[float], values: np.ndarray) -> dict[str, Any]:
    """Slope of log(mean over seeds) against log n, least squares, with a Student-t 95%
    interval (dof = points - 2; NaN interval with two points).

    Arguments: ns (k,) sample sizes; values: k arrays of per-seed losses (lengths may
    differ). Returns {"slope", "ci95", "intercept"}."""
    x = np.log(np.asarray(ns, dtype=np.float64))
    y = np.log(np.array([np.nanmean(v) for v in values]))
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return {"slope": float("nan"), "ci95": [float("nan")] * 2, "intercept": float("nan")}
    res = _st.linregress(x, y)
    if x.size > 2:
        half = float(_st.t.ppf(0.975, x.size - 2) * res.stderr)
        ci = [res.slope - half, res.slope + half]
    else:
        ci = [float("nan"), float("nan")]
    return {"slope": float(res.slope), "ci95": ci, "intercept": float(res.intercept)}
