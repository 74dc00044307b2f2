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

The analyses ask the model, not its class: `AbstractModel.kernel_layers()` names each
trained layer's role (linear / inner / outer) and `kernel_factors(x)` gives F, U, S and
the scale factors; a model without them gets the Jacobian kernel.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._models._base import AbstractModel


def has_closed_form(model: Any) -> bool:
    """Whether `model` declares a closed-form kernel (`kernel_layers()` not empty)."""
    return isinstance(model, AbstractModel) and bool(model.kernel_layers())


def inner_layer(model: Any) -> str | None:
    """The name of the model's trained hidden-layer weights ("inner" role), or None."""
    if not isinstance(model, AbstractModel):
        return None
    return next((k for k, r in model.kernel_layers().items() if r == "inner"), None)


def layer_parts(model: AbstractModel, x: jax.Array, x2: jax.Array | None = None):
    """(input Gram F F2^T, U U2^T m^-2a D^-2b, S S2^T m^-2a) of a hidden-layer model
    (`kernel_factors`), without the eta factors (x2 defaults to x)."""
    fa = model.kernel_factors(x)
    fb = fa if x2 is None else model.kernel_factors(x2)
    if fa.u is None:
        raise ValueError(f"model: {type(model).__name__} has no hidden layer.")
    return fa.feats @ fb.feats.T, fa.w_scale * (fa.u @ fb.u.T), fa.s_scale * (fa.s @ fb.s.T)


def structured_kernel(model: Any, x: Any, x2: Any = None, *, eta: float | None = None) -> jax.Array:
    """The eta-weighted tangent kernel K(x, x2) (n, n2) of a model with a closed form
    (TwoLayer, MultiLayer, Linear, or any model implementing `kernel_layers` and
    `kernel_factors`), by the formulas above (x2 defaults to x: the Gram matrix H).

    Arguments:
        model: the model (its own trainable layers are used). x: (n, d), x2: (n2, d) inputs.
        eta: one time scale for every trained layer, or None for `model.layer_eta()`.
    """
    if not has_closed_form(model):
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
    fa = model.kernel_factors(x)
    fb = fa if x2 is None else model.kernel_factors(xb)
    h = jnp.zeros((x.shape[0], xb.shape[0]), fa.feats.dtype)
    for name, role in model.kernel_layers().items():
        e = le[name] if eta is None else eta
        if role == "linear":
            h = h + e * fa.w_scale * (fa.feats @ fb.feats.T)
        elif role == "inner":
            h = h + e * fa.w_scale * (fa.feats @ fb.feats.T) * (fa.u @ fb.u.T)
        elif role == "outer":
            h = h + e * fa.s_scale * (fa.s @ fb.s.T)
        else:
            raise ValueError(
                f"model: kernel_layers() gives layer {name!r} the role {role!r}; the roles are "
                "'linear', 'inner' and 'outer'."
            )
    return 0.5 * (h + h.T) if x2 is None else h
