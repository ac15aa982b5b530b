"""The adaptive-accumulation state machine: MultiSteps parity, running mean, non-finite."""

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqc_jax
from tests.helpers import params_like, random_grads


class EveryK:
    """A criterion that passes on every k-th draw of a window."""

    def __init__(self, k):
        self.k = k

    def init(self, params):
        return ()

    def should_step(self, state, draw):
        return draw.num_draws >= self.k, state

    def reset(self, state):
        return state


INNERS = {
    "sgd": lambda: optax.sgd(0.1, momentum=0.9),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("inner_name", sorted(INNERS))
@pytest.mark.parametrize("k", [1, 3])
def test_equals_multisteps_update_for_update(inner_name, k):
    params = jax.tree.map(lambda p: p + 0.5, params_like())
    ours = gqc_jax.adaptive_accumulation(INNERS[inner_name](), EveryK(k), max_draws=64)
    theirs = optax.MultiSteps(INNERS[inner_name](), every_k_schedule=k)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    p_ours = p_theirs = params
    up_ours, up_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for i, g in enumerate(random_grads(0, 4 * k + 2)):
        u_ours, s_ours = up_ours(g, s_ours, p_ours)
        u_theirs, s_theirs = up_theirs(g, s_theirs, p_theirs)
        chex.assert_trees_all_close(u_ours, u_theirs, atol=1e-6, rtol=0)
        p_ours = optax.apply_updates(p_ours, u_ours)
        p_theirs = optax.apply_updates(p_theirs, u_theirs)
        chex.assert_trees_all_close(p_ours, p_theirs, atol=1e-6, rtol=0)
        assert bool(s_ours.stepped) == bool(theirs.has_updated(s_theirs)), i
    assert int(s_ours.num_steps) == int(s_theirs.gradient_step) == (4 * k + 2) // k


def test_k_microbatches_equal_one_big_batch():
    """Linear regression: k accumulated microbatches of b == one batch of k*b."""
    k, b, dim = 4, 8, 5
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((6 * k * b, dim)), jnp.float32)
    y = x @ jnp.arange(1.0, dim + 1.0) + 0.1 * jnp.asarray(rng.standard_normal(6 * k * b))

    def loss(params, xb, yb):
        return jnp.mean((xb @ params["w"] + params["b"] - yb) ** 2)

    grad = jax.jit(jax.value_and_grad(loss))
    params0 = {"w": jnp.zeros(dim), "b": jnp.zeros(())}
    tx_big = optax.adamw(0.05)
    tx_acc = gqc_jax.gnts(optax.adamw(0.05), threshold=0.0, max_draws=k)
    p_big, s_big = params0, tx_big.init(params0)
    p_acc, s_acc = params0, tx_acc.init(params0)
    update_big, update_acc = jax.jit(tx_big.update), jax.jit(tx_acc.update)
    for step in range(6):
        lo = step * k * b
        _, g = grad(p_big, x[lo : lo + k * b], y[lo : lo + k * b])
        u, s_big = update_big(g, s_big, p_big)
        p_big = optax.apply_updates(p_big, u)
        for j in range(k):
            sl = slice(lo + j * b, lo + (j + 1) * b)
            value, g = grad(p_acc, x[sl], y[sl])
            u, s_acc = update_acc(g, s_acc, p_acc, value=value)
            p_acc = optax.apply_updates(p_acc, u)
        chex.assert_trees_all_close(p_acc, p_big, atol=1e-6, rtol=0)
    assert int(s_acc.num_steps) == 6


def test_non_step_updates_are_exact_zeros_and_inner_state_frozen():
    params = params_like()
    tx = gqc_jax.gnts(optax.adam(1e-3), threshold=0.0, max_draws=5)
    state = tx.init(params)
    for g in random_grads(2, 4):
        updates, new_state = jax.jit(tx.update)(g, state, params)
        for leaf, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            assert leaf.dtype == p.dtype
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
        chex.assert_trees_all_equal(new_state.inner_state, state.inner_state)
        state = new_state


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_microbatch_leaves_window_untouched(bad):
    params = params_like()
    tx = gqc_jax.gnts(optax.adam(1e-3), threshold=0.0, max_draws=3)
    update = jax.jit(tx.update)
    state = tx.init(params)
    good = random_grads(3, 3)
    _, state = update(good[0], state, params, value=1.0)
    _, state = update(good[1], state, params, value=2.0)
    poisoned = jax.tree.map(lambda g: g.at[...].set(g), good[2])
    poisoned["w"] = poisoned["w"].at[1, 2].set(bad)
    updates, after = update(poisoned, state, params, value=3.0)
    chex.assert_trees_all_equal(after.acc, state.acc)
    chex.assert_trees_all_equal(after.criterion_state, state.criterion_state)
    chex.assert_trees_all_equal(after.inner_state, state.inner_state)
    assert int(after.num_draws) == 2 and int(after.num_skipped) == 1
    assert int(after.num_batches) == 3 and not bool(after.stepped)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    # A non-finite loss poisons the microbatch just the same.
    _, after_loss = update(good[2], state, params, value=bad)
    chex.assert_trees_all_equal(after_loss.acc, state.acc)
    assert int(after_loss.num_skipped) == 1
    # The window then continues as if the bad microbatch had never come: the cap
    # of 3 finite draws steps on the mean of the three good gradients.
    _, final = update(good[2], after, params, value=3.0)
    assert bool(final.stepped) and int(final.last_num_draws) == 3
    expected = jax.tree.map(lambda *g: sum(g) / 3, *good)
    chex.assert_trees_all_close(final.acc, expected, atol=1e-6)


def test_non_finite_first_microbatch_of_a_window():
    params = params_like()
    tx = gqc_jax.gnts(optax.sgd(1.0), threshold=0.0, max_draws=2)
    state = tx.init(params)
    g1, g2 = random_grads(4, 2)
    bad = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), g1)
    _, state = tx.update(bad, state, params)
    assert int(state.num_draws) == 0 and int(state.num_skipped) == 1
    _, state = tx.update(g1, state, params)
    updates, state = tx.update(g2, state, params)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda a, b: -(a + b) / 2, g1, g2), atol=1e-6)


_NEVER = gqc_jax.adaptive_accumulation(optax.sgd(1.0), EveryK(10**6), max_draws=64)
_NEVER_UPDATE = jax.jit(_NEVER.update)


@given(
    grads=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.just(4)),
        elements=st.floats(-1e3, 1e3, width=32),
    )
)
def test_running_mean_equals_numpy_mean(grads):
    params = {"x": jnp.zeros(4)}
    state = _NEVER.init(params)
    for g in grads:
        _, state = _NEVER_UPDATE({"x": jnp.asarray(g)}, state, params)
    expected = grads.astype(np.float64).mean(axis=0)
    # XLA on CPU flushes subnormals to zero, hence the tiny absolute floor.
    np.testing.assert_allclose(
        gqc_jax.current_mean(state)["x"],
        expected,
        rtol=1e-5,
        atol=1e-5 * np.abs(grads).max() + 1e-30,
    )
    assert int(state.num_draws) == grads.shape[0] and int(state.num_steps) == 0


def test_value_mean_is_forwarded_to_the_inner_optimizer():
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None, *, value, **extra_args):
        return jax.tree.map(lambda u: jnp.full_like(u, value), updates), state

    tx = gqc_jax.gnts(
        optax.GradientTransformationExtraArgs(init, update), threshold=0.0, max_draws=3
    )
    params = {"x": jnp.zeros(2)}
    state = tx.init(params)
    for loss in (1.0, 2.0, 6.0):
        updates, state = tx.update({"x": jnp.ones(2)}, state, params, value=loss)
    np.testing.assert_allclose(updates["x"], [3.0, 3.0])


def test_bf16_grads_keep_state_types_under_scan():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params_like())
    tx = gqc_jax.gnts(optax.adam(1e-3), threshold=0.5, max_draws=4)
    state = tx.init(params)
    grads = jax.tree.map(lambda *g: jnp.stack(g), *random_grads(5, 10, template=params))

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), s.stepped

    (p, final), stepped = jax.lax.scan(body, (params, state), grads)
    chex.assert_trees_all_equal_shapes_and_dtypes(final, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(p, params)
    assert jax.tree.leaves(final.acc)[0].dtype == jnp.float32
    assert int(final.num_steps) == int(stepped.sum()) >= 2


def test_state_is_a_namedtuple_with_int32_counters():
    state = gqc_jax.gnts(optax.sgd(0.1)).init(params_like())
    assert isinstance(state, tuple) and hasattr(state, "_fields")
    for name in ("num_batches", "num_steps", "num_draws", "last_num_draws", "num_skipped"):
        leaf = getattr(state, name)
        assert leaf.dtype == jnp.int32 and leaf.shape == (), name
    assert state.stepped.dtype == jnp.bool_


def test_custom_accumulator_dtype():
    params = params_like()
    tx = gqc_jax.gnts(optax.sgd(0.1), accumulator_dtype=jnp.bfloat16)
    state = tx.init(params)
    _, state2 = tx.update(random_grads(6, 1)[0], state, params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state2.acc))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, state2)


def test_step_branch_carries_a_barrier_so_xla_keeps_the_conditional():
    """XLA on GPU turns a conditional whose branches are all elementwise (AdamW's
    update is) into a select computing both: the inner optimizer would run on
    every microbatch. The step branch holds an optimization barrier against it."""
    params = {"w": jnp.zeros(8)}
    tx = gqc_jax.gnts(optax.adamw(1e-3), 0.5, max_draws=4)
    text = jax.jit(lambda s, g: tx.update(g, s, params)).lower(tx.init(params), params).as_text()
    branches = text[text.index("stablehlo.case") :]
    assert "stablehlo.optimization_barrier" in branches
