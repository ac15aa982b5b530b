"""Skip the updates of microbatches whose loss spikes far above its running level."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gqc_jax._accumulation import Controller, flush_requested
from gqc_jax._hyperparams import concrete_value


def _number(name: str, value: object) -> float:
    number = concrete_value(value)
    if number is None:
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    return number


class SkipLossSpikesState(NamedTuple):
    """State of :func:`skip_loss_spikes`.

    Attributes:
      count: ``int32[]``, losses taken into the running estimate.
      mean: ``float32[]``, running mean of the loss.
      variance: ``float32[]``, running variance of the loss.
      num_spikes: ``int32[]``, calls skipped as spikes so far.
      last_skipped: ``bool[]``, whether the last call was skipped.
      inner_state: the wrapped transformation's state.
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    mean: jax.Array
    variance: jax.Array
    num_spikes: jax.Array
    last_skipped: jax.Array
    inner_state: optax.OptState


def skip_loss_spikes(
    inner: optax.GradientTransformation,
    sigmas: float,
    *,
    beta: float = 0.99,
    warmup: int = 50,
) -> optax.GradientTransformationExtraArgs:
    r"""Skips a call whose loss exceeds its running mean by ``sigmas`` standard
    deviations: ``inner`` is not called, the update is zero and ``inner``'s state
    is kept, as :func:`optax.apply_if_finite` does for non-finite gradients.

    The running estimate is an exponentially weighted mean :math:`m` and variance
    :math:`v` of the accepted finite losses, with rate
    :math:`\alpha_n = \max(1/n, 1 - \beta)` at the n-th (the plain mean and
    variance of the first :math:`1/(1-\beta)` losses, then an exponential
    average). After ``warmup`` accepted losses, a finite loss :math:`L` with
    :math:`L > m + \text{sigmas}\,\sqrt{v}` is a spike: skipped, counted, and kept
    out of the estimate. Around a controller each call is one microbatch, and a
    spiking microbatch is kept out of its window; around a plain optimizer a
    spike skips the step. Non-finite losses pass to ``inner`` (controllers skip
    them) and do not enter the estimate. :func:`gqc_jax.flush` passes through to
    ``inner``: it draws no microbatch, so nothing is judged and the running
    estimate is unchanged.

    Args:
      inner: the transformation to guard (a controller or an optimizer).
      sigmas: the spike threshold in running standard deviations, ``>= 1``.
      beta: the running estimate's decay, in ``[0, 1)``.
      warmup: accepted losses before any call can be skipped, ``>= 1``.

    Returns:
      A ``GradientTransformationExtraArgs`` whose ``update`` needs the loss as
      ``value=``; around a :class:`gqc_jax.Controller`, a ``Controller``
      (its ``microstep`` skips a spike without touching the parameters).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.skip_loss_spikes(optax.sgd(0.1), sigmas=3.0, warmup=4)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for loss in (1.0, 1.1, 0.9, 1.0, 50.0):
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params, value=loss)
      >>> int(state.num_spikes), float(updates["w"][0])
      (1, 0.0)
    """
    sigmas, beta = _number("sigmas", sigmas), _number("beta", beta)
    if not sigmas >= 1:
        raise ValueError(f"sigmas must be >= 1, got {sigmas}.")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}.")
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral):
        raise TypeError(f"warmup must be an int, got {warmup!r}.")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup}.")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return SkipLossSpikesState(
            count=jnp.zeros([], jnp.int32),
            mean=jnp.zeros([], jnp.float32),
            variance=jnp.zeros([], jnp.float32),
            num_spikes=jnp.zeros([], jnp.int32),
            last_skipped=jnp.zeros([], jnp.bool_),
            inner_state=inner.init(params),
        )

    def core(updates, state, params, value, extra_args, apply_to_params):
        """``update`` (returns updates) or ``microstep`` (returns new params)."""
        if value is None:
            raise ValueError("skip_loss_spikes needs the loss: call update(..., value=loss).")
        loss = jnp.asarray(value, jnp.float32)
        finite = jnp.isfinite(loss)
        limit = state.mean + sigmas * jnp.sqrt(state.variance)
        spike = (state.count >= warmup) & finite & (loss > limit)
        take = finite & ~spike
        # gqc_jax.flush draws no microbatch: nothing is judged or taken in.
        flushing = flush_requested(state.inner_state)
        if flushing is not None:
            spike, take = spike & ~flushing, take & ~flushing

        def apply():
            if apply_to_params:
                return inner.microstep(
                    updates, state.inner_state, params, value=value, **extra_args
                )
            return inner.update(updates, state.inner_state, params, value=value, **extra_args)

        shapes = jax.eval_shape(apply)[0]

        def skip():
            if apply_to_params:
                return params, state.inner_state
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), state.inner_state

        out, inner_state = jax.lax.cond(spike, skip, apply)
        n = optax.safe_increment(state.count)
        rate = jnp.maximum(1.0 / n.astype(jnp.float32), 1.0 - beta)
        delta = loss - state.mean
        new_state = SkipLossSpikesState(
            count=jnp.where(take, n, state.count),
            mean=jnp.where(take, state.mean + rate * delta, state.mean),
            variance=jnp.where(
                take, (1.0 - rate) * (state.variance + rate * delta**2), state.variance
            ),
            num_spikes=state.num_spikes + spike.astype(jnp.int32),
            last_skipped=spike,
            inner_state=inner_state,
        )
        return out, new_state

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        return core(updates, state, params, value, extra_args, apply_to_params=False)

    if isinstance(inner, Controller):

        def microstep_fn(updates, state, params, *, value=None, **extra_args):
            return core(updates, state, params, value, extra_args, apply_to_params=True)

        return Controller(init_fn, update_fn, microstep_fn)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def loss_spike_stats(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """``{"loss_spike": bool[], "num_loss_spikes": int32[]}`` from the outermost
    :func:`skip_loss_spikes` state inside ``opt_state``; ``{}`` if there is none."""
    found = [
        leaf
        for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, SkipLossSpikesState))
        if isinstance(leaf, SkipLossSpikesState)
    ]
    if not found:
        return {}
    return {"loss_spike": found[0].last_skipped, "num_loss_spikes": found[0].num_spikes}
