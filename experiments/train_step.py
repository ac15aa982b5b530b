"""One jitted, sharded train step for any optax transformation (gqc_jax controllers too).

The model is split once into a static graph and a pure dict of parameters; the
train state ``(params, opt_state)`` is a plain pytree, sharded by
:mod:`models.sharding`'s rules and donated to every step. Each call consumes one
*microbatch* and returns its scalar metrics on the device, packed one vector per
dtype (:class:`PackedMetrics`), so the host can read them one step late, in a
transfer or two, without blocking the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gqc_jax
from experiments.optimizer_diagnostics import adam_diagnostics
from experiments.weight_stats import weight_metrics
from models.gpt import GPT, next_token_loss
from models.sharding import batch_sharding, tree_specs


class TrainState(NamedTuple):
    """Parameters, optimizer state and the microbatch counter (it seeds dropout)."""

    params: Any
    opt_state: optax.OptState
    microbatch: jax.Array


@jax.tree_util.register_pytree_node_class
class PackedMetrics(Mapping[str, Any]):
    """A step's scalar metrics as one vector per dtype: the host fetches them in
    a transfer per dtype, not one per metric (25 scalar transfers cost about
    0.3 ms on CPU, 2% of the tiny model's step). It reads as the dict it packs,
    its keys sorted as jit returns a dict: ``metrics["loss"]`` is a 0-d array on
    either side of ``jax.device_get``.

    Args:
      vectors: one 1-d array per dtype.
      where: per metric, in order, its name, its vector and its index there
        (static: the pytree's auxiliary data).
    """

    def __init__(self, vectors: tuple[Any, ...], where: tuple[tuple[str, int, int], ...]):
        self.vectors, self.where = vectors, where
        self._at = {key: (v, i) for key, v, i in where}

    @classmethod
    def pack(cls, metrics: Mapping[str, Any]) -> PackedMetrics:
        """Packs a dict of scalars (inside jit)."""
        groups: dict[Any, list[jax.Array]] = {}
        where = []
        for key in sorted(metrics):
            value = jnp.asarray(metrics[key])
            if value.shape != ():
                raise ValueError(f"metric {key!r} has shape {value.shape}; expected a scalar.")
            group = groups.setdefault(value.dtype, [])
            where.append((key, list(groups).index(value.dtype), len(group)))
            group.append(value)
        return cls(tuple(jnp.stack(group) for group in groups.values()), tuple(where))

    def scalars(self) -> dict[str, Any]:
        """The metrics as Python numbers (one ``tolist`` per vector), in order."""
        lists = [vector.tolist() for vector in self.vectors]
        return {key: lists[v][i] for key, v, i in self.where}

    def __getitem__(self, key: str) -> Any:
        v, i = self._at[key]
        return self.vectors[v][i, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)

    def tree_flatten(self):
        return self.vectors, self.where

    @classmethod
    def tree_unflatten(cls, where, vectors):
        return cls(tuple(vectors), where)


def loss_fn(graphdef, scale: float = 1.0) -> Callable[..., jax.Array]:
    """``loss(params, tokens, dropout_key=None)``: the model's mean next-token
    loss, times ``scale`` (a loss scale for the gradient; 1: none). The one loss
    the training program evaluates and differentiates: the train and evaluation
    steps, the noise probe, the vmapped paired protocol and the rounding study's
    gradient quantiles."""

    def loss(params, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        value = next_token_loss(nnx.merge(graphdef, params), tokens, dropout_key)
        return value if scale == 1.0 else scale * value

    return loss


def loss_and_grads(graphdef, scale: float = 1.0) -> Callable[..., tuple[jax.Array, Any]]:
    """``(params, tokens, dropout_key=None) -> (loss, grads)``: the gradient of
    ``scale`` x the loss (:func:`loss_fn`) and the loss itself, unscaled."""
    value_and_grad = jax.value_and_grad(loss_fn(graphdef, scale))

    def fn(params, tokens: jax.Array, dropout_key: jax.Array | None = None):
        loss, grads = value_and_grad(params, tokens, dropout_key)
        return (loss if scale == 1.0 else loss / scale), grads

    return fn


def split(model: GPT):
    """(graphdef, params as a pure dict) of an NNX model."""
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
    """Parameters by the rules; optimizer leaves shaped like a parameter follow it.
    The result is a ``TrainState`` of ``NamedSharding`` leaves, not arrays."""
    param_specs = tree_specs(state.params, mesh)
    by_shape: dict[tuple[int, ...], PartitionSpec] = {}
    for leaf, spec in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(param_specs, is_leaf=_is_spec), strict=True
    ):
        by_shape.setdefault(jax.numpy.shape(leaf), spec)
    replicated = jax.sharding.PartitionSpec()

    def opt_spec(leaf):
        return by_shape.get(jax.numpy.shape(leaf), replicated) if jnp.ndim(leaf) else replicated

    to_sharding = lambda s: NamedSharding(mesh, s)  # noqa: E731
    return TrainState(
        params=jax.tree.map(to_sharding, param_specs, is_leaf=_is_spec),
        opt_state=jax.tree.map(lambda x: to_sharding(opt_spec(x)), state.opt_state),
        microbatch=to_sharding(replicated),  # type: ignore[arg-type]  # a tree of shardings
    )


def _is_spec(x) -> bool:
    return isinstance(x, jax.sharding.PartitionSpec)


def init_state(model: GPT, tx: optax.GradientTransformation, mesh: Mesh):
    """(graphdef, sharded TrainState, its shardings).

    The optimizer state is built by one jitted call with the target shardings,
    so every leaf is its own buffer, laid out where it belongs and safe to donate
    (``tx.init`` outside jit may hand out one cached zeros buffer for several
    same-shaped leaves).
    """
    graphdef, params = split(model)

    def build(p):
        return TrainState(p, tx.init(p), jnp.zeros([], jnp.int32))

    shardings = state_shardings(jax.eval_shape(build, params), mesh)
    state = jax.jit(build, out_shardings=shardings)(params)
    return graphdef, state, shardings


def make_train_step(
    graphdef,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    shardings: TrainState,
    *,
    dropout_seed: int = 0,
    adam_b1: float | None = None,
    lr_schedule: optax.Schedule | None = None,
    layer_metrics: bool = True,
):
    """``step(state, tokens) -> (state, metrics)``, jitted once, state donated;
    ``metrics`` is a :class:`PackedMetrics` (a mapping of names to scalars).

    Dropout (when the model's config has a rate) draws its key from
    ``dropout_seed`` and the microbatch counter, so runs are reproducible and a
    restored state continues the same stream. Metrics: the loss, the microbatch
    gradient norm, the controller's statistics, per-layer ``weights/`` norms and
    update ratios, and, given the Adam ``adam_b1``, its ``diag/`` diagnostics
    (:func:`experiments.optimizer_diagnostics.adam_diagnostics`), and, given the
    ``lr_schedule`` on the microbatch clock, ``optim/lr``: the learning rate a
    step applies (the schedule at this microbatch times the controller's
    ``lr_factor``). ``layer_metrics=False`` leaves out the per-layer
    ``weights/`` metrics (a pass over the parameters and the update per step).
    """
    base_key = jax.random.key(dropout_seed)
    grad_fn = loss_and_grads(graphdef)

    def step(state: TrainState, tokens: jax.Array):
        key = jax.random.fold_in(base_key, state.microbatch)
        loss, grads = grad_fn(state.params, tokens, key)
        params, opt_state = gqc_jax.microstep(tx, grads, state.opt_state, state.params, value=loss)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        metrics.update(_step_metrics(state, params, opt_state, adam_b1, lr_schedule, layer_metrics))
        return TrainState(params, opt_state, state.microbatch + 1), PackedMetrics.pack(metrics)

    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        step,
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


def _step_metrics(
    state: TrainState, params, opt_state, adam_b1: float | None, lr_schedule, layers=True
) -> dict:
    """Per-layer weight metrics, Adam diagnostics, the controller's statistics and
    the learning rate at the clock ``state.microbatch``."""
    metrics = dict(weight_metrics(state.params, params)) if layers else {}
    if adam_b1 is not None:
        metrics.update(adam_diagnostics(state.opt_state, opt_state, adam_b1))
    try:  # the controller's statistics: stepped, num_draws, its threshold, ...
        metrics.update(gqc_jax.stats(opt_state))
    except ValueError:  # a plain optimizer: every microbatch is a step
        metrics.update(stepped=jnp.ones([], jnp.bool_), num_draws=jnp.zeros([], jnp.int32))
    spikes = gqc_jax.loss_spike_stats(opt_state)  # under gqc_jax.skip_loss_spikes
    if spikes:
        metrics.update(spikes, stepped=metrics["stepped"] & ~spikes["loss_spike"])
    if lr_schedule is not None:
        lr = jnp.asarray(lr_schedule(state.microbatch), jnp.float32)
        metrics["optim/lr"] = lr * metrics.get("lr_factor", jnp.ones([], jnp.float32))
    return metrics


def make_flush_step(
    tx: optax.GradientTransformation,
    mesh: Mesh,
    shardings: TrainState,
    *,
    adam_b1: float | None = None,
    lr_schedule: optax.Schedule | None = None,
):
    """``flush(state) -> (state, metrics)``: the controller steps on its open window
    (:func:`gqc_jax.flush`), jitted, state donated; no microbatch is consumed. The
    metrics are a step's, without the microbatch loss and gradient norm."""

    def flush(state: TrainState):
        updates, opt_state = gqc_jax.flush(tx, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = _step_metrics(state, params, opt_state, adam_b1, lr_schedule)
        return TrainState(params, opt_state, state.microbatch), metrics

    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        flush, in_shardings=(shardings,), out_shardings=(shardings, replicated), donate_argnums=0
    )


def make_eval_step(graphdef, mesh: Mesh, shardings: TrainState):
    """``eval(params, tokens) -> loss``, jitted, nothing donated."""
    return jax.jit(
        loss_fn(graphdef),
        in_shardings=(shardings.params, batch_sharding(mesh)),
        out_shardings=NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )


class OneStepLate:
    """Hands each step's metrics to ``on_metrics`` one step late, so reading them
    never makes the host wait for the device: ``push`` a step's metrics (device
    arrays, with anything else ``on_metrics`` takes) and the previous step's are
    fetched and handed on; ``drain`` hands on the pending ones now (before an
    evaluation, a checkpoint, the end)."""

    def __init__(self, on_metrics: Callable[..., None]):
        self._on_metrics = on_metrics
        self._pending: tuple | None = None

    def push(self, *metrics) -> None:
        self.drain()
        self._pending = metrics

    def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._on_metrics(*jax.device_get(pending))
