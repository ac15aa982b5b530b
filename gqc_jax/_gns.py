"""GNS: the gradient noise scale test on per-microbatch gradient norms."""

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


class GradientNoiseScaleState(NamedTuple):
    """State of :class:`GradientNoiseScale`.

    Attributes:
      noise_tolerance: ``float32[]`` the tolerance in force.
      gradient_noise_statistic: ``float32[]`` the statistic at the last draw
        where it is defined (two norms or more; 0 before the first).
      norms: moments of the window's per-microbatch gradient norms.
      mean_square_norm: ``float32[]`` mean of the window's squared norms.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range tolerance (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.gns(optax.sgd(0.1), tolerance=0.5).init({"w": jnp.zeros(2)})
      >>> float(state.criterion_state.noise_tolerance)
      0.5
    """

    noise_tolerance: jax.Array
    gradient_noise_statistic: jax.Array
    norms: Moments
    mean_square_norm: jax.Array
    num_invalid_hyperparameters: jax.Array


class GradientNoiseScale:
    r"""Criterion: step when the spread of microbatch gradient norms is small.

    With :math:`h_i = \lVert g_i \rVert` the norms seen in the window,
    :math:`s = \operatorname{var}_{n-1}(h) / (\overline{h^2} + 10^{-8})`;
    passes iff :math:`s \le n \cdot \text{tol}` (float32, ties pass). With one
    sample the variance is undefined and the test fails; the reported statistic
    then keeps its last defined value instead of NaN, so a logger's NaN alarm
    does not fire at the first draw of every window.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.GradientNoiseScale(0.5))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'GradientNoiseScaleState'
    """

    def __init__(self, tolerance: ScalarOrSchedule = 1.0):
        self.tolerance = _hyperparams.Hyperparameter("tolerance", tolerance)

    def init(self, params: optax.Params) -> GradientNoiseScaleState:
        del params
        return GradientNoiseScaleState(
            noise_tolerance=self.tolerance.initial(),
            gradient_noise_statistic=jnp.zeros([], jnp.float32),
            norms=Moments.empty(),
            mean_square_norm=jnp.zeros([], jnp.float32),
            num_invalid_hyperparameters=jnp.zeros([], jnp.int32),
        )

    def should_step(
        self, state: GradientNoiseScaleState, draw: Draw
    ) -> tuple[jax.Array, GradientNoiseScaleState]:
        tolerance, invalid = self.tolerance.current(state.noise_tolerance, draw.count)
        norms = gather(global_norm(draw.grads), draw.axis_name)
        moments = state.norms.merge(norms)
        mean_square = state.mean_square_norm + (
            jnp.mean(jnp.square(norms)) - state.mean_square_norm
        ) * (norms.shape[0] / moments.count)
        defined = moments.count > 1
        statistic = jnp.where(
            defined, moments.variance() / (mean_square + 1e-8), state.gradient_noise_statistic
        )
        passes = defined & (statistic <= draw.num_draws.astype(jnp.float32) * tolerance)
        invalid_count = _hyperparams.count_invalid(state.num_invalid_hyperparameters, invalid)
        return passes, GradientNoiseScaleState(
            tolerance, statistic, moments, mean_square, invalid_count
        )

    def reset(self, state: GradientNoiseScaleState) -> GradientNoiseScaleState:
        return state._replace(norms=Moments.empty(), mean_square_norm=jnp.zeros([], jnp.float32))


def gns(
    inner: optax.GradientTransformation,
    tolerance: ScalarOrSchedule = 1.0,
    *,
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = "float32",
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
    r"""Gradient noise scale controller (GNS).

    Tracks the norms :math:`h_i = \lVert g_i \rVert` of the window's microbatch
    gradients and steps when their relative spread is small:

    .. math::
      \frac{\operatorname{var}_{n-1}(h_1..h_n)}{\overline{h^2} + 10^{-8}}
      \le n \cdot \text{tol} \;\lor\; n \ge \text{max\_draws}.

    The left side is bounded by :math:`n/(n-1)`, so any ``tolerance >= 1``
    steps at the second draw; useful values are about 0.005-0.05. With one
    sample the variance is NaN and the test fails, so on one device GNS never
    steps on a window's first draw (under ``axis_name`` each draw brings one
    norm per device). The statistics are kept as running moments (Welford), not
    a list, so memory is O(1).

    Args:
      inner: the optimizer run on each window mean.
      tolerance: :math:`\text{tol} \ge 0`, a number or a schedule on the
        microbatch clock.
      max_draws: the draw cap.
      accumulator_dtype: dtype of the running mean.
      axis_name: see :func:`gqc_jax.adaptive_accumulation`; each device's norm is
        gathered, as the reference's replicated mode does.
      lr_scaling, reference_draws: couple the learning rate to the window size
        (:math:`(k / k_\text{ref})^p`), see :func:`gqc_jax.adaptive_accumulation`.
      token_time: keep the inner optimizer's decays and weight decay fixed in
        microbatches (tokens), see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``noise_tolerance`` and ``gradient_noise_statistic``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gns(optax.sgd(0.1), tolerance=0.01)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 1.01):   # norms 1.41 and 1.43: small spread
      ...     _, state = tx.update({"w": jnp.full(2, g)}, state, params)
      >>> bool(state.stepped), int(state.last_num_draws)
      (True, 2)
    """
    return adaptive_accumulation(
        inner,
        GradientNoiseScale(tolerance),
        max_draws=max_draws,
        accumulator_dtype=accumulator_dtype,
        axis_name=axis_name,
        lr_scaling=lr_scaling,
        reference_draws=reference_draws,
        token_time=token_time,
    )
