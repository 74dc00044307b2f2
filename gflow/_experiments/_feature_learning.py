"""Claim 3: feature learning vs width for the scalings mf, mf-sqrt, ntk of the partially
trained three-layer model.

For every (scaling, m) an ensemble over seeds is run to t1 and three measures are taken
per member:
    movement  = |W(t1) - W(0)|_F / |W(0)|_F                       (trained layer)
    kernel    = |H(t1) - H(0)|_F / |H(0)|_F                       (tangent kernel of W)
    lazy_gap  = max_t |f_t(X) - f_lin,t(X)| / |f_0(X) - y|       (distance to the lazy flow)
Then each measure's log-log slope vs m over all (m, seed) points, with a 95% interval.
NTK theory: movement and kernel change ~ m^-1/2; MF: O(1) (slope 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._analysis._features import kernel_change, relative_movement
from .._data._synthetic import make_synthetic
from .._ensemble_mse import ensemble_models
from .._flow._ensemble import simulate_ensemble, stack_params
from .._flow._flatten import device_array
from .._models._activations import get_activation
from ._measures import lazy_gap, loglog_slope, tangent_kernel
from ._spec import model_builder

MEASURES = ("movement", "kernel", "lazy_gap")


def _member(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i] if hasattr(a, "ndim") else a, tree)


def _scaled_output(p: dict[str, Any], activation: str) -> jax.Array:
    """MultiLayer's output on one member's training inputs, from its fixed features
    h = model.features(x) (precomputed: Z is frozen) and the scale factors D^b, m^a held
    as values: the operations of `MultiLayer.__call__` in the same order."""
    pre = p["h"] @ p["W"].T / p["Db"]
    return get_activation(activation)(pre) @ p["c"] / p["ma"]


@dataclasses.dataclass(frozen=True)
class _ScaledLoss:
    """L = (1/2n) |f(X) - y|^2 of `_scaled_output` (`mse_loss`'s formula). Hashable and
    equal by activation, so every scaling at one width shares one compiled solve."""

    activation: str

    def __call__(self, p: dict[str, Any]) -> jax.Array:
        r = _scaled_output(p, self.activation) - p["y"]
        return 0.5 * jnp.mean(r**2)


@dataclasses.dataclass(frozen=True)
class _ScaledPred:
    """Save-time metric: the outputs on the member's training inputs."""

    activation: str

    def __call__(self, p: dict[str, Any]) -> jax.Array:
        return _scaled_output(p, self.activation)


def solve_scaled(s: dict[str, Any], models0: Any, datasets: list, ts: np.ndarray):
    """The flows of the stacked `models0` (member b on datasets[b]) to ts[-1], with only
    W trained at eta_W = model.layer_eta()["W"], as one vmapped solve.

    The scaling of a MultiLayer is a static field (part of the compiled program), so
    solving the models themselves compiles one program per (scaling, width). Here the
    flow is written on W with the scaling's numbers (m^a, D^b, eta_W) as values, so the
    three scalings of one width share one program: 3 compiles instead of 9 at --quick.
    The flow is the same (tested against `simulate_mse_ensemble` on the models).

    Returns (the `EnsembleSolution` over parameter dicts, the final models)."""
    B = len(datasets)
    members = [_member(models0, b) for b in range(B)]
    a, b_exp = members[0].exponents
    m, D = members[0].m, members[0].D
    params = stack_params(
        [
            {
                "W": mb.W,
                "c": mb.c,
                "h": mb.features(device_array(dat.x_train)),
                "y": device_array(dat.y_train),
                "Db": jnp.asarray(float(D) ** b_exp),
                "ma": jnp.asarray(float(m) ** a),
            }
            for mb, dat in zip(members, datasets, strict=True)
        ]
    )
    keys = ("W", "c", "h", "y", "Db", "ma")
    eta_w = float(members[0].layer_eta()["W"])
    eta = {k: (eta_w if k == "W" else 1.0) for k in keys}
    act = members[0].activation
    if not isinstance(act, str):
        raise ValueError(f"activation: expected a name, got {act!r}.")
    ens = simulate_ensemble(
        _ScaledLoss(act),
        params,
        float(ts[-1]),
        eta=eta,
        trainable={k: k == "W" for k in keys},
        metrics={"pred": _ScaledPred(act)},
        ts=ts,
        rtol=s["rtol"],
        atol=s["atol"],
        max_steps=s["max_steps"],
    )
    finals = [
        eqx.tree_at(lambda mm: mm.W, mb, jnp.asarray(ens.members[i].final["W"]))
        for i, mb in enumerate(members)
    ]
    return ens, finals


def run_point(spec: dict[str, Any], point: dict[str, Any]):
    s = spec["settings"]
    m, scaling = int(point["m"]), point["scaling"]
    seeds = list(range(int(s["seeds"])))
    datasets = [
        make_synthetic(s["n"], s["d"], inputs=s["inputs"], target=s["target"], seed=2000 + k)
        for k in seeds
    ]

    # only W moves: the partially trained model (train_output false in the config)
    build = model_builder("feature-learning", s, width=m, scaling=scaling, train_output=False)

    ts = np.linspace(0.0, float(s["t1"]), int(s["n_save"]))
    models0 = ensemble_models(build, seeds)
    ens, finals = solve_scaled(s, models0, datasets, ts)
    values = {k: [] for k in MEASURES}
    for b, member in enumerate(ens.members):
        m0, m1 = _member(models0, b), finals[b]
        x = device_array(datasets[b].x_train)
        h0, h1 = tangent_kernel(m0, x), tangent_kernel(m1, x)
        values["movement"].append(relative_movement(m0, m1, ["W"])["W"])
        values["kernel"].append(kernel_change(h0, h1))
        values["lazy_gap"].append(
            lazy_gap(m0, x, datasets[b].y_train, member.ts, member.metrics["pred"])
        )
    summary = {
        "scaling": scaling,
        "m": m,
        **{k: v for k, v in values.items()},
        "loss_final": [float(mb.loss[-1]) for mb in ens.members],
        "loss0": [float(mb.loss[0]) for mb in ens.members],
        "results": ens.results,
        "compile_seconds": ens.stats["compile_seconds"],
        "run_seconds": ens.stats["run_seconds"],
        "num_steps": ens.stats["num_steps"].tolist(),
        "solver": ens.settings,
    }
    arrays = {"ts": ens.ts, "loss": ens.loss, **{k: np.asarray(v) for k, v in values.items()}}
    return summary, arrays


def points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    s = spec["settings"]
    return [{"scaling": sc, "m": int(m)} for sc in s["scalings"] for m in s["widths"]]


def slopes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """scaling -> measure -> log-log slope vs m with interval, and the per-width means."""
    out: dict[str, dict[str, Any]] = {}
    for scaling in dict.fromkeys(r["point"]["scaling"] for r in records):
        rows = [r for r in records if r["point"]["scaling"] == scaling]
        widths = [r["point"]["m"] for r in rows]
        out[scaling] = {"widths": widths}
        for k in MEASURES:
            y = np.array([r["summary"][k] for r in rows], dtype=np.float64)
            out[scaling][k] = {
                **loglog_slope(widths, y),
                "mean": y.mean(axis=1).tolist(),
                "std": (y.std(axis=1, ddof=1) if y.shape[1] > 1 else 0 * y[:, 0]).tolist(),
            }
        out[scaling]["loss_final_mean"] = [float(np.mean(r["summary"]["loss_final"])) for r in rows]
    return out
