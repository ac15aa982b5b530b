"""Paired training: several settings of one update rule trained side by side.

Every setting starts from the same initialisation and sees the same
microbatches; settings differ only in their optimizer state (a traced value
such as rounding digits or mantissa bits), so one compiled, vmapped step trains
them all. Differences between settings are then paired: neither the
initialisation nor the data order adds noise to them.

    curves = train_paired(graphdef, params, states, update, microbatch, validation,
                          steps=300, eval_every=15)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.train_step import loss_and_grads, loss_fn

# update(grads, opt_state, params, loss) -> (updates, opt_state, metrics), for one
# setting; the metrics are scalars.
Update = Callable[[Any, Any, Any, jax.Array], tuple[Any, Any, dict[str, jax.Array]]]


def stack(tree: Any, n: int) -> Any:
    """``n`` copies of every leaf of ``tree`` on a new leading axis."""
    return jax.tree.map(lambda x: jnp.stack([x] * n), tree)


def train_paired(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    states: Any,
    update: Update,
    microbatch: Callable[[int], np.ndarray],
    validation: np.ndarray,
    *,
    steps: int,
    eval_every: int,
    loss_scale: float = 1.0,
    probe: Callable[[Any, jax.Array], Any] | None = None,
    eval_batch: int = 64,
) -> dict[str, Any]:
    """Trains every setting of ``states`` from ``params`` on the same microbatches.

    Args:
      graphdef: the model's graph definition (:func:`experiments.train_step.split`).
      params: the one initialisation every setting starts from.
      states: the settings' optimizer states, stacked on a leading axis of size N.
      update: one setting's update rule (see ``Update``); it receives the
        gradient of ``loss_scale`` x loss and the unscaled loss.
      microbatch: ``microbatch(i)`` is the i-th batch of token windows.
      validation: the token windows of the validation loss, evaluated every
        ``eval_every`` steps and after the last.
      steps: optimizer calls (one microbatch each).
      eval_every: steps between validation losses.
      loss_scale: the loss is multiplied by it before differentiation (to put
        gradient magnitudes in a chosen regime); every loss reported is unscaled.
      probe: ``probe(stacked_params, tokens)``, jitted and evaluated at every
        validation point on that step's microbatch.
      eval_batch: windows per validation call.

    Returns:
      A dict of host arrays: ``eval_steps`` (list of step counts), ``val_loss``
      ``[evals, N]``, ``train_loss`` ``[steps, N]``, ``metrics`` (each of the
      update's metrics, ``[steps, N]``) and ``probes`` (one per validation point).
    """
    n = jax.tree.leaves(states)[0].shape[0]

    grad_fn = loss_and_grads(graphdef, loss_scale)

    def step_one(p, state, tokens):
        loss, grads = grad_fn(p, tokens)
        updates, state, metrics = update(grads, state, p, loss)
        return optax.apply_updates(p, updates), state, {"train_loss": loss, **metrics}

    step = jax.jit(jax.vmap(step_one, in_axes=(0, 0, None)), donate_argnums=(0, 1))
    evaluate = jax.jit(jax.vmap(loss_fn(graphdef), in_axes=(0, None)))
    probe_fn = jax.jit(probe) if probe is not None else None
    chunks = [
        jnp.asarray(validation[i : i + eval_batch]) for i in range(0, len(validation), eval_batch)
    ]

    def val_loss(stacked):
        return sum(evaluate(stacked, c) * len(c) for c in chunks) / len(validation)

    stacked = stack(params, n)
    # The step donates the states: give every leaf its own buffer (a vmapped init can
    # return one array for two leaves that hold the same value).
    states = jax.tree.map(jnp.copy, states)
    evals, eval_steps, probes, per_step = [], [], [], []
    for i in range(steps + 1):
        if i % eval_every == 0 or i == steps:
            evals.append(val_loss(stacked))
            eval_steps.append(i)
            if probe_fn is not None:
                probes.append(probe_fn(stacked, jnp.asarray(microbatch(i))))
        if i == steps:
            break
        stacked, states, metrics = step(stacked, states, jnp.asarray(microbatch(i)))
        per_step.append(metrics)
    evals, probes, per_step = jax.device_get((evals, probes, per_step))
    return {
        "eval_steps": eval_steps,
        "val_loss": np.asarray(evals),
        "train_loss": np.asarray([m["train_loss"] for m in per_step]),
        "metrics": {
            k: np.asarray([m[k] for m in per_step]) for k in per_step[0] if k != "train_loss"
        },
        "probes": probes,
    }
