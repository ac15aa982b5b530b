"""SBC: the scheduled batch controller, the "grow the batch on a schedule" baseline."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, Draw, LrScaling, adaptive_accumulation
from gqc_jax._hyperparams import ScalarOrSchedule


class ScheduledBatchState(NamedTuple):
    """State of :class:`ScheduledBatch`.

    Attributes:
      logical_batch_size: ``float32[]`` the logical batch size in force.
      physical_batch_size: ``int32[]`` samples per microbatch.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range value (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.sbc(optax.sgd(0.1), 64, 16).init({"w": jnp.zeros(2)})
      >>> float(state.criterion_state.logical_batch_size), float(state.criterion_state.physical_batch_size)
      (64.0, 16.0)
    """

    logical_batch_size: jax.Array
    physical_batch_size: jax.Array
    num_invalid_hyperparameters: jax.Array


class ScheduledBatch:
    r"""Criterion: step once the window holds at least the logical batch size.

    Passes iff :math:`n \cdot b \ge L(t)`, ties included, so the effective batch is
    :math:`b \lceil L/b \rceil` samples. Under ``axis_name`` each draw brings
    :math:`b` samples from every device.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.ScheduledBatch(64, 16))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'ScheduledBatchState'
    """

    def __init__(self, logical_batch_size: ScalarOrSchedule, physical_batch_size: int):
        # A schedule may start at 0 (a warmup: every draw steps); a constant may not.
        self.logical_batch_size = _hyperparams.Hyperparameter(
            "logical_batch_size", logical_batch_size, positive_constant=True
        )
        self.physical_batch_size = _hyperparams.Hyperparameter(
            "physical_batch_size",
            physical_batch_size,
            low=1.0,
            schedulable=False,
            integer=True,
            expected="> 0",
        )

    def init(self, params: optax.Params) -> ScheduledBatchState:
        del params
        return ScheduledBatchState(
            logical_batch_size=self.logical_batch_size.initial(),
            physical_batch_size=self.physical_batch_size.initial().astype(jnp.int32),
            num_invalid_hyperparameters=jnp.zeros([], jnp.int32),
        )

    def should_step(
        self, state: ScheduledBatchState, draw: Draw
    ) -> tuple[jax.Array, ScheduledBatchState]:
        logical, logical_invalid = self.logical_batch_size.current(
            state.logical_batch_size, draw.count
        )
        physical, physical_invalid = self.physical_batch_size.current(
            state.physical_batch_size.astype(jnp.float32)
        )
        physical = physical.astype(jnp.int32)
        per_draw = physical
        if draw.axis_name is not None:  # every device draws a microbatch
            per_draw = per_draw * jax.lax.psum(1, draw.axis_name)
        samples = (draw.num_draws * per_draw).astype(jnp.float32)
        return samples >= logical, ScheduledBatchState(
            logical_batch_size=logical,
            physical_batch_size=physical,
            num_invalid_hyperparameters=_hyperparams.count_invalid(
                state.num_invalid_hyperparameters, logical_invalid, physical_invalid
            ),
        )

    def reset(self, state: ScheduledBatchState) -> ScheduledBatchState:
        return state


def sbc(
    inner: optax.GradientTransformation,
    logical_batch_size: ScalarOrSchedule,
    physical_batch_size: int,
    *,
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
    r"""Scheduled batch controller (SBC).

    Accumulates microbatches of ``physical_batch_size`` samples until the window
    holds at least ``logical_batch_size`` samples:

    .. math::
      \text{step} \iff n \cdot b \ge L(t) \;\lor\; n \ge \text{max\_draws}.

    With a schedule for :math:`L` this is the classic "increase the batch size
    instead of decaying the learning rate" control for the adaptive controllers.

    Args:
      inner: the optimizer run on each window mean.
      logical_batch_size: :math:`L > 0` samples, a number or a schedule on the
        microbatch clock (a schedule may reach 0: every draw steps).
      physical_batch_size: :math:`b > 0`, samples per microbatch.
      max_draws: the draw cap.
      accumulator_dtype: dtype of the running mean.
      axis_name: for ``shard_map``/``pmap``, see :func:`gqc_jax.adaptive_accumulation`;
        each draw then brings ``physical_batch_size`` samples from every device.
      lr_scaling, reference_draws: couple the learning rate to the window size
        (:math:`(k / k_\text{ref})^p`), see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``physical_batch_size`` and ``logical_batch_size`` besides the shared counters.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc(optax.sgd(0.1), logical_batch_size=96, physical_batch_size=32)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> int(state.num_steps), int(state.last_num_draws)
      (1, 3)
    """
    return adaptive_accumulation(
        inner,
        ScheduledBatch(logical_batch_size, physical_batch_size),
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        reference_draws=reference_draws,
        token_time=token_time,
    )
