"""The jitted Student-t quantile against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gqc_jax.student_t import t_quantile


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
    worst, where = _max_relative_error(250)
    assert worst < 1e-6, (worst, where)


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
