"""Rounding to significant decimal digits, exact at every tie."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gqc_jax._double_word import sign_of_sum, two_prod
from gqc_jax._rounding.tables import (
    _S0_MIN,
    _abs_pow10_float64,
    _ceil_pow10,
    _floor_log2_10,
    _int_type,
    _pow2,
    _pow10_range,
    _round_to_integer,
    _significant_rows,
    _significant_tables,
    _times_pow2,
    _work_dtype,
    lookup,
)


def _round_significant(g, digits, noise, *, independent_indices: bool):
    """``digits`` significant decimal digits: rint(|x| 10^s) 10^-s with
    s = digits - 1 - floor(log10 |x|), with exact ties.

    No logarithm: the binary exponent k comes from the bit pattern, floor(log10)
    is floor(k log10 2) or one more, decided by one exact comparison with a table
    of powers of ten rounded up. The scaled value |x| 10^s is a double word from
    a table, good to about 2^-46 relative and exact for 0 <= s <= 10 (float32;
    22 for float64), where 10^s is exact. Ties cannot occur for s > 10: with
    |x| = M 2^E, M the integer significand, 2 |x| 10^s = M 5^s 2^(E+s+1) is
    below 2^25 where rounding applies, but as an integer it would be a multiple
    of 5^s > 2^25; nor for s < -10, where 5^|s| would have to divide M.

    For s < 0 the table's double word is not exact, and the scaled value q can
    be exactly j + 1/2 (12345 to four digits): where it lands within 2^-(p/2) of
    j + 1/2 (p = 23 or 52 fraction bits), the side of j + 1/2 is decided exactly
    in integer arithmetic. With t = E + s + 1, 2q - (2j + 1) has the sign of
    M 2^t - (2j + 1) 5^|s|; that difference is small there, so wrapping int32
    (int64) arithmetic, exact modulo 2^32 (2^64), gives it exactly.

    Used where float64 is not native (TPU) and for float64 leaves. In float32 the
    double word, good to about 2^-46 relative, is too coarse for 7 digits at a
    few near-ties (the worst is 2^-51.3 relative from j + 1/2): where q lies
    within 2^-(p/2) of j + 1/2 for s outside [-10, 0), and where the result lies
    near a midpoint of the grid it is rounded to, a third table word decides
    the side (the tests check every such float32 input).

    ``independent_indices`` (used off CPU) looks up one row holding the four
    entries for both candidates s0 = digits - 1 - floor(k log10 2) and s0 - 1,
    indexed from the bit pattern alone, and selects. XLA on GPU fuses a lookup
    into the pass only where its index is cheap to recompute: indexing by s
    (which depends on the over-a-power-of-ten lookup) or four lookups per
    candidate each put the int32 indices through memory in a kernel of their own
    (2.4-3.1x the multiply on an H100; one row, 1.7-2.0x). On CPU each lookup is
    a scalar load per vector lane, so the tables share one index (s + R) and
    are as few as the rule allows; one lookup of a whole row of them instead
    made XLA's loop scalar (14x the multiply).
    """
    work = _work_dtype(g.dtype)
    info = jnp.finfo(work)
    nmant, bias = info.nmant, info.maxexp - 1
    itype = _int_type(work)
    exact_max = 10 if work == jnp.float32 else 22  # 10^n exact up to here

    x = g.astype(work)
    ax = jnp.abs(x)
    u = jax.lax.bitcast_convert_type(x, itype)
    biased = (u >> nmant) & (2 * bias + 1)
    normal = (biased > 0) & (biased < 2 * bias + 1)
    k = biased - bias
    m = jax.lax.bitcast_convert_type((u & ((1 << nmant) - 1)) | (bias << nmant), work)  # [1, 2)
    # Beyond `top` digits the scaled value is at least 2^p: x is kept.
    top = int(nmant * np.log10(2)) + 2  # 8 for float32, 17 for float64
    d = jnp.clip(digits, 1, top + 1).astype(itype)
    e0 = (k * 78913) >> 18  # floor(k log10 2); floor(log10 |x|) is e0 or e0 + 1
    r_max = _pow10_range(work)
    over = ax >= lookup(_ceil_pow10(jnp.dtype(work)), jnp.clip(e0 + 1 + r_max, 0, 2 * r_max))
    s = d - 1 - e0 - over.astype(itype)
    # Per s, at index s + R: 10^s and 10^-s as normalised double words, and
    # 5^-s where s < 0 and it is exact.
    if independent_indices:
        s0 = d - 1 - e0  # s where not over; s0 - 1 where over
        i = jnp.clip(s0 + r_max, 1, 2 * r_max)
        row = lookup(_significant_rows(jnp.dtype(work)), i)
        hi, lo, inv_hi, inv_lo, lo2, inv_lo2 = (
            jnp.where(over, row[..., c + 6], row[..., c]) for c in range(6)
        )
    else:
        # One index for all four (each lookup is a scalar load per lane on CPU).
        i = jnp.clip(s + r_max, 0, 2 * r_max)
        columns = _significant_tables(jnp.dtype(work))
        hi, lo, inv_hi, inv_lo, lo2, inv_lo2 = (lookup(c, i) for c in columns)
    down = (s < 0) & (s >= -exact_max)  # 10^-s exact: inv_lo holds 5^-s here
    five, inv_lo = inv_lo, jnp.where(down, 0.0, inv_lo)

    scale = _pow2(k + _floor_log2_10(s), work)
    p_hi, p_err = two_prod(m, hi)
    q_hi, q_lo = p_hi * scale, (p_err + m * lo) * scale  # |x| 10^s, about 2^-46
    r = _round_to_integer(q_hi, q_lo, noise)
    if noise is None:
        # s < 0 near j + 1/2: the exact side of it, in wrapping integer arithmetic.
        # j and the fraction come from the double word: at 2^(p-1) <= q < 2^p the
        # high word alone has no fraction bits.
        total = q_hi + q_lo
        whole = jnp.floor(total)
        fraction = (total - whole) + (q_lo - (total - q_hi))
        j = whole + jnp.floor(fraction)
        near_half = jnp.abs(fraction - jnp.floor(fraction) - 0.5) <= 2.0 ** -(nmant // 2)
        width = jnp.iinfo(itype).bits
        t = k - nmant + s + 1
        significand = (u & ((1 << nmant) - 1)) | (1 << nmant)
        ji = j.astype(itype)
        diff = (significand << jnp.clip(t, 0, width - 1)) - (
            ((2 * ji + 1) * five.astype(itype)) << jnp.clip(-t, 0, width - 1)
        )
        exact = ji + jnp.where(diff > 0, 1, jnp.where(diff < 0, 0, ji & 1))
        r = jnp.where(down & near_half, exact.astype(work), r)
        # Elsewhere near j + 1/2: the sign of Q - (j + 1/2) from the table's third
        # word, in units of `scale` (the worst float32 near-tie is 2^-51.3
        # relative from j + 1/2; this sum errs by about 2^-68).
        # p_hi - (j + 1/2) 2^-n in two exact (Sterbenz) steps: j + 1/2 itself
        # needs p + 1 bits where j >= 2^(p-1).
        n = k + _floor_log2_10(s)
        below = (p_hi - _times_pow2(j, -n, work)) - _times_pow2(0.5, -n, work)
        side = sign_of_sum(below, p_err, *two_prod(m, lo), m * lo2)
        parity = j - 2 * jnp.floor(j / 2)
        exact = j + jnp.where(side > 0, 1.0, jnp.where(side < 0, 0.0, parity))
        r = jnp.where(near_half & ~down, exact, r)
    # Back: r 10^-s from the table's double word, rounded once (exact for
    # -10 <= s <= 0, where the table's word is 10^-s / 2^E exactly); near a
    # midpoint of the grid it is rounded to, the third word decides the side.
    b_hi, b_err = two_prod(r, inv_hi)
    b_lo = b_err + r * inv_lo
    near = b_hi + b_lo
    rest = b_lo - (near - b_hi)  # the double word minus `near`, exactly
    toward = jnp.where(rest > 0, jnp.inf, 0.0).astype(work)
    neighbour = jnp.nextafter(near, toward)
    half = (neighbour - near) * 0.5  # to the midpoint on rest's side (exact)
    at_midpoint = jnp.abs(rest - half) <= jnp.abs(half) * 2.0**-10
    beyond = sign_of_sum((b_hi - near) - half, b_err, *two_prod(r, inv_lo), r * inv_lo2)
    near = jnp.where(at_midpoint & (beyond * half > 0), neighbour, near)
    out = jnp.copysign(_times_pow2(near, _floor_log2_10(-s), work), x)
    # A result below the smallest normal cannot be represented where the backend
    # flushes subnormals (XLA on CPU): keep the input, the closer value.
    valid = normal & (digits <= top) & (q_hi < 2.0 ** (nmant + 1)) & (jnp.abs(out) >= info.tiny)
    return out, valid


def _round_significant_x64(g, digits, noise):
    """``digits`` significant digits of a float32 (or narrower) leaf, with the
    arithmetic in float64 (on CPU and GPU, where float64 is native).

    With s0 = digits - 1 - floor(k log10 2) from the binary exponent k and
    T = 10^|s0| from one table (rounded once, exact for |s0| <= 22):

    * q0 = |x| T, or |x| / T for s0 < 0, is |x| 10^s0 within 2^-52 relative.
      Where q0 >= 10^digits, |x| >= 10^(floor(k log10 2) + 1) and s = s0 - 1:
      q = q0 fl(0.1). That test is exact: at |x| = 10^n, q0 is exactly
      10^digits, and no other float32 lies within 2^-51 relative of a power of
      ten. (A division by 10 would be rewritten by XLA as this multiply anyway.)
    * r = rint(q), q within 4 2^-53 relative of the exact scaled value Q (below
      2^24 where rounding applies). Exact ties (Q = j + 1/2 needs
      -10 <= s <= 10, see :func:`_round_significant`) come out exactly: |x| 10^s0
      is exact for 0 <= s0 <= 11 and |x| / 10^|s0| is exact where it is Q or 10 Q;
      then (10 j + 5) fl(0.1) = (j + 1/2)(1 + 2^-54) rounds to j + 1/2. Every
      float32 whose Q lies within 2^-22 of j + 1/2 without being a tie (where a
      relative error below 2^-46 could misround) is checked against exact
      arithmetic in the tests.
    * Back, r 10^-s = (10^over r) / T, or (10^over r) T for s0 < 0, rounded
      once in float64 (twice where T is inexact), then to float32. That errs
      only within 2^-28 of the float32 spacing from a float32 midpoint: r 10^-s
      is never a midpoint for s >= 0, and where it is one for s < 0 it is exact
      in float64 (|s| <= 10). The 19 (r, s) within 2^-26 of a midpoint are
      checked in the tests (a multiply by a table of 10^-s instead of the
      division, two roundings, misrounds one of them: r = 7038531, s = 32).
    """
    x = g.astype(jnp.float32)
    u = jax.lax.bitcast_convert_type(x, jnp.int32)
    biased = (u >> 23) & 255  # zeros, subnormals, inf and NaN: round_leaf keeps them
    d = jnp.clip(digits, 1, 8).astype(jnp.int32)  # 9 or more digits keep every float32
    s0 = d - 1 - (((biased - 127) * 78913) >> 18)
    with jax.enable_x64(True):
        table = jnp.asarray(_abs_pow10_float64())
        t = lookup(table, s0 - _S0_MIN)
        ax = jnp.abs(x).astype(jnp.float64)
        q0 = jnp.where(s0 >= 0, ax * t, ax / t)
        over = q0 >= lookup(table, d - _S0_MIN)
        q = jnp.where(over, q0 * 0.1, q0)
        r = jnp.round(q) if noise is None else jnp.floor(q + noise.astype(jnp.float64))
        r = jnp.where(over, r * 10.0, r)
        out = jnp.where(s0 >= 0, r / t, r * t).astype(jnp.float32)
        small = q < 2.0**24  # beyond, the quantum is below x's spacing: x is kept
    out = jnp.copysign(out, x)
    return out, (digits <= 8) & small & (jnp.abs(out) >= jnp.finfo(jnp.float32).tiny)
