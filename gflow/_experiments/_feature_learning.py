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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._analysis._features import kernel_change, relative_movement
from .._data._synthetic import make_synthetic
from .._ensemble_mse import ensemble_models, simulate_mse_ensemble
from ._measures import lazy_gap, loglog_slope, tangent_kernel
from ._spec import model_builder

MEASURES = ("movement", "kernel", "lazy_gap")


def _predictions(model, data):
    """Save-time metric: the model's outputs on the member's training inputs."""
    return model(data["x_train"])


def _member(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i] if hasattr(a, "ndim") else a, tree)


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
    ens = simulate_mse_ensemble(
        models0,
        datasets,
        float(s["t1"]),
        data_metrics={"pred": _predictions},
        ts=ts,
        rtol=s["rtol"],
        atol=s["atol"],
        max_steps=s["max_steps"],
    )
    values = {k: [] for k in MEASURES}
    for b, member in enumerate(ens.members):
        m0, m1 = _member(models0, b), member.final
        x = jnp.asarray(datasets[b].x_train)
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
