"""MHT: a Student-t hypothesis test on the microbatch loss."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, Draw, LrScaling, adaptive_accumulation
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax._welford import Moments, gather
from gqc_jax.student_t import t_quantile_at_most


class MetricHypothesisTestState(NamedTuple):
    """State of :class:`MetricHypothesisTest`.

    Attributes:
      confidence_level: ``float32[]`` the confidence in force.
      percent_error_threshold: ``float32[]`` the relative half-width in force.
      running_mean: ``float32[]`` EMA of the loss over every draw so far.
      update_beta: ``float32[]`` the EMA rate.
      history: moments of the window's losses.
      has_running_mean: ``bool[]`` whether ``running_mean`` has been set.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range value (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.mht(optax.sgd(0.1), confidence=0.9).init({"w": jnp.zeros(2)})
      >>> round(float(state.criterion_state.confidence_level), 3)
      0.9
    """

    confidence_level: jax.Array
    percent_error_threshold: jax.Array
    running_mean: jax.Array
    update_beta: jax.Array
    history: Moments
    has_running_mean: jax.Array
    num_invalid_hyperparameters: jax.Array


class MetricHypothesisTest:
    r"""Criterion: step when a t-interval of the loss is tight.

    The judgement set is the running mean followed by the window's losses. With
    its mean :math:`m`, standard error :math:`s` (plus :math:`10^{-12}`) and the
    two-sided critical value :math:`q = t_{(1+c)/2,\,|J|-1}`, passes iff
    :math:`qs \le |m|\,p`: the interval :math:`m \pm qs` lies within
    :math:`p\,|m|` of :math:`m` (ties pass), for losses of either sign.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.MetricHypothesisTest(0.9, 0.05))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'MetricHypothesisTestState'
    """

    def __init__(
        self,
        confidence: ScalarOrSchedule = 0.95,
        percent_error: ScalarOrSchedule = 0.05,
        update_beta: float = 0.01,
    ):
        # Confidence 1 never passes and a constant 0 always does (a schedule may
        # start there); a constant percent error of 0 never passes.
        self.confidence = _hyperparams.Hyperparameter(
            "confidence", confidence, high=1.0, high_open=True, positive_constant=True
        )
        self.percent_error = _hyperparams.Hyperparameter(
            "percent_error", percent_error, positive_constant=True
        )
        self.update_beta = _hyperparams.Hyperparameter(
            "update_beta", update_beta, high=1.0, schedulable=False
        )

    def init(self, params: optax.Params) -> MetricHypothesisTestState:
        del params
        return MetricHypothesisTestState(
            confidence_level=self.confidence.initial(),
            percent_error_threshold=self.percent_error.initial(),
            running_mean=jnp.zeros([], jnp.float32),
            update_beta=self.update_beta.initial(),
            history=Moments.empty(),
            has_running_mean=jnp.zeros([], jnp.bool_),
            num_invalid_hyperparameters=jnp.zeros([], jnp.int32),
        )

    def should_step(
        self, state: MetricHypothesisTestState, draw: Draw
    ) -> tuple[jax.Array, MetricHypothesisTestState]:
        if draw.value is None:
            raise ValueError(
                "mht tests the loss: pass it to every update, "
                "tx.update(grads, state, params, value=loss)."
            )
        c, c_invalid = self.confidence.current(state.confidence_level, draw.count)
        p, p_invalid = self.percent_error.current(state.percent_error_threshold, draw.count)
        beta, beta_invalid = self.update_beta.current(state.update_beta)
        values = gather(draw.value, draw.axis_name)
        history = state.history.merge(values)
        u = jnp.mean(values)
        running = jnp.where(state.has_running_mean, state.running_mean * (1 - beta) + u * beta, u)
        # Judgement set J = [running_mean] + history, merged in closed form.
        k = history.count
        size = k + 1.0
        delta = running - history.mean
        m = history.mean + delta / size
        m2 = history.m2 + jnp.square(delta) * k / size
        sem = jnp.sqrt(m2 / (size - 1.0)) / jnp.sqrt(size) + 1e-12
        # The interval m +- q*sem within p*|m| of m says q*sem <= |m|*p, i.e.
        # q <= |m|*p/sem: one tail evaluation instead of the quantile itself. For
        # m > 0 this is the reference's m - q*sem >= m(1-p) and m + q*sem <= m(1+p);
        # |m| keeps it meaningful for losses below zero (NLLs, negated rewards).
        passes = t_quantile_at_most(c, size - 1.0, jnp.abs(m) * p / sem)
        new_state = MetricHypothesisTestState(
            confidence_level=c,
            percent_error_threshold=p,
            running_mean=running,
            update_beta=beta,
            history=history,
            has_running_mean=jnp.ones([], jnp.bool_),
            num_invalid_hyperparameters=_hyperparams.count_invalid(
                state.num_invalid_hyperparameters, c_invalid, p_invalid, beta_invalid
            ),
        )
        return passes, new_state

    def reset(self, state: MetricHypothesisTestState) -> MetricHypothesisTestState:
        return state._replace(history=Moments.empty())


def mht(
    inner: optax.GradientTransformation,
    confidence: ScalarOrSchedule = 0.95,
    percent_error: ScalarOrSchedule = 0.05,
    *,
    update_beta: float = 0.01,
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
    r"""Metric hypothesis test controller (MHT).

    Draws microbatches until a Student-t confidence interval of the loss is
    within ``percent_error`` of its mean. The loss is passed to every update as
    ``value=``. The judgement set is :math:`J = [\bar\ell_{\text{EMA}}] +
    [\ell_1, \dots, \ell_n]`, where the EMA of the loss is updated on every
    draw (never reset) with rate ``update_beta``; with :math:`m` its mean,
    :math:`s` its standard error and :math:`q = t_{(1+c)/2,\,|J|-1}`:

    .. math::
      \text{step} \iff q s \le |m|\, p \;\lor\; n \ge \text{max\_draws},

    which for a positive mean is the reference's :math:`m - qs \ge m(1-p)
    \land m + qs \le m(1+p)`.

    The t quantile is compared inside jit
    (:func:`gqc_jax.student_t.t_quantile_at_most`) and the window's losses are
    kept as running moments, so memory is O(1). The test is relative to
    :math:`|m|`, so it works for losses below zero (a Gaussian NLL, a negated
    reward); at a confidence above 0, a mean loss of exactly zero never passes.
    The defaults (0.95, 0.05) replace the reference's 1.0, which never passes.

    Args:
      inner: the optimizer run on each window mean.
      confidence: :math:`c \in (0, 1)`, a number or a schedule on the clock (a
        schedule may reach 0).
      percent_error: :math:`p > 0`, a number or a schedule on the clock (a
        schedule may reach 0).
      update_beta: EMA rate of the running mean, in [0, 1].
      max_draws: the draw cap.
      accumulator_dtype: dtype of the running mean of the gradients.
      axis_name: see :func:`gqc_jax.adaptive_accumulation`; every device's loss
        joins the judgement set, as in the reference's replicated mode.
      lr_scaling, reference_draws: couple the learning rate to the window size
        (:math:`(k / k_\text{ref})^p`), see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``confidence_level``, ``percent_error_threshold``, ``running_mean`` and
      ``update_beta``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.mht(optax.sgd(0.1), confidence=0.9, percent_error=0.05)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> decisions = []
      >>> for loss in (2.0, 2.5, 1.5, 2.02, 1.98, 2.01):
      ...     _, state = tx.update({"w": jnp.ones(2)}, state, params, value=loss)
      ...     decisions.append(bool(state.stepped))
      >>> decisions
      [True, False, False, False, False, False]
    """
    return adaptive_accumulation(
        inner,
        MetricHypothesisTest(confidence, percent_error, update_beta),
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        reference_draws=reference_draws,
        token_time=token_time,
    )
