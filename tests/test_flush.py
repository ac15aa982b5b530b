"""gqc_jax.flush: the open window is stepped on, exactly as a step the criterion
had passed, through chains, inject_hyperparams and jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax

PARAMS = {"w": jnp.zeros(4), "b": jnp.ones(2)}


def _grads(seed, count):
    rng = np.random.default_rng(seed)
    return [
        {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in PARAMS.items()}
        for _ in range(count)
    ]


def _feed(tx, grads, state=None, values=None):
    state = tx.init(PARAMS) if state is None else state
    for i, g in enumerate(grads):
        value = None if values is None else values[i]
        _, state = tx.update(g, state, PARAMS, value=value)
    return state


# Controllers that never pass their criterion within the draws fed here.
NEVER = {
    "gnts": lambda inner: gqc_jax.gnts(inner, 0.0),
    "gnts relative": lambda inner: gqc_jax.gnts(inner, 1e-6, relative=True),
    "gns": lambda inner: gqc_jax.gns(inner, 0.0),
    "sbc": lambda inner: gqc_jax.sbc(inner, 1_000, 1),
    "snr": lambda inner: gqc_jax.snr(inner, 1e-9),
}


@pytest.mark.parametrize("name", sorted(NEVER))
def test_flush_steps_on_the_open_window_as_a_passed_criterion_would(name):
    grads = _grads(0, 3)
    values = [jnp.float32(v) for v in (2.0, 2.5, 1.5)]
    inner = optax.adamw(1e-2)
    tx = NEVER[name](inner)
    state = _feed(tx, grads, values=values)
    assert int(state.num_steps) == 0 and int(state.num_draws) == 3
    updates, flushed = jax.jit(gqc_jax.flush, static_argnums=0)(tx, state, PARAMS)

    # The same three microbatches under a controller whose cap steps at the third.
    capped = gqc_jax.sbc(inner, 3, 1)
    want_state = capped.init(PARAMS)
    for g, v in zip(grads, values, strict=True):
        want, want_state = capped.update(g, want_state, PARAMS, value=v)
    chex.assert_trees_all_close(updates, want, rtol=1e-6)
    chex.assert_trees_all_close(flushed.inner_state, want_state.inner_state, rtol=1e-6)
    assert int(flushed.num_steps) == 1 and bool(flushed.stepped)
    assert int(flushed.num_draws) == 0 and int(flushed.last_num_draws) == 3
    assert int(flushed.num_batches) == 3  # no microbatch was drawn
    assert int(flushed.num_skipped) == 0
    np.testing.assert_allclose(
        float(flushed.last_grad_norm), float(optax.tree.norm(gqc_jax.current_mean(state))), 1e-6
    )
    # The window after a flush starts afresh: one draw, its mean is that gradient.
    nxt = _grads(1, 1)[0]
    _, after = tx.update(nxt, flushed, PARAMS, value=jnp.float32(1.0))
    assert int(after.num_draws) == 1 and int(after.num_batches) == 4
    chex.assert_trees_all_close(gqc_jax.current_mean(after), nxt)


def test_mht_flush_after_its_first_step():
    # MHT passes on a window's first draw only before its first step (the running
    # mean is that loss); later windows of a tiny percent error never pass.
    tx = gqc_jax.mht(optax.sgd(1.0), 0.95, 1e-9)
    values = [jnp.float32(v) for v in (2.0, 2.5, 1.5, 2.2)]
    state = _feed(tx, _grads(0, 4), values=values)
    assert int(state.num_steps) == 1 and int(state.num_draws) == 3
    updates, flushed = gqc_jax.flush(tx, state, PARAMS)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *_grads(0, 4)[1:])
    chex.assert_trees_all_close(updates, jax.tree.map(jnp.negative, mean), rtol=1e-6)
    assert int(flushed.num_steps) == 2 and int(flushed.last_num_draws) == 3


def test_the_flushed_step_forwards_the_window_mean_loss():
    def scale_by_value(updates, state, params=None, *, value=None, **extra):
        del params, extra
        return jax.tree.map(lambda u: u * value, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), scale_by_value)
    tx = gqc_jax.gnts(inner, 0.0)
    grads = _grads(0, 2)
    state = _feed(tx, grads, values=[jnp.float32(1.0), jnp.float32(2.0)])
    updates, _ = gqc_jax.flush(tx, state, PARAMS)
    want = jax.tree.map(lambda a, b: 1.5 * (a + b) / 2, *grads)
    chex.assert_trees_all_close(updates, want, rtol=1e-6)


def test_flushing_an_empty_window_changes_nothing():
    tx = gqc_jax.sbc(optax.sgd(1.0), 2, 1)
    state = _feed(tx, _grads(0, 2))  # the second draw stepped: the window is empty
    assert int(state.num_steps) == 1 and int(state.num_draws) == 0
    updates, flushed = gqc_jax.flush(tx, state, PARAMS)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, PARAMS))
    assert not bool(flushed.stepped)
    chex.assert_trees_all_equal(flushed._replace(stepped=state.stepped), state)


def test_flush_through_chain_and_inject_hyperparams():
    grads = _grads(2, 2)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    chained = optax.chain(gqc_jax.gnts(optax.sgd(1.0), 0.0), optax.scale(2.0))
    updates, state = gqc_jax.flush(chained, _feed(chained, grads), PARAMS)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda m: -2.0 * m, mean), rtol=1e-6)
    assert int(gqc_jax.stats(state)["num_steps"]) == 1

    injected = optax.inject_hyperparams(gqc_jax.gnts, static_args=("max_draws",))(
        optax.sgd(1.0), threshold=0.0
    )
    updates, state = gqc_jax.flush(injected, _feed(injected, grads), PARAMS)
    chex.assert_trees_all_close(updates, jax.tree.map(jnp.negative, mean), rtol=1e-6)
    assert int(gqc_jax.stats(state)["last_num_draws"]) == 2


def test_flush_refuses_what_it_cannot_flush():
    plain = optax.GradientTransformation(*gqc_jax.gnts(optax.sgd(1.0), 0.0)[:2])
    with pytest.raises(TypeError, match="extra arguments"):
        gqc_jax.flush(plain, plain.init(PARAMS), PARAMS)
    sgd = optax.sgd(1.0)
    with pytest.raises(ValueError, match="No gqc_jax controller state"):
        gqc_jax.flush(optax.chain(sgd), optax.chain(sgd).init(PARAMS), PARAMS)


def test_flush_takes_an_nnx_optimizer_state_and_parameters():
    """The natural NNX call failed ("The gradient tree does not match"): the
    variables are read as arrays, and writing the result back steps the model
    on the window mean, as a passed criterion would."""
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, gqc_jax.gnts(optax.sgd(0.5), 0.0, max_draws=8), wrt=nnx.Param)
    before = nnx.as_pure(nnx.state(model, nnx.Param))
    variables = nnx.state(model, nnx.Param)
    grads = [jax.tree.map(lambda p, i=i: jnp.full_like(p, i + 1.0), variables) for i in range(3)]
    for g in grads:
        opt.update(model, g)
    params = nnx.state(model, nnx.Param)
    updates, opt_state = gqc_jax.flush(opt.tx, opt.opt_state, params)
    nnx.update(model, optax.apply_updates(nnx.as_pure(params), updates))
    nnx.update(opt.opt_state, nnx.state(opt_state))
    after = nnx.as_pure(nnx.state(model, nnx.Param))
    chex.assert_trees_all_close(after, jax.tree.map(lambda p: p - 0.5 * 2.0, before), rtol=1e-6)
    s = gqc_jax.stats(opt.opt_state)
    assert int(s["num_steps"]) == 1 and int(s["num_draws"]) == 0
