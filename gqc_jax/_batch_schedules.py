"""Fixed batch-size schedules on the microbatch clock: batch-size warmup and Seesaw.

Both are :func:`gqc_jax.sbc` with a schedule of windows (in microbatches) and the
learning rate coupled to the window by ``lr_scaling`` (the square-root rule by
default): hand-made schedules that the adaptive controllers are measured against.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, LrScaling
from gqc_jax._errors import ArgumentTypeError, is_int
from gqc_jax._sbc import sbc


def _largest_power_of_two_at_most(max_draws: int) -> int:
    return 2 ** int(math.floor(math.log2(max_draws)))


def batch_size_warmup(
    inner: optax.GradientTransformation,
    total_microbatches: int,
    fractions: Sequence[float] = (0.1, 0.2, 0.4),
    *,
    growth: int = 2,
    lr_scaling: LrScaling = "sqrt",
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    token_time: bool = False,
) -> Controller:
    r"""Batch-size warmup: the window doubles at given fractions of the run.

    The window is :math:`g^j` microbatches (``growth`` :math:`g`, 2 by default)
    after the :math:`j`-th of ``fractions`` (of ``total_microbatches``, i.e. of
    the run's tokens) has passed, and each step's update is scaled by
    :math:`(g^j)^p` (``lr_scaling``; the square-root rule gives the learning
    rate :math:`\times\sqrt 2` per doubling), as in Merrill et al. (2025),
    "Critical Batch Size Revisited", where the doubling points come from
    measured critical batch sizes. One fraction with ``growth=4`` is a single
    late switch to a 4x batch.

    Args:
      inner: the optimizer run on each window mean, with its learning-rate
        schedule on the microbatch clock (:func:`gqc_jax.on_microbatch_clock`).
      total_microbatches: the run's length in microbatches (> 0).
      fractions: increasing fractions in (0, 1) at which the window grows.
      growth: the factor the window grows by at each fraction, an int >= 2.
      lr_scaling: how the learning rate follows the window, see
        :func:`gqc_jax.adaptive_accumulation` (reference window 1).
      max_draws: the draw cap; the window never exceeds it.
      accumulator_dtype: dtype of the running mean.
      axis_name: for ``shard_map``/``pmap``, see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An :func:`gqc_jax.sbc` controller; ``gqc_jax.stats`` reports the window in
      force as ``logical_batch_size`` (microbatches) and ``lr_factor``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.batch_size_warmup(optax.sgd(1.0), 16, fractions=(0.25, 0.5))
      >>> params = {"w": jnp.zeros(1)}
      >>> state = tx.init(params)
      >>> windows = []
      >>> for _ in range(16):
      ...     _, state = tx.update({"w": jnp.ones(1)}, state, params)
      ...     if state.stepped:
      ...         windows.append(int(state.last_num_draws))
      >>> windows, float(gqc_jax.stats(state)["lr_factor"])
      ([1, 1, 1, 1, 2, 2, 4, 4], 2.0)
    """
    if not isinstance(total_microbatches, jax.core.Tracer):  # injected: used as traced
        message = f"total_microbatches must be an int >= 1, got {total_microbatches!r}."
        if not is_int(total_microbatches):
            raise ArgumentTypeError(message)
        if total_microbatches < 1:
            raise ValueError(message)
    max_draws = _hyperparams.validate_max_draws(max_draws)
    fractions = tuple(float(f) for f in fractions)
    if any(not 0.0 < f < 1.0 for f in fractions) or list(fractions) != sorted(set(fractions)):
        raise ValueError(
            f"fractions must be strictly increasing values in (0, 1), got {fractions!r}."
        )
    traced = isinstance(growth, jax.core.Tracer)  # injected: used as traced
    if not traced and (not is_int(growth) or growth < 2):
        raise ValueError(f"growth must be an int >= 2, got {growth!r}.")
    if not traced and growth ** len(fractions) > max_draws:
        raise ValueError(
            f"{len(fractions)} x{growth} growths need windows of up to "
            f"{growth ** len(fractions)} microbatches, above max_draws={max_draws}."
        )

    def window(count: jax.Array) -> jax.Array:
        total = jnp.asarray(total_microbatches, jnp.float32)
        boundaries = jnp.round(jnp.asarray(fractions, jnp.float32) * total).astype(jnp.int32)
        growths = jnp.sum(count >= boundaries)
        return jnp.power(jnp.asarray(growth, jnp.int32), growths).astype(jnp.float32)

    return sbc(
        inner,
        window,
        1,
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        token_time=token_time,
    )


def seesaw(
    inner: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    peak_lr: float,
    *,
    warmup_microbatches: int = 0,
    lr_scaling: LrScaling = "sqrt",
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    token_time: bool = False,
) -> Controller:
    r"""Seesaw: trade the decay of the learning rate for a growing batch.

    Where the inner optimizer's schedule :math:`\eta(t)` (on the microbatch
    clock) has decayed by :math:`a = \eta(t) / \eta_\text{peak}` after its warmup,
    Seesaw (Meterez et al., 2025) multiplies the batch by :math:`1/a` and the
    learning rate by :math:`\sqrt a` instead of :math:`a`. Windows are whole
    powers of two, so the batch doubles each time the schedule halves:

    .. math::
      k(t) = 2^{\lfloor \log_2 (\eta_\text{peak} / \eta(t)) \rfloor}
      \;(\le \text{max\_draws}), \qquad
      \eta_\text{applied}(t) = \eta(t)\, k(t)^{p},

    with :math:`p = 1/2` by default: at each doubling point
    :math:`\eta_\text{applied} = \eta_\text{peak}\sqrt a`, and between them the
    part of the decay not taken by the batch stays in the learning rate.

    Args:
      inner: the optimizer run on each window mean; its learning rate must be
        ``lr_schedule`` on the microbatch clock (:func:`gqc_jax.on_microbatch_clock`).
      lr_schedule: that schedule, a function of the microbatch clock.
      peak_lr: :math:`\eta_\text{peak} > 0`, its value after the warmup.
      warmup_microbatches: the schedule's warmup (>= 0); the window is 1 during it.
      lr_scaling: how the learning rate follows the window (the square-root rule
        by default), see :func:`gqc_jax.adaptive_accumulation`.
      max_draws: the draw cap; windows are capped at the largest power of two
        not above it, after which the schedule decays the learning rate alone.
      accumulator_dtype: dtype of the running mean.
      axis_name: for ``shard_map``/``pmap``, see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An :func:`gqc_jax.sbc` controller; ``gqc_jax.stats`` reports the window in
      force as ``logical_batch_size`` (microbatches) and ``lr_factor``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> lr = optax.linear_schedule(1.0, 0.1, 40)   # decays by 10x
      >>> tx = gqc_jax.seesaw(gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=lr), lr, 1.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = tx.init(params)
      >>> for _ in range(40):   # windows: 23 of 1, 5 of 2, 1 of 4; 3 draws open
      ...     _, state = tx.update({"w": jnp.ones(1)}, state, params)
      >>> int(gqc_jax.stats(state)["logical_batch_size"]), int(state.num_steps)
      (8, 29)
    """
    if not callable(lr_schedule):
        raise TypeError(f"lr_schedule must be a schedule f(count) -> lr, got {lr_schedule!r}.")
    # Values injected by optax.inject_hyperparams arrive traced and are used as given.
    if not isinstance(peak_lr, jax.core.Tracer):
        peak = _hyperparams.concrete_value(peak_lr)
        message = f"peak_lr must be a finite number > 0, got {peak_lr!r}."
        if peak is None:
            raise ArgumentTypeError(message)
        if not math.isfinite(peak) or peak <= 0:
            raise ValueError(message)
    if not isinstance(warmup_microbatches, jax.core.Tracer):
        message = f"warmup_microbatches must be an int >= 0, got {warmup_microbatches!r}."
        if not is_int(warmup_microbatches):
            raise ArgumentTypeError(message)
        if warmup_microbatches < 0:
            raise ValueError(message)
    max_draws = _hyperparams.validate_max_draws(max_draws)
    largest = _largest_power_of_two_at_most(max_draws)

    def window(count: jax.Array) -> jax.Array:
        decay = jnp.asarray(lr_schedule(count), jnp.float32) / jnp.asarray(peak_lr, jnp.float32)
        # The schedule may end at 0 (or a tiny value): the window is capped there.
        doublings = jnp.floor(jnp.log2(1.0 / jnp.maximum(decay, 1.0 / largest)))
        k = jnp.exp2(jnp.clip(doublings, 0.0, math.log2(largest)))
        return jnp.where(count < warmup_microbatches, 1.0, k)

    return sbc(
        inner,
        window,
        1,
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        token_time=token_time,
    )
