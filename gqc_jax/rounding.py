"""Gradient rounding as a jitted Optax transform.

Three ways to coarsen every gradient element, all traced in ``digits`` (one
compile serves every setting, and settings can be vmapped):

* ``"decimals"``: :math:`R_d(g) = 10^{-d}\\,\\operatorname{rint}(g \\cdot 10^d)`,
  an absolute quantum of :math:`10^{-d}` (what the gradient-rounding study ran,
  although its text says "significant digits").
* ``"significant"``: ``digits`` significant decimal digits, scale-free.
* ``"mantissa_bits"``: keep ``digits`` explicit bits of the binary significand
  (7 reproduces a cast to bfloat16, 3 to float8 e4m3's significand).

Rounding is half-to-even, or unbiased stochastic rounding with
``stochastic=True``. Arithmetic runs in float32 for float16/bfloat16/float32
leaves (float64 for float64; significant digits of the narrower leaves use
float64 on CPU and GPU, see :func:`_round_significant_x64`) and the result is
cast back to the leaf's dtype.
Zeros, subnormals, NaN and inf pass through (XLA on CPU reads subnormals as
zeros; they are kept on every backend), and a finite value never becomes inf or
NaN. Where the scaled value reaches :math:`2^p` (:math:`|g \\cdot 10^d| \\ge 2^p`,
p = 24 significand bits in float32, 53 in float64) the quantum is below the
element's own spacing and the correctly rounded result is the element itself,
which is returned; so is an element whose result would be subnormal.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from fractions import Fraction
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gqc_jax._double_word import halves, sign_of_sum, two_prod

MODES = ("decimals", "significant", "mantissa_bits")
Mode = Literal["decimals", "significant", "mantissa_bits"]
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


class RoundGradientsState(NamedTuple):
    """State of :func:`round_gradients`.

    Attributes:
      count: ``int32[]`` calls so far (the schedule's clock).
      digits: ``int32[]`` the setting in force (write it to change a constant
        setting without recompiling; a schedule overwrites it every call).
      key: PRNG key data for stochastic rounding.
      fraction_zeroed: ``float32[]`` fraction of elements that were non-zero and
        became zero in the last call.
      fraction_changed: ``float32[]`` fraction of elements changed in the last call.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> g = {"w": jnp.array([0.004, 0.123, 1.0, 0.0])}
      >>> tx = gqc_jax.round_gradients(2)
      >>> _, state = tx.update(g, tx.init(g))
      >>> float(state.fraction_zeroed), float(state.fraction_changed)
      (0.25, 0.5)
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    digits: jax.Array
    key: jax.Array
    fraction_zeroed: jax.Array
    fraction_changed: jax.Array


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
    ceil_t = jnp.asarray(_ceil_pow10(jnp.dtype(work)))
    r_max = _pow10_range(work)
    over = ax >= ceil_t[jnp.clip(e0 + 1 + r_max, 0, 2 * r_max)]
    s = d - 1 - e0 - over.astype(itype)
    # Per s, at index s + R: 10^s and 10^-s as normalised double words, and
    # 5^-s where s < 0 and it is exact.
    if independent_indices:
        s0 = d - 1 - e0  # s where not over; s0 - 1 where over
        i = jnp.clip(s0 + r_max, 1, 2 * r_max)
        row = jnp.asarray(_significant_rows(jnp.dtype(work))).at[i].get(mode="promise_in_bounds")
        hi, lo, inv_hi, inv_lo, lo2, inv_lo2 = (
            jnp.where(over, row[..., c + 6], row[..., c]) for c in range(6)
        )
    else:
        # One index for all four (each lookup is a scalar load per lane on CPU).
        i = jnp.clip(s + r_max, 0, 2 * r_max)
        columns = _significant_tables(jnp.dtype(work))
        hi, lo, inv_hi, inv_lo, lo2, inv_lo2 = (jnp.asarray(c)[i] for c in columns)
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


# Every s0 = digits - 1 - floor(k log10 2) for digits in [1, 8] and any float32
# exponent field (zeros, subnormals, inf and NaN included): [-38, 46].
_S0_MIN, _S0_MAX = -38, 46


@functools.cache
def _abs_pow10_float64() -> np.ndarray:
    """10^|s| at index s - _S0_MIN, rounded once to float64 (exact for |s| <= 22)."""
    return np.array([float(Fraction(10) ** abs(s)) for s in range(_S0_MIN, _S0_MAX + 1)])


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
        t = table.at[s0 - _S0_MIN].get(mode="promise_in_bounds")
        ax = jnp.abs(x).astype(jnp.float64)
        q0 = jnp.where(s0 >= 0, ax * t, ax / t)
        over = q0 >= table[d - _S0_MIN]
        q = jnp.where(over, q0 * 0.1, q0)
        r = jnp.round(q) if noise is None else jnp.floor(q + noise.astype(jnp.float64))
        r = jnp.where(over, r * 10.0, r)
        out = jnp.where(s0 >= 0, r / t, r * t).astype(jnp.float32)
        small = q < 2.0**24  # beyond, the quantum is below x's spacing: x is kept
    out = jnp.copysign(out, x)
    return out, (digits <= 8) & small & (jnp.abs(out) >= jnp.finfo(jnp.float32).tiny)


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


def _check_digits(digits, mode):
    if callable(digits):
        return
    if isinstance(digits, bool) or not isinstance(digits, (numbers.Integral, np.integer)):
        raise ValueError(
            f"digits must be a non-negative int or a schedule f(count) -> int, got {digits!r}."
        )
    minimum = 0 if mode == "decimals" else 1
    if digits < minimum:
        raise ValueError(f"digits must be >= {minimum} in {mode!r} mode, got {digits}.")


def round_gradients(
    digits: int | Callable[[jax.Array], jax.typing.ArrayLike],
    *,
    mode: Mode = "decimals",
    stochastic: bool = False,
    emulate_bf16: bool = False,
    seed: int = 0,
) -> optax.GradientTransformation:
    r"""Rounds every gradient element; see the module docstring for the modes.

    Place it first in ``optax.chain(gqc_jax.round_gradients(7), optax.adamw(...))``.
    Before a GQC controller (``optax.chain(round, gqc_jax.gnts(adamw))``) it
    rounds every microbatch gradient, as the study rounded after every backward
    pass; as the controller's ``inner`` it rounds once, the window mean.

    Args:
      digits: decimal places, significant digits or mantissa bits; an int, or a
        schedule on the transform's own call count (e.g. round hard early, relax
        later), rounded to the nearest int; a value below 0 counts as 0 (below
        1 in ``"significant"`` mode, as 1). It is traced: a new value never
        recompiles.
      mode: ``"decimals"``, ``"significant"`` or ``"mantissa_bits"``.
      stochastic: unbiased stochastic rounding (``floor(q + u)``, u uniform)
        instead of round-half-to-even; the PRNG key lives in the state.
      emulate_bf16: ``"decimals"`` only: do the arithmetic in bfloat16 with
        :math:`T = \operatorname{bf16}(10^d)`, reproducing the study's kernel bit
        for bit on every finite result.
      seed: seed of the stochastic-rounding key.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`RoundGradientsState`.

    Raises:
      ValueError: unknown ``mode``, negative or non-integer ``digits``,
        ``emulate_bf16`` outside ``"decimals"`` mode.

    Example:
      >>> import jax.numpy as jnp, gqc_jax
      >>> tx = gqc_jax.round_gradients(2)
      >>> g = {"w": jnp.array([0.12345, -0.004, 0.0251, 3e-7])}
      >>> out, state = tx.update(g, tx.init(g))
      >>> print(out["w"], float(state.fraction_zeroed))
      [ 0.12 -0.    0.03  0.  ] 0.5
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if emulate_bf16 and mode != "decimals":
        raise ValueError(f"emulate_bf16 applies to mode='decimals' only, got mode={mode!r}.")
    _check_digits(digits, mode)

    def current(count, stored):
        if callable(digits):
            return jnp.round(jnp.asarray(digits(count), jnp.float32)).astype(jnp.int32)
        return stored

    def init_fn(params):
        del params
        zero = jnp.zeros([], jnp.int32)
        return RoundGradientsState(
            count=zero,
            digits=current(zero, jnp.asarray(0 if callable(digits) else digits, jnp.int32)),
            key=jax.random.key_data(jax.random.key(seed)),
            fraction_zeroed=jnp.zeros([], jnp.float32),
            fraction_changed=jnp.zeros([], jnp.float32),
        )

    def round_leaf(g, d, key):
        if not jnp.issubdtype(g.dtype, jnp.floating):
            return g
        noise = bits = None
        if stochastic:
            seed_words = jax.random.bits(key, (2,), jnp.uint32)
            bits = _hash_bits(seed_words, g.shape)
            if mode != "mantissa_bits":
                # 24 random bits: u uniform on a 2^-24 grid in [0, 1).
                noise = (bits >> 8).astype(_work_dtype(g.dtype)) * (2.0**-24)
                bits = None
            elif jnp.finfo(g.dtype).bits == 64:
                bits = (bits.astype(jnp.uint64) << 32) | _mix32(bits).astype(jnp.uint64)
            elif jnp.finfo(g.dtype).bits == 16:
                bits = (bits >> 16).astype(jnp.uint16)
        if mode == "decimals":
            out, valid = _round_decimals(g, d, noise, emulate_bf16)
        elif mode == "significant" and _work_dtype(g.dtype) == jnp.float32:
            # float64 where it is native; double words in float32 elsewhere (TPU).
            out, valid = jax.lax.platform_dependent(
                g,
                d,
                noise,
                cpu=_round_significant_x64,
                cuda=_round_significant_x64,
                rocm=_round_significant_x64,
                default=functools.partial(_round_significant, independent_indices=True),
            )
        elif mode == "significant":
            out, valid = jax.lax.platform_dependent(
                g,
                d,
                noise,
                cpu=functools.partial(_round_significant, independent_indices=False),
                default=functools.partial(_round_significant, independent_indices=True),
            )
        else:
            out, valid = _round_mantissa(g, d, bits)
        # Zeros and subnormals (which XLA on CPU reads as zeros) are kept.
        normal = jnp.abs(g) >= jnp.finfo(g.dtype).tiny
        valid = valid & jnp.isfinite(g) & normal & jnp.isfinite(out)
        return jnp.where(valid, out.astype(g.dtype), g)

    def update_fn(updates, state, params=None):
        del params
        d = current(state.count, state.digits)
        key = jax.random.wrap_key_data(state.key)
        key, use = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(use, max(len(leaves), 1))
        rounded = [round_leaf(g, d, k) for g, k in zip(leaves, keys, strict=False)]
        total = max(sum(int(np.prod(jnp.shape(g))) for g in leaves), 1)
        zeroed = sum(jnp.sum((g != 0) & (r == 0)) for g, r in zip(leaves, rounded, strict=True))
        changed = sum(
            jnp.sum((g != r) & ~(jnp.isnan(g) & jnp.isnan(r)))
            for g, r in zip(leaves, rounded, strict=True)
        )
        new_state = RoundGradientsState(
            count=optax.safe_increment(state.count),
            digits=d,
            key=jax.random.key_data(key),
            fraction_zeroed=jnp.asarray(zeroed, jnp.float32) / total,
            fraction_changed=jnp.asarray(changed, jnp.float32) / total,
        )
        return jax.tree.unflatten(treedef, rounded), new_state

    return optax.GradientTransformation(init_fn, update_fn)
