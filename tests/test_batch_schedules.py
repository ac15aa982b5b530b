"""batch_size_warmup and seesaw: the windows they choose and the learning rate
each step applies."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax


def _steps(tx, calls: int, lr_at=None):
    """(clock of the call, window, update) for every step over ``calls`` calls of a
    gradient of ones."""
    params = {"w": jnp.zeros(1)}
    state, update = tx.init(params), jax.jit(tx.update)
    out = []
    for count in range(calls):
        updates, state = update({"w": jnp.ones(1)}, state, params)
        if bool(state.stepped):
            out.append((count, int(state.last_num_draws), float(updates["w"][0])))
    return out


def test_batch_size_warmup_doubles_at_its_fractions_with_sqrt2_per_doubling():
    total = 40
    tx = gqc_jax.batch_size_warmup(optax.sgd(0.1), total, fractions=(0.1, 0.3, 0.6))
    steps = _steps(tx, total)
    boundaries = [4, 12, 24]
    for count, window, update in steps:
        # The window grows only: a step closes it when it reaches the size in force.
        assert window == 2 ** sum(count >= b for b in boundaries), (count, window)
        assert update == pytest.approx(-0.1 * math.sqrt(window), rel=1e-6)
    assert [w for _, w, _ in steps][:4] == [1, 1, 1, 1] and steps[-1][1] == 8
    assert sum(w for _, w, _ in steps) == total  # every microbatch in exactly one window


def test_batch_size_warmup_with_linear_scaling_and_its_checks():
    tx = gqc_jax.batch_size_warmup(optax.sgd(0.1), 8, (0.5,), lr_scaling="linear")
    assert [(w, round(u, 6)) for _, w, u in _steps(tx, 8)] == [(1, -0.1)] * 4 + [(2, -0.2)] * 2
    with pytest.raises(ValueError, match=r"fractions must be strictly increasing .* \(0.5, 0.2\)"):
        gqc_jax.batch_size_warmup(optax.sgd(0.1), 8, (0.5, 0.2))
    with pytest.raises(ValueError, match=r"\(1.0,\)"):
        gqc_jax.batch_size_warmup(optax.sgd(0.1), 8, (1.0,))
    with pytest.raises(ValueError, match="3 x2 growths need windows of up to 8 .* max_draws=4"):
        gqc_jax.batch_size_warmup(optax.sgd(0.1), 8, (0.1, 0.2, 0.3), max_draws=4)
    with pytest.raises(ValueError, match="total_microbatches must be an int >= 1, got 0"):
        gqc_jax.batch_size_warmup(optax.sgd(0.1), 0)

    with pytest.raises(ValueError, match="growth must be an int >= 2, got 1"):
        gqc_jax.batch_size_warmup(optax.sgd(0.1), 8, (0.5,), growth=1)


def test_a_late_switch_to_a_4x_batch():
    """One fraction with growth=4: windows of 1 until 70% of the run, then 4,
    at lr x 2 under the square-root rule."""
    tx = gqc_jax.batch_size_warmup(optax.sgd(0.1), 40, (0.7,), growth=4)
    steps = _steps(tx, 40)
    assert [w for _, w, _ in steps] == [1] * 28 + [4] * 3
    assert [round(u, 6) for _, w, u in steps if w == 4] == [-0.2] * 3


def test_seesaw_trades_each_halving_of_the_schedule_for_a_doubled_window():
    total, warmup, peak = 200, 20, 0.5
    lr = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.05)
    inner = gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=lr)
    steps = _steps(gqc_jax.seesaw(inner, lr, peak, warmup_microbatches=warmup), total)
    for count, window, update in steps:
        eta = float(lr(count))  # the inner schedule at the step's clock
        k = 1 if count < warmup else 2 ** math.floor(math.log2(peak / eta))
        assert window == k, (count, window, k)
        assert update == pytest.approx(-eta * math.sqrt(window), rel=1e-5)
    windows = [w for _, w, _ in steps]
    assert windows[:warmup] == [1] * warmup and max(windows) == 8  # 0.5 -> 0.05: three halvings
    n, expected_steps = 0, 0  # the same rule in plain Python
    for count in range(total):
        eta = float(lr(count))
        n += 1
        if n >= (1 if count < warmup else 2 ** math.floor(math.log2(peak / eta))):
            n, expected_steps = 0, expected_steps + 1
    assert len(steps) == expected_steps < 0.75 * total
    # At the halving points the applied rate is peak * sqrt(a), not peak * a.
    first_two = next((c, u) for c, w, u in steps if w == 2)
    assert -first_two[1] == pytest.approx(float(lr(first_two[0])) * math.sqrt(2), rel=1e-5)
    assert -first_two[1] > peak * 0.5 * 1.3


def test_seesaw_caps_windows_at_a_power_of_two_and_checks_its_arguments():
    lr = optax.linear_schedule(1.0, 0.0, 30)  # decays to 0
    inner = gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=lr)
    steps = _steps(gqc_jax.seesaw(inner, lr, 1.0, max_draws=6), 31)
    assert max(w for _, w, _ in steps) == 4  # the largest power of two <= 6
    assert all(np.isfinite(u) for *_, u in steps)
    with pytest.raises(TypeError, match="lr_schedule must be a schedule"):
        gqc_jax.seesaw(inner, 0.1, 1.0)
    with pytest.raises(ValueError, match="peak_lr must be a finite number > 0, got 0"):
        gqc_jax.seesaw(inner, lr, 0)
    with pytest.raises(ValueError, match="warmup_microbatches must be an int >= 0, got -1"):
        gqc_jax.seesaw(inner, lr, 1.0, warmup_microbatches=-1)
