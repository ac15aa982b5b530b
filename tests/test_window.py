"""accumulate_window: same decisions and parameters as the per-microbatch loop."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax


def _loss(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _data(seed, count, size=8, dim=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, size, dim)).astype(np.float32)
    y = (x @ np.arange(1.0, dim + 1) + 2.0 * rng.standard_normal((count, size))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gqc_jax.gnts(optax.adamw(0.05), threshold=4.0, max_draws=6),
        lambda: gqc_jax.mht(optax.adam(0.05), 0.9, 0.1, max_draws=6),
        lambda: optax.chain(
            optax.clip_by_global_norm(5.0), gqc_jax.snr(optax.sgd(0.01), 0.5, max_draws=6)
        ),
    ],
)
def test_same_results_as_the_per_microbatch_loop(make):
    tx = make()
    x, y = _data(0, 90)
    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}

    step = jax.jit(lambda p, s, b: _microstep(tx, p, s, b))
    p_ref, s_ref = params, tx.init(params)
    ref_steps = []
    for i in range(90):
        p_ref, s_ref = step(p_ref, s_ref, (x[i], y[i]))
        if bool(gqc_jax.stats(s_ref)["stepped"]):
            ref_steps.append(i)

    window = jax.jit(gqc_jax.accumulate_window, static_argnums=(0, 1))
    p_win, s_win, pointer, steps = params, tx.init(params), 0, []
    while pointer < 90:
        chunk = (x[pointer : pointer + 8], y[pointer : pointer + 8])
        available = min(8, 90 - pointer)
        chunk = jax.tree.map(_pad_to_8, chunk)  # a partly filled superbatch: same shape
        p_win, s_win, used = window(tx, _loss, p_win, s_win, chunk, num_available=available)
        pointer += int(used)
        if bool(gqc_jax.stats(s_win)["stepped"]):
            steps.append(pointer - 1)
    assert steps == ref_steps and len(steps) > 5
    chex.assert_trees_all_close(p_win, p_ref, atol=1e-6)
    assert int(gqc_jax.stats(s_win)["num_batches"]) == 90


def _pad_to_8(a):
    return jnp.pad(a, [(0, 8 - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def _microstep(tx, params, state, batch):
    loss, grads = jax.value_and_grad(_loss)(params, batch)
    return gqc_jax.microstep(tx, grads, state, params, value=loss)


def test_exhausted_superbatch_leaves_the_window_open():
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.0, max_draws=10)
    x, y = _data(1, 4)
    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}
    new, state, used = gqc_jax.accumulate_window(tx, _loss, params, tx.init(params), (x, y))
    assert int(used) == 4 and int(state.num_draws) == 4 and not bool(state.stepped)
    chex.assert_trees_all_equal(new, params)
