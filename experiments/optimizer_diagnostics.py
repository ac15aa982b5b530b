"""Diagnostics of the Adam state inside any optax state (under a controller too):
how the gradient Adam receives lines up with its momentum, and the size of its
second moment, whose jumps mark anomalous batches."""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import optax


def adam_state(opt_state: optax.OptState) -> optax.ScaleByAdamState | None:
    """The one ``ScaleByAdamState`` inside ``opt_state``, or None (none or several)."""
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
    return found[0] if len(found) == 1 else None


def _dot(a, b) -> jax.Array:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return typing.cast(jax.Array, sum(jnp.vdot(x, y) for x, y in pairs))


def adam_diagnostics(old: optax.OptState, new: optax.OptState, b1: float) -> dict[str, jax.Array]:
    r"""``diag/grad_momentum_cos`` and ``diag/second_moment`` for one update call.

    The gradient Adam received is recovered from its first moment,
    :math:`g = (\mu_t - \beta_1 \mu_{t-1}) / (1 - \beta_1)` (under a controller:
    the window mean, after clipping); ``grad_momentum_cos`` is
    :math:`\cos(g, \mu_{t-1})` (0 while :math:`\mu_{t-1} = 0`; 1 on a call that
    did not step) and ``second_moment`` is :math:`\sum \nu_t`. Empty when the state
    holds no single Adam.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.adam(0.1, b1=0.9)
      >>> p = {"w": jnp.zeros(2)}
      >>> s0 = tx.init(p)
      >>> _, s1 = tx.update({"w": jnp.array([1.0, 0.0])}, s0)
      >>> _, s2 = tx.update({"w": jnp.array([0.0, 1.0])}, s1)
      >>> round(float(adam_diagnostics(s1, s2, 0.9)["diag/grad_momentum_cos"]), 6)
      0.0
      >>> _, s3 = tx.update({"w": jnp.array([1.0, 1.0])}, s2)
      >>> round(float(adam_diagnostics(s2, s3, 0.9)["diag/grad_momentum_cos"]), 4)
      0.9986
    """
    before, after = adam_state(old), adam_state(new)
    if before is None or after is None:
        return {}
    g = jax.tree.map(lambda m1, m0: (m1 - b1 * m0) / (1 - b1), after.mu, before.mu)
    norms = jnp.sqrt(_dot(g, g) * _dot(before.mu, before.mu))
    cos = _dot(g, before.mu) / jnp.maximum(norms, jnp.finfo(jnp.float32).tiny)
    second = typing.cast(jax.Array, sum(jnp.sum(v) for v in jax.tree.leaves(after.nu)))
    return {"diag/grad_momentum_cos": cos, "diag/second_moment": second}
