"""SNR: a scale-free controller from the gradient noise scale estimators."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, Draw, LrScaling, adaptive_accumulation
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax._tree import global_norm
from gqc_jax._welford import Moments, gather


class SignalToNoiseState(NamedTuple):
    """State of :class:`SignalToNoise`.

    Attributes:
      noise_ratio: ``float32[]`` the ratio in force.
      signal: ``float32[]`` estimate of :math:`|G|^2` (last draw, smoothed).
      noise: ``float32[]`` estimate of :math:`\\operatorname{tr}\\Sigma`, the
        noise of one microbatch gradient (last draw, smoothed).
      noise_scale: ``float32[]`` :math:`B_\\text{noise} = \\operatorname{tr}\\Sigma
        / |G|^2` in microbatches (last draw).
      squared_norms: moments of the window's per-microbatch squared norms.
      smoothed_signal: ``float32[]`` EMA over windows of the final ``signal``.
      smoothed_noise: ``float32[]`` EMA over windows of the final ``noise``.
      has_smoothed: ``bool[]`` whether the EMAs hold a value.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range value (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.2).init({"w": jnp.zeros(2)})
      >>> round(float(state.criterion_state.noise_ratio), 3)
      0.2
    """

    noise_ratio: jax.Array
    signal: jax.Array
    noise: jax.Array
    noise_scale: jax.Array
    squared_norms: Moments
    smoothed_signal: jax.Array
    smoothed_noise: jax.Array
    has_smoothed: jax.Array
    num_invalid_hyperparameters: jax.Array


def gradient_noise_estimates(
    mean_squared_norm: jax.typing.ArrayLike,
    squared_mean_norm: jax.typing.ArrayLike,
    count: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    r"""Unbiased estimates of the true gradient's squared norm and of the noise.

    From :math:`k \ge 2` microbatch gradients :math:`g_i` with mean
    :math:`\bar g`, given :math:`\overline{|g|^2}` (``mean_squared_norm``, the
    mean of their squared norms) and :math:`|\bar g|^2` (``squared_mean_norm``),
    the estimators of McCandlish et al. (2018, app. A) with
    :math:`B_\text{small} = 1` and :math:`B_\text{big} = k` microbatches are

    .. math::
      \widehat{|G|^2} = \frac{k|\bar g|^2 - \overline{|g|^2}}{k - 1}, \qquad
      \widehat{\operatorname{tr}\Sigma} = \frac{k\left(\overline{|g|^2}
      - |\bar g|^2\right)}{k - 1},

    and the gradient noise scale is
    :math:`B_\text{noise} = \widehat{\operatorname{tr}\Sigma} / \widehat{|G|^2}`
    microbatches (average each estimate over several measurements before
    dividing: their ratio is noisy and biased). :func:`snr` steps on them.

    Args:
      mean_squared_norm: :math:`\overline{|g|^2}`.
      squared_mean_norm: :math:`|\bar g|^2`.
      count: :math:`k`, the number of microbatch gradients (``k - 1`` is
        clamped at 1, so ``k = 1`` gives finite values, not estimates).

    Returns:
      ``(signal, noise)``: :math:`\widehat{|G|^2}` and
      :math:`\widehat{\operatorname{tr}\Sigma}`, as float32 arrays.

    Example:
      >>> import jax.numpy as jnp, gqc_jax
      >>> g = jnp.array([[1.0, 0.0], [3.0, 2.0]])  # two microbatch gradients
      >>> mean_sq = jnp.mean(jnp.sum(g**2, axis=1))  # (1 + 13) / 2
      >>> sq_mean = jnp.sum(jnp.mean(g, axis=0) ** 2)  # |(2, 1)|^2
      >>> [float(x) for x in gqc_jax.gradient_noise_estimates(mean_sq, sq_mean, 2)]
      [3.0, 4.0]
    """
    k = jnp.asarray(count, jnp.float32)
    mean_square = jnp.asarray(mean_squared_norm, jnp.float32)
    big = jnp.asarray(squared_mean_norm, jnp.float32)
    denom = jnp.maximum(k - 1.0, 1.0)
    return (k * big - mean_square) / denom, k * (mean_square - big) / denom


class SignalToNoise:
    r"""Criterion: step when the window mean's noise is a small part of its signal.

    With :math:`k \ge 2` microbatch gradients :math:`g_i` in the window, their
    mean :math:`\bar g` and :math:`\overline{|g|^2}` the mean of their squared
    norms, the unbiased estimators (McCandlish et al. 2018, app. A, with
    :math:`B_\text{small} = 1` and :math:`B_\text{big} = k` microbatches) are

    .. math::
      \widehat{|G|^2} = \frac{k|\bar g|^2 - \overline{|g|^2}}{k - 1}, \qquad
      \widehat{\operatorname{tr}\Sigma} = \frac{k}{k-1}\left(\overline{|g|^2}
      - |\bar g|^2\right)

    (:func:`gradient_noise_estimates`), and the test passes iff :math:`k \ge` ``min_draws``, :math:`\widehat{|G|^2} > 0`
    and :math:`\widehat{\operatorname{tr}\Sigma}/k \le \rho\,\widehat{|G|^2}`.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.SignalToNoise(0.1, min_draws=4))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'SignalToNoiseState'
    """

    def __init__(self, noise_ratio: ScalarOrSchedule, min_draws: int = 2, smoothing: float = 0.0):
        # A schedule at 0 only lets the draw cap step; a constant 0 is a mistake.
        self.noise_ratio = _hyperparams.Hyperparameter(
            "noise_ratio", noise_ratio, positive_constant=True
        )
        self.min_draws = _hyperparams.Hyperparameter(
            "min_draws",
            min_draws,
            low=2.0,
            schedulable=False,
            integer=True,
            expected=">= 2 (the estimators need 2 draws)",
        )
        self.smoothing = _hyperparams.Hyperparameter(
            "smoothing", smoothing, high=1.0, high_open=True, schedulable=False
        )

    def init(self, params: optax.Params) -> SignalToNoiseState:
        del params
        zero = jnp.zeros([], jnp.float32)
        return SignalToNoiseState(
            noise_ratio=self.noise_ratio.initial(),
            signal=zero,
            noise=zero,
            noise_scale=zero,
            squared_norms=Moments.empty(),
            smoothed_signal=zero,
            smoothed_noise=zero,
            has_smoothed=jnp.zeros([], jnp.bool_),
            num_invalid_hyperparameters=jnp.zeros([], jnp.int32),
        )

    def should_step(
        self, state: SignalToNoiseState, draw: Draw
    ) -> tuple[jax.Array, SignalToNoiseState]:
        rho, rho_invalid = self.noise_ratio.current(state.noise_ratio, draw.count)
        min_draws, min_draws_invalid = self.min_draws.current()
        smoothing, smoothing_invalid = self.smoothing.current()
        local = jnp.square(global_norm(draw.grads))
        moments = state.squared_norms.merge(gather(local, draw.axis_name))
        k = moments.count
        signal, noise = gradient_noise_estimates(moments.mean, jnp.square(draw.mean_norm), k)
        if self.smoothing.constant != 0:
            w = jnp.where(state.has_smoothed, smoothing, 0.0)
            signal = (1 - w) * signal + w * state.smoothed_signal
            noise = (1 - w) * noise + w * state.smoothed_noise
        enough = k >= jnp.floor(min_draws)
        passes = enough & (signal > 0) & (noise / k <= rho * signal)
        scale = jnp.where(enough & (signal > 0), noise / jnp.where(signal > 0, signal, 1.0), 0.0)
        new_state = state._replace(
            noise_ratio=rho,
            signal=jnp.where(enough, signal, state.signal),
            noise=jnp.where(enough, noise, state.noise),
            noise_scale=jnp.where(enough & (signal > 0), scale, state.noise_scale),
            squared_norms=moments,
            num_invalid_hyperparameters=_hyperparams.count_invalid(
                state.num_invalid_hyperparameters, rho_invalid, min_draws_invalid, smoothing_invalid
            ),
        )
        return passes, new_state

    def reset(self, state: SignalToNoiseState) -> SignalToNoiseState:
        signal, noise = state.signal, state.noise
        if self.smoothing.constant != 0:
            w = jnp.where(state.has_smoothed, self.smoothing.current()[0], 0.0)
            signal = (1 - w) * signal + w * state.smoothed_signal
            noise = (1 - w) * noise + w * state.smoothed_noise
        return state._replace(
            squared_norms=Moments.empty(),
            smoothed_signal=signal,
            smoothed_noise=noise,
            has_smoothed=jnp.ones([], jnp.bool_),
        )


def snr(
    inner: optax.GradientTransformation,
    noise_ratio: ScalarOrSchedule = 0.1,
    *,
    min_draws: int = 2,
    max_draws: int = 64,
    smoothing: float = 0.0,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
    r"""Scale-free controller: step when noise is at most ``noise_ratio`` of signal.

    Estimates the true gradient's squared norm :math:`|G|^2` and the noise of one
    microbatch gradient :math:`\operatorname{tr}\Sigma` from the window itself
    (unbiased small/large-batch estimators, McCandlish et al. 2018, "An Empirical
    Model of Large-Batch Training", appendix A) and steps when the noise left in
    the window mean is small against the signal:

    .. math::
      \frac{\widehat{\operatorname{tr}\Sigma}}{n} \le \rho\,\widehat{|G|^2}
      \;\lor\; n \ge \text{max\_draws}.

    So a window draws about :math:`B_\text{noise}/\rho` microbatches, where
    :math:`B_\text{noise} = \operatorname{tr}\Sigma/|G|^2` is the gradient noise
    scale in microbatches. Multiplying every gradient by a constant leaves every
    decision unchanged: no gradient-norm scale to tune. ``gqc_jax.stats``
    reports ``noise_scale``, ``signal``, ``noise`` and ``noise_ratio``.

    Args:
      inner: the optimizer run on each window mean.
      noise_ratio: :math:`\rho > 0`, a number or a schedule on the microbatch clock.
      min_draws: at least this many microbatches per step (>= 2: the estimators
        need two).
      max_draws: the draw cap.
      smoothing: weight in [0, 1) of an EMA over previous windows' estimates,
        blended into each decision (0: each window on its own).
      accumulator_dtype: dtype of the running mean.
      axis_name: see :func:`gqc_jax.adaptive_accumulation`; every device's
        microbatch counts as one sample of the estimators.
      lr_scaling, reference_draws: couple the learning rate to the window size
        (:math:`(k / k_\text{ref})^p`), see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.5, max_draws=64)
      >>> params = {"w": jnp.zeros(16)}
      >>> state = tx.init(params)
      >>> for i in range(40):   # signal |G|^2 = 16, noise tr(Sigma) = 64: B_noise = 4
      ...     g = {"w": 1.0 + 2.0 * jax.random.normal(jax.random.key(i), (16,))}
      ...     _, state = tx.update(g, state, params)
      >>> 4 <= int(state.num_batches) / int(state.num_steps) <= 16
      True
    """
    criterion = SignalToNoise(noise_ratio, min_draws, smoothing)
    if (_hyperparams.concrete_value(min_draws) or 0) > _hyperparams.validate_max_draws(max_draws):
        raise ValueError(
            f"min_draws ({min_draws}) must be at most max_draws ({max_draws}): every "
            "window would end at the draw cap."
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
