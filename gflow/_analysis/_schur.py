"""The Schur-product lower bound on the first trained layer's tangent kernel.

Two-layer model f(x) = m^-a sum_i c_i s(w_i . x), trained W with time scale eta:

    H_W = (X X^T) o G,   G_kl = eta m^-2a sum_i c_i^2 s'(w_i.x_k) s'(w_i.x_l),

Multi-layer model f(x) = m^-a sum_i c_i s(D^-b sum_j W_ij h_j(x)), trained W:

    H_W = (Phi Phi^T) o G,  G_kl = eta m^-2a D^-2b sum_i c_i^2 s'(pre_ik) s'(pre_il),

with Phi (n x D) the fixed random features and pre_ik = D^-b (W h(x_k))_i. G is a Gram
matrix (PSD), so by the Schur product theorem lambda_min(H_W) >= lambda_min(X X^T) min_k G_kk
(resp. Phi Phi^T). H = H_W + H_c with H_c PSD, so lambda_min(H) >= lambda_min(H_W).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._flow._flatten import device_array
from .._models._base import AbstractModel
from ._structured import inner_layer, layer_parts


def schur_applies(model: Any) -> str | None:
    """None when the Schur bound applies to `model`, else the reason it does not."""
    if getattr(model, "outputs", 1) != 1:
        return f"the bound is for scalar outputs, the model has {model.outputs}"
    if inner_layer(model) is not None:
        return None
    trainable = model.layer_trainable() if isinstance(model, AbstractModel) else {}
    if trainable.get("W") is False:
        return "the first layer W is frozen (train_first=False)"
    return f"{type(model).__name__} has no trained hidden layer W"


def _parts(model: AbstractModel, x: jax.Array, eta_w: float):
    """(input Gram X X^T or Phi Phi^T, G) of the first trained layer."""
    gram, g, _ = layer_parts(model, x)  # g without eta
    return gram, eta_w * g


def first_layer_kernel(model: AbstractModel, x: Any, *, eta_w: float | None = None):
    """H_W = (X X^T) o G (two-layer) or (Phi Phi^T) o G (multi-layer), in closed form.

    Arguments:
        model: a TwoLayer (with W trained) or MultiLayer. x: (n, d) inputs.
        eta_w: time scale of W (default the model's `layer_eta()["W"]`).

    Returns:
        (H_W (n, n), input Gram (n, n), G (n, n)).
    """
    reason = schur_applies(model)
    if reason is not None:
        raise ValueError(f"model: the Schur bound does not apply: {reason}.")
    eta_w = model.layer_eta()[inner_layer(model)] if eta_w is None else float(eta_w)
    gram, g = _parts(model, jnp.asarray(x), eta_w)
    return gram * g, gram, g


@eqx.filter_jit
def _lam_gram(model, x):
    """lambda_min of the (fixed) input Gram matrix; module level, so one compiled program
    serves every call of the same structure and shapes."""
    return jnp.linalg.eigvalsh(layer_parts(model, x)[0])[0]


def schur_metrics(
    model: AbstractModel, x: Any, *, eta_w: float | None = None
) -> dict[str, Callable[[Any], jax.Array]]:
    """Save-time metric for `simulate`: {"schur": fn}, fn(params) -> (3,) =
    [lambda_min(H_W), lambda_min(input Gram) * min_k G_kk, min_k G_kk].

    The input Gram (X X^T or Phi Phi^T) is fixed along the flow; its lambda_min is
    computed once here.
    """
    reason = schur_applies(model)
    if reason is not None:
        raise ValueError(f"model: the Schur bound does not apply: {reason}.")
    x = device_array(x)
    eta_w = model.layer_eta()[inner_layer(model)] if eta_w is None else float(eta_w)
    return {"schur": _Schur(x, _lam_gram(model, x), eta_w)}


class _Schur(eqx.Module):
    """The save-time Schur metric; x and lambda_min of the input Gram are program
    arguments (new data of the same shape reuses the compiled solve)."""

    x: jax.Array
    lam_gram: jax.Array
    eta_w: float = eqx.field(static=True)

    def __call__(self, params: Any) -> jax.Array:
        gram_t, g = _parts(params, self.x, self.eta_w)
        hw = gram_t * g
        gmin = jnp.min(jnp.diagonal(g))
        return jnp.stack([jnp.linalg.eigvalsh(0.5 * (hw + hw.T))[0], self.lam_gram * gmin, gmin])
