"""Find a controller's state inside any optimizer state and report its statistics."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from gqc_jax._accumulation import AdaptiveAccumulationState, controller_states


def find_controller_state(opt_state: optax.OptState) -> AdaptiveAccumulationState:
    """Returns the outermost controller state inside ``opt_state``.

    Looks through tuples (``optax.chain``), NamedTuples, dicts and lists, and
    therefore also through ``optax.inject_hyperparams``, ``skip_loss_spikes``,
    a Flax ``nnx.Optimizer``'s ``opt_state`` and other wrappers. A controller
    nested in another's ``inner`` is not outermost; two side by side (e.g. in
    ``optax.multi_transform``) are ambiguous: pass the one you mean, e.g.
    ``state.inner_states["head"]``.

    Raises:
      ValueError: no controller state, or several outermost ones, are inside
        ``opt_state``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = optax.chain(optax.clip(1.0), gqc_jax.sbc(optax.sgd(0.1), 4, 1))
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> type(gqc_jax.find_controller_state(state)).__name__
      'AdaptiveAccumulationState'
    """
    found = controller_states(opt_state)
    if not found:
        raise ValueError(
            "No gqc_jax controller state found in this optimizer state; pass the state "
            "of a transformation built with gqc_jax (gnts, sbc, adaptive_accumulation, ...)."
        )
    if len(found) > 1:
        where = ", ".join(f"state{jax.tree_util.keystr(path)}" for path, _ in found)
        raise ValueError(
            f"This optimizer state holds {len(found)} controller states side by side "
            f"({where}); pass the one you mean."
        )
    return found[0][1]


def pure(tree: Any) -> Any:
    """``tree`` with every Flax NNX variable (``nnx.Optimizer``'s state) replaced by
    the array it holds, as ``nnx.as_pure`` does without importing Flax; arrays,
    host copies (NumPy) and anything else come back as they are."""
    return jax.tree.map(lambda v: v.get_value() if _holds(v) else v, tree, is_leaf=_holds)


def _holds(value: Any) -> bool:
    """Whether ``value`` holds an array behind ``get_value`` (an NNX variable)."""
    return callable(getattr(value, "get_value", None))


def stats(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """The controller's statistics as jax scalars (no host sync).

    Keys, as in the reference implementation: ``num_batches`` (update calls),
    ``num_steps`` (inner optimizer steps), ``num_draws`` (finite microbatches in the
    open window), ``last_num_draws`` and ``last_grad_norm`` (window size and norm of
    the window mean at the last step; 0 before the first step), ``lr_factor``
    (the ``lr_scaling`` factor of the last step's update; 1 without it), ``stepped``
    (whether the last call stepped), ``num_skipped`` (non-finite microbatches
    skipped), then the criterion's keys, e.g. ``gradient_norm_threshold``: every
    numeric scalar field of the criterion state (a ``NamedTuple``) under its own
    name.

    The same keys come back for a state on the device, a host copy
    (``jax.device_get``, NumPy values), a Flax ``nnx.Optimizer``'s
    ``opt_state`` (the values are taken out of its variables) and a state
    vmapped over, e.g., seeds (every value then has that batch shape).

    Args:
      opt_state: a controller's state, or any optimizer state that contains one.

    Returns:
      A dict of scalars (or arrays of the vmapped batch shape): jax arrays on
      the device; read them with ``jax.device_get`` when you log.

    Raises:
      ValueError: see :func:`find_controller_state`.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), gqc_jax.gnts(optax.adam(1e-3)))
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> sorted(gqc_jax.stats(state))[:4]
      ['gradient_norm_threshold', 'last_grad_norm', 'last_num_draws', 'lr_factor']
    """
    state = pure(find_controller_state(opt_state))
    shared = (
        "num_batches",
        "num_steps",
        "num_draws",
        "last_num_draws",
        "last_grad_norm",
        "lr_factor",
        "stepped",
        "num_skipped",
    )
    out = {key: getattr(state, key) for key in shared}
    # A criterion's statistics are its numeric fields shaped like the counters:
    # () for one controller, the batch shape for a vmapped one.
    batch_shape = np.shape(out["num_batches"])
    criterion_state = state.criterion_state
    if hasattr(criterion_state, "_asdict"):
        for key, value in criterion_state._asdict().items():
            if (
                isinstance(value, (jax.Array, np.ndarray, np.generic))
                and np.shape(value) == batch_shape
                and value.dtype != np.bool_
            ):
                out[key] = value
    return out
