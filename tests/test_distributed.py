"""Sharded global arrays under jit, and shard_map with axis_name, on 8 CPU devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gqc_jax
from tests.helpers import random_grads

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (XLA_FLAGS host device count)"
)

TEMPLATE = {"w": jnp.zeros((8, 6)), "b": jnp.zeros((16,))}


def _mesh():
    return jax.make_mesh((8,), ("data",))


CONTROLLERS = {
    "gnts": lambda axis=None: gqc_jax.gnts(optax.adamw(1e-2), 1.3, max_draws=6, axis_name=axis),
    "gns": lambda axis=None: gqc_jax.gns(optax.adamw(1e-2), 0.02, max_draws=6, axis_name=axis),
    "mht": lambda axis=None: gqc_jax.mht(optax.adamw(1e-2), 0.9, 0.05, max_draws=6, axis_name=axis),
    "sbc": lambda axis=None: gqc_jax.sbc(optax.adamw(1e-2), 24, 8, max_draws=6, axis_name=axis),
    "gnr": lambda axis=None: gqc_jax.gnr(optax.adamw(1e-2), 0.5, axis_name=axis),
}


def _run(tx, params, grads, losses, shard=None):
    state = tx.init(params)
    update = jax.jit(tx.update)
    stepped = []
    for g, loss in zip(grads, losses, strict=True):
        if shard is not None:
            g = jax.device_put(g, shard)
        updates, state = update(g, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        stepped.append(bool(state.stepped))
    return stepped, params, state


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_sharded_arrays_under_jit_equal_the_single_device_run(name):
    mesh = _mesh()
    shard = {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P("data"))}
    grads = random_grads(40, 30, template=TEMPLATE, scale=0.5, offset=0.05)
    losses = list(2.0 + 0.1 * np.random.default_rng(0).standard_normal(30))
    params = jax.tree.map(lambda p: p + 0.3, TEMPLATE)
    ref_stepped, ref_params, _ = _run(CONTROLLERS[name](), params, grads, losses)
    sharded_params = jax.device_put(params, shard)
    stepped, out_params, state = _run(CONTROLLERS[name](), sharded_params, grads, losses, shard)
    assert stepped == ref_stepped
    assert 0 < sum(stepped)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, atol=1e-6, rtol=0), out_params, ref_params
    )
    # The accumulator is sharded like the parameters: one param-sized buffer, split.
    for acc, p in zip(jax.tree.leaves(state.acc), jax.tree.leaves(out_params), strict=True):
        assert acc.sharding.is_equivalent_to(p.sharding, acc.ndim)


def _shard_map_run(tx, params, per_device_grads, per_device_losses):
    mesh = _mesh()

    def step(g, loss, state, params):
        g = jax.tree.map(lambda x: x[0], g)
        updates, state = tx.update(g, state, params, value=loss[0])
        return optax.apply_updates(params, updates), state, state.stepped[None]

    sharded = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P("data"), P("data"), P(), P()),
            out_specs=(P(), P(), P("data")),
        )
    )
    split = NamedSharding(mesh, P("data"))
    state = tx.init(params)
    decisions = []
    for g, loss in zip(per_device_grads, per_device_losses, strict=True):
        g, loss = jax.device_put((g, loss), split)
        params, state, stepped = sharded(g, loss, state, params)
        stepped = np.asarray(stepped)
        assert stepped.all() or not stepped.any(), "devices disagree"
        decisions.append(bool(stepped[0]))
    return decisions, params, state


def _per_device_stream(seed, calls):
    rng = np.random.default_rng(seed)
    grads = [
        jax.tree.map(
            lambda p: jnp.asarray(0.05 + 0.5 * rng.standard_normal((8, *p.shape)), jnp.float32),
            TEMPLATE,
        )
        for _ in range(calls)
    ]
    losses = [jnp.asarray(2.0 + 0.1 * rng.standard_normal(8), jnp.float32) for _ in range(calls)]
    return grads, losses


@pytest.mark.parametrize("name", ["gnts", "sbc", "gnr"])
def test_shard_map_equals_single_device_on_the_mean_gradient(name):
    grads, losses = _per_device_stream(41, 24)
    params = jax.tree.map(lambda p: p + 0.3, TEMPLATE)
    decisions, out, _ = _shard_map_run(CONTROLLERS[name]("data"), params, grads, losses)
    mean_grads = [jax.tree.map(lambda x: jnp.mean(x, axis=0), g) for g in grads]
    mean_losses = [jnp.mean(v) for v in losses]
    single = CONTROLLERS[name]()
    if name == "sbc":  # one device drawing 8x the samples per microbatch
        single = gqc_jax.sbc(optax.adamw(1e-2), 24, 64, max_draws=6)
    ref_stepped, ref_params, _ = _run(single, params, mean_grads, mean_losses)
    assert decisions == ref_stepped
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6), out, ref_params)


def test_shard_map_gns_gathers_every_device_norm():
    grads, losses = _per_device_stream(42, 20)
    tol, cap = 0.01, 6
    params = jax.tree.map(lambda p: p + 0.3, TEMPLATE)
    decisions, _, _ = _shard_map_run(
        gqc_jax.gns(optax.sgd(0.1), tol, max_draws=cap, axis_name="data"), params, grads, losses
    )
    expected, window, n = [], [], 0
    for g in grads:
        n += 1
        w, b = np.asarray(g["w"], np.float64), np.asarray(g["b"], np.float64)
        norms = np.sqrt(np.sum(w**2, axis=(1, 2)) + np.sum(b**2, axis=1))  # one per device
        window.extend(norms)
        h = np.array(window, np.float64)
        stat = h.var(ddof=1) / (np.mean(h**2) + 1e-8)
        step = bool(stat <= n * tol) or n >= cap
        expected.append(step)
        if step:
            window, n = [], 0
    assert decisions == expected
    assert decisions[0]  # 8 norms on the first draw: unlike one device, it can step


def test_shard_map_mht_joins_every_device_loss():
    from scipy import stats

    grads, losses = _per_device_stream(43, 20)
    c, p, beta, cap = 0.9, 0.02, 0.01, 6
    params = jax.tree.map(lambda p: p + 0.3, TEMPLATE)
    tx = gqc_jax.mht(optax.sgd(0.1), c, p, update_beta=beta, max_draws=cap, axis_name="data")
    decisions, _, _ = _shard_map_run(tx, params, grads, losses)
    expected, window, n, running = [], [], 0, None
    for values in losses:
        values = np.asarray(values, np.float64)
        n += 1
        window.extend(values)
        u = values.mean()
        running = u if running is None else running * (1 - beta) + u * beta
        judged = np.array([running, *window])
        m = judged.mean()
        half = stats.t.ppf((1 + c) / 2, len(judged) - 1) * (stats.sem(judged) + 1e-12)
        step = (m - half >= m * (1 - p) and m + half <= m * (1 + p)) or n >= cap
        expected.append(bool(step))
        if step:
            window, n = [], 0
    assert decisions == expected
    assert 1 < sum(decisions) < 20
