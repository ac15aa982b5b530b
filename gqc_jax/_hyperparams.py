"""Scalar-or-schedule hyperparameters evaluated on the microbatch clock.

Every scalar hyperparameter of a controller accepts a number or an optax-style
schedule ``f(count) -> value``. A number is stored in the criterion state as a
float32 scalar at ``init`` and read back from the state at every ``update``, so
changing it (by writing the state, or through ``optax.inject_hyperparams``)
never recompiles. A schedule is evaluated at the microbatch clock (the number of
``update`` calls before this one) and its value is stored in the state too, so
``gqc_jax.stats`` can report it.

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
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ScalarOrSchedule = float | int | jax.Array | Callable[[jax.Array], jax.typing.ArrayLike]


def _concrete_value(value: object) -> float | None:
    """The Python value of ``value`` when it is known at construction time."""
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


def validate(name: str, value: ScalarOrSchedule, *, minimum: float, strict: bool = False) -> None:
    """Checks a hyperparameter at construction time.

    Schedules and traced values (inside ``optax.inject_hyperparams``) cannot be
    checked here and are accepted; numbers must be finite and at least (or, with
    ``strict``, above) ``minimum``.

    Raises:
      TypeError: ``value`` is neither a real scalar nor a callable schedule.
      ValueError: ``value`` is non-finite or out of range.
    """
    if callable(value):
        return
    if isinstance(value, bool) or not (
        isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array))
    ):
        raise TypeError(
            f"{name} must be a real number or a schedule f(count) -> value, got "
            f"{value!r} of type {type(value).__name__}."
        )
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}.")
    concrete = _concrete_value(value)
    if concrete is None:
        return
    bad = concrete <= minimum if strict else concrete < minimum
    if not np.isfinite(concrete) or bad:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}.")


def initial(value: ScalarOrSchedule) -> jax.Array:
    """The float32 value stored in the state at ``init`` (a schedule's value at 0)."""
    if callable(value):
        value = value(jnp.zeros([], jnp.int32))
    return jnp.asarray(value, jnp.float32)


def current(value: ScalarOrSchedule, stored: jax.Array, count: jax.Array) -> jax.Array:
    """The value in force at microbatch ``count``: the schedule's, else the stored one."""
    if callable(value):
        return jnp.asarray(value(count), jnp.float32)
    return stored


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
    if max_draws < 1:
        raise ValueError(f"max_draws must be >= 1, got {max_draws}.")
    return max_draws
