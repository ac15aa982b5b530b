"""Step on the open window: the end of a run, or before a change of optimizer."""

from __future__ import annotations

from typing import Any

import jax
import optax

from gqc_jax._accumulation import request_flush
from gqc_jax._stats import find_controller_state, pure


def flush(
    tx: optax.GradientTransformationExtraArgs,
    opt_state: optax.OptState,
    params: optax.Params,
    **extra_args: Any,
) -> tuple[optax.Updates, optax.OptState]:
    """Runs the inner optimizer once on the controller's open window.

    A controller steps only when its criterion passes or the draw cap is hit, so
    the microbatches drawn since the last step are still waiting when a run ends.
    ``flush`` takes that step: with :math:`n > 0` draws in the open window it
    runs the inner optimizer on their mean :math:`\\bar g_n` (and their mean
    loss as ``value=``), exactly as a step the criterion had passed, and starts
    a new window; with :math:`n = 0` it returns zero updates and changes nothing
    but ``stepped`` (False). No microbatch is drawn: ``num_batches`` stays.

    It sets ``flushing`` in the controller's state (see
    :class:`AdaptiveAccumulationState`) and calls ``tx.update`` once with a zero
    gradient shaped like ``params`` and the window's mean loss as ``value=``
    (unless ``extra_args`` has one); the controller steps on its open window
    instead of drawing, and clears the flag. So ``tx`` may be a controller, an
    ``optax.chain`` that holds one, ``optax.inject_hyperparams`` or
    :func:`skip_loss_spikes` around one; transformations chained *after* the
    controller process the flushed update as usual, and stateful ones chained
    *before* it see one zero gradient.

    With Flax NNX, pass ``opt.tx``, ``opt.opt_state`` and the model's
    parameters (``nnx.state(model, nnx.Param)``): their variables are read as
    arrays, as ``nnx.Optimizer.update`` reads them, and the result is plain
    arrays to write back with ``nnx.update`` (the user guide shows it).

    Args:
      tx: the transformation whose state is ``opt_state``; it must take extra
        arguments (every gqc_jax controller, ``optax.chain`` and
        ``optax.inject_hyperparams`` of one do).
      opt_state: ``tx``'s state, holding a controller state.
      params: the parameters.
      **extra_args: other extra arguments for ``tx.update``.

    Returns:
      ``(updates, opt_state)``, as ``tx.update`` returns them: apply the updates
      with ``optax.apply_updates``.

    Raises:
      TypeError: ``tx`` does not take extra arguments.
      ValueError: ``opt_state`` holds no controller state.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts(optax.sgd(1.0), threshold=0.0, max_draws=16)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 3.0):   # two draws, no step: the criterion never passes
      ...     _, state = tx.update({"w": jnp.full(2, g)}, state, params)
      >>> updates, state = gqc_jax.flush(tx, state, params)
      >>> print(updates["w"], int(state.num_steps), int(state.last_num_draws))
      [-2. -2.] 1 2
    """
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        raise TypeError(
            "flush needs a transformation that takes extra arguments (a gqc_jax "
            "controller, or optax.chain / optax.inject_hyperparams around one), got "
            f"{type(tx).__name__}; an optax.with_extra_args_support wrapper would drop "
            "the flush."
        )
    opt_state, params = pure(opt_state), pure(params)
    extra_args.setdefault("value", find_controller_state(opt_state).value_mean)
    zeros = jax.tree.map(jax.numpy.zeros_like, params)
    return tx.update(zeros, request_flush(opt_state), params, **extra_args)
