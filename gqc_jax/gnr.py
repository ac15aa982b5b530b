"""GNR: the gradient norm rescaler (a control that never accumulates)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax.accumulation import Draw, adaptive_accumulation


class GradientNormRescaleState(NamedTuple):
    """State of :class:`GradientNormRescale`.

    Attributes:
      target_gradient_norm: ``float32[]`` the target norm in force.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.gnr(optax.sgd(0.1), target_norm=2.0).init({"w": jnp.zeros(2)})
      >>> float(state.criterion_state.target_gradient_norm)
      2.0
    """

    target_gradient_norm: jax.Array


class GradientNormRescale:
    """Criterion: every microbatch steps, rescaled to the target norm.

    A microbatch whose gradient is exactly zero is skipped (counted in
    ``num_skipped``), so it moves neither the parameters nor the inner state.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), gqc_jax.GradientNormRescale(2.0))
      >>> type(tx.init({"w": jnp.zeros(2)}).criterion_state).__name__
      'GradientNormRescaleState'
    """

    def __init__(self, target_norm: ScalarOrSchedule = 1.0):
        _hyperparams.validate("target_norm", target_norm, minimum=0.0)
        self.target_norm = target_norm

    def init(self, params: optax.Params) -> GradientNormRescaleState:
        del params
        return GradientNormRescaleState(_hyperparams.initial(self.target_norm))

    def should_step(
        self, state: GradientNormRescaleState, draw: Draw
    ) -> tuple[jax.Array, GradientNormRescaleState]:
        target = _hyperparams.current(self.target_norm, state.target_gradient_norm, draw.count)
        return jnp.ones([], jnp.bool_), GradientNormRescaleState(target)

    def accept(self, state: GradientNormRescaleState, draw: Draw) -> jax.Array:
        del state
        return draw.mean_norm > 0

    def reset(self, state: GradientNormRescaleState) -> GradientNormRescaleState:
        return state

    def prepare(
        self, state: GradientNormRescaleState, mean: optax.Updates, mean_norm: jax.Array
    ) -> optax.Updates:
        scale = state.target_gradient_norm / jnp.where(mean_norm > 0, mean_norm, 1.0)
        return jax.tree.map(lambda m: m * scale.astype(m.dtype), mean)


def gnr(
    inner: optax.GradientTransformation,
    target_norm: ScalarOrSchedule = 1.0,
    *,
    axis_name=None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient norm rescaler (GNR).

    Steps on every microbatch with the gradient rescaled to a target norm:
    :math:`g \mapsto \tau(t)\, g / \lVert g \rVert`. It never accumulates; it is
    the control that separates "normalised gradient size" from "more samples per
    step". Unlike the reference, a zero gradient does not step: the microbatch is
    skipped (``num_skipped``) and the inner optimizer does not run, so stateful
    optimizers (momentum, decoupled weight decay) do not move the parameters.
    ``last_grad_norm`` is the norm *before* rescaling.

    Args:
      inner: the optimizer run on each rescaled gradient.
      target_norm: :math:`\tau \ge 0`, a number or a schedule on the microbatch
        clock.
      axis_name: for ``shard_map``/``pmap``, see :func:`gqc_jax.adaptive_accumulation`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``gqc_jax.stats`` reports
      ``target_gradient_norm``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnr(optax.sgd(1.0), target_norm=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> print(updates["w"])
      [-0.6 -0.8]
    """
    return adaptive_accumulation(
        inner, GradientNormRescale(target_norm), max_draws=1, axis_name=axis_name
    )
