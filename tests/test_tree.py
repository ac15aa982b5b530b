"""Pytree helpers: global norm and the finiteness check."""

import jax.numpy as jnp
import numpy as np
import pytest

from gqc_jax._tree import all_finite, global_norm


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_all_finite_detects_any_non_finite_element(bad, dtype):
    tree = {"a": jnp.ones(5, dtype), "b": jnp.full((3, 3), 3e4, dtype), "i": jnp.arange(4)}
    assert bool(all_finite(tree))
    tree["b"] = tree["b"].at[2, 1].set(bad)
    assert not bool(all_finite(tree))


def test_all_finite_with_extreme_finite_values_and_no_float_leaves():
    assert bool(all_finite({"a": jnp.array([3.4e38, -3.4e38, 1e-45, -0.0])}))
    assert bool(all_finite({"i": jnp.arange(3)}))
    assert bool(all_finite({}))


def test_global_norm_is_the_float32_norm_of_all_leaves():
    tree = {"a": jnp.array([3.0, 4.0], jnp.bfloat16), "b": jnp.array([[12.0]])}
    assert float(global_norm(tree)) == 13.0
    assert float(global_norm({})) == 0.0
