"""token_time: a window of k microbatches steps with decays b^(k / k_ref) and
weight decay lambda * (k / k_ref) / f, so Adam's clocks count microbatches.

Exactness: a window of k at b^k gives its microbatches the weight k steps at b
would, and everything before it the same decay b^k."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax
from tests.helpers import params_like, random_grads

WINDOWS = (1, 3, 2, 5, 1, 4)


class Windows:
    """Steps on windows of the sizes in WINDOWS, in order."""

    def init(self, params):
        return jnp.zeros([], jnp.int32)

    def should_step(self, state, draw):
        return draw.num_draws >= jnp.asarray(WINDOWS)[state], state

    def reset(self, state):
        return state + 1


def adam_moments(state):
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    (adam,) = found
    return adam.mu, adam.nu


def run_windows(token_time: bool, b1=0.9, b2=0.95):
    inner = gqc_jax.on_microbatch_clock(optax.adam, learning_rate=1e-2, b1=b1, b2=b2)
    tx = gqc_jax.adaptive_accumulation(inner, Windows(), max_draws=8, token_time=token_time)
    params = params_like()
    state = tx.init(params)
    grads = random_grads(0, sum(WINDOWS))
    for g in grads:
        _, state = jax.jit(tx.update)(g, state, params)
    assert int(state.num_steps) == len(WINDOWS)
    return state, grads


def microbatch_time_reference(grads, b1=0.9, b2=0.95):
    """Adam at b1, b2 stepping once per microbatch, each microbatch carrying
    its window's mean gradient."""
    adam = optax.adam(1e-2, b1=b1, b2=b2)
    params = params_like()
    state = adam.init(params)
    start = 0
    for k in WINDOWS:
        window = grads[start : start + k]
        mean = jax.tree.map(lambda *g, k=k: sum(g) / k, *window)
        for _ in range(k):
            _, state = adam.update(mean, state, params)
        start += k
    return adam_moments(state)


def test_moments_decay_per_microbatch_not_per_step():
    state, grads = run_windows(token_time=True)
    mu, nu = adam_moments(state)
    ref_mu, ref_nu = microbatch_time_reference(grads)
    for got, want in ((mu, ref_mu), (nu, ref_nu)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), got, want)


def test_without_token_time_the_moments_count_steps():
    """The same comparison fails without the coupling (the test can fail)."""
    state, grads = run_windows(token_time=False)
    mu, _ = adam_moments(state)
    ref_mu, _ = microbatch_time_reference(grads)
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(mu), jax.tree.leaves(ref_mu), strict=True)
    )
    assert gap > 1e-2


def test_impulse_decays_by_b_per_microbatch():
    """A gradient t microbatches before a window gets weight (1 - b) b^(t - 1)
    whatever the windows in between."""
    b1 = 0.9
    inner = gqc_jax.on_microbatch_clock(optax.adam, learning_rate=1e-2, b1=b1, b2=0.99)
    tx = gqc_jax.adaptive_accumulation(inner, Windows(), max_draws=8, token_time=True)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    stream = [1.0] + [0.0] * (sum(WINDOWS) - 1)  # the impulse opens a window of 1
    for g in stream:
        _, state = tx.update({"w": jnp.float32(g)}, state, params)
    mu, _ = adam_moments(state)
    t = sum(WINDOWS)  # microbatches since the impulse, itself included
    np.testing.assert_allclose(float(mu["w"]), (1 - b1) * b1 ** (t - 1), rtol=1e-5)


@pytest.mark.parametrize("lr_scaling", [None, "sqrt", "linear"])
def test_weight_decay_timescale_is_fixed_in_tokens(lr_scaling):
    """With zero gradients AdamW's update is -lr * f * lambda_k * p: a window
    of 4 decays the parameters as 4 steps at lr * lambda would, to first order,
    under every learning-rate coupling."""
    lr, wd = 1e-2, 0.1
    inner = gqc_jax.on_microbatch_clock(optax.adamw, learning_rate=lr, weight_decay=wd)
    tx = gqc_jax.sbc(inner, 4, 1, lr_scaling=lr_scaling, token_time=True)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(4):
        updates, state = tx.update({"w": jnp.zeros(3)}, state, params)
    np.testing.assert_allclose(updates["w"], -lr * wd * 4 * np.ones(3), rtol=1e-6)


def test_reference_draws_sets_the_window_at_which_nothing_changes():
    inner = gqc_jax.on_microbatch_clock(
        optax.adamw, learning_rate=1e-2, b1=0.9, b2=0.95, weight_decay=0.1
    )
    plain = gqc_jax.sbc(inner, 2, 1)
    coupled = gqc_jax.sbc(inner, 2, 1, token_time=True, reference_draws=2)
    params = {"w": jnp.ones(3)}
    grads = random_grads(3, 6, params)
    s1, s2 = plain.init(params), coupled.init(params)
    for g in grads:
        u1, s1 = plain.update(g, s1, params)
        u2, s2 = coupled.update(g, s2, params)
        np.testing.assert_array_equal(u1["w"], u2["w"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: gqc_jax.gnts(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1), 1.0, token_time=True
        ),
        lambda: gqc_jax.gns(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1), 0.1, token_time=True
        ),
        lambda: gqc_jax.snr(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1),
            0.5,
            max_draws=4,
            token_time=True,
        ),
        lambda: gqc_jax.mht(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1), 0.9, 0.1, token_time=True
        ),
        lambda: gqc_jax.batch_size_warmup(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1), 20, (0.5,), token_time=True
        ),
        lambda: gqc_jax.seesaw(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1),
            optax.constant_schedule(0.1),
            0.1,
            token_time=True,
        ),
    ],
)
def test_every_controller_and_schedule_takes_the_coupling(make):
    tx = make()
    params = params_like()
    state = tx.init(params)
    for g in random_grads(4, 12, scale=0.3):
        updates, state = jax.jit(tx.update)(g, state, params, value=jnp.float32(1.0))
    assert int(gqc_jax.stats(state)["num_steps"]) >= 1
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_refused_at_construction():
    with pytest.raises(TypeError, match="on_microbatch_clock"):
        gqc_jax.sbc(optax.adam(0.1), 2, 1, token_time=True)
    with pytest.raises(ValueError, match="no decay"):
        gqc_jax.sbc(
            gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=0.1), 2, 1, token_time=True
        )
    with pytest.raises(TypeError, match="token_time must be a bool"):
        gqc_jax.sbc(
            gqc_jax.on_microbatch_clock(optax.adam, learning_rate=0.1), 2, 1, token_time="yes"
        )


def test_factory_defaults_are_rescaled():
    inner = gqc_jax.on_microbatch_clock(optax.adamw, learning_rate=0.1)
    assert set(inner.token_time_names) == {"b1", "b2", "weight_decay"}
