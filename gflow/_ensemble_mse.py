"""Ensembles of the MSE problem: many seeds (and optionally many datasets) of one model
configuration, simulated as one vmapped (and sharded) solve."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._data._dataset import Dataset
from ._flow._ensemble import (
    EnsembleSolution,
    ensemble_size,
    map_members,
    simulate_ensemble,
    stack_params,
)
from ._flow._problem import model_defaults
from ._models._base import AbstractModel, mse_loss

_DATA_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def ensemble_models(build: Callable[[jax.Array], AbstractModel], seeds: Sequence[int]) -> Any:
    """B models stacked along a leading axis: member b is `build(jax.random.key(seeds[b]))`
    (the same values as `eqx.filter_vmap(build)` over the keys). The members are built one
    by one and stacked, so gflow's models draw through their cached generators instead of
    compiling a vmapped construction per shape.

    Arguments:
        build: key -> model, e.g. `lambda key: TwoLayer(64, 1024, key=key)`.
        seeds: B integer seeds.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: empty; an ensemble needs at least one seed.")
    return stack_params([build(jax.random.key(s)) for s in seeds])


def _data_arrays(data: Dataset) -> dict[str, jax.Array]:
    return {f: jnp.asarray(getattr(data, f)) for f in _DATA_FIELDS}


# The losses and metrics as module-level (hashable) functions, so that a later ensemble
# of the same shapes reuses the compiled solve. Shared data is the solve's `args`;
# per-member data rides in the parameters as frozen leaves under "data".
def _shared_train_loss(p: dict, a: dict) -> jax.Array:
    return mse_loss(p["model"], a["x_train"], a["y_train"])


def _shared_test_loss(p: dict, a: dict) -> jax.Array:
    return mse_loss(p["model"], a["x_test"], a["y_test"])


def _own_train_loss(p: dict) -> jax.Array:
    return mse_loss(p["model"], p["data"]["x_train"], p["data"]["y_train"])


def _own_test_loss(p: dict) -> jax.Array:
    return mse_loss(p["model"], p["data"]["x_test"], p["data"]["y_test"])


@dataclasses.dataclass(frozen=True)
class _OnModelShared:
    """A metric fn(model, data arrays) with the shared data as `args` (hashable)."""

    fn: Callable

    def __call__(self, p: dict, a: dict) -> jax.Array:
        return self.fn(p["model"], a)


@dataclasses.dataclass(frozen=True)
class _OnModelOwn:
    """A metric fn(model, data arrays) with the member's own data in the parameters."""

    fn: Callable

    def __call__(self, p: dict) -> jax.Array:
        return self.fn(p["model"], p["data"])


@dataclasses.dataclass(frozen=True)
class _OnModel:
    """A user metric fn(model) on the ensemble's parameter dict (hashable)."""

    fn: Callable

    def __call__(self, p: dict, *args: Any) -> jax.Array:
        return self.fn(p["model"])


def simulate_mse_ensemble(
    models: Any,
    data: Dataset | Sequence[Dataset],
    t1: float,
    *,
    seeds: Sequence[int] | None = None,
    metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    data_metrics: Mapping[str, Callable[[Any, dict], jax.Array]] | None = None,
    **kwargs: Any,
) -> EnsembleSolution:
    """Simulate gradient flow on the MSE loss for an ensemble of models (and datasets).

    Arguments:
        models: one of
            - a callable key -> model, with `seeds` (built with `ensemble_models`);
            - a list of B models of identical shapes (stacked);
            - a stacked model (leading axis B on every array, e.g. `ensemble_models`).
        data: one `Dataset` shared by all members, or a list of B datasets of identical
            shapes (member b trains on data[b]; e.g. `make_synthetic(..., seed=b)`).
        t1: final time.
        seeds: integer seeds when `models` is a callable.
        metrics: name -> fn(model) -> array, recorded at the save times. A `test_loss`
            metric is added when the data has a test split.
        data_metrics: name -> fn(model, data) -> array, with data the member's arrays
            {"x_train", "y_train", "x_test", "y_test"} (e.g. predictions on its own
            training inputs).
        **kwargs: passed to `simulate_ensemble` (ts, solver, rtol, atol, loss_target,
            devices, ...); `eta` and `trainable` default to the model's.

    Returns:
        An `EnsembleSolution` whose members' `final` / `params` are models. Member b
        equals `simulate_mse(model b, data b, t1, ...)` up to round-off.
    """
    if callable(models) and not isinstance(models, eqx.Module):
        if seeds is None:
            raise ValueError("seeds: required when models is a builder (key -> model).")
        models = ensemble_models(models, seeds)
    elif isinstance(models, list | tuple):
        models = stack_params(models)
    elif seeds is not None:
        raise ValueError("seeds: only used when models is a builder (key -> model).")
    if not isinstance(models, AbstractModel):
        raise ValueError(
            "models: expected a builder key -> model, a list of gflow models, or a stacked "
            f"model; got {type(models).__name__}."
        )
    n = ensemble_size(models)
    shared = isinstance(data, Dataset)
    datasets = [data] if shared else list(data)
    if not datasets or not all(isinstance(d, Dataset) for d in datasets):
        raise ValueError("data: expected a gflow Dataset or a list of Datasets.")
    if not shared and len(datasets) != n:
        raise ValueError(
            f"data: got {len(datasets)} datasets for {n} models; pass one dataset per "
            "member, or a single dataset shared by all."
        )
    first = datasets[0]
    if first.d != models.d:
        raise ValueError(
            f"data: inputs have d = {first.d} but the models expect d = {models.d}; build the "
            "models with the dataset's input dimension."
        )
    has_test = bool(first.n_test)

    if shared:
        params = {"model": models}
        args = _data_arrays(first)
        loss_fn = _shared_train_loss
        wrapped: dict[str, Callable] = {"test_loss": _shared_test_loss} if has_test else {}
        wrapped.update({k: _OnModel(fn) for k, fn in (metrics or {}).items()})
        wrapped.update({k: _OnModelShared(fn) for k, fn in (data_metrics or {}).items()})
        extra = {"args": args}
    else:
        params = {"model": models, "data": stack_params([_data_arrays(d) for d in datasets])}
        loss_fn = _own_train_loss
        wrapped = {"test_loss": _own_test_loss} if has_test else {}
        wrapped.update({k: _OnModel(fn) for k, fn in (metrics or {}).items()})
        wrapped.update({k: _OnModelOwn(fn) for k, fn in (data_metrics or {}).items()})
        extra = {}

    def like(model_tree, fill):
        return {
            "model": model_tree,
            **({} if shared else {"data": jtu.tree_map(lambda _: fill, params["data"])}),
        }

    model_eta, model_trainable = model_defaults(models)
    if "eta" not in kwargs:
        kwargs["eta"] = like(model_eta, 1.0)
    elif not isinstance(kwargs["eta"], int | float | np.number):
        kwargs["eta"] = like(kwargs["eta"], 1.0)
    trainable = kwargs.pop("trainable", None)
    trainable = like(model_trainable if trainable is None else trainable, False)
    ens = simulate_ensemble(
        loss_fn, params, t1, trainable=trainable, metrics=wrapped, **extra, **kwargs
    )

    def strip(sol):
        return dataclasses.replace(
            sol,
            final=sol.final["model"],
            params=None if sol.params is None else sol.params["model"],
        )

    return map_members(ens, strip)
