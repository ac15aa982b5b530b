"""Rounding to explicit bits of the binary significand."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _round_mantissa(g, bits, random_bits):
    info = jnp.finfo(g.dtype)
    width = info.bits
    uint = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[width]
    u = jax.lax.bitcast_convert_type(g, uint)
    drop = jnp.clip(info.nmant - bits, 0, info.nmant).astype(uint)
    one = jnp.ones([], uint)
    mask = jnp.where(drop > 0, (one << drop) - one, jnp.zeros([], uint))
    if random_bits is None:
        lsb = jnp.where(drop > 0, (u >> drop) & one, jnp.zeros([], uint))
        half = jnp.where(drop > 0, (one << (drop - one)) - one, jnp.zeros([], uint))
        rounded = (u + half + lsb) & ~mask
    else:
        rounded = (u + (random_bits.astype(uint) & mask)) & ~mask
    out = jax.lax.bitcast_convert_type(rounded, g.dtype)
    truncated = jax.lax.bitcast_convert_type(u & ~mask, g.dtype)
    out = jnp.where(jnp.isfinite(out), out, truncated)  # never round up to inf
    return out, jnp.isfinite(g)
