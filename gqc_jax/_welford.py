"""Running count, mean and sum of squared deviations (Welford / Chan et al.)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Moments(NamedTuple):
    """``count`` samples with mean ``mean`` and sum of squared deviations ``m2``."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    mean: jax.Array
    m2: jax.Array

    @classmethod
    def empty(cls) -> Moments:
        zero = jnp.zeros([], jnp.float32)
        return cls(zero, zero, zero)

    def merge(self, samples: jax.Array) -> Moments:
        """Adds a 1-d batch of samples (Chan's parallel update, numerically stable)."""
        samples = jnp.asarray(samples, jnp.float32).reshape(-1)
        k = jnp.float32(samples.shape[0])
        batch_mean = jnp.mean(samples)
        batch_m2 = jnp.sum(jnp.square(samples - batch_mean))
        total = self.count + k
        delta = batch_mean - self.mean
        return Moments(
            count=total,
            mean=self.mean + delta * k / total,
            m2=self.m2 + batch_m2 + jnp.square(delta) * self.count * k / total,
        )

    def variance(self) -> jax.Array:
        """The unbiased (n - 1) variance; NaN for a single sample, as numpy's."""
        return jnp.where(self.count > 1, self.m2 / jnp.maximum(self.count - 1, 1), jnp.nan)


def gather(value: jax.Array, axis_name) -> jax.Array:
    """The scalar ``value`` of every device along ``axis_name`` (or just this one).

    Built from ``psum`` of a one-hot vector rather than ``all_gather`` so the
    result is known to be identical on every device (``shard_map`` can then
    return the controller state as replicated).
    """
    if axis_name is None:
        return jnp.reshape(value, (1,))
    size = jax.lax.axis_size(axis_name)
    slot = jax.nn.one_hot(jax.lax.axis_index(axis_name), size, dtype=jnp.float32)
    return jax.lax.psum(slot * jnp.asarray(value, jnp.float32), axis_name)
