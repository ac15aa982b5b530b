"""SBC: n * b >= L with exact ties, the ceil effective batch, schedules."""

import jax.numpy as jnp
import optax
import pytest

import gqc_jax


def _window_sizes(tx, calls):
    params = {"v": jnp.zeros(2)}
    state = tx.init(params)
    sizes = []
    for _ in range(calls):
        _, state = tx.update({"v": jnp.ones(2)}, state, params)
        if bool(state.stepped):
            sizes.append(int(state.last_num_draws))
    return sizes


@pytest.mark.parametrize(
    ("logical", "physical", "expected"),
    [(96, 32, 3), (97, 32, 4), (32, 32, 1), (1, 32, 1), (100, 7, 15)],
)
def test_effective_batch_is_b_times_ceil_l_over_b(logical, physical, expected):
    tx = gqc_jax.sbc(optax.sgd(0.1), logical, physical)
    assert _window_sizes(tx, 3 * expected) == [expected] * 3


def test_draw_cap_bounds_the_window():
    tx = gqc_jax.sbc(optax.sgd(0.1), 10_000, 8, max_draws=5)
    assert _window_sizes(tx, 10) == [5, 5]


def test_logical_batch_schedule_on_the_microbatch_clock():
    # L(t) = 4 for the first 6 microbatches, then 12: windows of 2, 2, 2, then 6.
    schedule = optax.piecewise_constant_schedule(4.0, {6: 3.0})
    tx = gqc_jax.sbc(optax.sgd(0.1), schedule, physical_batch_size=2)
    assert _window_sizes(tx, 12) == [2, 2, 2, 6]


def test_stats_report_batch_sizes():
    tx = gqc_jax.sbc(optax.sgd(0.1), 64, 16)
    s = gqc_jax.stats(tx.init({"v": jnp.zeros(1)}))
    assert float(s["logical_batch_size"]) == 64.0
    assert int(s["physical_batch_size"]) == 16
