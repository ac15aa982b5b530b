"""Exact tables of powers of ten and two, and the integer rounding on them."""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

# Largest power of ten of the bfloat16 emulation: above it 10^d overflows
# bfloat16 and the rule is the identity.
_MAX_POW10 = 38


# bf16(10^d) built exactly as jnp.round builds its factor (from the Python int,
# where numpy accepts it), so the emulation matches jnp.round on bfloat16.
_BF16_POW10 = np.array(
    [
        np.array(10**d if d <= 18 else float(10**d), dtype=jnp.bfloat16)
        for d in range(_MAX_POW10 + 1)
    ]
)


def lookup(table, index: jax.Array) -> jax.Array:
    """``table[index]`` for a small constant table, sharded like ``index``.

    On a mesh with Explicit axes (the default of ``jax.make_mesh``) a gather's
    output sharding cannot be inferred from a replicated table and a sharded
    index: it is named here, the index's followed by the table's own axes
    unsharded. Elsewhere this is a plain gather.
    """
    table = jnp.asarray(table)
    sharding = jax.typeof(index).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or jax.sharding.AxisType.Explicit not in mesh.axis_types:
        return table.at[index].get(mode="promise_in_bounds")
    spec = jax.sharding.PartitionSpec(*sharding.spec, *([None] * (table.ndim - 1)))
    out = jax.sharding.NamedSharding(mesh, spec)
    return table.at[index].get(mode="promise_in_bounds", out_sharding=out)


def _work_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def _pow10_range(dtype) -> int:
    """Tables of powers of ten cover 10^s for |s| <= this: every s that
    significant digits can need for a normal value (float32: -38 <= s <= 45;
    float64: -309 <= s <= 324)."""
    return 64 if jnp.dtype(dtype) == jnp.float32 else 330


@functools.cache
def _ceil_pow10(dtype) -> np.ndarray:
    """The smallest ``dtype`` value >= 10^s at index s + R for |s| <= R (inf
    above the range), so that ``x >= table[s + R]`` is exactly ``x >= 10^s``
    for any ``dtype`` x; R is :func:`_pow10_range`."""
    out = []
    r = _pow10_range(dtype)
    with np.errstate(over="ignore"):
        for s in range(-r, r + 1):
            c = np.asarray(float(Fraction(10) ** s) if s <= 308 else np.inf, dtype)
            if np.isfinite(c) and Fraction(float(c)) < Fraction(10) ** s:
                c = np.nextafter(c, np.asarray(np.inf, dtype))
            out.append(c)
    return np.array(out)


@functools.cache
def _normalized_pow10(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10^s = (hi + lo + third) * 2^E(s) with hi + lo in [1, 2) and
    E(s) = floor(s log2 10), at index s + R for |s| <= R = :func:`_pow10_range`
    (from exact rationals, each word the rest rounded to ``dtype``)."""
    words = []
    r = _pow10_range(dtype)
    for s in range(-r, r + 1):
        rest = Fraction(10) ** s / Fraction(2) ** _floor_log2_10(s)
        row = []
        for _ in range(3):
            row.append(np.asarray(float(rest), dtype))
            rest -= Fraction(float(row[-1]))
        words.append(row)
    hi, lo, lo2 = (np.array(column) for column in zip(*words, strict=True))
    return hi, lo, lo2


def _floor_log2_10(s):
    """floor(s log2 10) in integer arithmetic (exact for |s| <= 400)."""
    return (s * 217706) >> 16


def _int_type(work) -> jnp.dtype:
    """The signed integer type of ``work``'s width."""
    return jnp.dtype(jnp.int32 if work == jnp.float32 else jnp.int64)


def _pow2(n, work) -> jax.Array:
    """2^n exactly, for an integer n in ``work``'s normal range, from its bit
    pattern (jnp.ldexp of float64 on GPU was an ulp off: 2^-106 on an H100)."""
    info = jnp.finfo(work)
    n = jnp.asarray(n).astype(_int_type(work))
    return jax.lax.bitcast_convert_type((n + info.maxexp - 1) << info.nmant, work)


def _times_pow2(w, n, work) -> jax.Array:
    """w 2^n for an integer n with n / 2 in the normal exponent range, in two
    exact steps (2^n itself may be out of range): exact where the result is
    normal."""
    half = n >> 1
    return w * _pow2(half, work) * _pow2(n - half, work)


def _round_to_integer(q_hi, q_lo, noise):
    """rint(q_hi + q_lo), half to even on the exact double word; or floor(q + u).

    After renormalising (|q_lo| <= half an ulp of q_hi), only where q_hi lands
    exactly on k + 1/2 can the low word change the result: q_hi and 1/2 lie on
    the same grid, so any other gap exceeds |q_lo|.
    """
    total = q_hi + q_lo
    q_lo = q_lo - (total - q_hi)
    q_hi = total
    if noise is not None:
        # q_hi may have no fraction bits (2^(p-1) <= q < 2^p): the fraction of the
        # double word, plus u, decides, added at its own small scale.
        whole = jnp.floor(q_hi)
        return whole + jnp.floor((q_hi - whole) + q_lo + noise)
    floor = jnp.floor(q_hi)
    tie = q_hi - floor == 0.5
    return jnp.where(
        tie & (q_lo > 0), floor + 1, jnp.where(tie & (q_lo < 0), floor, jnp.round(q_hi))
    )


@functools.cache
def _significant_tables(dtype) -> tuple[np.ndarray, ...]:
    """Columns indexed by s + R for |s| <= R (:func:`_pow10_range`): the
    normalised double words of 10^s and of 10^-s, except that where 10^-s is
    exact (-10 <= s < 0 in float32, -22 in float64), its low word, 0, is
    replaced by 5^-s, which the tie test needs there (one lookup fewer per
    element); then the third words of 10^s and 10^-s, for the exact side of
    near-ties."""
    hi, lo, third = _normalized_pow10(dtype)
    exact_max = 10 if dtype == np.float32 else 22
    inv_lo = lo[::-1].copy()
    r = _pow10_range(dtype)
    for s in range(-exact_max, 0):
        assert inv_lo[s + r] == 0
        inv_lo[s + r] = 5.0**-s
    return hi, lo, hi[::-1].copy(), inv_lo, third, third[::-1].copy()


@functools.cache
def _significant_rows(dtype) -> np.ndarray:
    """Row s + R holds the six columns of :func:`_significant_tables` at s and
    then at s - 1 (row 0's second half is unused)."""
    at_s = np.stack(_significant_tables(dtype), axis=1)
    return np.concatenate([at_s, np.roll(at_s, 1, axis=0)], axis=1)


# Every s0 = digits - 1 - floor(k log10 2) for digits in [1, 8] and any float32
# exponent field (zeros, subnormals, inf and NaN included): [-38, 46].
_S0_MIN, _S0_MAX = -38, 46


@functools.cache
def _abs_pow10_float64() -> np.ndarray:
    """10^|s| at index s - _S0_MIN, rounded once to float64 (exact for |s| <= 22)."""
    return np.array([float(Fraction(10) ** abs(s)) for s in range(_S0_MIN, _S0_MAX + 1)])
