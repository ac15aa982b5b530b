"""GNTS: decision rule, ties, draw cap, schedules (the Optax invariants of every
controller: tests/test_invariants.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax
from tests.helpers import params_like, random_grads


def _decisions(tx, grads, params):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for g in grads:
        _, state = update(g, state, params)
        out.append(bool(state.stepped))
    return out, state


def _rule(grads, threshold, max_draws):
    """The GNTS rule in float64 numpy: ||sum/n|| <= threshold or n >= max."""
    out, window = [], []
    for g in grads:
        window.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]).astype(np.float64))
        mean = np.sum(window, axis=0) / len(window)
        step = np.linalg.norm(mean) <= threshold or len(window) >= max_draws
        out.append(bool(step))
        if step:
            window = []
    return out


def test_hand_built_stream_with_ties_and_the_cap():
    params = {"v": jnp.zeros(2)}
    vec = lambda a, b: {"v": jnp.array([a, b], jnp.float32)}  # noqa: E731
    grads = [
        vec(3.0, 4.0),  # norm 5 == threshold: a tie steps
        vec(6.0, 8.0),  # norm 10: draw
        vec(0.0, 0.0),  # mean (3, 4): norm 5, tie, steps at n=2
        vec(30.0, 40.0),  # norm 50: draw
        vec(30.0, 40.0),  # draw
        vec(30.0, 40.0),  # n = 3 = cap: forced step
        vec(3.0, 4.0000005),  # just above 5 in float32: draw
    ]
    stepped, state = _decisions(gqc_jax.gnts(optax.sgd(1.0), 5.0, max_draws=3), grads, params)
    assert stepped == [True, False, True, False, False, True, False]
    assert int(state.num_steps) == 3 and int(state.num_draws) == 1
    assert int(state.last_num_draws) == 3
    np.testing.assert_allclose(float(state.last_grad_norm), 50.0, rtol=1e-6)


@pytest.mark.parametrize("threshold", [0.3, 0.6, 1.0])
def test_decisions_follow_the_rule_on_random_streams(threshold):
    params = params_like()
    grads = random_grads(7, 60, scale=0.3, offset=0.05)
    stepped, state = _decisions(
        gqc_jax.gnts(optax.adam(1e-3), threshold, max_draws=6), grads, params
    )
    assert stepped == _rule(grads, threshold, 6)
    assert int(state.num_steps) == sum(stepped)


def test_threshold_schedule_runs_on_the_microbatch_clock():
    schedule = optax.linear_schedule(10.0, 0.0, transition_steps=10)
    tx = gqc_jax.gnts(optax.sgd(0.1), schedule, max_draws=64)
    params = {"v": jnp.zeros(3)}
    state = tx.init(params)
    assert float(gqc_jax.stats(state)["gradient_norm_threshold"]) == 10.0
    seen = []
    for _ in range(6):
        _, state = tx.update({"v": jnp.full(3, 100.0)}, state, params)  # never passes
        seen.append(float(gqc_jax.stats(state)["gradient_norm_threshold"]))
    # The value used at call t is schedule(t), t counting microbatches, not steps.
    np.testing.assert_allclose(seen, [10.0, 9.0, 8.0, 7.0, 6.0, 5.0], rtol=1e-6)
    assert int(state.num_steps) == 0


def test_changing_the_threshold_does_not_recompile():
    params = params_like()
    tx = gqc_jax.gnts(optax.adam(1e-3), threshold=0.5, max_draws=8)
    grads = random_grads(8, 1)[0]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(g, state):
        return tx.update(g, state, params)

    state = tx.init(params)
    results = []
    for threshold in (0.0, 1e9):
        s = state._replace(
            criterion_state=state.criterion_state._replace(
                gradient_norm_threshold=jnp.float32(threshold)
            )
        )
        _, s = update(grads, s)
        results.append(bool(s.stepped))
    assert results == [False, True]


def test_controller_trains_a_regression():
    rng = np.random.default_rng(0)
    w_true = jnp.asarray(rng.standard_normal(4), jnp.float32)

    def loss(p, x):
        return jnp.mean((x @ p["w"] - x @ w_true) ** 2)

    tx = gqc_jax.gnts(optax.adam(0.05), threshold=0.5, max_draws=8)
    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    step = jax.jit(lambda p, s, x: gqc_jax.microstep(tx, jax.grad(loss)(p, x), s, p))
    x_eval = jnp.asarray(rng.standard_normal((256, 4)), jnp.float32)
    before = float(loss(params, x_eval))
    for _ in range(300):
        params, state = step(params, state, jnp.asarray(rng.standard_normal((4, 4)), jnp.float32))
    assert float(loss(params, x_eval)) < 0.01 * before
    assert int(state.num_steps) < 300
