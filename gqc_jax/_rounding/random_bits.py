"""Per-element random bits from a counter hash, fused with the rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with good avalanche ("lowbias32")."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _hash_bits(seed: jax.Array, shape) -> jax.Array:
    """Per-element pseudo-random uint32 from a counter hash of (seed, index).

    Generated inside the same fused elementwise pass as the rounding, unlike a
    separate threefry kernel, which cost about 10x a multiply of the array on
    CPU. Statistical quality is ample for stochastic rounding; the stream is
    fully determined by the key in the state.
    """
    size = int(np.prod(shape)) if shape else 1
    index = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return _mix32(_mix32(index ^ seed[0]) + seed[1])
