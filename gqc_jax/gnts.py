"""GNTS: the gradient norm threshold scheduler, GQC's flagship controller."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from gqc_jax import _hyperparams
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax.accumulation import Draw, adaptive_accumulation


class GradientNormThresholdState(NamedTuple):
    """State of :class:`GradientNormThreshold`.

    Attributes:
      gradient_norm_threshold: ``float32[]`` the threshold in force (set it to change a constant
        threshold without recompiling; a schedule overwrites it every call).
    """

    gradient_norm_threshold: jax.Array


class GradientNormThreshold:
    r"""Criterion: step when the norm of the window mean is at most a threshold.

    Passes iff :math:`\lVert \bar g_n \rVert_2 \le \tau(t)`, ties included, with
    :math:`t` the microbatch clock. Lower thresholds are stricter.
    """

    def __init__(self, threshold: ScalarOrSchedule = 1.0):
        _hyperparams.validate("threshold", threshold, minimum=0.0)
        self.threshold = threshold

    def init(self, params: optax.Params) -> GradientNormThresholdState:
        del params
        return GradientNormThresholdState(_hyperparams.initial(self.threshold))

    def should_step(
        self, state: GradientNormThresholdState, draw: Draw
    ) -> tuple[jax.Array, GradientNormThresholdState]:
        threshold = _hyperparams.current(self.threshold, state.gradient_norm_threshold, draw.count)
        return draw.mean_norm <= threshold, GradientNormThresholdState(threshold)

    def reset(self, state: GradientNormThresholdState) -> GradientNormThresholdState:
        return state


def gnts(
    inner: optax.GradientTransformation,
    threshold: ScalarOrSchedule = 1.0,
    *,
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name=None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient norm threshold scheduler (GNTS).

    Draws microbatches until the norm of their mean is small enough:

    .. math::
      \text{step} \iff \Big\lVert \frac{1}{n}\sum_{i=1}^n g_i \Big\rVert_2 \le \tau(t)
      \;\lor\; n \ge \text{max\_draws}.

    Noise in the microbatch gradients inflates the norm of the mean (its noise part
    shrinks like :math:`1/\sqrt n`), so noisier phases of training draw more
    microbatches per step. If :math:`\tau` is below the norm of the true gradient
    the test may never pass and only the draw cap steps. The threshold is an
    absolute gradient norm: measure a single microbatch's gradient norm
    (``gqc_jax.stats(state)["last_grad_norm"]`` with ``max_draws=1``) to choose it.

    Args:
      inner: the optimizer run on each window mean.
      threshold: :math:`\tau \ge 0`, a number or a schedule on the microbatch clock.
      max_draws: the draw cap.
      accumulator_dtype: dtype of the running mean.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``gradient_norm_threshold`` besides the shared counters.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts(optax.sgd(0.1), threshold=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (3.0, -2.0):   # mean norms 4.24 (draw), then 0.71 (step)
      ...     updates, state = tx.update({"w": jnp.full(2, g)}, state, params)
      >>> print(updates["w"], int(state.last_num_draws))
      [-0.05 -0.05] 2
    """
    return adaptive_accumulation(
        inner,
        GradientNormThreshold(threshold),
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
    )
