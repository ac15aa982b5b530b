"""The optimizer of a training run (AdamW, Lion, Adafactor, SGD with momentum or
Muon), optionally under a GQC controller and behind gradient rounding, built from
the configuration."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

import gqc_jax
from experiments.config import Config
from experiments.controllers import CONTROLLERS


def learning_rate(config: Config, total_microbatches: int) -> optax.Schedule:
    """Linear warmup to ``optim.lr``, then ``optim.schedule``'s decay to ``lr *
    min_lr_ratio`` over the run's microbatches: cosine, linear, or the cosine
    rounded down to ``lr / 2^j`` (a step decay halving where the cosine halves);
    or ``constant``: ``lr`` after the warmup."""
    o = config.optim
    if o.warmup >= total_microbatches:
        raise ValueError(
            f"optim.warmup ({o.warmup}) must be smaller than the run's {total_microbatches} "
            "microbatches (train.tokens / (data.microbatch_size * model.seq_len))."
        )
    end = o.lr * o.min_lr_ratio
    if o.schedule == "constant":
        return gqc_jax.schedules.constant_with_warmup(o.lr, o.warmup)
    if o.schedule == "linear":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, o.lr, o.warmup),
                optax.linear_schedule(o.lr, end, total_microbatches - o.warmup),
            ],
            [o.warmup],
        )
    cosine = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup, total_microbatches, end)
    if o.schedule == "cosine":
        return cosine

    def steps(count):
        value = cosine(count)
        halvings = jnp.floor(jnp.log2(o.lr / jnp.maximum(value, 1e-30)))
        return jnp.where(count < o.warmup, value, o.lr / jnp.exp2(jnp.maximum(halvings, 0.0)))

    return steps


def base_optimizer(config: Config, lr: optax.Schedule, total: int) -> tuple[Callable, dict]:
    """``(factory, kwargs)`` of the configured optimizer; ``total``: the run's
    microbatches (the weight-decay schedule's length)."""
    o = config.optim
    wd: Any = o.weight_decay
    if o.weight_decay_schedule == "cosine":  # the reference's: warmup, then to 0
        decay = gqc_jax.schedules.cosine_annealing_with_warmup(1.0, 0.0, o.warmup, total)
        wd = lambda count: o.weight_decay * decay(count)  # noqa: E731
    if o.name == "lion":
        return optax.lion, dict(learning_rate=lr, b1=o.b1, b2=o.b2, weight_decay=wd)
    if o.name == "adafactor":
        # optax's adafactor applies weight_decay_rate as is, not times the learning
        # rate: scale it by the schedule so it decays like AdamW's (lr * wd * p).
        decay = (lambda count: o.weight_decay * lr(count)) if o.weight_decay else None
        return optax.adafactor, dict(learning_rate=lr, weight_decay_rate=decay)
    if o.name == "sgd":
        return optax.sgd, dict(learning_rate=lr, momentum=o.b1, nesterov=True)
    if o.name == "muon":
        return optax.contrib.muon, dict(learning_rate=lr, beta=o.b1, weight_decay=wd, adam_b2=o.b2)
    return optax.adamw, dict(learning_rate=lr, b1=o.b1, b2=o.b2, weight_decay=wd)


def build_optimizer(config: Config, total_microbatches: int) -> optax.GradientTransformation:
    """The configured optimizer (clip, then the optimizer); under a controller its
    schedules run on the microbatch clock, so every arm follows the same schedule
    per token."""
    o, g = config.optim, config.gqc
    lr = learning_rate(config, total_microbatches)
    clip = [optax.clip_by_global_norm(o.clip)] if o.clip > 0 else []
    factory, kwargs = base_optimizer(config, lr, total_microbatches)
    if g.controller == "none":
        tx = optax.chain(*clip, factory(**kwargs))
    else:

        def clipped(**values):  # the clock wraps clip and optimizer alike
            return optax.chain(*clip, factory(**values))

        inner = gqc_jax.on_microbatch_clock(clipped, **kwargs)
        entry = CONTROLLERS[g.controller]
        tx = entry.build(entry.read(g), config, inner, total_microbatches, lr)
    if g.rounding != "none":
        rounding = gqc_jax.round_gradients(
            g.rounding_digits,
            mode=typing.cast(gqc_jax.rounding.Mode, g.rounding),
            stochastic=g.rounding_stochastic,
        )
        tx = optax.chain(rounding, tx)
    if config.train.spike_sigmas > 0:
        tx = gqc_jax.skip_loss_spikes(tx, config.train.spike_sigmas)
    return tx


def with_own_hyperparameters(
    restored: optax.OptState, fresh: optax.OptState, parent: Config, config: Config, total: int
) -> optax.OptState:
    """``restored`` (another run's optimizer state) with the controller
    hyperparameters of ``config`` where they differ from ``parent``'s.

    A controller keeps its scalar hyperparameters (sbc's logical batch, GNTS's
    threshold, ...) in its state, so restoring a state restores them too. A branch
    that changes one of them takes it from ``fresh`` (its own initial state):
    every criterion-state scalar whose initial value under ``parent``'s settings
    differs from that under ``config``'s. Statistics and counters stay restored.
    """
    if parent.gqc.controller == "none" or config.gqc.controller == "none":
        return restored
    probe = {"w": jnp.zeros([], jnp.float32)}  # the criterion's scalars do not depend on it

    def initial(cfg: Config):
        state = build_optimizer(cfg, total).init(probe)
        return gqc_jax.find_controller_state(state).criterion_state

    before, after = initial(parent), initial(config)
    changed = [
        name
        for name in after._fields
        if not np.array_equal(np.asarray(getattr(before, name)), np.asarray(getattr(after, name)))
    ]
    if not changed:
        return restored
    own = gqc_jax.find_controller_state(fresh).criterion_state

    def swap(node):
        if not isinstance(node, gqc_jax.AdaptiveAccumulationState):
            return node
        values = {name: getattr(own, name) for name in changed}
        return node._replace(criterion_state=node.criterion_state._replace(**values))

    return jax.tree.map(
        swap, restored, is_leaf=lambda x: isinstance(x, gqc_jax.AdaptiveAccumulationState)
    )
