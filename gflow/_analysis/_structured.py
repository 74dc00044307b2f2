"""The tangent kernel of gflow's own models in closed form (no Jacobian).

Each trained layer is a dense map, so its per-example gradients are outer products and
their Gram matrix factorizes. With pre_ik the pre-activation of neuron i on x_k,
u_ik = c_i s'(pre_ik) and S_ik = s(pre_ik):

    two-layer   H = eta_W m^-2a (X X^T) o (U U^T)  +  eta_c m^-2a S S^T
    multilayer  H = eta_W m^-2a D^-2b (Phi Phi^T) o (U U^T)  +  eta_c m^-2a S S^T
    linear      H = eta X X^T

(each term only when that layer is trained; Phi = the fixed random features). This costs
O(n^2 (m + d)) instead of the O(n^2 P) of J diag(eta) J^T, and equals it exactly; the tests
compare it with `tangent_kernel` (jvp/vjp) and with a dense Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._models._activations import get_activation
from .._models._linear import Linear
from .._models._multilayer import MultiLayer
from .._models._two_layer import TwoLayer

STRUCTURED = (TwoLayer, MultiLayer, Linear)


def _derivative(s: Callable, z: jax.Array) -> jax.Array:
    """Elementwise s'(z) by a forward-mode product with ones."""
    return jax.jvp(s, (z,), (jnp.ones_like(z),))[1]


def _layer(model: TwoLayer | MultiLayer, x: jax.Array):
    """(input features, u = c s'(pre), s(pre)) of the trained hidden layer on x."""
    s = get_activation(model.activation)
    if isinstance(model, TwoLayer):
        feats, pre = x, model.pre_activations(x)
    else:
        feats = model.features(x)
        pre = feats @ model.W.T / model.D ** model.exponents[1]
    return feats, _derivative(s, pre) * model.c, s(pre)


def layer_parts(model: TwoLayer | MultiLayer, x: jax.Array, x2: jax.Array | None = None):
    """(input Gram X X2^T or Phi Phi2^T, U U2^T m^-2a D^-2b, S S2^T m^-2a) of a
    hidden-layer model, without the eta factors (x2 defaults to x)."""
    fa, ua, sa = _layer(model, x)
    fb, ub, sb = (fa, ua, sa) if x2 is None else _layer(model, x2)
    if isinstance(model, TwoLayer):
        a, scale_w = model.exponent, 1.0
    else:
        a, b = model.exponents
        scale_w = 1.0 / model.D ** (2 * b)
    norm = 1.0 / model.m ** (2 * a)
    return fa @ fb.T, scale_w * norm * (ua @ ub.T), norm * (sa @ sb.T)


def _trains_c(model: Any) -> bool:
    return model.train_second if isinstance(model, TwoLayer) else model.train_output


def structured_kernel(model: Any, x: Any, x2: Any = None, *, eta: float | None = None) -> jax.Array:
    """The eta-weighted tangent kernel K(x, x2) (n, n2) of a TwoLayer, MultiLayer or Linear
    model, by the closed forms above (x2 defaults to x: the Gram matrix H).

    Arguments:
        model: the model (its own trainable layers are used). x: (n, d), x2: (n2, d) inputs.
        eta: one time scale for every trained layer, or None for `model.layer_eta()`.
    """
    if not isinstance(model, STRUCTURED):
        raise ValueError(
            f"model: no closed-form kernel for {type(model).__name__}; use tangent_kernel."
        )
    if getattr(model, "outputs", 1) != 1:
        raise ValueError(
            f"model: the closed form is for scalar outputs, this model has {model.outputs}; "
            "use tangent_kernel(..., method='jacobian')."
        )
    x = jnp.asarray(x)
    xb = x if x2 is None else jnp.asarray(x2)
    le = model.layer_eta()
    if isinstance(model, Linear):
        h = (le["w"] if eta is None else eta) * (x @ xb.T)
    else:
        gram, g, ss = layer_parts(model, x, None if x2 is None else xb)
        h = jnp.zeros_like(gram)
        if not isinstance(model, TwoLayer) or model.train_first:
            h = h + (le["W"] if eta is None else eta) * gram * g
        if _trains_c(model):
            h = h + (le["c"] if eta is None else eta) * ss
    return 0.5 * (h + h.T) if x2 is None else h
