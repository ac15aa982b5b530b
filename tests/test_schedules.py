"""The reference's schedules, and the horizon clamp we add on purpose."""

import jax.numpy as jnp
import numpy as np
import pytest

from gqc_jax import schedules


def _values(schedule, counts):
    return np.asarray(schedule(jnp.asarray(counts, jnp.int32)), np.float64)


def test_gnts_factory_threshold_worked_example():
    """Reference spec §5.2: W=0.95, A=0.25, L=20, N=160, R=10."""
    s = schedules.cosine_annealing_with_inverse_warmup(0.95, 0.25, 20, 160, 10)
    v = _values(s, [0, 1, 20, 20 + 2 * 140 // 3, 160])
    np.testing.assert_allclose(v[0], 9.5, rtol=1e-6)
    np.testing.assert_allclose(v[0] - v[1], 0.4275, rtol=1e-5)
    np.testing.assert_allclose(v[2], 0.95, rtol=1e-6)
    np.testing.assert_allclose(v[4], 0.25, rtol=1e-6)
    p = (v[3] - 0.25) / 0.7  # cos(pi/2 * p) at p = 93/140
    np.testing.assert_allclose(p, np.cos(np.pi / 2 * (93 / 140)), rtol=1e-5)


def test_clamped_past_the_horizon_where_the_reference_goes_negative():
    """Reference bug: past N the quarter cosine continues and the threshold goes
    negative (for p > 1.232 with these values). Ours holds the final value."""
    s = schedules.cosine_annealing_with_inverse_warmup(0.95, 0.25, 20, 160, 10)
    late = _values(s, [160, 200, 400, 10_000])
    np.testing.assert_allclose(late, 0.25, rtol=1e-6)
    reference_at_400 = 0.25 + 0.7 * np.cos(np.pi / 2 * (400 - 20) / 140)
    assert reference_at_400 < 0


def test_polynomial_with_non_integer_power_stays_real():
    """Reference bug: P=1.5 past N gives a complex batch size. Ours: final value."""
    s = schedules.polynomial_schedule_with_warmup(4.0, 16.0, 10, 100, 1.5)
    v = _values(s, [0, 5, 10, 55, 100, 150])
    np.testing.assert_allclose(v[:3], [0.0, 2.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(v[3], 16 - 12 * 0.5**1.5, rtol=1e-6)
    np.testing.assert_allclose(v[4:], 16.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (schedules.constant_schedule(3.0), [3.0, 3.0, 3.0]),
        (schedules.constant_with_warmup(2.0, 4), [0.0, 1.0, 2.0]),
        (schedules.constant_with_inverse_warmup(1.0, 4), [20.0, 10.5, 1.0]),
        (schedules.cosine_annealing_with_warmup(1.0, 0.0, 0, 8), [1.0, np.cos(np.pi / 8), 0.0]),
    ],
)
def test_formulas(schedule, expected):
    np.testing.assert_allclose(_values(schedule, [0, 2, 8]), expected, rtol=1e-6, atol=1e-7)


def test_horizon_not_after_warmup_means_progress_one():
    s = schedules.cosine_annealing_with_warmup(1.0, 0.2, 10, 10)
    np.testing.assert_allclose(_values(s, [10, 11]), 0.2, rtol=1e-6)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_bad_step_counts(bad):
    with pytest.raises(ValueError, match="num_warmup_steps must be an int >= 0"):
        schedules.constant_with_warmup(1.0, bad)


def test_bad_values():
    with pytest.raises(ValueError, match="warmup_to_value must be finite"):
        schedules.constant_with_warmup(float("nan"), 3)
    with pytest.raises(TypeError, match="anneal_to_value must be a real number"):
        schedules.cosine_annealing_with_warmup(1.0, "0", 3, 10)


def test_values_beyond_float32_are_refused():
    """Schedules evaluate in float32, where 1e39 is inf."""
    with pytest.raises(ValueError, match=r"warmup_to_value must be at most 3.4e\+38 in magnitude"):
        schedules.constant_with_warmup(-1e39, 3)
    schedules.constant_with_warmup(3e38, 3)
