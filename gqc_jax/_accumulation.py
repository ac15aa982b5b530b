"""The adaptive-accumulation state machine shared by every GQC controller.

Each ``update`` call takes the gradient of one *microbatch*. The controller keeps
a running mean of the window's gradients, asks its *criterion* whether the mean
is good enough, and either returns exact zeros (keep drawing) or runs the inner
optimizer once on the window mean (step). Everything is traced: the decision is a
``bool[]`` array, branching uses ``jnp.where`` and one ``lax.cond`` around the
inner optimizer, and nothing is read back to the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from gqc_jax import _hyperparams
from gqc_jax._clock import MicrobatchClock
from gqc_jax._tree import (
    check_floating,
    check_same_structure,
    distinct_buffers,
    global_norm,
    has_finite_norm,
)

# ``lr_scaling``: no scaling, a named rule, or the power p of (k / reference_draws)^p.
LrScaling = Literal["sqrt", "linear"] | float | None


class Draw(NamedTuple):
    """What a criterion sees about the microbatch just drawn.

    Attributes:
      count: ``int32[]`` microbatch clock, the number of ``update`` calls before
        this one (schedules are evaluated here).
      num_draws: ``int32[]`` draws in the current window, this one included.
      max_draws: the controller's draw cap (a Python int).
      grads: this microbatch's gradient.
      mean: the window's running mean, this draw included (accumulator dtype).
      mean_norm: ``float32[]`` global L2 norm of ``mean``.
      value: ``float32[]`` this microbatch's loss (``value=``), None if not given.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> class Always:   # a criterion that reads the Draw it is given
      ...     def init(self, params): return ()
      ...     def should_step(self, state, draw): return draw.count >= 0, state
      ...     def reset(self, state): return state
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), Always())
      >>> params = {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> bool(state.stepped)
      True
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    num_draws: jax.Array
    max_draws: int
    grads: optax.Updates
    mean: optax.Updates
    mean_norm: jax.Array
    value: jax.Array | None
    axis_name: Hashable | None = None


class Criterion(Protocol):
    """A step rule for :func:`adaptive_accumulation`.

    A criterion is a small pure object. ``init`` builds its state (a pytree of
    arrays whose structure never changes); ``should_step`` looks at one
    :class:`Draw` and returns ``(passes, new_state)`` with ``passes`` a ``bool[]``;
    ``reset`` maps the state to the start of a new window and is applied when the
    controller steps (for any reason, the draw cap included). If the state is a
    ``NamedTuple``, ``gqc_jax.stats`` reports its numeric scalar fields by name.

    Two optional methods refine the state machine: ``accept(state, draw)``
    returns a ``bool[]``, False to skip the microbatch as if it were non-finite
    (default: always accept); ``prepare(state, mean, mean_norm)`` maps the
    window mean to what the inner optimizer sees on a step (default: identity).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> class TwoDraws:   # step every second microbatch
      ...     def init(self, params): return ()
      ...     def should_step(self, state, draw): return draw.num_draws >= 2, state
      ...     def reset(self, state): return state
      >>> tx = gqc_jax.adaptive_accumulation(optax.sgd(0.1), TwoDraws())
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for _ in range(4):
      ...     _, state = tx.update({"w": jnp.ones(2)}, state, params)
      >>> int(state.num_steps)
      2
    """

    def init(self, params: optax.Params) -> Any: ...

    def should_step(self, state: Any, draw: Draw) -> tuple[jax.Array, Any]: ...

    def reset(self, state: Any) -> Any: ...


class AdaptiveAccumulationState(NamedTuple):
    """State of an adaptive-accumulation controller.

    Attributes:
      num_batches: ``int32[]`` ``update`` calls so far (the microbatch clock).
      num_steps: ``int32[]`` inner optimizer steps taken.
      num_draws: ``int32[]`` finite microbatches in the current window.
      last_num_draws: ``int32[]`` window size of the last step (0 before it).
      last_grad_norm: ``float32[]`` norm of the window mean at the last step.
      lr_factor: ``float32[]`` the factor ``lr_scaling`` applied to the last
        step's update (1 before the first step and without ``lr_scaling``).
      num_skipped: ``int32[]`` non-finite microbatches skipped so far.
      stepped: ``bool[]`` whether the last ``update`` call stepped.
      value_mean: ``float32[]`` running mean of the window's losses (``value=``).
      flushing: ``bool[]`` set by :func:`gqc_jax.flush` (False otherwise): the
        next ``update`` steps on the open window instead of drawing, and
        clears it.
      acc: running mean of the window's gradients, in the accumulator dtype. It is
        reset lazily: after a step only ``num_draws`` goes to 0 and the next
        microbatch overwrites ``acc``, so ``acc`` is meaningful only while
        ``num_draws > 0`` (see :func:`current_mean`).
      inner_state: the inner optimizer's state; it advances only on steps.
      criterion_state: the criterion's state.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> params = {"w": jnp.zeros(2)}
      >>> tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.0, max_draws=3)
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...     _, state = tx.update({"w": jnp.ones(2)}, state, params)
      >>> int(state.num_batches), int(state.num_draws), int(state.num_steps)
      (2, 2, 0)
    """

    num_batches: jax.Array
    num_steps: jax.Array
    num_draws: jax.Array
    last_num_draws: jax.Array
    last_grad_norm: jax.Array
    lr_factor: jax.Array
    num_skipped: jax.Array
    stepped: jax.Array
    value_mean: jax.Array
    flushing: jax.Array
    acc: optax.Updates
    inner_state: optax.OptState
    criterion_state: Any


class Controller(optax.GradientTransformationExtraArgs):
    """A gqc_jax controller: an optax transformation that can also apply its step.

    Besides ``init`` and ``update``, a controller has
    ``microstep(grads, state, params, **extra_args) -> (params, state)``, the
    same result as ``update`` followed by ``optax.apply_updates``, with the
    update applied inside the step branch: a microbatch that does not step
    writes neither zero updates nor parameters. :func:`gqc_jax.microstep`
    calls it. :func:`adaptive_accumulation` (hence every controller) and
    :func:`gqc_jax.skip_loss_spikes` around a controller return one.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc(optax.sgd(1.0), logical_batch_size=2, physical_batch_size=1)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 3.0):
      ...     params, state = tx.microstep({"w": jnp.full(2, g)}, state, params)
      >>> print(params["w"])
      [-2. -2.]
    """

    microstep: Callable[..., tuple[optax.Params, optax.OptState]]

    def __new__(
        cls,
        init: optax.TransformInitFn,
        update: optax.TransformUpdateExtraArgsFn,
        microstep: Callable[..., tuple[optax.Params, optax.OptState]],
    ) -> Controller:
        self = super().__new__(cls, init, update)
        self.microstep = microstep
        return self

    def _replace(self, **fields: Any) -> optax.GradientTransformationExtraArgs:
        """A plain optax transformation with ``fields`` replaced: ``microstep``
        fuses the original ``update``, so it does not carry over to a new one
        (:func:`gqc_jax.microstep` then runs ``update`` and applies it)."""
        return optax.GradientTransformationExtraArgs(**{**self._asdict(), **fields})


def _check_inner(inner: object) -> optax.GradientTransformationExtraArgs:
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(
            "inner must be an optax.GradientTransformation (e.g. optax.adamw(3e-4)), "
            f"got {inner!r} of type {type(inner).__name__}."
        )
    return optax.with_extra_args_support(inner)


def _check_criterion(criterion: object) -> None:
    missing = [
        name
        for name in ("init", "should_step", "reset")
        if not callable(getattr(criterion, name, None))
    ]
    if missing:
        raise TypeError(
            f"criterion must define init, should_step and reset; {criterion!r} "
            f"lacks {', '.join(missing)}."
        )


def current_mean(state: AdaptiveAccumulationState) -> optax.Updates:
    """The current window's mean gradient (zeros when the window is empty).

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.0, max_draws=4)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 3.0):
      ...     _, state = tx.update({"w": jnp.full(2, g)}, state, params)
      >>> gqc_jax.current_mean(state)["w"]
      Array([2., 2.], dtype=float32)
    """
    return jax.tree.map(lambda a: jnp.where(state.num_draws > 0, a, jnp.zeros_like(a)), state.acc)


def adaptive_accumulation(
    inner: optax.GradientTransformation,
    criterion: Criterion,
    *,
    max_draws: int = 64,
    accumulator_dtype: jax.typing.DTypeLike = jnp.float32,
    axis_name: Hashable | None = None,
    lr_scaling: LrScaling = None,
    reference_draws: float = 1,
    token_time: bool = False,
) -> Controller:
    r"""Accumulates microbatch gradients until ``criterion`` passes, then steps.

    Call ``update`` once per microbatch. With :math:`g_1, \dots, g_n` the finite
    microbatch gradients of the current window, the controller keeps the running
    mean

    .. math::
      \bar g_n = \bar g_{n-1} + (g_n - \bar g_{n-1}) / n, \qquad \bar g_1 = g_1,

    and steps when ``criterion`` passes or :math:`n \ge` ``max_draws``. A step runs
    the inner optimizer once on :math:`\bar g_n` (cast to the gradients' dtype)
    and returns its updates; every other call returns exact zeros and leaves the
    inner state untouched. The loss passed as ``value=`` is averaged over the
    window the same way and forwarded to the inner optimizer as ``value=``, and
    a ``grad=`` (what a line search such as ``optax.lbfgs`` reads) as the window
    mean the inner optimizer steps on. Other extra arguments reach the inner
    optimizer as given. An inner built by :func:`gqc_jax.on_microbatch_clock`
    is run at the controller's microbatch clock
    (:meth:`MicrobatchClock.update_at`); no optimizer receives an argument it
    was not given.

    A microbatch whose gradient (or ``value``) has a NaN or inf, or whose
    squared global norm overflows float32 (elements beyond about 1.8e19), is
    skipped: the accumulator, the window count and the criterion state are left
    as they were, ``num_skipped`` is incremented, and the call returns zeros. The microbatch
    clock ``num_batches`` counts every call, skipped ones included.

    Batch-aware stepping: a window of :math:`k` microbatches is a batch
    :math:`k` times larger, and practitioners raise the learning rate with the
    batch (the square-root rule for Adam-family optimizers, the linear rule for
    SGD). With ``lr_scaling`` (the power :math:`p`: ``"sqrt"`` is 1/2,
    ``"linear"`` 1) a step whose window holds :math:`k` finite microbatches
    returns the inner update multiplied by

    .. math::
      f = (k / k_\text{ref})^p, \qquad k_\text{ref} = \text{reference\_draws},

    reported as ``lr_factor`` by :func:`gqc_jax.stats`. For an optimizer whose
    update is the learning rate times a direction computed without it (optax's
    ``sgd`` with or without momentum, ``adam``, ``adamw`` with its weight decay,
    ``lion``, ``contrib.muon``, ``adafactor`` without ``weight_decay_rate`` and
    ``momentum``), this is the update the inner optimizer would give at learning
    rate :math:`\eta f`: its state does not depend on the learning rate. For
    others (a stateful stage after the learning rate, e.g. ``adafactor``'s
    momentum, or weight decay added after it) the final update is scaled, which
    is not the same as scaling their learning rate.

    Token-time clocks: Adam's moments decay per *step* (:math:`b_1, b_2`), and
    AdamW's weight decay acts per step, so when a window grows to :math:`k`
    microbatches their timescales stretch :math:`k`-fold in tokens. With
    ``token_time=True`` (the inner optimizer built by
    :func:`gqc_jax.on_microbatch_clock`) a step on a window of :math:`k` runs
    the inner optimizer with each decay :math:`b` replaced by

    .. math::
      b^{r}, \qquad r = k / k_\text{ref},

    and each weight decay :math:`\lambda` by :math:`\lambda\, r / f` (with
    :math:`f` the ``lr_scaling`` factor, 1 without it). An exponential average
    :math:`m \leftarrow b^r m + (1 - b^r)\,\bar g` then gives the window's
    microbatches together the weight :math:`1 - b^r` that :math:`r` steps at
    :math:`b` would give them, and everything before the window decays by
    :math:`b` per :math:`k_\text{ref}` microbatches, whatever the windows:
    half-lives are fixed in microbatches (tokens), as Marek et al. (2025)
    propose for :math:`b_2`. The decoupled weight decay applied per step,
    :math:`\eta f \cdot \lambda r / f = \eta \lambda r`, is that of
    :math:`r` steps at :math:`\eta\lambda`, so AdamW's timescale in tokens
    (Bergsma et al., 2025) stays fixed under any ``lr_scaling``. Optax's bias
    correction counts steps (:math:`1 - b^{r n}` after :math:`n` steps):
    exact for windows of one size; while windows vary it differs from the
    token-time :math:`1 - b^{M / k_\text{ref}}` (:math:`M` microbatches
    stepped on) until both are near 1, after a few :math:`1 / (1 - b)`
    microbatches. The decays rescaled are those in
    :attr:`MicrobatchClock.token_time_names` (``b1``, ``b2``, ``momentum``,
    ...), the factory's defaults included.

    Memory: one accumulator the size of the gradients, plus the criterion's
    O(``max_draws``) scalars. The accumulator is reset lazily (a step only zeroes
    the counter), so a non-step call is one fused pass over the gradients.

    Args:
      inner: the optimizer to run on each window mean, any optax transformation.
      criterion: the step rule, see :class:`Criterion`.
      max_draws: the draw cap; a window that reaches it steps regardless.
      accumulator_dtype: dtype of the running mean (float32 by default).
      axis_name: for use inside ``shard_map``/``pmap``: the data-parallel axis.
        Pass each device's *own* microbatch gradient and loss; the controller
        averages them over the axis (``lax.pmean``), criteria gather per-device
        statistics over it, and every device takes the same decision. Under plain
        ``jax.jit`` with sharded arrays leave it None: the arrays are global and
        norms are already the true global norms.
      lr_scaling: None (the inner update as it is), ``"sqrt"``, ``"linear"`` or
        a power :math:`p \ge 0`: scale each step's update by
        :math:`(k / k_\text{ref})^p` for a window of :math:`k` microbatches.
      reference_draws: :math:`k_\text{ref} > 0`, the window size at which the
        inner optimizer's hyperparameters apply unscaled (``lr_scaling`` and
        ``token_time``).
      token_time: rescale the inner optimizer's decays and weight decay with
        the window (above); the inner must come from
        :func:`gqc_jax.on_microbatch_clock`.

    Returns:
      A :class:`Controller` (an ``optax.GradientTransformationExtraArgs``)
      whose state is an :class:`AdaptiveAccumulationState`.

    Example:
      >>> import jax.numpy as jnp, optax, gqc_jax
      >>> tx = gqc_jax.sbc(optax.sgd(1.0), logical_batch_size=4, physical_batch_size=2)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 3.0):
      ...     updates, state = tx.update({"w": jnp.full(2, g)}, state, params)
      ...     print(updates["w"])
      [0. 0.]
      [-2. -2.]

      With the square-root rule, a window of 4 steps at twice the learning rate:

      >>> tx = gqc_jax.sbc(optax.sgd(1.0), 4, 1, lr_scaling="sqrt")
      >>> state = tx.init(params)
      >>> for _ in range(4):
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      >>> print(updates["w"], float(gqc_jax.stats(state)["lr_factor"]))
      [-2. -2.] 2.0
    """
    clock = inner if isinstance(inner, MicrobatchClock) else None
    token_time = _hyperparams.validate_token_time(token_time, clock)
    inner = _check_inner(inner)
    _check_criterion(criterion)
    max_draws = _hyperparams.validate_max_draws(max_draws)
    lr_power = _hyperparams.validate_lr_scaling(lr_scaling)
    lr_reference = _hyperparams.validate_reference_draws(reference_draws)
    accumulator_dtype = jnp.dtype(accumulator_dtype)
    if not jnp.issubdtype(accumulator_dtype, jnp.floating):
        raise ValueError(f"accumulator_dtype must be a floating dtype, got {accumulator_dtype}.")

    def init_fn(params: optax.Params) -> AdaptiveAccumulationState:
        zero = jnp.zeros([], jnp.int32)
        state = AdaptiveAccumulationState(
            num_batches=zero,
            num_steps=zero,
            num_draws=zero,
            last_num_draws=zero,
            last_grad_norm=jnp.zeros([], jnp.float32),
            lr_factor=jnp.ones([], jnp.float32),
            num_skipped=zero,
            stepped=jnp.zeros([], jnp.bool_),
            value_mean=jnp.zeros([], jnp.float32),
            flushing=jnp.zeros([], jnp.bool_),
            acc=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            inner_state=inner.init(params),
            criterion_state=criterion.init(params),
        )
        return distinct_buffers(state)  # donatable even when built outside jit

    def inner_update(count, window, factor, updates, inner_state, params, **args):
        """The inner optimizer's update; a MicrobatchClock also gets the clock
        and, with token_time, the window."""
        if clock is None:
            return inner.update(updates, inner_state, params, **args)
        if token_time:
            ratio = window.astype(jnp.float32) / lr_reference
            args = {**args, "window_ratio": ratio, "lr_factor": factor}
        return clock.update_at(count, updates, inner_state, params, **args)

    def accumulate_and_decide(grads, state, extra_args):
        """Draws one microbatch: the new state (inner state as it was), whether
        to step, the criterion state the decision saw and the step's arguments."""
        check_same_structure(grads, state.acc, "parameters")
        check_floating(grads)
        # Set by gqc_jax.flush: step on the open window; this gradient is not drawn.
        flushing = state.flushing
        has_value = extra_args.get("value") is not None
        value = jnp.asarray(extra_args["value"] if has_value else 0.0, jnp.float32)
        if value.shape != ():
            raise ValueError(f"value= must be a scalar loss, got shape {value.shape}.")
        step_args = {k: v for k, v in extra_args.items() if k != "value"}
        local_grads, local_value = grads, value
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            value = jax.lax.pmean(value, axis_name)

        finite = has_finite_norm(grads) & ~flushing
        if has_value:
            finite = finite & jnp.isfinite(value)
        fresh = state.num_draws == 0
        n = state.num_draws + 1
        # Lazy reset: a fresh window overwrites the stale accumulator in the same
        # elementwise pass that accumulates, so the buffer is updated in place.
        mean = jax.tree.map(
            lambda g, a: jnp.where(
                finite,
                jnp.where(
                    fresh, g.astype(a.dtype), a + (g.astype(a.dtype) - a) / n.astype(a.dtype)
                ),
                a,
            ),
            grads,
            state.acc,
        )
        value_mean = jnp.where(fresh, value, state.value_mean + (value - state.value_mean) / n)
        value_mean = jnp.where(finite, value_mean, state.value_mean)
        mean_norm = global_norm(mean)
        draw = Draw(
            count=state.num_batches,
            num_draws=n,
            max_draws=max_draws,
            grads=local_grads,
            mean=mean,
            mean_norm=mean_norm,
            value=local_value if has_value else None,
            axis_name=axis_name,
        )
        passes, criterion_state = criterion.should_step(state.criterion_state, draw)
        passes = jnp.asarray(passes)
        if passes.shape != () or passes.dtype != jnp.bool_:
            raise ValueError(
                "criterion.should_step must return a bool[] decision, got "
                f"{passes.dtype}{list(passes.shape)}."
            )
        accept = getattr(criterion, "accept", None)
        if accept is not None:
            accepted = jnp.asarray(accept(state.criterion_state, draw), jnp.bool_)
            mean = optax.tree.where(accepted, mean, state.acc)
            value_mean = jnp.where(accepted, value_mean, state.value_mean)
            finite = finite & accepted
        # A flush steps on the open window as it is (its mean, loss, criterion
        # state and n - 1 draws: finite is False, so mean is the accumulator).
        step = (finite & (passes | (n >= max_draws))) | (flushing & (state.num_draws > 0))
        criterion_state = optax.tree.where(flushing, state.criterion_state, criterion_state)
        window = jnp.where(flushing, state.num_draws, n)
        decided_state = criterion_state
        criterion_state = optax.tree.where(
            step,
            criterion.reset(criterion_state),
            optax.tree.where(finite, criterion_state, state.criterion_state),
        )
        if has_value:  # the inner optimizer sees the window's mean loss
            step_args["value"] = value_mean
        lr_factor = jnp.ones([], jnp.float32)
        if lr_power is not None:
            factor = _hyperparams.lr_factor(window, lr_reference, lr_power)
            lr_factor = jnp.where(step, factor, state.lr_factor)

        new_n = jnp.where(finite, n, state.num_draws)
        new_state = AdaptiveAccumulationState(
            num_batches=jnp.where(
                flushing, state.num_batches, optax.safe_increment(state.num_batches)
            ),
            num_steps=jnp.where(step, optax.safe_increment(state.num_steps), state.num_steps),
            num_draws=jnp.where(step, 0, new_n).astype(jnp.int32),
            last_num_draws=jnp.where(step, window, state.last_num_draws).astype(jnp.int32),
            last_grad_norm=jnp.where(step, mean_norm, state.last_grad_norm),
            lr_factor=lr_factor,
            num_skipped=jnp.where(
                finite | flushing, state.num_skipped, optax.safe_increment(state.num_skipped)
            ),
            stepped=step,
            value_mean=value_mean,
            flushing=jnp.zeros_like(flushing),
            acc=mean,
            inner_state=state.inner_state,
            criterion_state=criterion_state,
        )
        return new_state, step, decided_state, step_args

    def core(grads, state, params, extra_args, apply_to_params):
        """``update`` (returns updates) or ``microstep`` (returns new params)."""
        new_state, step, decided_state, step_args = accumulate_and_decide(grads, state, extra_args)
        prepare = getattr(criterion, "prepare", None)

        def do_step(mean, inner_state, params):
            # XLA turns a conditional whose branches hold only elementwise ops
            # (AdamW's update is one) into a select that runs both branches on
            # every call; on GPU that ran the inner optimizer on every microbatch.
            # A barrier is not elementwise, so the conditional stays.
            mean = jax.lax.optimization_barrier(mean)
            if prepare is not None:
                mean = prepare(decided_state, mean, new_state.last_grad_norm)
            mean = optax.tree.cast_like(mean, grads)
            args = {**step_args, "grad": mean} if "grad" in step_args else step_args
            updates, new_inner_state = inner_update(
                state.num_batches,
                new_state.last_num_draws,
                new_state.lr_factor,
                mean,
                inner_state,
                params,
                **args,
            )
            if lr_power is not None:
                factor = new_state.lr_factor
                updates = jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
            # As optax.MultiSteps does: the state keeps its dtypes (an inner
            # optimizer fed float32 gradients may promote bfloat16 moments).
            inner_state = optax.tree.cast_like(new_inner_state, inner_state)
            if apply_to_params:
                return optax.apply_updates(params, updates), inner_state
            return updates, inner_state

        def no_step(mean, inner_state, params):
            if apply_to_params:
                return params, inner_state
            # Shaped as do_step's updates (under shard_map, from the averaged mean).
            shapes, _ = jax.eval_shape(
                functools.partial(inner_update, **step_args),
                state.num_batches,
                new_state.last_num_draws,
                new_state.lr_factor,
                optax.tree.cast_like(mean, grads),
                inner_state,
                params,
            )
            return optax.tree.zeros_like(shapes), inner_state

        out, inner_state = jax.lax.cond(
            step, do_step, no_step, new_state.acc, state.inner_state, params
        )
        return out, new_state._replace(inner_state=inner_state)

    def update_fn(grads, state, params=None, **extra_args):
        return core(grads, state, params, extra_args, apply_to_params=False)

    def microstep_fn(grads, state, params, **extra_args):
        return core(grads, state, params, extra_args, apply_to_params=True)

    return Controller(init_fn, update_fn, microstep_fn)


def request_flush(opt_state: optax.OptState) -> optax.OptState:
    """``opt_state`` with every controller state's ``flushing`` set (gqc_jax.flush)."""
    return jax.tree.map(
        lambda s: (
            s._replace(flushing=jnp.ones_like(s.flushing))
            if isinstance(s, AdaptiveAccumulationState)
            else s
        ),
        opt_state,
        is_leaf=_is_controller_state,
    )


def _is_controller_state(x: Any) -> bool:
    return isinstance(x, AdaptiveAccumulationState)


def controller_states(opt_state: optax.OptState) -> list[tuple[Any, AdaptiveAccumulationState]]:
    """``(path, state)`` of every outermost controller state inside ``opt_state``."""
    flat = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_controller_state)[0]
    return [(path, leaf) for path, leaf in flat if _is_controller_state(leaf)]


def flush_requested(opt_state: optax.OptState) -> jax.Array | None:
    """Whether ``opt_state`` holds a controller state set to flush; None if it
    holds no controller state."""
    flags = [s.flushing for _, s in controller_states(opt_state)]
    return functools.reduce(jnp.logical_or, flags) if flags else None
