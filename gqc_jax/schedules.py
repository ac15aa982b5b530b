"""The reference's schedules as optax schedules, clamped at the horizon.

Each function returns a schedule ``f(count) -> value`` (an optax ``Schedule``)
evaluated on the microbatch clock. Symbols: ``warmup_to_value`` W,
``anneal_to_value`` A, ``num_warmup_steps`` L, ``num_training_steps`` N,
``warmup_multiplier`` R, ``polynomial_power`` P. The warmup branch holds for
``count < L``; progress is :math:`p = \\min(1, (t - L) / (N - L))` (1 when
:math:`N \\le L`).

Unlike the reference, every schedule is clamped at the horizon: past N it stays
at its final value A. The reference keeps evaluating its formulas there, so the
GNTS threshold and a cosine-annealed weight decay go negative and the SBC
polynomial becomes complex for non-integer powers.

The "cosine" is the reference's quarter wave :math:`\\cos(\\pi p / 2)`, which
falls fastest at the end, not the usual half cosine.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gqc_jax import _hyperparams
from gqc_jax._errors import ArgumentTypeError, is_int


def _check_steps(num_warmup_steps: int, num_training_steps: int | None = None) -> None:
    for name, value in (
        ("num_warmup_steps", num_warmup_steps),
        ("num_training_steps", num_training_steps),
    ):
        if value is None:
            continue
        if not is_int(value):
            raise ArgumentTypeError(f"{name} must be an int >= 0, got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    if num_training_steps is not None and num_warmup_steps > num_training_steps:
        raise ValueError(
            f"num_warmup_steps ({num_warmup_steps}) must be at most num_training_steps "
            f"({num_training_steps}): a warmup longer than the run never reaches the "
            "schedule's final value. Were the two swapped? Both count microbatches."
        )


def _check_real(**values: float | jax.Array) -> None:
    # Arrays are accepted too (``optax.inject_hyperparams`` passes them); a traced
    # one cannot be checked here.
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(
            value, (numbers.Real, np.ndarray, np.generic, jax.Array)
        ):
            raise TypeError(f"{name} must be a real number, got {value!r}.")
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}.")
        concrete = _hyperparams.concrete_value(value)
        if concrete is not None and not math.isfinite(concrete):
            raise ValueError(f"{name} must be finite, got {value!r}.")
        _hyperparams.check_float32(name, value)


def _check_inverse_start(warmup_to_value: float, warmup_multiplier: float) -> None:
    """An inverse warmup starts at R * W, which must be finite in float32 too."""
    w = _hyperparams.concrete_value(warmup_to_value)
    r = _hyperparams.concrete_value(warmup_multiplier)
    if w is not None and r is not None and abs(w * r) > _hyperparams.FLOAT32_MAX:
        raise ValueError(
            f"The inverse warmup would start at {w:g} x {r:g} = {w * r:.3g} "
            f"(warmup_to_value x warmup_multiplier), beyond float32's largest, "
            f"{_hyperparams.FLOAT32_MAX:.2g}."
        )


def _progress(count: jax.Array, warmup: int, total: int) -> jax.Array:
    t = jnp.asarray(count, jnp.float32)
    if total <= warmup:
        return jnp.ones_like(t)
    return jnp.clip((t - warmup) / (total - warmup), 0.0, 1.0)


def _warmup(count, warmup_to_value, num_warmup_steps, after, inverse_multiplier=None):
    t = jnp.asarray(count, jnp.float32)
    if num_warmup_steps == 0:
        return after
    frac = t / num_warmup_steps
    if inverse_multiplier is None:
        ramp = warmup_to_value * frac
    else:
        r = inverse_multiplier
        ramp = warmup_to_value * (r - (r - 1.0) * frac)
    return jnp.where(t < num_warmup_steps, ramp, after)


def constant_schedule(value: float) -> optax.Schedule:
    """Always ``value``.

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.constant_schedule(2.0)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 10)]
      [2.0, 2.0]
    """
    _check_real(value=value)
    return lambda count: jnp.full(jnp.shape(count), value, jnp.float32)


def constant_with_warmup(warmup_to_value: float, num_warmup_steps: int) -> optax.Schedule:
    """Linear 0 -> W over L microbatches, then W.

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.constant_with_warmup(1.0, 10)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 5, 10, 50)]
      [0.0, 0.5, 1.0, 1.0]
    """
    _check_real(warmup_to_value=warmup_to_value)
    _check_steps(num_warmup_steps)

    def schedule(count):
        after = jnp.full(jnp.shape(count), warmup_to_value, jnp.float32)
        return _warmup(count, warmup_to_value, num_warmup_steps, after)

    return schedule


def constant_with_inverse_warmup(
    warmup_to_value: float, num_warmup_steps: int, warmup_multiplier: float = 20.0
) -> optax.Schedule:
    """Linear R*W -> W over L microbatches, then W (for thresholds: strict is low).

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.constant_with_inverse_warmup(1.0, 10, 20.0)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 5, 10, 50)]
      [20.0, 10.5, 1.0, 1.0]
    """
    _check_real(warmup_to_value=warmup_to_value, warmup_multiplier=warmup_multiplier)
    _check_inverse_start(warmup_to_value, warmup_multiplier)
    _check_steps(num_warmup_steps)

    def schedule(count):
        after = jnp.full(jnp.shape(count), warmup_to_value, jnp.float32)
        return _warmup(count, warmup_to_value, num_warmup_steps, after, warmup_multiplier)

    return schedule


def _quarter_cosine(count, w, a, num_warmup_steps, num_training_steps):
    p = _progress(count, num_warmup_steps, num_training_steps)
    return a + (w - a) * jnp.cos(0.5 * jnp.pi * p)


def cosine_annealing_with_warmup(
    warmup_to_value: float,
    anneal_to_value: float,
    num_warmup_steps: int,
    num_training_steps: int,
) -> optax.Schedule:
    """Linear 0 -> W over L, then A + (W - A) cos(pi p / 2), held at A after N.

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.cosine_annealing_with_warmup(1.0, 0.0, 10, 100)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 5, 10, 55, 100, 200)]
      [0.0, 0.5, 1.0, 0.7071, 0.0, 0.0]
    """
    _check_real(warmup_to_value=warmup_to_value, anneal_to_value=anneal_to_value)
    _check_steps(num_warmup_steps, num_training_steps)

    def schedule(count):
        after = _quarter_cosine(
            count, warmup_to_value, anneal_to_value, num_warmup_steps, num_training_steps
        )
        return _warmup(count, warmup_to_value, num_warmup_steps, after)

    return schedule


def cosine_annealing_with_inverse_warmup(
    warmup_to_value: float,
    anneal_to_value: float,
    num_warmup_steps: int,
    num_training_steps: int,
    warmup_multiplier: float = 20.0,
) -> optax.Schedule:
    """Linear R*W -> W over L, then the quarter cosine W -> A, held at A after N.

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.cosine_annealing_with_inverse_warmup(0.95, 0.25, 10, 100, 10.0)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 10, 55, 100, 200)]
      [9.5, 0.95, 0.745, 0.25, 0.25]
    """
    _check_real(
        warmup_to_value=warmup_to_value,
        anneal_to_value=anneal_to_value,
        warmup_multiplier=warmup_multiplier,
    )
    _check_inverse_start(warmup_to_value, warmup_multiplier)
    _check_steps(num_warmup_steps, num_training_steps)

    def schedule(count):
        after = _quarter_cosine(
            count, warmup_to_value, anneal_to_value, num_warmup_steps, num_training_steps
        )
        return _warmup(count, warmup_to_value, num_warmup_steps, after, warmup_multiplier)

    return schedule


def polynomial_schedule_with_warmup(
    warmup_to_value: float,
    anneal_to_value: float,
    num_warmup_steps: int,
    num_training_steps: int,
    polynomial_power: float = 2.0,
) -> optax.Schedule:
    """Linear 0 -> W over L, then A + (W - A)(1 - p)^P, held at A after N.

    Example:
      >>> from gqc_jax import schedules
      >>> f = schedules.polynomial_schedule_with_warmup(64, 1024, 10, 100, 2.0)
      >>> [round(float(f(t)), 4) + 0.0 for t in (0, 5, 10, 55, 100)]
      [0.0, 32.0, 64.0, 784.0, 1024.0]
    """
    _check_real(
        warmup_to_value=warmup_to_value,
        anneal_to_value=anneal_to_value,
        polynomial_power=polynomial_power,
    )
    _check_steps(num_warmup_steps, num_training_steps)

    def schedule(count):
        p = _progress(count, num_warmup_steps, num_training_steps)
        after = anneal_to_value + (warmup_to_value - anneal_to_value) * (1.0 - p) ** (
            polynomial_power
        )
        return _warmup(count, warmup_to_value, num_warmup_steps, after)

    return schedule
