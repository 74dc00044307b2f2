"""Feature learning: how far the trained layers and the tangent kernel move.

Relative movement of a trained layer W: ||W(t) - W(0)||_F / ||W(0)||_F, and per neuron
(row i of a matrix, entry i of a vector) |w_i(t) - w_i(0)| / |w_i(0)|. Under mean-field
scaling the movement stays O(1) as the width grows (features are learned); under NTK
scaling it vanishes like width^-1/2 (docs/paper.md claim 3). Kernel change and alignment are in
`KernelTrace` (`kernel_metrics`); the functions here work on any two kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._flow._flatten import device_array
from .._models._base import AbstractModel


def _layers(model: Any, layers: Any) -> list[str]:
    if layers is None:
        if not isinstance(model, AbstractModel):
            raise ValueError("layers: name the layers (fields) to compare for a non-gflow model.")
        return model.trained_layers()
    return list(layers)


def _field(params: Any, name: str) -> Any:
    if not hasattr(params, name):
        raise ValueError(f"layers: the model has no layer {name!r}.")
    return getattr(params, name)


# The two summaries below are computed with numpy on host copies: a few array operations
# once per run, which as JAX operations would each be compiled (10-20 ms apiece in a new
# process) for a microsecond of work. A diverged run's layers overflow to inf/nan here
# without a warning, as they did in JAX.


def relative_movement(params0: Any, params_t: Any, layers: Any = None) -> dict[str, float]:
    """{layer: ||W(t) - W(0)||_F / ||W(0)||_F} for the trained layers (or `layers`)."""
    out = {}
    for name in _layers(params0, layers):
        w0, wt = np.asarray(_field(params0, name)), np.asarray(_field(params_t, name))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out[name] = float(np.linalg.norm(wt - w0) / np.linalg.norm(w0))
    return out


def neuron_movement(params0: Any, params_t: Any, layer: str) -> np.ndarray:
    """(m,) per-neuron relative movement |w_i(t) - w_i(0)| / |w_i(0)| of one layer
    (rows of a matrix layer, entries of a vector layer)."""
    w0, wt = np.asarray(_field(params0, layer)), np.asarray(_field(params_t, layer))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if w0.ndim == 1:
            return np.abs(wt - w0) / np.abs(w0)
        w0, wt = w0.reshape(w0.shape[0], -1), wt.reshape(wt.shape[0], -1)
        return np.linalg.norm(wt - w0, axis=1) / np.linalg.norm(w0, axis=1)


def movement_metrics(model: Any, layers: Any = None) -> dict[str, Callable[[Any], jax.Array]]:
    """Save-time metrics {"movement_<layer>": params -> ||W - W(0)||_F / ||W(0)||_F}."""
    return {
        f"movement_{name}": _Movement(name, device_array(_field(model, name)))
        for name in _layers(model, layers)
    }


class _Movement(eqx.Module):
    """||W - W(0)||_F / ||W(0)||_F of one layer; W(0) is a program argument (a new
    initialization of the same shapes reuses the compiled solve), and its norm is taken
    in the program (one reduction per save time; no separate program to compile)."""

    name: str = eqx.field(static=True)
    w0: jax.Array

    def __call__(self, params: Any) -> jax.Array:
        return jnp.linalg.norm(getattr(params, self.name) - self.w0) / jnp.linalg.norm(self.w0)


def kernel_change(h0: Any, h: Any) -> float:
    """||H - H0||_F / ||H0||_F."""
    h0, h = np.asarray(h0), np.asarray(h)
    return float(np.linalg.norm(h - h0) / np.linalg.norm(h0))
