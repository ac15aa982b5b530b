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
leaves (float64 for float64) and the result is cast back to the leaf's dtype.
Zeros, NaN and inf pass through, and a finite value never becomes inf or NaN:
where ``g * 10^d`` would overflow or is already an integer at the working
precision (:math:`|g \\cdot 10^d| \\ge 2^{p-1}`), the element is returned as is.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gqc_jax._double_word import two_prod

MODES = ("decimals", "significant", "mantissa_bits")
# Largest useful power of ten: above it 10^d overflows float32 and the rule is
# the identity for every finite float32 value anyway.
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

    count: jax.Array
    digits: jax.Array
    key: jax.Array
    fraction_zeroed: jax.Array
    fraction_changed: jax.Array


def _work_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


_POW10_RANGE = 64  # table of 10^k for |k| <= 64, as (hi + lo) * 2^exp


def _pow10_table(dtype):
    """10^k as a mantissa pair (hi + lo in [0.5, 1)) and a binary exponent."""
    ks = np.arange(-_POW10_RANGE, _POW10_RANGE + 1)
    mant, exp = np.frexp(10.0 ** ks.astype(np.float64))
    hi = mant.astype(dtype)
    lo = (mant - hi.astype(np.float64)).astype(dtype)
    return jnp.asarray(hi), jnp.asarray(lo), jnp.asarray(exp, jnp.int32)


def _round_to_integer(q_hi, q_lo, noise):
    """rint(q_hi + q_lo), half to even on the exact double word; or floor(q + u).

    Only where q_hi lands exactly on k + 1/2 can the low word change the
    result: q_hi and 1/2 lie on the same grid, so any other gap exceeds |q_lo|.
    """
    if noise is not None:
        return jnp.floor(q_hi + noise)
    floor = jnp.floor(q_hi)
    tie = q_hi - floor == 0.5
    return jnp.where(
        tie & (q_lo > 0), floor + 1, jnp.where(tie & (q_lo < 0), floor, jnp.round(q_hi))
    )


def _scale_round_unscale(x, s, noise):
    """Rounds x * 10^s to an integer and scales back, with exact ties.

    ``x * 10^s`` is formed as an exact double-word product from a double-word
    10^s, so round-half-to-even decides on the exact value, and the result
    ``r * 10^-s`` is rounded once. Returns the result and the high word of the
    product (to detect where the working precision has no fraction bits left).
    """
    hi_t, lo_t, exp_t = _pow10_table(x.dtype)
    mant, k = jnp.frexp(x)  # x = mant * 2^k exactly, |mant| in [0.5, 1)
    i = jnp.clip(s + _POW10_RANGE, 0, 2 * _POW10_RANGE)
    q_hi, q_err = two_prod(mant, hi_t[i])
    q_lo = q_err + mant * lo_t[i]
    scale = k + exp_t[i]
    q_hi, q_lo = jnp.ldexp(q_hi, scale), jnp.ldexp(q_lo, scale)
    r = _round_to_integer(q_hi, q_lo, noise)
    j = jnp.clip(-s + _POW10_RANGE, 0, 2 * _POW10_RANGE)
    t_hi, t_err = two_prod(r, hi_t[j])
    t_lo = t_err + r * lo_t[j]
    # Rounding never flips the sign; copysign keeps it on a rounded-away zero.
    return jnp.copysign(jnp.ldexp(t_hi + t_lo, exp_t[j]), x), q_hi


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
    x = g.astype(work)
    # 10^d is one scalar here, so the exact rule needs no per-element scaling:
    # q = x * T rounded once; only where that lands exactly on k + 1/2 does the
    # product's rounding error (from an exact double-word product) decide.
    hi_t, lo_t, exp_t = _pow10_table(work)
    i = jnp.clip(digits + _POW10_RANGE, 0, 2 * _POW10_RANGE)
    t_hi = jnp.ldexp(hi_t[i], exp_t[i])
    t_lo = jnp.ldexp(lo_t[i], exp_t[i])
    q, q_err = two_prod(x, t_hi)
    r = _round_to_integer(q, q_err + x * t_lo, noise)
    # Back: r * 10^-d as a double-word product, rounded once (no division, which
    # XLA may rewrite as a multiply by a rounded reciprocal).
    j = jnp.clip(-digits + _POW10_RANGE, 0, 2 * _POW10_RANGE)
    p_hi = jnp.ldexp(hi_t[j], exp_t[j])
    p_lo = jnp.ldexp(lo_t[j], exp_t[j])
    b_hi, b_err = two_prod(r, p_hi)
    out = jnp.copysign(b_hi + (b_err + r * p_lo), x)
    precision = jnp.finfo(work).nmant  # 23 for float32, 52 for float64
    valid = (jnp.abs(q) < 2.0**precision) & jnp.isfinite(q) & (digits <= _MAX_POW10)
    return out, valid


def _round_significant(g, digits, noise):
    work = _work_dtype(g.dtype)
    x = g.astype(work)
    ax = jnp.abs(x)
    safe = jnp.where((ax > 0) & jnp.isfinite(ax), ax, 1.0)
    e = jnp.floor(jnp.log10(safe)).astype(jnp.int32)
    # floor(log10) can be off by one near powers of ten: correct it.
    e = jnp.where(_pow10(e, work) > safe, e - 1, e)
    e = jnp.where(_pow10(e + 1, work) <= safe, e + 1, e)
    out, q = _scale_round_unscale(x, digits - 1 - e, noise)
    precision = jnp.finfo(work).nmant
    # A result below the smallest normal cannot be represented where the backend
    # flushes subnormals (XLA on CPU): keep the input, the closer value.
    valid = (jnp.abs(q) < 2.0**precision) & (jnp.abs(out) >= jnp.finfo(work).tiny)
    return out, valid


def _pow10(exponent: jax.Array, dtype) -> jax.Array:
    """10**exponent for an integer array, rounded to ``dtype`` (inf/0 off range)."""
    with np.errstate(over="ignore", under="ignore"):
        table = np.array([10.0**k for k in range(-_MAX_POW10 - 9, _MAX_POW10 + 9)], dtype)
    table = jnp.asarray(table)
    index = jnp.clip(exponent + _MAX_POW10 + 9, 0, table.shape[0] - 1)
    return table[index]


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
    mode: str = "decimals",
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
        later), rounded to the nearest int. It is traced: a new value never
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
        elif mode == "significant":
            out, valid = _round_significant(g, d, noise)
        else:
            out, valid = _round_mantissa(g, d, bits)
        valid = valid & jnp.isfinite(g) & (g != 0) & jnp.isfinite(out)
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
