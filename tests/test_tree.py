"""Pytree helpers: global norm and the finiteness check."""

import jax.numpy as jnp
import numpy as np
import pytest

from gqc_jax._tree import check_floating, global_norm, has_finite_norm


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_has_finite_norm_detects_any_non_finite_element(bad, dtype):
    tree = {"a": jnp.ones(5, dtype), "b": jnp.full((3, 3), 3e4, dtype), "i": jnp.arange(4)}
    assert bool(has_finite_norm(tree))
    tree["b"] = tree["b"].at[2, 1].set(bad)
    assert not bool(has_finite_norm(tree))


def test_has_finite_norm_with_extreme_values_and_no_float_leaves():
    # A squared norm of 2.69e38 fits in float32 (max 3.4e38); 4.24e38, or that
    # of one finite 3e38, overflows, so such a gradient counts as non-finite.
    assert bool(has_finite_norm({"a": jnp.array([1.3e19, -1e19, 1e-45, -0.0])}))
    assert not bool(has_finite_norm({"a": jnp.array([1.8e19, -1e19])}))
    assert not bool(has_finite_norm({"a": jnp.array([3e38, 1.0])}))
    assert not bool(has_finite_norm({"a": jnp.array([3e38], jnp.bfloat16)}))
    assert bool(has_finite_norm({"i": jnp.arange(3)}))
    assert bool(has_finite_norm({}))


def test_check_floating_names_the_integer_leaf():
    check_floating({"a": jnp.ones(2), "b": jnp.ones(2, jnp.bfloat16)})
    with pytest.raises(TypeError, match=r"Gradient leaf \['n'\] has dtype int32"):
        check_floating({"a": jnp.ones(2), "n": jnp.arange(2)})


def test_global_norm_is_the_float32_norm_of_all_leaves():
    tree = {"a": jnp.array([3.0, 4.0], jnp.bfloat16), "b": jnp.array([[12.0]])}
    assert float(global_norm(tree)) == 13.0
    assert float(global_norm({})) == 0.0
