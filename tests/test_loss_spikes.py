"""skip_loss_spikes: the running estimate, what a spike skips, and bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax


def _run(tx, losses, grads=None):
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for i, loss in enumerate(losses):
        g = {"w": jnp.full(3, 1.0 + i)} if grads is None else grads[i]
        updates, state = update(g, state, params, value=loss)
        out.append(updates)
    return out, state


def test_running_estimate_is_the_plain_mean_and_variance_at_first():
    losses = [2.0, 2.5, 1.5, 2.2, 1.9, 2.1]
    _, state = _run(gqc_jax.skip_loss_spikes(optax.sgd(1.0), 3.0, beta=0.9, warmup=100), losses)
    assert int(state.count) == 6 and int(state.num_spikes) == 0
    np.testing.assert_allclose(state.mean, np.mean(losses), rtol=1e-6)
    np.testing.assert_allclose(state.variance, np.var(losses), rtol=1e-5)


def test_a_spike_is_skipped_counted_and_kept_out_of_the_window():
    """Around gnts the spiking microbatch never reaches the controller: its
    window, counters and the running estimate are as if it had not been drawn."""
    inner = gqc_jax.gnts(optax.sgd(1.0), threshold=0.0, max_draws=8)
    tx = gqc_jax.skip_loss_spikes(inner, 4.0, warmup=4)
    losses = [1.0, 1.2, 0.8, 1.1, 0.9, 30.0, 1.0]
    updates, state = _run(tx, losses)
    assert int(state.num_spikes) == 1 and not bool(state.last_skipped)
    _, plain = _run(inner, losses[:5] + losses[6:], None)
    # The same windows without the spike: draws 1-5 and 7 (gradients 1..5, 7).
    assert int(gqc_jax.stats(state)["num_batches"]) == 6
    mean = gqc_jax.current_mean(state.inner_state)
    np.testing.assert_allclose(mean["w"], np.full(3, np.mean([1, 2, 3, 4, 5, 7])))
    assert all(not np.any(np.asarray(u["w"])) for u in updates[5:6])
    stats = gqc_jax.loss_spike_stats(state)
    assert int(stats["num_loss_spikes"]) == 1 and not bool(stats["loss_spike"])
    assert int(plain.num_batches) == 6


def test_around_a_plain_optimizer_a_spike_skips_the_step():
    tx = gqc_jax.skip_loss_spikes(optax.adam(0.1), 3.0, warmup=3)
    updates, state = _run(tx, [1.0, 1.1, 0.9, 100.0, 1.0])
    assert [bool(np.any(np.asarray(u["w"]))) for u in updates] == [True, True, True, False, True]
    # adam's own count: four steps, the spike not among them
    assert int(state.inner_state[0].count) == 4


def test_non_finite_losses_pass_through_and_do_not_enter_the_estimate():
    tx = gqc_jax.skip_loss_spikes(gqc_jax.gnts(optax.sgd(1.0), 0.0, max_draws=8), 3.0, warmup=2)
    nan = {"w": jnp.full(3, jnp.nan)}
    _, state = _run(tx, [1.0, jnp.nan, 1.0], [{"w": jnp.ones(3)}, nan, {"w": jnp.ones(3)}])
    assert int(state.count) == 2 and int(state.num_spikes) == 0
    assert int(gqc_jax.stats(state)["num_skipped"]) == 1  # the controller skipped it


def test_needs_the_loss():
    tx = gqc_jax.skip_loss_spikes(optax.sgd(1.0), 3.0)
    with pytest.raises(ValueError, match="value=loss"):
        tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigmas": 0.5}, ValueError, "sigmas must be >= 1, got 0.5"),
        ({"sigmas": float("nan")}, ValueError, "sigmas must be >= 1"),
        ({"sigmas": "3"}, TypeError, "sigmas must be a real number"),
        ({"sigmas": 3.0, "beta": 1.0}, ValueError, r"beta must be in \[0, 1\), got 1.0"),
        ({"sigmas": 3.0, "warmup": 0}, ValueError, "warmup must be >= 1, got 0"),
        ({"sigmas": 3.0, "warmup": 2.5}, TypeError, "warmup must be an int"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gqc_jax.skip_loss_spikes(optax.sgd(1.0), **kwargs)


def test_flush_through_the_guard_steps_the_window_and_leaves_its_estimate():
    """gqc_jax.flush needs no loss through skip_loss_spikes (it draws no
    microbatch): the controller steps on its open window with the window's mean
    loss, and the guard's running estimate and counters are unchanged."""
    inner = gqc_jax.gnts(optax.sgd(1.0), threshold=0.0, max_draws=8)
    tx = gqc_jax.skip_loss_spikes(inner, 3.0, warmup=2)
    _, state = _run(tx, [1.0, 1.2, 0.8])
    updates, flushed = jax.jit(lambda s: gqc_jax.flush(tx, s, {"w": jnp.zeros(3)}))(state)
    np.testing.assert_allclose(updates["w"], np.full(3, -2.0))  # mean of 1, 2, 3
    assert int(gqc_jax.stats(flushed)["num_steps"]) == 1
    assert int(gqc_jax.stats(flushed)["num_batches"]) == 3
    for field in ("count", "mean", "variance", "num_spikes"):
        np.testing.assert_array_equal(getattr(flushed, field), getattr(state, field))
    assert not bool(flushed.last_skipped)
