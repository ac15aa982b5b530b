"""gqc_jax.microstep == update + apply_updates, fused or not (XLA may fuse the
fused path's last add differently: 1 ulp)."""

import chex
import jax
import optax

import gqc_jax
from tests.helpers import params_like, random_grads


def _compare(tx, grads):
    params = params_like()
    p_ref, s_ref = params, tx.init(params)
    p_fused, s_fused = params, tx.init(params)
    step = jax.jit(gqc_jax.microstep, static_argnums=0)
    update = jax.jit(tx.update)
    for i, g in enumerate(grads):
        u, s_ref = update(g, s_ref, p_ref, value=float(i))
        p_ref = optax.apply_updates(p_ref, u)
        p_fused, s_fused = step(tx, g, s_fused, p_fused, value=float(i))
        chex.assert_trees_all_close(p_fused, p_ref, atol=1e-7, rtol=0)
        chex.assert_trees_all_close(s_fused, s_ref, atol=1e-7, rtol=0)
    return s_fused


def test_fused_path_matches_update_then_apply():
    tx = gqc_jax.gnts(optax.adamw(1e-2), 0.7, max_draws=5)
    assert isinstance(tx, gqc_jax.Controller)
    final = _compare(tx, random_grads(13, 25, scale=0.4))
    assert 0 < int(final.num_steps) < 25


def test_chained_controller_falls_back_to_update_then_apply():
    tx = optax.chain(optax.clip_by_global_norm(2.0), gqc_jax.sbc(optax.sgd(0.1), 3, 1))
    assert not isinstance(tx, gqc_jax.Controller)
    final = _compare(tx, random_grads(14, 9))
    assert int(gqc_jax.stats(final)["num_steps"]) == 3


def test_replaced_controller_or_clock_is_a_plain_transformation():
    # A replaced update has no fused microstep: the result is plain optax, and
    # gqc_jax.microstep runs its update then applies it (it used to raise).
    tx = gqc_jax.sbc(optax.sgd(0.1), 3, 1)
    traced = []

    def update(updates, state, params=None, **extra):
        traced.append(1)
        return tx.update(updates, state, params, **extra)

    replaced = tx._replace(update=update)
    assert type(replaced) is optax.GradientTransformationExtraArgs
    final = _compare(replaced, random_grads(16, 6))
    assert traced and int(gqc_jax.stats(final)["num_steps"]) == 2
    clock = gqc_jax.on_microbatch_clock(optax.adamw, learning_rate=1e-3)
    assert type(clock._replace()) is optax.GradientTransformationExtraArgs


def test_non_step_microstep_returns_params_unchanged():
    tx = gqc_jax.gnts(optax.sgd(1.0), threshold=0.0, max_draws=10)
    params = params_like()
    new, _ = gqc_jax.microstep(tx, random_grads(15, 1)[0], tx.init(params), params)
    chex.assert_trees_all_equal(new, params)


def test_spike_guard_keeps_the_fused_path():
    """skip_loss_spikes around a controller is a Controller: its microstep
    skips a spiking microbatch without touching the parameters."""
    tx = gqc_jax.skip_loss_spikes(gqc_jax.sbc(optax.adam(0.1), 2, 1), sigmas=2.0, warmup=3)
    assert isinstance(tx, gqc_jax.Controller)
    assert not isinstance(gqc_jax.skip_loss_spikes(optax.sgd(0.1), sigmas=2.0), gqc_jax.Controller)
    params = params_like()
    p_ref, s_ref = params, tx.init(params)
    p_fused, s_fused = params, tx.init(params)
    for i, g in enumerate(random_grads(16, 10)):
        loss = 50.0 if i == 6 else 1.0 + 0.05 * (-1) ** i
        u, s_ref = tx.update(g, s_ref, p_ref, value=loss)
        p_ref = optax.apply_updates(p_ref, u)
        p_fused, s_fused = gqc_jax.microstep(tx, g, s_fused, p_fused, value=loss)
        chex.assert_trees_all_close((p_fused, s_fused), (p_ref, s_ref), atol=1e-7, rtol=0)
    assert int(s_fused.num_spikes) == 1
    assert int(gqc_jax.stats(s_fused)["num_steps"]) == 4
