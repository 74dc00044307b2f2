"""Training losses on a batch of model outputs: squared error, logistic (binary, labels
+-1) and softmax cross-entropy (k classes). Each is a mean over the n examples, so the
flow's time scale is the same for all three (d theta/dt = -eta grad L)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("mse", "logistic", "cross-entropy")


def mse(f: jax.Array, y: jax.Array) -> jax.Array:
    """L = (1/2n) sum_i |f_i - y_i|^2 for f, y of shape (n,) or (n, k) (summed over outputs)."""
    r = (f - y).reshape(f.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(r**2, axis=1))


def logistic(f: jax.Array, y: jax.Array) -> jax.Array:
    """L = (1/n) sum_i log(1 + exp(-y_i f_i)) for outputs f (n,) and labels y_i in {-1, +1}.

    Evaluated as softplus(-y f) (no overflow for large margins). Its gradient in f_i is
    -y_i sigmoid(-y_i f_i) / n.
    """
    return jnp.mean(jax.nn.softplus(-y * f))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """L = (1/n) sum_i [log sum_a exp(z_ia) - z_i,y_i]: softmax cross-entropy of logits z
    (n, k) against integer labels (n,) in {0..k-1} or one-hot / probability rows (n, k)
    (then L = -(1/n) sum_i sum_a p_ia log softmax(z_i)_a).

    Evaluated with log-softmax (max-shifted, no overflow). Its gradient in z_i is
    (softmax(z_i) - onehot(y_i)) / n.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    if labels.ndim == logits.ndim:
        return -jnp.mean(jnp.sum(labels * logp, axis=-1))
    idx = labels.astype(jnp.int32)
    return -jnp.mean(jnp.take_along_axis(logp, idx[:, None], axis=-1)[:, 0])


def accuracy(f: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of correct predictions: argmax of logits (n, k) against labels (n,), or
    sign(f) against +-1 labels for scalar outputs (n,)."""
    if f.ndim == 2:
        hits = jnp.argmax(f, axis=-1) == y.astype(jnp.int32)
    else:
        hits = jnp.sign(f) == y
    return jnp.mean(hits.astype(f.dtype))


def one_hot(labels, classes: int) -> jax.Array:
    """(n,) integer labels in {0..classes-1} -> (n, classes) one-hot rows (float)."""
    return jax.nn.one_hot(jnp.asarray(labels).astype(jnp.int32), classes)


def get_loss(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss (f, y) -> scalar called `name` (one of `LOSSES`)."""
    table = {"mse": mse, "logistic": logistic, "cross-entropy": cross_entropy}
    if name not in table:
        raise ValueError(f"loss: must be one of {list(LOSSES)}, got {name!r}.")
    return table[name]
