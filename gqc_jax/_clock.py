"""Run an optimizer's hyperparameter schedules on the controller's microbatch clock."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class MicrobatchClockState(NamedTuple):
    """State of :func:`on_microbatch_clock`.

    Attributes:
      hyperparams: the hyperparameter values in force (float32 scalars); write a
        numeric one to change it without recompiling.
      inner_state: the optimizer's state.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> inner = gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=optax.linear_schedule(1.0, 0.0, 10))
      >>> state = gqc_jax.sbc(inner, 2, 1).init({"w": jnp.zeros(2)})
      >>> type(state.inner_state).__name__, float(state.inner_state.hyperparams["learning_rate"])
      ('MicrobatchClockState', 1.0)
    """

    hyperparams: dict[str, jax.Array]
    inner_state: optax.OptState


# The hyperparameters a token-time coupling rescales (adaptive_accumulation's
# ``token_time``): the moments' decays of optax's Adam family, Lion, SGD's
# momentum, RMSProp and Muon, and decoupled weight decay.
DECAY_NAMES = ("b1", "b2", "momentum", "decay", "beta", "adam_b1", "adam_b2")
WEIGHT_DECAY_NAMES = ("weight_decay", "adam_weight_decay")


class MicrobatchClock(optax.GradientTransformationExtraArgs):
    r"""The transformation :func:`on_microbatch_clock` returns.

    Besides ``init`` and ``update`` it has
    ``update_at(count, updates, state, params, *, window_ratio=None,
    lr_factor=1.0, **extra_args)``: the update with every schedule evaluated
    at the microbatch clock ``count`` and, given a ``window_ratio`` :math:`r`
    (a controller's ``token_time``), each decay :math:`b` among
    ``DECAY_NAMES`` the optimizer takes replaced by :math:`b^r` and each weight
    decay :math:`\lambda` by :math:`\lambda r / \text{lr\_factor}`. A
    controller whose inner optimizer is a ``MicrobatchClock`` calls
    ``update_at`` with its own clock; ``update`` alone has no clock and raises.
    ``token_time_names`` lists the hyperparameters a ``window_ratio`` rescales.
    """

    update_at: Callable[..., tuple[optax.Updates, MicrobatchClockState]]
    token_time_names: tuple[str, ...]

    def __new__(
        cls,
        init: optax.TransformInitFn,
        update: optax.TransformUpdateExtraArgsFn,
        update_at: Callable[..., tuple[optax.Updates, MicrobatchClockState]],
        token_time_names: tuple[str, ...] = (),
    ) -> MicrobatchClock:
        self = super().__new__(cls, init, update)
        self.update_at = update_at
        self.token_time_names = token_time_names
        return self

    def _replace(self, **fields: Any) -> optax.GradientTransformationExtraArgs:
        """A plain optax transformation with ``fields`` replaced; ``update_at``
        belongs to the original ``init`` and ``update`` and does not carry over."""
        return optax.GradientTransformationExtraArgs(**{**self._asdict(), **fields})


def on_microbatch_clock(
    optimizer_factory: Callable[..., optax.GradientTransformation],
    *,
    static_args: Iterable[str] = (),
    **kwargs: Any,
) -> MicrobatchClock:
    """Builds ``optimizer_factory(**kwargs)`` with schedules on the microbatch clock.

    An optimizer wrapped by a controller advances only on steps, so its own
    schedules count optimizer steps, whose number is not known in advance. Used
    as a controller's inner optimizer, this wrapper evaluates every schedule
    argument at the controller's microbatch clock instead (the number of
    microbatches drawn before the current one), as the reference's factories do.
    Arguments are classified like ``optax.inject_hyperparams``: callables are
    schedules, numbers are hyperparameters kept in the state (changeable without
    recompiling), everything else and the names in ``static_args`` are static.

    Args:
      optimizer_factory: e.g. ``optax.adamw``.
      static_args: names of callable arguments that are not schedules.
      **kwargs: the optimizer's arguments.

    Returns:
      A :class:`MicrobatchClock` transformation that must be the inner
      optimizer of a gqc_jax controller itself, which runs it at its clock. To chain other
      transforms with the optimizer (clipping, say), chain them inside the
      factory: ``on_microbatch_clock(lambda **kw: optax.chain(optax.clip(1.0),
      optax.adamw(**kw)), learning_rate=schedule)``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> inner = gqc_jax.on_microbatch_clock(
      ...     optax.sgd, learning_rate=optax.linear_schedule(1.0, 0.0, 10))
      >>> tx = gqc_jax.sbc(inner, logical_batch_size=4, physical_batch_size=1)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = tx.init(params)
      >>> for _ in range(4):   # steps at the 4th microbatch, clock 3: lr 0.7
      ...     updates, state = tx.update({"w": jnp.ones(1)}, state, params)
      >>> print(updates["w"])
      [-0.7]
    """
    static_args = set([static_args] if isinstance(static_args, str) else static_args)
    signature = inspect.signature(optimizer_factory)
    unknown = [k for k in kwargs if k not in signature.parameters]
    if unknown and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    ):
        raise TypeError(
            f"{getattr(optimizer_factory, '__name__', optimizer_factory)} has no "
            f"argument(s) {', '.join(unknown)}."
        )
    schedules, numeric, static = {}, {}, {}
    for name, value in kwargs.items():
        if name in static_args or isinstance(value, bool):
            static[name] = value
        elif callable(value):
            schedules[name] = value
        elif isinstance(value, (numbers.Real, jax.Array, np.ndarray)):
            numeric[name] = value
        else:
            static[name] = value

    # Decays and weight decays the factory would take by default: a token-time
    # coupling rescales them too.
    defaults = {
        name: float(p.default)
        for name, p in signature.parameters.items()
        if name in DECAY_NAMES + WEIGHT_DECAY_NAMES
        and name not in kwargs
        and isinstance(p.default, numbers.Real)
        and not isinstance(p.default, bool)
    }
    token_time_names = tuple(
        name
        for name in DECAY_NAMES + WEIGHT_DECAY_NAMES
        if name in defaults or name in schedules or name in numeric
    )

    def values_at(count, stored):
        values = dict(stored)
        values.update({k: jnp.asarray(f(count), jnp.float32) for k, f in schedules.items()})
        return values

    def init_fn(params):
        stored = {k: jnp.asarray(v, jnp.float32) for k, v in numeric.items()}
        values = values_at(jnp.zeros([], jnp.int32), stored)
        inner = optimizer_factory(**static, **values)
        return MicrobatchClockState(hyperparams=values, inner_state=inner.init(params))

    def update_at(
        count, updates, state, params=None, *, window_ratio=None, lr_factor=1.0, **extra_args
    ):
        stored = {k: state.hyperparams[k] for k in numeric}
        values = values_at(count, stored)
        built = values
        if window_ratio is not None:
            ratio = jnp.asarray(window_ratio, jnp.float32)
            built = {**{k: jnp.float32(v) for k, v in defaults.items()}, **values}
            for name in token_time_names:
                if name in DECAY_NAMES:  # b ** 1 is exp(log b): keep b exact
                    built[name] = jnp.where(ratio == 1, built[name], built[name] ** ratio)
                else:
                    built[name] = built[name] * ratio / lr_factor
        inner = optax.with_extra_args_support(optimizer_factory(**static, **built))
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        return updates, MicrobatchClockState(hyperparams=values, inner_state=inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        del updates, state, params, extra_args
        raise ValueError(
            "on_microbatch_clock(...) must be the inner optimizer of a gqc_jax "
            "controller itself, which runs it at its microbatch clock; to chain "
            "other transforms with the optimizer, chain them inside the factory: "
            "on_microbatch_clock(lambda **kw: optax.chain(clip, optax.adamw(**kw)), ...)."
        )

    return MicrobatchClock(init_fn, update_fn, update_at, token_time_names)
