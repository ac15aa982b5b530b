"""Double-word ("float-float") arithmetic: a value as an unevaluated sum hi + lo.

Error-free transformations (Knuth's two-sum, Dekker's two-product without FMA)
give about twice the working precision, which the exact rounding rules and the
Student-t quantile need in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DoubleWord = tuple[jax.Array, jax.Array]


def halves(x: jax.Array) -> DoubleWord:
    """x = hi + lo exactly, each with at most half of x's significand bits
    (Veltkamp's split; |x| must be below the largest value / 2^(p/2))."""
    c = (134217729.0 if jnp.result_type(x) == jnp.float64 else 4097.0) * x
    hi = c - (c - x)
    return hi, x - hi


def two_prod(a: jax.Array, b: jax.Array, b_halves: DoubleWord | None = None) -> DoubleWord:
    """a * b exactly, as (rounded product, error) (Dekker, no FMA needed).

    ``b_halves``: ``halves(b)`` where the caller has it (say, split once from a
    scalar); exact as long as the four partial products are normal.
    """
    p = a * b
    ah, al = halves(a)
    bh, bl = halves(b) if b_halves is None else b_halves
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def two_sum(a: jax.Array, b: jax.Array) -> DoubleWord:
    """a + b exactly, as (rounded sum, error) (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def sign_of_sum(a: jax.Array, b: jax.Array, c: jax.Array, d: jax.Array, e: jax.Array) -> jax.Array:
    """The sign of a + b + c + d + e, terms of decreasing size where a + b and
    the partial sums nearly cancel: two exact sums, then the small rest."""
    s1, e1 = two_sum(a, b)
    s2, e2 = two_sum(s1, c)
    return jnp.sign(s2 + ((e1 + e2) + (d + e)))


def _renormalize(a: jax.Array, b: jax.Array) -> DoubleWord:
    s = a + b
    return s, b - (s - a)


def from_float(value: jax.typing.ArrayLike) -> DoubleWord:
    value = jnp.asarray(value, jnp.float32)
    return value, jnp.zeros_like(value)


def add(x: DoubleWord, y: DoubleWord) -> DoubleWord:
    s, e = two_sum(x[0], y[0])
    return _renormalize(s, e + x[1] + y[1])


def mul(x: DoubleWord, y: DoubleWord) -> DoubleWord:
    p, e = two_prod(x[0], y[0])
    return _renormalize(p, e + x[0] * y[1] + x[1] * y[0])


def div(x: DoubleWord, y: DoubleWord) -> DoubleWord:
    q1 = x[0] / y[0]
    r = add(x, mul(y, (-q1, jnp.zeros_like(q1))))
    return _renormalize(q1, r[0] / y[0])
