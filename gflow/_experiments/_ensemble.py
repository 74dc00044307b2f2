"""One configuration, several seeds, ONE vmapped solve (gflow.simulate_ensemble).

Member b is the model built from key `jax.random.key(seed_b)` trained on its own dataset
(data seed b), so the spread over members covers both the initialization and the draw of
the training set. Per-member data rides along in the parameters as frozen leaves, which
lets save-time metrics see the member's own inputs. The ensemble costs as much as its
slowest member (a vmapped while loop runs until every member has finished).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .._data._dataset import Dataset
from .._ensemble_mse import ensemble_models
from .._flow._ensemble import EnsembleSolution, simulate_ensemble, stack_params
from .._flow._problem import model_defaults
from .._models._base import mse_loss


def data_arrays(data: Dataset) -> dict[str, jax.Array]:
    out = {"x": jnp.asarray(data.x_train), "y": jnp.asarray(data.y_train)}
    if data.n_test:
        out.update(xt=jnp.asarray(data.x_test), yt=jnp.asarray(data.y_test))
    return out


# Module-level (hashable) loss and metrics: the next sweep point of the same shapes
# reuses the compiled solve.
def _train_loss(p: dict) -> jax.Array:
    return mse_loss(p["model"], p["data"]["x"], p["data"]["y"])


def _test_loss(p: dict) -> jax.Array:
    return mse_loss(p["model"], p["data"]["xt"], p["data"]["yt"])


@dataclasses.dataclass(frozen=True)
class _OnModelData:
    """A metric fn(model, data) on the ensemble's parameter dict."""

    fn: Callable

    def __call__(self, p: dict) -> jax.Array:
        return self.fn(p["model"], p["data"])


def run_ensemble(
    build: Callable[[jax.Array], Any],
    seeds: Sequence[int],
    datasets: Sequence[Dataset],
    t1: float,
    *,
    metrics: Mapping[str, Callable[[Any, dict], jax.Array]] | None = None,
    **kwargs: Any,
) -> tuple[EnsembleSolution, Any, dict]:
    """Simulate the MSE gradient flow of `build(key(seed_b))` on `datasets[b]`, b = 1..B,
    as one vmapped solve at the model's time scale `eta()` with its trainable layers.

    Arguments:
        build: key -> model. seeds: B seeds. datasets: B datasets of identical shapes.
        metrics: name -> fn(model, data) -> array (data: "x", "y", and "xt", "yt" when
            there is a test split); "test_loss" is added when there is a test split.
        **kwargs: to `simulate_ensemble` (ts, rtol, atol, max_steps, loss_target, ...).

    Returns:
        (ensemble solution, stacked initial models, stacked data arrays).
    """
    if len(datasets) != len(seeds):
        raise ValueError(f"datasets: need one per seed ({len(seeds)}), got {len(datasets)}.")
    models = ensemble_models(build, seeds)
    data = stack_params([data_arrays(d) for d in datasets])
    params = {"model": models, "data": data}

    wrapped: dict[str, Callable] = {}
    if datasets[0].n_test:
        wrapped["test_loss"] = _test_loss
    for name, fn in (metrics or {}).items():
        wrapped[name] = _OnModelData(fn)
    model_eta, model_trainable = model_defaults(models)
    eta = {"model": model_eta, "data": jax.tree_util.tree_map(lambda _: 1.0, data)}
    trainable = {
        "model": model_trainable,
        "data": jax.tree_util.tree_map(lambda _: False, data),
    }
    ens = simulate_ensemble(
        _train_loss, params, t1, eta=eta, trainable=trainable, metrics=wrapped, **kwargs
    )
    return ens, models, data
