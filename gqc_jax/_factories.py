"""Ready-made controllers with the reference's schedules (one per reference factory).

Every factory takes an optax optimizer *factory* (e.g. ``optax.adamw``) and its
keyword arguments (``learning_rate`` is required), and returns one
transformation in which the learning rate, the weight decay and the controller's
hyperparameter all follow the reference's schedules on the microbatch clock.
``num_training_steps`` and ``num_warmup_steps`` therefore count *microbatches*,
as they do in the reference. Learning rate and weight decay schedules are
multipliers of the values given; controller schedules are absolute values.

Differences from the reference, on purpose: schedules are clamped at
``num_training_steps`` (no negative thresholds or weight decay, no complex batch
sizes); an optimizer without a ``weight_decay`` argument simply has none
scheduled (the reference raises ``KeyError``).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import optax

from gqc_jax import _hyperparams, schedules
from gqc_jax._accumulation import Controller
from gqc_jax._clock import MicrobatchClock, on_microbatch_clock
from gqc_jax._gnr import gnr
from gqc_jax._gns import gns
from gqc_jax._gnts import gnts
from gqc_jax._mht import mht
from gqc_jax._sbc import sbc

OptimizerFactory = Callable[..., optax.GradientTransformation]


def _checks_its_numbers(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Checks a factory's ``float`` and ``int`` arguments by their own names before
    the schedules it builds would (and name theirs instead)."""
    signature = inspect.signature(factory)
    kinds = {
        name: p.annotation
        for name, p in signature.parameters.items()
        if p.annotation in ("float", "int", float, int)
    }

    @functools.wraps(factory)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name not in kinds or isinstance(value, jax.Array):
                continue  # arrays (from optax.inject_hyperparams) are checked downstream
            integral = kinds[name] in ("int", int)
            # NumPy's scalars are registered as numbers.Integral / numbers.Real.
            numeric = numbers.Integral if integral else numbers.Real
            if isinstance(value, bool) or not isinstance(value, numeric):
                kind = "an int" if integral else "a real number"
                raise TypeError(f"{name} must be {kind}, got {value!r}.")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}.")
            _hyperparams.check_float32(name, value)
            if integral and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        return factory(*args, **kwargs)

    return checked


def _scaled(base: float, multiplier: optax.Schedule) -> optax.Schedule:
    return lambda count: base * multiplier(count)


def _inner(
    optimizer: OptimizerFactory,
    optimizer_kwargs: dict[str, Any],
    lr_multiplier: optax.Schedule,
    wd_multiplier: optax.Schedule | None,
) -> MicrobatchClock:
    if not callable(optimizer) or isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "optimizer must be an optax optimizer factory such as optax.adamw (the "
            f"function, not an instance), got {optimizer!r}."
        )
    kwargs = dict(optimizer_kwargs)
    nested = kwargs.get("optimizer_kwargs")
    if len(kwargs) == 1 and isinstance(nested, dict):
        # optax.inject_hyperparams binds **optimizer_kwargs as one argument of
        # that name and passes it back as a keyword: unpack it.
        kwargs = dict(nested)
    if "learning_rate" not in kwargs:
        raise TypeError("learning_rate=... is required (the base learning rate).")
    lr = kwargs.pop("learning_rate")
    if callable(lr):
        raise TypeError("learning_rate must be a number here: the factory schedules it.")
    kwargs["learning_rate"] = _scaled(lr, lr_multiplier)
    params = inspect.signature(optimizer).parameters
    if wd_multiplier is not None and "weight_decay" in params:
        wd = kwargs.pop("weight_decay", params["weight_decay"].default)
        if wd is not inspect.Parameter.empty:
            kwargs["weight_decay"] = _scaled(wd, wd_multiplier)
    return on_microbatch_clock(optimizer, **kwargs)


def _conventional_variant(factory: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Gives a ``*_conventional_lr`` wrapper the signature of ``factory``.

    Without it ``optax.inject_hyperparams`` (which binds arguments by signature)
    would see only ``*args, **kwargs``.
    """

    def decorate(wrapper: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(factory)
        kept = [p for p in signature.parameters.values() if p.name != "conventional_lr"]
        setattr(wrapper, "__signature__", signature.replace(parameters=kept))  # noqa: B010
        return wrapper

    return decorate


def _lr(conventional: bool, warmup: int, total: int):
    if conventional:
        return schedules.cosine_annealing_with_warmup(1.0, 0.0, warmup, total), None
    return (
        schedules.constant_with_warmup(1.0, warmup),
        schedules.cosine_annealing_with_warmup(1.0, 0.0, warmup, total),
    )


@_checks_its_numbers
def gnts_with_cosine_annealing(
    optimizer: OptimizerFactory,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    initial_threshold: float = 0.95,
    final_threshold: float = 0.25,
    warmup_multiplier: float = 10.0,
    max_draws: int = 64,
    conventional_lr: bool = False,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """GNTS with the reference's flagship schedule.

    Threshold: inverse warmup from ``initial * warmup_multiplier`` down to
    ``initial`` over the warmup, then a quarter cosine to ``final``. Learning
    rate: linear warmup then constant (``conventional_lr``: warmup then quarter
    cosine to 0). Weight decay: warmup then quarter cosine to 0 (not scheduled
    with ``conventional_lr``).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts_with_cosine_annealing(
      ...     optax.adamw, num_training_steps=160, num_warmup_steps=20, learning_rate=3e-4)
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> float(gqc_jax.stats(state)["gradient_norm_threshold"])
      9.5
    """
    lr, wd = _lr(conventional_lr, num_warmup_steps, num_training_steps)
    threshold = schedules.cosine_annealing_with_inverse_warmup(
        initial_threshold, final_threshold, num_warmup_steps, num_training_steps, warmup_multiplier
    )
    return gnts(
        _inner(optimizer, optimizer_kwargs, lr, wd),
        threshold,
        max_draws=max_draws,
        axis_name=axis_name,
    )


@_conventional_variant(gnts_with_cosine_annealing)
def gnts_with_cosine_annealing_conventional_lr(*args, **kwargs):
    """:func:`gnts_with_cosine_annealing` with ``conventional_lr=True``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts_with_cosine_annealing_conventional_lr(
      ...     optax.adamw, num_training_steps=100, num_warmup_steps=10, learning_rate=1e-3)
      >>> float(gqc_jax.stats(tx.init({"w": jnp.zeros(2)}))["gradient_norm_threshold"])
      9.5
    """
    return gnts_with_cosine_annealing(*args, conventional_lr=True, **kwargs)


@_checks_its_numbers
def gnr_with_cosine_annealing(
    optimizer: OptimizerFactory,
    initial_norm: float,
    final_norm: float,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    conventional_lr: bool = False,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """GNR whose target norm warms up from 0 to ``initial_norm``, then anneals to ``final_norm``.

    Learning rate and weight decay as in :func:`gnts_with_cosine_annealing`.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnr_with_cosine_annealing(
      ...     optax.adamw, 1.0, 0.3, num_training_steps=100, num_warmup_steps=10, learning_rate=1e-3)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(11):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params, value=2.0)
      >>> round(float(gqc_jax.stats(state)["target_gradient_norm"]), 4)   # end of the warmup
      1.0
    """
    lr, wd = _lr(conventional_lr, num_warmup_steps, num_training_steps)
    target = schedules.cosine_annealing_with_warmup(
        initial_norm, final_norm, num_warmup_steps, num_training_steps
    )
    return gnr(_inner(optimizer, optimizer_kwargs, lr, wd), target, axis_name=axis_name)


@_conventional_variant(gnr_with_cosine_annealing)
def gnr_with_cosine_annealing_conventional_lr(*args, **kwargs):
    """:func:`gnr_with_cosine_annealing` with ``conventional_lr=True``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnr_with_cosine_annealing_conventional_lr(
      ...     optax.adamw, 1.0, 0.3, num_training_steps=100, num_warmup_steps=10, learning_rate=1e-3)
      >>> float(gqc_jax.stats(tx.init({"w": jnp.zeros(2)}))["target_gradient_norm"])
      0.0
    """
    return gnr_with_cosine_annealing(*args, conventional_lr=True, **kwargs)


@_checks_its_numbers
def gns_with_cosine_annealing(
    optimizer: OptimizerFactory,
    initial_tolerance: float,
    final_tolerance: float,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    warmup_multiplier: float = 10.0,
    max_draws: int = 64,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """GNS with an inverse-warmup, quarter-cosine tolerance; lr warmup then cosine to 0.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gns_with_cosine_annealing(
      ...     optax.adamw, 0.02, 0.005, num_training_steps=100, num_warmup_steps=10,
      ...     learning_rate=1e-3)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(1):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params, value=2.0)
      >>> round(float(gqc_jax.stats(state)["noise_tolerance"]), 4)   # 10x the initial tolerance
      0.2
    """
    lr = schedules.cosine_annealing_with_warmup(1.0, 0.0, num_warmup_steps, num_training_steps)
    tolerance = schedules.cosine_annealing_with_inverse_warmup(
        initial_tolerance, final_tolerance, num_warmup_steps, num_training_steps, warmup_multiplier
    )
    return gns(
        _inner(optimizer, optimizer_kwargs, lr, None),
        tolerance,
        max_draws=max_draws,
        axis_name=axis_name,
    )


@_checks_its_numbers
def gns_default(
    optimizer: OptimizerFactory,
    tolerance: float,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    max_draws: int = 64,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """GNS with a constant tolerance after an inverse warmup from 20x; lr warmup then cosine.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gns_default(
      ...     optax.sgd, 0.01, num_training_steps=100, num_warmup_steps=10, learning_rate=0.1,
      ...     momentum=0.9)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(11):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params, value=2.0)
      >>> round(float(gqc_jax.stats(state)["noise_tolerance"]), 4)
      0.01
    """
    lr = schedules.cosine_annealing_with_warmup(1.0, 0.0, num_warmup_steps, num_training_steps)
    schedule = schedules.constant_with_inverse_warmup(tolerance, num_warmup_steps, 20.0)
    return gns(
        _inner(optimizer, optimizer_kwargs, lr, None),
        schedule,
        max_draws=max_draws,
        axis_name=axis_name,
    )


@_checks_its_numbers
def mht_with_warmup(
    optimizer: OptimizerFactory,
    confidence_level: float,
    percent_error_threshold: float,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    update_beta: float = 0.01,
    max_draws: int = 64,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """MHT whose confidence and percent error both ramp linearly from 0, then hold.

    At the first microbatch both are 0, an exact tie that steps (as in the
    reference). Learning rate: warmup then quarter cosine to 0.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.mht_with_warmup(
      ...     optax.adamw, 0.9, 0.05, num_training_steps=100, num_warmup_steps=10, learning_rate=1e-3)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(11):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params, value=2.0)
      >>> round(float(gqc_jax.stats(state)["confidence_level"]), 4)
      0.9
    """
    lr = schedules.cosine_annealing_with_warmup(1.0, 0.0, num_warmup_steps, num_training_steps)
    confidence = schedules.cosine_annealing_with_warmup(
        confidence_level, confidence_level, num_warmup_steps, num_training_steps
    )
    percent = schedules.cosine_annealing_with_warmup(
        percent_error_threshold, percent_error_threshold, num_warmup_steps, num_training_steps
    )
    return mht(
        _inner(optimizer, optimizer_kwargs, lr, None),
        confidence,
        percent,
        update_beta=update_beta,
        max_draws=max_draws,
        axis_name=axis_name,
    )


@_checks_its_numbers
def sbc_with_polynomial(
    optimizer: OptimizerFactory,
    physical_batch_size: int,
    initial_batch_size: float,
    final_batch_size: float,
    num_training_steps: int,
    num_warmup_steps: int,
    *,
    polynomial_power: float = 2.0,
    max_draws: int = 64,
    conventional_lr: bool = False,
    axis_name=None,
    **optimizer_kwargs: Any,
) -> Controller:
    """SBC whose logical batch warms up from 0 to ``initial``, then grows to ``final``.

    Growth: ``final - (final - initial)(1 - p)^P``, held at ``final`` after the
    horizon. Learning rate and weight decay as in :func:`gnts_with_cosine_annealing`.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc_with_polynomial(
      ...     optax.adamw, 32, 64, 1024, num_training_steps=100, num_warmup_steps=10,
      ...     learning_rate=1e-3)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for _ in range(11):
      ...     _, state = tx.update({"w": jnp.ones(3)}, state, params, value=2.0)
      >>> round(float(gqc_jax.stats(state)["logical_batch_size"]), 4)
      64.0
    """
    lr, wd = _lr(conventional_lr, num_warmup_steps, num_training_steps)
    logical = schedules.polynomial_schedule_with_warmup(
        initial_batch_size, final_batch_size, num_warmup_steps, num_training_steps, polynomial_power
    )
    return sbc(
        _inner(optimizer, optimizer_kwargs, lr, wd),
        logical,
        physical_batch_size,
        max_draws=max_draws,
        axis_name=axis_name,
    )


@_conventional_variant(sbc_with_polynomial)
def sbc_with_polynomial_conventional_lr(*args, **kwargs):
    """:func:`sbc_with_polynomial` with ``conventional_lr=True``.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc_with_polynomial_conventional_lr(
      ...     optax.adamw, 32, 64, 1024, num_training_steps=100, num_warmup_steps=10,
      ...     learning_rate=1e-3)
      >>> float(gqc_jax.stats(tx.init({"w": jnp.zeros(2)}))["physical_batch_size"])
      32.0
    """
    return sbc_with_polynomial(*args, conventional_lr=True, **kwargs)
