"""The jitted Student-t quantile against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gqc_jax.student_t import t_quantile, t_quantile_at_most


def _max_relative_error(num_confidences):
    confidence = np.linspace(0.5, 0.999, num_confidences).astype(np.float32)
    df = np.arange(1, 1001, dtype=np.float32)
    got = jax.jit(jax.vmap(jax.vmap(t_quantile, (None, 0)), (0, None)))(confidence, df)
    # The reference value is taken at the float32 input actually given.
    want = stats.t.ppf((1.0 + confidence.astype(np.float64)[:, None]) / 2.0, df[None, :])
    rel = np.abs(np.asarray(got, np.float64) - want) / want
    return rel.max(), np.unravel_index(rel.argmax(), rel.shape)


def test_matches_scipy_over_df_1_to_1000_and_confidence_half_to_0999():
    worst, where = _max_relative_error(40)
    assert worst < 1e-6, (worst, where)


@pytest.mark.slow
def test_matches_scipy_on_a_fine_confidence_grid():
    """Measured worst: 1.03e-6 at c = 0.526, df = 10 (float32 tail arithmetic in
    the Newton refinement); refining up to df = 48, as before, gave 1.08e-6."""
    worst, where = _max_relative_error(250)
    assert worst < 1.05e-6, (worst, where)


@pytest.mark.parametrize("c", [0.0, 0.01, 0.2, 0.45])
def test_low_confidence(c):
    df = np.array([1, 2, 3, 7, 30, 200], np.float32)
    got = np.asarray(t_quantile(c, df))
    want = stats.t.ppf((1.0 + np.float32(c)) / 2.0, df)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_edges():
    assert float(t_quantile(0.0, 5)) == 0.0
    assert np.isinf(float(t_quantile(1.0, 5)))
    assert float(t_quantile(-0.5, 5)) == 0.0


def test_traced_confidence_does_not_recompile():
    f = jax.jit(t_quantile)
    a = f(jnp.float32(0.9), jnp.float32(4))
    b = f(jnp.float32(0.99), jnp.float32(4))
    assert f._cache_size() == 1
    assert float(b) > float(a)


def test_at_most_agrees_with_the_quantile_away_from_the_boundary():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.0, 1.0, 4000).astype(np.float32)
    c[:50] = 0.0
    c[50:100] = 1.0
    df = rng.integers(1, 200, 4000).astype(np.float32)
    q = np.asarray(jax.jit(t_quantile)(c, df), np.float64)
    bound = (q * rng.choice([0.9, 0.999, 0.99999, 1.00001, 1.001, 1.1], 4000)).astype(np.float32)
    bound[100:150] = np.inf
    bound[150:200] = -1.0
    bound[200:210] = np.nan
    got = np.asarray(jax.jit(t_quantile_at_most)(c, df, bound))
    want = q <= bound
    with np.errstate(invalid="ignore"):  # inf - inf where both are infinite
        far = ~(np.abs(bound - q) <= 2e-6 * q)  # NaN bounds count as far from q
    assert got.dtype == bool
    assert np.array_equal(got[far], want[far]), np.flatnonzero(got[far] != want[far])
    assert not got[200:210].any()


def test_at_most_edges():
    assert bool(t_quantile_at_most(0.0, 5, 0.0))
    assert not bool(t_quantile_at_most(1.0, 5, 1e30))
    assert bool(t_quantile_at_most(1.0, 5, np.inf))
    assert not bool(t_quantile_at_most(0.95, 5, 0.0))
    assert bool(t_quantile_at_most(0.95, 5, np.inf))
