"""Rounding to decimal places: an absolute quantum of 10^-d."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gqc_jax._double_word import halves, two_prod
from gqc_jax._rounding.tables import (
    _BF16_POW10,
    _MAX_POW10,
    _floor_log2_10,
    _normalized_pow10,
    _pow2,
    _pow10_range,
    _round_to_integer,
    _times_pow2,
    _work_dtype,
)


def _round_decimals(g, digits, noise, emulate_bf16):
    if emulate_bf16:
        x = g.astype(jnp.bfloat16)
        t = jnp.asarray(_BF16_POW10)[jnp.clip(digits, 0, _MAX_POW10)]
        q = x * t
        r = jnp.round(q) if noise is None else jnp.floor(q + noise.astype(jnp.bfloat16))
        out = (r / t).astype(jnp.bfloat16)
        out = jnp.where(digits > _MAX_POW10, x, out)
        return out, jnp.isfinite(out)
    work = _work_dtype(g.dtype)
    info = jnp.finfo(work)
    x = g.astype(work)
    # 10^d is one scalar here, so the exact rule needs no per-element scaling:
    # q = x * 10^d rounded once; only where that lands exactly on k + 1/2 does the
    # product's rounding error (from an exact double-word product) decide. The
    # partial products of that error must be normal (the backend may flush
    # subnormals to zero), which fails for x below about 2^(2p) times the
    # smallest normal; such an x matters only where 10^d >= 2^(2p), and there
    # every x is lifted by L = 2^(2p) and 10^d lowered by it (an x that then
    # overflows had q >= 2^p, and is kept). 10^d itself is split from its
    # normalised word, so that its halves do not overflow.
    hi_t, lo_t, _ = map(jnp.asarray, _normalized_pow10(jnp.dtype(work)))
    r_max = _pow10_range(work)
    d = jnp.clip(digits, 0, r_max)
    lift_bits = 2 * info.nmant + 2
    lift = jnp.where(d >= int(np.ceil(lift_bits * np.log10(2))), lift_bits, 0)

    def pow10(n, shift):  # 10^n 2^shift as a double word, and the high word's halves
        e = _floor_log2_10(n) + shift
        return tuple(
            _times_pow2(w, e, work)
            for w in (hi_t[n + r_max], lo_t[n + r_max], *halves(hi_t[n + r_max]))
        )

    x_n = x * _pow2(lift, work)
    t_hi, t_lo, *t_halves = pow10(d, -lift)
    q, q_err = two_prod(x_n, t_hi, t_halves)
    r = _round_to_integer(q, q_err + x_n * t_lo, noise)
    # Back: r * 10^-d as a double-word product, rounded once (no division, which
    # XLA may rewrite as a multiply by a rounded reciprocal); where lifted, the
    # product is taken at 10^-d 2^L, in the normal range, and lowered after.
    p_hi, p_lo, *p_halves = pow10(-d, lift)
    b_hi, b_err = two_prod(r, p_hi, p_halves)
    out = (b_hi + (b_err + r * p_lo)) * _pow2(-lift, work)
    out = jnp.copysign(out, x)
    # A result below the smallest normal cannot be represented where the backend
    # flushes subnormals (XLA on CPU): keep the input, the closer value.
    # (q NaN or inf fails the first test too.)
    valid = (jnp.abs(q) < 2.0 ** (info.nmant + 1)) & ((r == 0) | (jnp.abs(out) >= info.tiny))
    return out, valid & (digits <= r_max)
