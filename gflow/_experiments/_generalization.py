"""Claim 4: test loss of the three scalings (mf, mf-sqrt, ntk) of the partially trained
three-layer model, on a single-index teacher in higher d (learned features should help)
and on the scikit-learn digits (parity as +-1 regression).

For every (task, scaling) an ensemble over seeds (initialization and data draw) is run to
t1; the test loss is recorded at the save times. Reported: test loss at t1 (mean, std over
seeds), the minimum over time of the mean test curve, and the final training loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._data._digits import load_digits
from .._data._synthetic import make_synthetic
from .._models._multilayer import MultiLayer
from ._ensemble import run_ensemble

TASKS = ("single-index", "digits")


def _datasets(s: dict[str, Any], task: str, seeds: list[int]):
    if task == "single-index":
        # One teacher direction for all seeds (data seed fixes it), fresh samples per seed.
        return [
            make_synthetic(
                s["n"],
                s["d"],
                n_test=s["n_test"],
                inputs=s["inputs"],
                target="single-index",
                seed=3000 + k,
            )
            for k in seeds
        ]
    if task == "digits":
        return [
            load_digits(s["n"], n_test=s["n_test"], task="parity", seed=4000 + k) for k in seeds
        ]
    raise ValueError(f"tasks: unknown task {task!r}; use one of {list(TASKS)}.")


def run_point(spec: dict[str, Any], point: dict[str, Any]):
    s = spec["settings"]
    task, scaling = point["task"], point["scaling"]
    seeds = list(range(int(s["seeds"])))
    datasets = _datasets(s, task, seeds)
    d = datasets[0].d

    def build(key):
        return MultiLayer(
            d,
            s["features"],
            s["width"],
            depth=s["depth"],
            activation=s["activation"],
            feature_activation=s["feature_activation"],
            train_output=s["train_output"],
            scaling=scaling,
            key=key,
        )

    ts = np.linspace(0.0, float(s["t1"]), int(s["n_save"]))
    ens, _, _ = run_ensemble(
        build,
        seeds,
        datasets,
        float(s["t1"]),
        ts=ts,
        rtol=s["rtol"],
        atol=s["atol"],
        max_steps=s["max_steps"],
    )
    test = ens.metrics["test_loss"]  # (B, k)
    final_test = test[:, -1]
    var_y = float(np.mean([np.var(ds.y_test) for ds in datasets]))
    mean_curve = np.nanmean(test, axis=0)
    summary = {
        "task": task,
        "scaling": scaling,
        "d": d,
        "test_final": final_test.tolist(),
        "test_final_mean": float(np.mean(final_test)),
        "test_final_std": float(np.std(final_test, ddof=1)) if len(seeds) > 1 else 0.0,
        "test_min_of_mean": float(np.nanmin(mean_curve)),
        "t_test_min": float(ens.ts[int(np.nanargmin(mean_curve))]),
        "test_init_mean": float(np.mean(test[:, 0])),
        "train_final": ens.loss[:, -1].tolist(),
        "half_var_y_test": 0.5 * var_y,
        "results": ens.results,
        "compile_seconds": ens.stats["compile_seconds"],
        "run_seconds": ens.stats["run_seconds"],
        "num_steps": ens.stats["num_steps"].tolist(),
        "solver": ens.settings,
    }
    arrays = {"ts": ens.ts, "loss": ens.loss, "test_loss": test}
    return summary, arrays


def points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    s = spec["settings"]
    return [{"task": t, "scaling": sc} for t in s["tasks"] for sc in s["scalings"]]


def table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = (
        "task",
        "scaling",
        "test_final_mean",
        "test_final_std",
        "test_min_of_mean",
        "t_test_min",
        "test_init_mean",
        "half_var_y_test",
    )
    rows = []
    for r in records:
        row = {k: r["summary"][k] for k in keys}
        row["train_final_mean"] = float(np.mean(r["summary"]["train_final"]))
        row["wall_seconds"] = r["wall_seconds"]
        rows.append(row)
    return rows
