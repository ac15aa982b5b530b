"""The in-step fast path: a whole adaptive window inside one jitted call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gqc_jax._microstep import microstep
from gqc_jax._stats import find_controller_state


def accumulate_window(
    tx: optax.GradientTransformation,
    loss_fn: Callable[..., jax.Array],
    params: optax.Params,
    opt_state: optax.OptState,
    microbatches: Any,
    *,
    num_available: jax.typing.ArrayLike | None = None,
) -> tuple[optax.Params, optax.OptState, jax.Array]:
    """Draws microbatches from a device-resident superbatch until the controller steps.

    A ``lax.while_loop`` computes ``value_and_grad(loss_fn)(params, microbatch)``
    for microbatch 0, 1, ... of ``microbatches`` and feeds each to
    :func:`gqc_jax.microstep`, stopping right after the controller steps or when
    the superbatch is used up. The decisions and results are those of the
    per-microbatch loop on the same stream, with one dispatch per window instead
    of one per microbatch. The caller advances its data pointer by the returned
    count; a window left open (superbatch exhausted) continues in the next call.

    Args:
      tx: a transformation containing a gqc_jax controller.
      loss_fn: ``loss_fn(params, microbatch) -> scalar loss``.
      params: the parameters.
      opt_state: ``tx``'s state.
      microbatches: a pytree whose leaves have a leading axis of microbatches;
        give at least ``max_draws`` of them to always complete a window.
      num_available: how many leading microbatches are real (default: all), so
        a partly filled superbatch needs no recompilation.

    Returns:
      ``(params, opt_state, num_used)`` with ``num_used`` an ``int32[]``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc(optax.sgd(0.1), logical_batch_size=3, physical_batch_size=1)
      >>> loss = lambda p, x: jnp.sum((p["w"] - x) ** 2)
      >>> params = {"w": jnp.zeros(2)}
      >>> window = jax.jit(gqc_jax.accumulate_window, static_argnums=(0, 1))
      >>> params, state, used = window(tx, loss, params, tx.init(params), jnp.ones((8, 2)))
      >>> print(int(used), params["w"])
      3 [0.2 0.2]
    """
    total = jax.tree.leaves(microbatches)[0].shape[0]
    limit = jnp.asarray(total if num_available is None else num_available, jnp.int32)
    limit = jnp.minimum(limit, total)
    grad_fn = jax.value_and_grad(loss_fn)

    def cond(carry):
        _, _, used, stepped = carry
        return (used < limit) & ~stepped

    def body(carry):
        params, state, used, _ = carry
        batch = jax.tree.map(
            lambda x: jax.lax.dynamic_index_in_dim(x, used, keepdims=False), microbatches
        )
        loss, grads = grad_fn(params, batch)
        params, state = microstep(tx, grads, state, params, value=loss)
        return params, state, used + 1, find_controller_state(state).stepped

    params, opt_state, used, _ = jax.lax.while_loop(
        cond, body, (params, opt_state, jnp.zeros([], jnp.int32), jnp.zeros([], jnp.bool_))
    )
    return params, opt_state, used
