"""Scalar hyperparameters: construction-time checks and the run-time rule.

Every scalar hyperparameter of a controller accepts a number, a JAX array or an
optax-style schedule ``f(count) -> value``:

- a Python or NumPy number is stored in the criterion state as a float32 scalar
  at ``init`` and read back from the state at every ``update``, so writing the
  state changes it without recompiling;
- a JAX array (what ``optax.inject_hyperparams`` passes to the factory on every
  call, concrete when eager and traced under ``jit``) is the value in force at
  that call; it is stored in the state too, so ``gqc_jax.stats`` reports it,
  but writing the state does not change it (a concrete array given by a user
  cannot be told apart from an injected one): to change a fixed value by
  writing the state, pass a Python or NumPy number;
- a schedule is evaluated at the microbatch clock (the number of ``update``
  calls before this one) and its value is stored likewise.

Concrete values (numbers and concrete arrays) are checked at construction: a
wrong type raises ``TypeError`` and a bad value ``ValueError``, naming it (the
rule of ``gqc_jax._errors``). Values only known at run time
(schedules, traced arrays, a written state) follow one documented rule: a value
outside its range is clamped to the nearest value inside it, NaN keeps the value
last in force, and the call is counted in the criterion's
``num_invalid_hyperparameters`` (reported by ``gqc_jax.stats``).

Example:
  >>> import jax.numpy as jnp, optax, gqc_jax
  >>> params = {"w": jnp.zeros(2)}
  >>> fixed = gqc_jax.gnts(optax.sgd(0.1), threshold=0.5)
  >>> scheduled = gqc_jax.gnts(optax.sgd(0.1), threshold=optax.linear_schedule(2.0, 0.5, 10))
  >>> state = scheduled.init(params)
  >>> for _ in range(5):
  ...     _, state = scheduled.update({"w": jnp.full(2, 9.0)}, state, params)
  >>> round(float(gqc_jax.stats(state)["gradient_norm_threshold"]), 4)   # at clock 4
  1.4
  >>> below_zero = gqc_jax.gnts(optax.sgd(0.1), threshold=lambda count: 1.0 - count)
  >>> state = below_zero.init(params)
  >>> for _ in range(3):
  ...     _, state = below_zero.update({"w": jnp.full(2, 9.0)}, state, params)
  >>> s = gqc_jax.stats(state)   # clocks 1 and 2 gave 0 and -1: -1 was clamped to 0
  >>> float(s["gradient_norm_threshold"]), int(s["num_invalid_hyperparameters"])
  (0.0, 1)
"""

from __future__ import annotations

import math
import numbers
import typing
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

ScalarOrSchedule = float | int | jax.Array | Callable[[jax.Array], jax.typing.ArrayLike]


def concrete_value(value: object) -> float | None:
    """The Python value of a scalar ``value`` when it is known at construction time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return float(value)
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        if value.ndim == 0:
            return float(value)
    return None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32(name: str, value: object) -> None:
    """Raises ``ValueError`` naming ``name`` when a ``value`` known at construction
    is beyond float32's range, where it would become inf."""
    concrete = concrete_value(value)
    if concrete is not None and math.isfinite(concrete) and abs(concrete) > FLOAT32_MAX:
        raise ValueError(
            f"{name} must be at most {FLOAT32_MAX:.2g} in magnitude (it is evaluated in "
            f"float32), got {value!r}."
        )


class Hyperparameter:
    """One scalar hyperparameter of a criterion and its valid range.

    The range is ``[low, high]``, each end closed or open (``low_open``,
    ``high_open``). With ``positive_constant`` a value fixed at construction must
    also be above ``low``, while a schedule may touch it (a warmup from 0).

    Args:
      name: the argument's name, used in every error message.
      value: a number, a JAX array (possibly traced) or, with ``schedulable``, a
        schedule.
      low, high: the ends of the range.
      low_open, high_open: whether the end itself is outside the range.
      positive_constant: a concrete value equal to ``low`` is rejected too.
      schedulable: whether a callable schedule is accepted.
      integer: whether the value must be integral (an integer dtype for arrays).
      expected: the range as error messages state it (default: from the ends).

    Raises:
      TypeError: ``value`` has the wrong type.
      ValueError: a concrete ``value`` is non-finite or outside the range.
    """

    def __init__(
        self,
        name: str,
        value: object,
        *,
        low: float = 0.0,
        high: float = math.inf,
        low_open: bool = False,
        high_open: bool = False,
        positive_constant: bool = False,
        schedulable: bool = True,
        integer: bool = False,
        expected: str | None = None,
    ):
        self.name = name
        self.value = value
        self.schedule = value if callable(value) else None
        lo_f32, hi_f32 = np.float32(low), np.float32(high)
        self.low = float(np.nextafter(lo_f32, np.float32(np.inf)) if low_open else lo_f32)
        self.high = float(np.nextafter(hi_f32, np.float32(-np.inf)) if high_open else hi_f32)
        self.range_text = expected or (
            f"in {'(' if low_open or positive_constant else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            if math.isfinite(high)
            else f"{'>' if low_open or positive_constant else '>='} {low:g}"
        )
        if callable(value):
            if not schedulable:
                raise TypeError(f"{name} must be a number, not a schedule, got {value!r}.")
            return
        kind = "an int" if integer else "a real number"
        if isinstance(value, bool) or not isinstance(
            value, (numbers.Real, np.ndarray, np.generic, jax.Array)
        ):
            extra = "" if not schedulable else " or a schedule f(count) -> value"
            raise TypeError(
                f"{name} must be {kind}{extra}, got {value!r} of type {type(value).__name__}."
            )
        shape = jnp.shape(typing.cast(ArrayLike, value))
        if shape != ():
            raise ValueError(f"{name} must be a scalar, got an array of shape {shape}.")
        if integer:
            dtype = np.asarray(value).dtype if not isinstance(value, jax.Array) else value.dtype
            if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r}.")
            if not isinstance(value, numbers.Integral) and not np.issubdtype(dtype, np.integer):
                raise TypeError(f"{name} must be an int, got {value!r} of dtype {dtype}.")
        concrete = concrete_value(value)
        if concrete is None:
            return
        # Stored as float32: 3.5e38 would become inf there.
        representable = abs(concrete) <= FLOAT32_MAX
        inside = math.isfinite(concrete) and representable and self.low <= concrete <= self.high
        if positive_constant and concrete <= low:
            inside = False
        if not inside:
            finite = "" if integer or math.isfinite(high) else "finite and "
            hint = "" if representable else " (it is stored in float32, whose largest is 3.4e38)"
            raise ValueError(f"{name} must be {finite}{self.range_text}, got {value!r}{hint}.")

    @property
    def constant(self) -> float | None:
        """The value when it is a Python or NumPy number, else None."""
        if callable(self.value) or isinstance(self.value, jax.Array):
            return None
        return concrete_value(self.value)

    def _clamp(self, raw: jax.Array, fallback: jax.Array) -> tuple[jax.Array, jax.Array]:
        raw = jnp.asarray(raw, jnp.float32)
        invalid = ~((raw >= self.low) & (raw <= self.high))  # NaN is invalid too
        value = jnp.where(jnp.isnan(raw), fallback, raw)
        value = jnp.clip(jnp.where(jnp.isnan(value), self.low, value), self.low, self.high)
        return value, invalid

    def initial(self) -> jax.Array:
        """The float32 value stored in the state at ``init`` (a schedule's value at 0)."""
        value = self.value
        if self.schedule is not None:
            value = self.schedule(jnp.zeros([], jnp.int32))
        return self._clamp(jnp.asarray(value), jnp.float32(self.low))[0]

    def current(
        self, stored: jax.Array | None = None, count: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """The float32 value in force at microbatch ``count`` and whether it was invalid.

        Args:
          stored: the value kept in the state (the one in force so far), or None
            for a hyperparameter that is not kept there.
          count: the microbatch clock, for a schedule.

        Returns:
          ``(value, invalid)``: the value clamped into the range (NaN replaced by
          ``stored``) and a ``bool[]``, True if the raw value was outside it.
        """
        if self.schedule is not None:
            raw = self.schedule(count)
        elif stored is not None and self.constant is not None:
            raw = stored
        else:
            raw = self.value
        fallback = stored if stored is not None else jnp.float32(self.low)
        return self._clamp(raw, fallback)


def count_invalid(counter: jax.Array, *invalid: jax.Array) -> jax.Array:
    """``counter`` plus one if any of the ``invalid`` flags is set."""
    flag = jnp.zeros([], jnp.bool_)
    for f in invalid:
        flag = flag | f
    return counter + flag.astype(jnp.int32)


INT32_MAX = int(np.iinfo(np.int32).max)


def validate_max_draws(max_draws: object) -> int:
    """Returns ``max_draws`` as a Python int, or raises a clear error."""
    if isinstance(max_draws, jax.core.Tracer):
        raise TypeError(
            "max_draws must be a static Python int; it fixes the controller's "
            "buffer sizes. Inside optax.inject_hyperparams pass "
            "static_args=('max_draws',)."
        )
    if isinstance(max_draws, bool) or not isinstance(
        max_draws, (numbers.Integral, np.integer, np.ndarray, jax.Array)
    ):
        raise TypeError(f"max_draws must be an int, got {max_draws!r}.")
    if isinstance(max_draws, (np.ndarray, jax.Array)):
        if np.ndim(max_draws) != 0 or not np.issubdtype(np.asarray(max_draws).dtype, np.integer):
            raise TypeError(f"max_draws must be an int, got {max_draws!r}.")
    max_draws = int(max_draws)
    if not 1 <= max_draws <= INT32_MAX:
        raise ValueError(
            f"max_draws must be in [1, {INT32_MAX}] (the window counters are int32), "
            f"got {max_draws}."
        )
    return max_draws


LR_SCALING_POWERS = {"sqrt": 0.5, "linear": 1.0}


def _static_or_traced(name: str, value: object, expected: str) -> float | jax.Array:
    """A concrete number as a float; a traced array (inject_hyperparams) as is."""
    if isinstance(value, jax.core.Tracer):
        if value.shape != ():
            raise ValueError(f"{name} must be a scalar, got shape {value.shape}.")
        return value
    number = concrete_value(value)
    if number is None:
        raise TypeError(f"{name} must be {expected}, got {value!r}.")
    return number


def validate_lr_scaling(lr_scaling: object) -> float | jax.Array | None:
    """The power ``p`` of ``lr_scaling`` (None: no scaling), or a clear error.

    ``"sqrt"`` is 0.5 (the square-root rule for Adam-family optimizers),
    ``"linear"`` 1.0 (the linear rule for SGD), a number is ``p`` itself, finite
    and >= 0. A traced value (what ``optax.inject_hyperparams`` passes) is
    returned as is and checked at run time by :func:`lr_factor`."""
    if lr_scaling is None:
        return None
    expected = 'None, "sqrt", "linear" or a power p >= 0'
    if isinstance(lr_scaling, str):
        if lr_scaling not in LR_SCALING_POWERS:
            raise ValueError(f"lr_scaling must be {expected}, got {lr_scaling!r}.")
        return LR_SCALING_POWERS[lr_scaling]
    power = _static_or_traced("lr_scaling", lr_scaling, expected)
    if isinstance(power, float) and (not math.isfinite(power) or power < 0):
        raise ValueError(f"lr_scaling must be {expected}, got {lr_scaling!r}.")
    return power


def validate_reference_draws(reference_draws: object) -> float | jax.Array:
    """``reference_draws`` as a Python float (finite, > 0), or a clear error; a
    traced value as is (checked at run time by :func:`lr_factor`)."""
    expected = "a finite number > 0 (the window size at which the learning rate is as given)"
    value = _static_or_traced("reference_draws", reference_draws, expected)
    if isinstance(value, float) and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"reference_draws must be {expected}, got {reference_draws!r}.")
    return value


def lr_factor(window: jax.Array, reference_draws: ArrayLike, power: ArrayLike) -> jax.Array:
    """``(window / reference_draws) ** power`` in float32. Values only known at run
    time (injected) that are out of range or NaN, or a factor that is not finite
    and positive, give 1: the update is left unscaled rather than corrupted."""
    reference = jnp.asarray(reference_draws, jnp.float32)
    power = jnp.asarray(power, jnp.float32)
    factor = (window.astype(jnp.float32) / reference) ** power
    valid = (reference > 0) & (power >= 0) & jnp.isfinite(factor) & (factor > 0)
    return jnp.where(valid, factor, jnp.ones([], jnp.float32))


def validate_token_time(token_time: object, clock: object) -> bool:
    """``token_time`` as a bool, or a clear error: it needs an inner optimizer
    from ``on_microbatch_clock`` that has a decay or weight decay to rescale."""
    if not isinstance(token_time, bool):
        raise TypeError(f"token_time must be a bool, got {token_time!r}.")
    if not token_time:
        return False
    if clock is None:
        raise TypeError(
            "token_time=True rescales the inner optimizer's decays and weight decay "
            "per step, so the inner optimizer must be built by "
            "gqc_jax.on_microbatch_clock (e.g. on_microbatch_clock(optax.adamw, "
            "learning_rate=3e-4)); got another transformation."
        )
    names = getattr(clock, "token_time_names", ())
    if not names:
        raise ValueError(
            "token_time=True found no decay (b1, b2, momentum, decay, beta) or weight "
            "decay among the inner optimizer's hyperparameters: pass them to "
            "on_microbatch_clock by name."
        )
    return True
