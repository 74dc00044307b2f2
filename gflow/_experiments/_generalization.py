"""Claim 4, v2: test loss of the scalings mf, mf-sqrt, ntk of the partially trained
three-layer model, paired over seeds and swept over the number n of training points.

Model (PAPER.md), ReLU random features h(x) = relu(Z x) (D of them, Z fixed):
    f(x) = alpha sum_i c_i tanh(beta W_i . h(x)),  alpha = m^-a, beta = D^-b,
with (a, b) = (1, 1) "mf", (1, 1/2) "mf-sqrt", (1/2, 1/2) "ntk" and time scales
eta_W = m D, m, 1 and eta_c = m^(2a-1) (docs/time.md). Heads: "W" (the paper's model: W
trained, c fixed) and "Wc" (W and c trained).

Pairing. Per seed s one raw draw (Z, A, A', b, b' ~ N(0, 1)) and one data draw (train,
validation, test). Every arm of seed s uses these same draws: antisymmetric
initialization W = [A; A], c = [b; -b] (so f_0 = 0 exactly) for mf, mf-sqrt and ntk, and
the standard initialization W = [A; A'], c = [b; b'] for the control arm "ntk-std".

One compiled program per (task, n) serves every (arm, head, seed): the scalings differ
only in numbers, so the flow is written on the displacements dW, dc with eta = 1 and
W = W0 + sqrt(eta_W) dW, c = c0 + sqrt(eta_c) dc (eta_c = 0 freezes c): exactly the flow
d W/dt = -eta_W dL/dW, d c/dt = -eta_c dL/dc (chain rule), per member. It runs once per
(arm, head), vmapped over the seeds: a vmapped solve steps every member until its slowest
one is done, and the arms need from ~30 to ~460 steps (quick size), so one solve over all
of them did 2-4x the work of these 8 (each member still has its own steps and error
control, so the numbers are the same).

Stopping time: per member, the save time with the smallest validation loss
(`_stats.validation_stop`); the test set is read only at that time and at t1.
Baselines per seed: constant (train mean), ridge-linear on [x, 1] (ridge chosen on the
validation split), random features tanh(D^-1/2 W0 h) with only c trained (the c-only
flow from c = 0, closed form, time chosen on validation), and the linearized (NTK) flow
of the ntk arm (closed form at the arm's own save times, time chosen on validation).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits as _sk_load_digits

from .._flow._ensemble import simulate_ensemble, stack_params
from ._stats import kernel_flow, loglog_fit, outcome, paired, probe_r2, validation_stop

TASKS = ("single-index", "digits")
ARMS = (("mf", "anti"), ("mf-sqrt", "anti"), ("ntk", "anti"), ("ntk", "std"))
ARM_NAMES = ("mf", "mf-sqrt", "ntk", "ntk-std")
HEADS = ("W", "Wc")
BASELINES = ("constant", "ridge-linear", "random-features", "ntk-linearized")
PAIRS = {
    "ntk_minus_mf": ("ntk", "mf"),
    "mfsqrt_minus_mf": ("mf-sqrt", "mf"),
    "ntkstd_minus_mf": ("ntk-std", "mf"),
    "ntklin_minus_mf": ("ntk-linearized", "mf"),
}
_EXP = {"mf": (1.0, 1.0), "mf-sqrt": (1.0, 0.5), "ntk": (0.5, 0.5)}


def _he2(z):
    return (z**2 - 1.0) / np.sqrt(2.0)


def seeds_for(s: dict[str, Any], n: int) -> int:
    """Seeds at n: `seeds` for n <= `seeds_cut`, `seeds_large` above."""
    return int(s["seeds"] if n <= s["seeds_cut"] else min(s["seeds"], s["seeds_large"]))


def make_data(s: dict[str, Any], task: str, n: int, seed: int) -> dict[str, Any]:
    """Train / validation / test split of one seed, targets times `target_scale`.

    single-index: x ~ N(0, I/d), z = sqrt(d) v . x (v uniform on the sphere, drawn per
    seed), y = He1(z) + He2(z)/sqrt(2) + noise N(0, 1). digits: scikit-learn's digits
    (centred, |x| = 1), parity as +-1, a seeded disjoint split."""
    scale = float(s["target_scale"])
    if task == "single-index":
        rng = np.random.default_rng(5000 + seed)
        d = int(s["d"])
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        total = n + s["n_val"] + s["n_test"]
        x = rng.standard_normal((total, d)) / np.sqrt(d)
        z = np.sqrt(d) * x @ v
        y = z + _he2(z) / np.sqrt(2.0) + s["noise"] * rng.standard_normal(total)
        probe_x = rng.standard_normal((int(s["n_probe"]), d)) / np.sqrt(d)
        probe = {"x": probe_x, "z": np.sqrt(d) * probe_x @ v}
    elif task == "digits":
        images, labels = _sk_load_digits(return_X_y=True)
        x = images.astype(np.float64)
        x = x - x.mean(axis=0)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = np.where(labels % 2 == 0, 1.0, -1.0)
        n_val = int(s["digits_n_val"])
        n_test = min(int(s["digits_n_test"]), x.shape[0] - n - n_val)
        if n_test < 50:
            raise ValueError(
                f"digits_n: n = {n} leaves {n_test} test images after {n_val} for "
                f"validation (of {x.shape[0]}); use n <= {x.shape[0] - n_val - 50}."
            )
        idx = np.random.default_rng(4000 + seed).permutation(x.shape[0])[: n + n_val + n_test]
        x, y = x[idx], y[idx]
        probe = None
    else:
        raise ValueError(f"tasks: unknown task {task!r}; use one of {list(TASKS)}.")
    y = scale * y
    nv = int(s["n_val"]) if task == "single-index" else int(s["digits_n_val"])
    return {
        "x": x[:n],
        "y": y[:n],
        "xv": x[n : n + nv],
        "yv": y[n : n + nv],
        "xt": x[n + nv :],
        "yt": y[n + nv :],
        "probe": probe,
    }


def raw_draws(s: dict[str, Any], d: int, seed: int) -> dict[str, np.ndarray]:
    """Z (D, d), A, A' (m/2, D), b, b' (m/2,): every entry N(0, 1)."""
    rng = np.random.default_rng(10_000 + seed)
    D, half = int(s["features"]), int(s["width"]) // 2
    return {
        "Z": rng.standard_normal((D, d)),
        "A": rng.standard_normal((half, D)),
        "A2": rng.standard_normal((half, D)),
        "b": rng.standard_normal(half),
        "b2": rng.standard_normal(half),
    }


def init_weights(raw: dict[str, np.ndarray], init: str) -> tuple[np.ndarray, np.ndarray]:
    """(W0, c0): "anti" = ([A; A], [b; -b]) (f_0 = 0 exactly), "std" = ([A; A'], [b; b'])."""
    if init == "anti":
        return np.concatenate([raw["A"], raw["A"]]), np.concatenate([raw["b"], -raw["b"]])
    return np.concatenate([raw["A"], raw["A2"]]), np.concatenate([raw["b"], raw["b2"]])


def arm_scales(scaling: str, head: str, m: int, D: int) -> dict[str, float]:
    """alpha = m^-a, beta = D^-b, sW = sqrt(eta_W), sc = sqrt(eta_c) (0 for head "W")."""
    a, b = _EXP[scaling]
    eta_w = {"mf": m * D, "mf-sqrt": m, "ntk": 1}[scaling]
    eta_c = float(m) ** (2 * a - 1) if head == "Wc" else 0.0
    return {"alpha": m**-a, "beta": D**-b, "sW": np.sqrt(eta_w), "sc": np.sqrt(eta_c)}


def predict(p: dict[str, Any], h: jax.Array) -> jax.Array:
    """f on precomputed features h (q, D) for one member's parameters p.

    The two halves of the neurons are summed separately with identical operations, so an
    antisymmetric initialization (second half = first half with c negated) gives
    f_0 = a + (-a) = 0 exactly, not up to round-off."""
    W = p["W0"] + p["sW"] * p["dW"]
    c = p["c0"] + p["sc"] * p["dc"]
    half = W.shape[0] // 2
    parts = [
        jnp.tanh(p["beta"] * (h @ W[sl].T)) @ c[sl] for sl in (slice(0, half), slice(half, None))
    ]
    return p["alpha"] * (parts[0] + parts[1])


def _loss(p):
    return 0.5 * jnp.mean((predict(p, p["H"]) - p["y"]) ** 2)


_METRICS = {
    "val_loss": lambda p: 0.5 * jnp.mean((predict(p, p["Hv"]) - p["yv"]) ** 2),
    "test_loss": lambda p: 0.5 * jnp.mean((predict(p, p["Ht"]) - p["yt"]) ** 2),
}


def _relu_features(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ z.T, 0.0)


def ntk_kernel(h1, h2, W0, c0, sc: dict[str, float], head: str) -> np.ndarray:
    """Tangent kernel K(x1, x2) of the model at (W0, c0), eta-weighted:
    eta_W alpha^2 beta^2 (h1 h2^T) o (s'(U1) diag(c^2) s'(U2)^T) [+ eta_c alpha^2 s(U1) s(U2)^T
    for head "Wc"], U = beta h W0^T, s = tanh."""
    u1, u2 = sc["beta"] * h1 @ W0.T, sc["beta"] * h2 @ W0.T
    d1, d2 = 1.0 / np.cosh(u1) ** 2, 1.0 / np.cosh(u2) ** 2
    k = sc["sW"] ** 2 * sc["alpha"] ** 2 * sc["beta"] ** 2 * (h1 @ h2.T) * ((d1 * c0**2) @ d2.T)
    if head == "Wc":
        k = k + sc["sc"] ** 2 * sc["alpha"] ** 2 * np.tanh(u1) @ np.tanh(u2).T
    return k


def _half_mse(f, y):
    return 0.5 * np.mean((f - y) ** 2, axis=-1)


def _path_choice(k_tr, k_other, y, yv, yt, nv, ts, n):
    """Kernel flow from f_0 = 0 at times ts; (test at val-chosen time, test at last time)."""
    pred = kernel_flow(k_tr, k_other, -y, np.zeros(k_other.shape[0]), ts, n)
    val, test = _half_mse(pred[:, :nv], yv), _half_mse(pred[:, nv:], yt)
    return float(test[int(np.argmin(val))]), float(test[-1])


def baselines(s: dict[str, Any], data: dict[str, Any], raw, ts) -> dict[str, dict[str, Any]]:
    """Test loss of each baseline (validation-chosen and at its last time) for one seed."""
    x, y, xv, yv, xt, yt = (data[k] for k in ("x", "y", "xv", "yv", "xt", "yt"))
    n, nv = x.shape[0], xv.shape[0]
    out: dict[str, dict[str, Any]] = {}
    const = _half_mse(np.mean(y), yt)
    out["constant"] = {"stop": float(const), "end": float(const)}
    # ridge on [x, 1]: lam chosen on validation
    f = np.concatenate([x, np.ones((n, 1))], axis=1)
    fo = np.concatenate([np.concatenate([xv, xt]), np.ones((nv + xt.shape[0], 1))], axis=1)
    best = None
    for lam in np.logspace(-8, 2, 21) * n:
        coef = np.linalg.solve(f.T @ f + lam * np.eye(f.shape[1]), f.T @ y)
        pv, pt = fo[:nv] @ coef, fo[nv:] @ coef
        cand = (float(_half_mse(pv, yv)), float(_half_mse(pt, yt)))
        best = cand if best is None or cand[0] < best[0] else best
    out["ridge-linear"] = {"stop": best[1], "end": best[1]}
    # random features, c only, from c = 0, tanh(D^-1/2 W0 h)
    D, m = int(s["features"]), int(s["width"])
    W0, c0 = init_weights(raw, "std")
    h, ho = _relu_features(raw["Z"], x), _relu_features(raw["Z"], np.concatenate([xv, xt]))
    sfeat, so = np.tanh(h @ W0.T / np.sqrt(D)), np.tanh(ho @ W0.T / np.sqrt(D))
    grid = np.concatenate([np.logspace(-2, 6, 33), [np.inf]])
    k_rf = sfeat @ sfeat.T / m
    stop, end = _path_choice(k_rf, so @ sfeat.T / m, y, yv, yt, nv, grid, n)
    out["random-features"] = {"stop": stop, "end": end}
    # linearized flow of the ntk arm (antisymmetric init: f_0 = 0), each head
    Wa, ca = init_weights(raw, "anti")
    for head in HEADS:
        sc = arm_scales("ntk", head, m, D)
        k_tr = ntk_kernel(h, h, Wa, ca, sc, head)
        k_o = ntk_kernel(ho, h, Wa, ca, sc, head)
        stop, end = _path_choice(k_tr, k_o, y, yv, yt, nv, np.asarray(ts), n)
        out.setdefault("ntk-linearized", {})[head] = {"stop": stop, "end": end}
    return out


def build_members(
    s: dict[str, Any], datas: list[dict[str, Any]], raws: list[dict[str, np.ndarray]]
) -> tuple[list[tuple[str, str, int]], list[dict[str, Any]]]:
    """The parameter dicts of every (arm, head, seed), arm-major then head then seed, and
    their (arm, head, seed) labels. Seed k uses datas[k] and raws[k] in every arm."""
    m, D = int(s["width"]), int(s["features"])
    S = len(datas)
    labels, members = [], []
    for (scaling, init), arm in zip(ARMS, ARM_NAMES, strict=True):
        for head in HEADS:
            sc = arm_scales(scaling, head, m, D)
            for k in range(S):
                W0, c0 = init_weights(raws[k], init)
                dat, Z = datas[k], raws[k]["Z"]
                members.append(
                    {
                        "dW": np.zeros((m, D)),
                        "dc": np.zeros(m),
                        "W0": W0,
                        "c0": c0,
                        **{key: np.float64(v) for key, v in sc.items()},
                        "H": _relu_features(Z, dat["x"]),
                        "y": dat["y"],
                        "Hv": _relu_features(Z, dat["xv"]),
                        "yv": dat["yv"],
                        "Ht": _relu_features(Z, dat["xt"]),
                        "yt": dat["yt"],
                    }
                )
                labels.append((arm, head, k))
    return labels, members


def solve_members(
    s: dict[str, Any], members: list[dict[str, Any]], ts: np.ndarray, *, per_solve: int
) -> dict[str, Any]:
    """The flows of `members` (parameter dicts of `run_point`) to ts[-1], as vmapped solves
    of `per_solve` consecutive members each (one compiled program for all of them when
    per_solve divides the count). A vmapped solve steps every member until its slowest one
    is done; each member keeps its own steps and error control, so the grouping changes
    the work, not the steps (rounding aside).

    Returns (B, k) "loss", "val_loss", "test_loss"; (B, m, D) "dW_final"; (B,) "num_steps";
    "results"; summed "compile_seconds" and "run_seconds"; "settings" (the solver settings,
    plus the number of solves and of members).
    """
    trainable = {k: k in ("dW", "dc") for k in members[0]}
    solves = []
    for start in range(0, len(members), per_solve):
        group = [jax.tree_util.tree_map(jnp.asarray, p) for p in members[start : start + per_solve]]
        solves.append(
            simulate_ensemble(
                _loss,
                stack_params(group),
                float(ts[-1]),
                trainable=trainable,
                metrics=_METRICS,
                ts=ts,
                rtol=s["rtol"],
                atol=s["atol"],
                max_steps=s["max_steps"],
            )
        )
    return {
        "loss": np.concatenate([e.loss for e in solves]),
        "val_loss": np.concatenate([e.metrics["val_loss"] for e in solves]),
        "test_loss": np.concatenate([e.metrics["test_loss"] for e in solves]),
        "dW_final": np.concatenate([np.asarray(e.final["dW"]) for e in solves]),
        "num_steps": np.concatenate([e.stats["num_steps"] for e in solves]),
        "results": [r for e in solves for r in e.results],
        "compile_seconds": sum(e.stats["compile_seconds"] for e in solves),
        "run_seconds": sum(e.stats["run_seconds"] for e in solves),
        "settings": {**solves[0].settings, "solves": len(solves), "members": len(members)},
    }


def run_point(spec: dict[str, Any], point: dict[str, Any]):
    """One (task, n): every (arm, head, seed), one vmapped solve per (arm, head) over the
    seeds, then baselines and the paired statistics. Returns (summary, arrays)."""
    s = spec["settings"]
    task, n = point["task"], int(point["n"])
    S = seeds_for(s, n)
    datas = [make_data(s, task, n, k) for k in range(S)]
    d = datas[0]["x"].shape[1]
    raws = [raw_draws(s, d, k) for k in range(S)]
    labels, members = build_members(s, datas, raws)
    t1 = float(s["t1"])
    ts = np.concatenate(
        [[0.0], np.logspace(np.log10(t1) - s["decades_t"], np.log10(t1), s["n_save"] - 1)]
    )
    ts[-1] = t1
    # one vmapped solve per (arm, head) over its S seeds (members are arm-major)
    sol = solve_members(s, members, ts, per_solve=S)
    val, test, train = sol["val_loss"], sol["test_loss"], sol["loss"]
    idx, test_stop = validation_stop(val, test)
    dW_final = sol["dW_final"]
    arms: dict[str, dict[str, Any]] = {}
    for b, (arm, head, k) in enumerate(labels):
        rec = arms.setdefault(arm, {}).setdefault(
            head,
            {
                key: []
                for key in (
                    "stop",
                    "end",
                    "t_stop",
                    "train_end",
                    "test_init",
                    "r2_z",
                    "r2_he2",
                    "r2_z_init",
                    "r2_he2_init",
                )
            },
        )
        rec["stop"].append(float(test_stop[b]))
        rec["end"].append(float(test[b, -1]))
        rec["t_stop"].append(float(ts[idx[b]]))
        rec["train_end"].append(float(train[b][np.isfinite(train[b])][-1]))
        rec["test_init"].append(float(test[b, 0]))
        probe = datas[k]["probe"]
        if probe is not None:
            hp = _relu_features(raws[k]["Z"], probe["x"])
            W0 = members[b]["W0"]
            W1 = W0 + members[b]["sW"] * dW_final[b]
            for tag, W in (("_init", W0), ("", W1)):
                u = hp @ W.T
                rec[f"r2_z{tag}"].append(probe_r2(u, probe["z"]))
                rec[f"r2_he2{tag}"].append(probe_r2(u, _he2(probe["z"])))
    base = [baselines(s, datas[k], raws[k], ts) for k in range(S)]
    for name in ("constant", "ridge-linear", "random-features"):
        arms[name] = {
            head: {t: [b_[name][t] for b_ in base] for t in ("stop", "end")} for head in HEADS
        }
    arms["ntk-linearized"] = {
        head: {t: [b_["ntk-linearized"][head][t] for b_ in base] for t in ("stop", "end")}
        for head in HEADS
    }
    by_head = {
        head: {
            timing: {
                pair: paired(arms[a][head][timing], arms[b_][head][timing])
                for pair, (a, b_) in PAIRS.items()
            }
            for timing in ("stop", "end")
        }
        for head in HEADS
    }
    var_y = float(np.mean([np.var(dd["yt"]) for dd in datas]))
    summary = {
        "task": task,
        "n": n,
        "d": d,
        "seeds": S,
        "paired": by_head["W"]["stop"],
        "paired_by_head": by_head,
        "arms": arms,
        "half_var_y_test": 0.5 * var_y,
        "results": sol["results"],
        "compile_seconds": sol["compile_seconds"],
        "run_seconds": sol["run_seconds"],
        "num_steps": sol["num_steps"].tolist(),
        "solver": sol["settings"],
    }
    arrays = {"ts": ts, "loss": train, "val_loss": val, "test_loss": test}
    return summary, arrays


def points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    s = spec["settings"]
    out = []
    for task in s["tasks"]:
        ns = s["n"] if task == "single-index" else s["digits_n"]
        out += [{"task": task, "n": int(n)} for n in ns]
    return out


def curves(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Learning curves: per task, head, arm, the test loss at the validation-chosen time
    (mean, t 95% interval over seeds) vs n and the log-log slope of the mean."""
    out: dict[str, Any] = {}
    for task in dict.fromkeys(r["point"]["task"] for r in records):
        recs = [r for r in records if r["point"]["task"] == task]
        ns = [r["summary"]["n"] for r in recs]
        out[task] = {"n": ns}
        for head in HEADS:
            for arm in (*ARM_NAMES, *BASELINES):
                vals = [r["summary"]["arms"][arm][head]["stop"] for r in recs]
                stat = [paired(v, np.zeros(len(v))) for v in vals]
                out[task].setdefault(head, {})[arm] = {
                    "mean": [q["mean"] for q in stat],
                    "ci95": [q["ci95"] for q in stat],
                    "slope": loglog_fit(ns, vals),
                }
    return out


def verdict(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict rules of docs/reproduction.md (claim 4), applied to the main comparison:
    head "W" (the paper's model), ntk (antisymmetric) minus mf at the validation-chosen
    time. Per (task, n): "mf better" if the 95% interval of L_ntk - L_mf lies above 0,
    "ntk better" if below, else "no difference". Verdict: "reproduced" if mf is better at
    half or more of the n on the single-index task and ntk is better at no (task, n);
    "contradicted" if ntk is better at half or more of the n of some task; "not
    reproduced" if mf is better nowhere; otherwise "partly". Reported next to it, not part
    of the verdict: mf (head W) minus the best baseline at each point, paired."""
    by_task: dict[str, list[str]] = {}
    per_point = []
    for r in records:
        s = r["summary"]
        o = {"a>b": "mf better", "a<b": "ntk better", "none": "no difference"}[
            outcome(s["paired"]["ntk_minus_mf"])
        ]
        by_task.setdefault(s["task"], []).append(o)
        entry = {"task": s["task"], "n": s["n"], "outcome": o}
        if "arms" in s:
            # qualifier: mf (head W) against the best baseline at this point (lowest mean)
            means = {b_: np.mean(s["arms"][b_]["W"]["stop"]) for b_ in BASELINES}
            best = min(means, key=means.get)
            stat = paired(s["arms"]["mf"]["W"]["stop"], s["arms"][best]["W"]["stop"])
            entry["best_baseline"] = best
            entry["mf_minus_best_baseline"] = stat
            entry["mf_vs_best_baseline"] = {
                "a>b": "baseline better",
                "a<b": "mf better",
                "none": "no difference",
            }[outcome(stat)]
        per_point.append(entry)
    flat = [o for v in by_task.values() for o in v]
    si = by_task.get("single-index", [])
    if any(v.count("ntk better") * 2 >= len(v) for v in by_task.values()):
        word = "contradicted"
    elif si and si.count("mf better") * 2 >= len(si) and "ntk better" not in flat:
        word = "reproduced"
    elif "mf better" not in flat:
        word = "not reproduced"
    else:
        word = "partly"
    return {"verdict": word, "per_point": per_point}


def table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, n): test loss at the validation-chosen time (mean over seeds)
    per arm and baseline of each head, and the paired statistics."""
    rows = []
    for r in records:
        s = r["summary"]
        row = {
            "task": s["task"],
            "n": s["n"],
            "seeds": s["seeds"],
            "wall_seconds": r["wall_seconds"],
        }
        for head in HEADS:
            row[head] = {
                arm: float(np.mean(s["arms"][arm][head]["stop"]))
                for arm in (*ARM_NAMES, *BASELINES)
            }
            row[head]["train_end"] = {
                arm: float(np.mean(s["arms"][arm][head]["train_end"])) for arm in ARM_NAMES
            }
            if s["task"] == "single-index":
                row[head]["r2"] = {
                    arm: {
                        q: float(np.mean(s["arms"][arm][head][q]))
                        for q in ("r2_z_init", "r2_z", "r2_he2_init", "r2_he2")
                    }
                    for arm in ARM_NAMES
                }
        row["paired"] = s["paired"]
        row["paired_by_head"] = s["paired_by_head"]
        rows.append(row)
    return rows
