"""Random initial weights without compiling a random-number program per shape.

`jax.random.normal(key, shape)` compiles the threefry generator for every new shape
(0.2-0.5 s on a CPU core), which made model construction the largest eager cost of a
sweep over widths. With JAX's partitionable threefry (`jax_threefry_partitionable`, the
default since JAX 0.5) the draws of a shape are the first prod(shape) draws of a flat
vector from the same key, bit for bit. So `normal` draws a flat vector whose length is
rounded up to a power of two (one compiled generator per length bucket and dtype) and
takes its prefix (a small program per shape); `split` does the same for keys. Draws of
more than 2^22 entries go to JAX directly (their compile is small next to the draw, and
a bucket could nearly double the peak memory). Values are
identical to `jax.random.normal` / `jax.random.split` (tests/test_models_data.py checks
it); under a trace (vmap, jit) or with the partitionable flag off, both call JAX
directly.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

_MIN_BUCKET = 1024
# Above this many entries a draw goes to JAX directly: its compile is then small next to
# the draw itself, and a power-of-two bucket could nearly double the peak memory.
_MAX_BUCKETED = 1 << 22


def _bucket(n: int) -> int:
    return max(_MIN_BUCKET, 1 << max(0, n - 1).bit_length())


def _direct(key: jax.Array) -> bool:
    # A JAX without the flag has only the partitionable generator.
    partitionable = getattr(jax.config, "jax_threefry_partitionable", True)
    return isinstance(key, jax.core.Tracer) or not partitionable


@functools.partial(jax.jit, static_argnums=(1, 2))
def _flat_normal(key: jax.Array, size: int, dtype: np.dtype) -> jax.Array:
    return jax.random.normal(key, (size,), dtype)


@functools.partial(jax.jit, static_argnums=(1,))
def _prefix(flat: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return flat[: math.prod(shape)].reshape(shape)


def normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """`jax.random.normal(key, shape, dtype)`, with one compiled generator per size bucket."""
    shape = tuple(int(s) for s in shape)
    if _direct(key) or math.prod(shape) > _MAX_BUCKETED:
        return jax.random.normal(key, shape, dtype)
    flat = _flat_normal(key, _bucket(math.prod(shape)), np.dtype(dtype))
    return _prefix(flat, shape)


@functools.partial(jax.jit, static_argnums=(1,))
def _split(key: jax.Array, num: int) -> jax.Array:
    return jax.random.split(key, num)


@jax.jit
def _take(keys: jax.Array, i: jax.Array) -> jax.Array:
    return keys[i]


def split(key: jax.Array, num: int) -> list[jax.Array]:
    """`list(jax.random.split(key, num))`, with one compiled program per size bucket."""
    num = int(num)
    if _direct(key) or num > _MAX_BUCKETED:
        return list(jax.random.split(key, num))
    keys = _split(key, _bucket(num))
    return [_take(keys, np.int32(i)) for i in range(num)]
