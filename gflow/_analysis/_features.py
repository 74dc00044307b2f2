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

from .._models._base import AbstractModel


def _layers(model: Any, layers: Any) -> list[str]:
    if layers is None:
        if not isinstance(model, AbstractModel):
            raise ValueError("layers: name the layers (fields) to compare for a non-gflow model.")
        return model.trained_layers()
    return list(layers)


def _field(params: Any, name: str) -> jax.Array:
    if not hasattr(params, name):
        raise ValueError(f"layers: the model has no layer {name!r}.")
    return jnp.asarray(getattr(params, name))


def relative_movement(params0: Any, params_t: Any, layers: Any = None) -> dict[str, float]:
    """{layer: ||W(t) - W(0)||_F / ||W(0)||_F} for the trained layers (or `layers`)."""
    out = {}
    for name in _layers(params0, layers):
        w0, wt = _field(params0, name), _field(params_t, name)
        out[name] = float(jnp.linalg.norm(wt - w0) / jnp.linalg.norm(w0))
    return out


def neuron_movement(params0: Any, params_t: Any, layer: str) -> np.ndarray:
    """(m,) per-neuron relative movement |w_i(t) - w_i(0)| / |w_i(0)| of one layer
    (rows of a matrix layer, entries of a vector layer)."""
    w0, wt = _field(params0, layer), _field(params_t, layer)
    if w0.ndim == 1:
        return np.asarray(jnp.abs(wt - w0) / jnp.abs(w0))
    w0, wt = w0.reshape(w0.shape[0], -1), wt.reshape(wt.shape[0], -1)
    return np.asarray(jnp.linalg.norm(wt - w0, axis=1) / jnp.linalg.norm(w0, axis=1))


def movement_metrics(model: Any, layers: Any = None) -> dict[str, Callable[[Any], jax.Array]]:
    """Save-time metrics {"movement_<layer>": params -> ||W - W(0)||_F / ||W(0)||_F}."""
    out = {}
    for name in _layers(model, layers):
        w0 = jnp.asarray(_field(model, name))
        out[f"movement_{name}"] = _Movement(name, w0, jnp.linalg.norm(w0))
    return out


class _Movement(eqx.Module):
    """||W - W(0)||_F / ||W(0)||_F of one layer; W(0) and its norm are program arguments
    (a new initialization of the same shapes reuses the compiled solve)."""

    name: str = eqx.field(static=True)
    w0: jax.Array
    norm0: jax.Array

    def __call__(self, params: Any) -> jax.Array:
        return jnp.linalg.norm(getattr(params, self.name) - self.w0) / self.norm0


def kernel_change(h0: Any, h: Any) -> float:
    """||H - H0||_F / ||H0||_F."""
    h0, h = np.asarray(h0), np.asarray(h)
    return float(np.linalg.norm(h - h0) / np.linalg.norm(h0))
