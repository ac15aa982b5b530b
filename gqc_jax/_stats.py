"""Find a controller's state inside any optimizer state and report its statistics."""

from __future__ import annotations

import jax
import optax

from gqc_jax._accumulation import AdaptiveAccumulationState


def find_controller_state(opt_state: optax.OptState) -> AdaptiveAccumulationState:
    """Returns the outermost controller state inside ``opt_state``.

    Looks through tuples (``optax.chain``), NamedTuples, dicts and lists, and
    therefore also through ``optax.inject_hyperparams`` and other wrappers.

    Raises:
      ValueError: no controller state is inside ``opt_state``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = optax.chain(optax.clip(1.0), gqc_jax.sbc(optax.sgd(0.1), 4, 1))
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> type(gqc_jax.find_controller_state(state)).__name__
      'AdaptiveAccumulationState'
    """
    found = [
        leaf
        for leaf in jax.tree.leaves(
            opt_state, is_leaf=lambda x: isinstance(x, AdaptiveAccumulationState)
        )
        if isinstance(leaf, AdaptiveAccumulationState)
    ]
    if not found:
        raise ValueError(
            "No gqc_jax controller state found in this optimizer state; pass the state "
            "of a transformation built with gqc_jax (gnts, sbc, adaptive_accumulation, ...)."
        )
    return found[0]


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

    Args:
      opt_state: a controller's state, or any optimizer state that contains one.

    Returns:
      A dict of jax scalars; read them with ``jax.device_get`` when you log.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), gqc_jax.gnts(optax.adam(1e-3)))
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> sorted(gqc_jax.stats(state))[:4]
      ['gradient_norm_threshold', 'last_grad_norm', 'last_num_draws', 'lr_factor']
    """
    state = find_controller_state(opt_state)
    out = {
        "num_batches": state.num_batches,
        "num_steps": state.num_steps,
        "num_draws": state.num_draws,
        "last_num_draws": state.last_num_draws,
        "last_grad_norm": state.last_grad_norm,
        "lr_factor": state.lr_factor,
        "stepped": state.stepped,
        "num_skipped": state.num_skipped,
    }
    criterion_state = state.criterion_state
    if hasattr(criterion_state, "_asdict"):
        out.update(
            {
                k: v
                for k, v in criterion_state._asdict().items()
                if isinstance(v, jax.Array) and v.ndim == 0 and v.dtype != jax.numpy.bool_
            }
        )
    return out
