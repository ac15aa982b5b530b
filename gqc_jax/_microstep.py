"""One fused call per microbatch: update the controller and apply a step."""

from __future__ import annotations

from typing import Any

import jax
import optax

from gqc_jax._accumulation import Controller


def microstep(
    tx: optax.GradientTransformation,
    grads: optax.Updates,
    opt_state: optax.OptState,
    params: optax.Params,
    *,
    value: jax.typing.ArrayLike | None = None,
    **extra_args: Any,
) -> tuple[optax.Params, optax.OptState]:
    """Runs ``tx.update`` on one microbatch and applies the result to ``params``.

    Gives the same ``(params, opt_state)`` as ``tx.update`` followed by
    ``optax.apply_updates``. When ``tx`` is a :class:`gqc_jax.Controller` (a
    controller, or :func:`gqc_jax.skip_loss_spikes` around one) this is
    ``tx.microstep``: the update is applied inside the step branch, so a non-step
    microbatch neither writes zero updates nor touches the parameters. For any
    other ``tx`` (an ``optax.chain`` that contains a controller, say) it is
    update-then-apply.

    Args:
      tx: the transformation, typically a gqc_jax controller.
      grads: this microbatch's gradient.
      opt_state: ``tx``'s state.
      params: the parameters.
      value: this microbatch's loss, for controllers and optimizers that use it.
      **extra_args: other extra arguments forwarded to ``tx.update``.

    Returns:
      The new parameters and the new optimizer state.

    Example:
      >>> import jax, jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts(optax.sgd(0.5), threshold=0.0, max_draws=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> step = jax.jit(gqc_jax.microstep, static_argnums=0)
      >>> params, state = step(tx, {"w": jnp.ones(2)}, state, params)
      >>> params, state = step(tx, {"w": jnp.full(2, 3.0)}, state, params)
      >>> print(params["w"])
      [0. 0.]
    """
    if value is not None:
        extra_args["value"] = value
    if isinstance(tx, Controller):
        return tx.microstep(grads, opt_state, params, **extra_args)
    updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
    return optax.apply_updates(params, updates), opt_state
