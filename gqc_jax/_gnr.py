"""GNR: the gradient norm rescaler (a control that never accumulates)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._accumulation import Controller, Draw, adaptive_accumulation
from gqc_jax._hyperparams import ScalarOrSchedule


class GradientNormRescaleState(NamedTuple):
    """State of :class:`GradientNormRescale`.

    Attributes:
      target_gradient_norm: ``float32[]`` the target norm in force.
      num_invalid_hyperparameters: ``int32[]`` calls with an out-of-range target (clamped).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> state = gqc_jax.gnr(optax.sgd(0.1), target_norm=2.0).init({"w": jnp.zeros(2)})
      >>> float(state.criterion_state.target_gradient_norm)
      2.0
    """

    target_gradient_norm: jax.Array
    num_invalid_hyperparameters: jax.Array


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
        # A constant 0 would make every update zero; a schedule may start at 0.
        self.target_norm = _hyperparams.Hyperparameter(
            "target_norm", target_norm, positive_constant=True
        )

    def init(self, params: optax.Params) -> GradientNormRescaleState:
        del params
        return GradientNormRescaleState(self.target_norm.initial(), jnp.zeros([], jnp.int32))

    def should_step(
        self, state: GradientNormRescaleState, draw: Draw
    ) -> tuple[jax.Array, GradientNormRescaleState]:
        target, invalid = self.target_norm.current(state.target_gradient_norm, draw.count)
        invalid_count = _hyperparams.count_invalid(state.num_invalid_hyperparameters, invalid)
        return jnp.ones([], jnp.bool_), GradientNormRescaleState(target, invalid_count)

    def accept(self, state: GradientNormRescaleState, draw: Draw) -> jax.Array:
        del state
        return draw.mean_norm > 0

    def reset(self, state: GradientNormRescaleState) -> GradientNormRescaleState:
        return state

    def prepare(
        self, state: GradientNormRescaleState, mean: optax.Updates, mean_norm: jax.Array
    ) -> optax.Updates:
        # (m / |m|) target: each element at most the target, so a finite target
        # never overflows (target / |m| would for a small norm).
        norm = jnp.where(mean_norm > 0, mean_norm, 1.0)
        target = state.target_gradient_norm
        return jax.tree.map(lambda m: (m / norm.astype(m.dtype)) * target.astype(m.dtype), mean)


def gnr(
    inner: optax.GradientTransformation,
    target_norm: ScalarOrSchedule = 1.0,
    *,
    axis_name=None,
) -> Controller:
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
      target_norm: :math:`\tau > 0`, a number or a schedule on the microbatch
        clock (a schedule may reach 0).
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
