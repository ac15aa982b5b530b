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
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gqc_jax._errors import ArgumentTypeError, is_int
from gqc_jax._rounding.decimals import _round_decimals
from gqc_jax._rounding.mantissa import _round_mantissa
from gqc_jax._rounding.random_bits import _hash_bits, _mix32
from gqc_jax._rounding.significant import _round_significant, _round_significant_x64
from gqc_jax._rounding.tables import _work_dtype

MODES = ("decimals", "significant", "mantissa_bits")


Mode = Literal["decimals", "significant", "mantissa_bits"]


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


def _check_digits(digits, mode):
    if callable(digits):
        return
    if not is_int(digits):
        raise ArgumentTypeError(
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
      TypeError: ``digits`` is neither an int nor a schedule.
      ValueError: unknown ``mode``, negative ``digits``, ``emulate_bf16``
        outside ``"decimals"`` mode.

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
