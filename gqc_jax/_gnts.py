"""GNTS: the gradient norm threshold scheduler, GQC's flagship controller."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, Draw, LrScaling, adaptive_accumulation
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax._tree import global_norm
from gqc_jax._welford import gather


class GradientNormThresholdState(NamedTuple):
    """State of :class:`GradientNormThreshold`.

    Attributes:
      gradient_norm_threshold: ``float32[]`` the threshold in force (set it to change a constant
        threshold without recompiling; a schedule overwrites it every call).
      num_invalid_hyperparameters: ``int32[]`` calls whose threshold was out of its
        range (and was clamped into it).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.gnts(optax.sgd(0.1), threshold=0.5).init({"w": jnp.zeros(2)})
      >>> float(state.criterion_state.gradient_norm_threshold)
      0.5
    """

    gradient_norm_threshold: jax.Array
    num_invalid_hyperparameters: jax.Array


class GradientNormThreshold:
    r"""Criterion: step when the norm of the window mean is at most a threshold.

    Passes iff :math:`\lVert \bar g_n \rVert_2 \le \tau(t)`, ties included, with
    :math:`t` the microbatch clock. Lower thresholds are stricter.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.GradientNormThreshold(0.5))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'GradientNormThresholdState'
    """

    def __init__(self, threshold: ScalarOrSchedule = 1.0):
        self.threshold = _hyperparams.Hyperparameter("threshold", threshold)

    def init(self, params: optax.Params) -> GradientNormThresholdState:
        del params
        return GradientNormThresholdState(self.threshold.initial(), jnp.zeros([], jnp.int32))

    def should_step(
        self, state: GradientNormThresholdState, draw: Draw
    ) -> tuple[jax.Array, GradientNormThresholdState]:
        threshold, invalid = self.threshold.current(state.gradient_norm_threshold, draw.count)
        invalid_count = _hyperparams.count_invalid(state.num_invalid_hyperparameters, invalid)
        return draw.mean_norm <= threshold, GradientNormThresholdState(threshold, invalid_count)

    def reset(self, state: GradientNormThresholdState) -> GradientNormThresholdState:
        return state


class RelativeGradientNormThresholdState(NamedTuple):
    """State of :class:`RelativeGradientNormThreshold`.

    Attributes:
      gradient_norm_threshold: ``float32[]`` the relative threshold in force.
      reference_norm: ``float32[]`` EMA of single-microbatch gradient norms.
      effective_threshold: ``float32[]`` the absolute threshold last compared.
      has_reference: ``bool[]`` whether ``reference_norm`` holds a value.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range value (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> params = {"w": jnp.zeros(2)}
      >>> tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.5, relative=True)
      >>> _, state = tx.update({"w": jnp.full(2, 3.0)}, tx.init(params), params)
      >>> s = state.criterion_state
      >>> round(float(s.reference_norm), 3), round(float(s.effective_threshold), 3)
      (4.243, 2.121)
    """

    gradient_norm_threshold: jax.Array
    reference_norm: jax.Array
    effective_threshold: jax.Array
    has_reference: jax.Array
    num_invalid_hyperparameters: jax.Array


class RelativeGradientNormThreshold:
    r"""Criterion: GNTS with the threshold relative to the model's own gradient scale.

    Passes iff :math:`\lVert \bar g_n \rVert \le \tau(t)\, r`, where :math:`r` is
    an EMA (rate ``reference_beta``) of the single-microbatch gradient norms
    :math:`\lVert g_i \rVert` seen so far, every draw included. Each sample
    entering the EMA is clipped to ``outlier_clip`` times the current reference,
    so one outlier microbatch raises :math:`r` by at most a factor
    :math:`1 + \beta(\text{clip} - 1)` and cannot loosen the test for long.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> criterion = gqc_jax.RelativeGradientNormThreshold(0.5, reference_beta=0.1)
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), criterion, max_draws=8)
      >>> tx.init({"w": jnp.zeros(2)}).criterion_state._fields[:2]
      ('gradient_norm_threshold', 'reference_norm')
    """

    def __init__(
        self,
        threshold: ScalarOrSchedule = 0.5,
        reference_beta: float = 0.05,
        outlier_clip: float = 4.0,
    ):
        self.threshold = _hyperparams.Hyperparameter("threshold", threshold)
        self.reference_beta, self.outlier_clip = _reference_hyperparameters(
            reference_beta, outlier_clip
        )

    def init(self, params: optax.Params) -> RelativeGradientNormThresholdState:
        del params
        return RelativeGradientNormThresholdState(
            gradient_norm_threshold=self.threshold.initial(),
            reference_norm=jnp.ones([], jnp.float32),
            effective_threshold=jnp.zeros([], jnp.float32),
            has_reference=jnp.zeros([], jnp.bool_),
            num_invalid_hyperparameters=jnp.zeros([], jnp.int32),
        )

    def should_step(
        self, state: RelativeGradientNormThresholdState, draw: Draw
    ) -> tuple[jax.Array, RelativeGradientNormThresholdState]:
        tau, tau_invalid = self.threshold.current(state.gradient_norm_threshold, draw.count)
        beta, beta_invalid = self.reference_beta.current()
        clip, clip_invalid = self.outlier_clip.current()
        h = jnp.mean(gather(global_norm(draw.grads), draw.axis_name))
        old = state.reference_norm
        clipped = jnp.minimum(h, clip * old)
        reference = jnp.where(state.has_reference, old + beta * (clipped - old), h)
        effective = tau * reference
        new_state = RelativeGradientNormThresholdState(
            gradient_norm_threshold=tau,
            reference_norm=reference,
            effective_threshold=effective,
            has_reference=jnp.ones([], jnp.bool_),
            num_invalid_hyperparameters=_hyperparams.count_invalid(
                state.num_invalid_hyperparameters, tau_invalid, beta_invalid, clip_invalid
            ),
        )
        return draw.mean_norm <= effective, new_state

    def reset(
        self, state: RelativeGradientNormThresholdState
    ) -> RelativeGradientNormThresholdState:
        return state


def _reference_hyperparameters(
    reference_beta: object, outlier_clip: object
) -> tuple[_hyperparams.Hyperparameter, _hyperparams.Hyperparameter]:
    beta = _hyperparams.Hyperparameter(
        "reference_beta", reference_beta, low=0.0, high=1.0, low_open=True, schedulable=False
    )
    clip = _hyperparams.Hyperparameter("outlier_clip", outlier_clip, low=1.0, schedulable=False)
    return beta, clip


def gnts(
    inner: optax.GradientTransformation,
    threshold: ScalarOrSchedule = 1.0,
    *,
    max_draws: int = 64,
    relative: bool = False,
    reference_beta: float = 0.05,
    outlier_clip: float = 4.0,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
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
    (``gqc_jax.stats(state)["last_grad_norm"]`` with ``max_draws=1``) to choose it,
    or pass ``relative=True`` to give it as a fraction of the model's own
    single-microbatch gradient norm (:class:`RelativeGradientNormThreshold`):
    then the reference's schedule shapes (inverse warmup, quarter cosine) keep
    their meaning at any gradient scale, and multiplying every gradient by a
    constant changes no decision.

    Args:
      inner: the optimizer run on each window mean.
      threshold: :math:`\tau \ge 0`, a number or a schedule on the microbatch clock.
      max_draws: the draw cap.
      relative: read ``threshold`` as a fraction of the EMA of single-microbatch
        gradient norms (``reference_norm`` in the stats).
      reference_beta: EMA rate of that reference norm (``relative`` only).
      outlier_clip: samples above this multiple of the reference enter its EMA
        clipped (``relative`` only).
      accumulator_dtype: dtype of the running mean.
      axis_name: for ``shard_map``/``pmap``, see :func:`gqc_jax.adaptive_accumulation`.
      lr_scaling, reference_draws: couple the learning rate to the window size
        (:math:`(k / k_\text{ref})^p`), see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``gradient_norm_threshold`` besides the shared counters (with ``relative``
      also ``reference_norm`` and ``effective_threshold``).

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
    if not isinstance(relative, (bool, np.bool_)):  # "no" or 0 would be read as a choice
        raise TypeError(
            f"relative must be a bool, got {relative!r} of type {type(relative).__name__}."
        )
    if not relative:  # checked even when unused (the relative criterion checks its own)
        _reference_hyperparameters(reference_beta, outlier_clip)
    criterion = (
        RelativeGradientNormThreshold(threshold, reference_beta, outlier_clip)
        if relative
        else GradientNormThreshold(threshold)
    )
    return adaptive_accumulation(
        inner,
        criterion,
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        reference_draws=reference_draws,
        token_time=token_time,
    )
