"""Bad input gives clear errors at construction (or trace) time, naming the value."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gqc_jax


@pytest.mark.parametrize("max_draws", [0, -3])
def test_max_draws_below_one(max_draws):
    with pytest.raises(ValueError, match=f"max_draws must be >= 1, got {max_draws}"):
        gqc_jax.gnts(optax.sgd(0.1), max_draws=max_draws)


@pytest.mark.parametrize("max_draws", [2.5, "8", True])
def test_max_draws_not_an_int(max_draws):
    with pytest.raises(TypeError, match="max_draws must be an int"):
        gqc_jax.gnts(optax.sgd(0.1), max_draws=max_draws)


@pytest.mark.parametrize("threshold", [-0.1, float("nan"), float("inf")])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be finite and >= 0"):
        gqc_jax.gnts(optax.sgd(0.1), threshold=threshold)


def test_threshold_of_wrong_type():
    with pytest.raises(TypeError, match="threshold must be a real number or a schedule"):
        gqc_jax.gnts(optax.sgd(0.1), threshold="high")


@pytest.mark.parametrize("physical", [0, -4])
def test_non_positive_physical_batch(physical):
    with pytest.raises(ValueError, match=f"physical_batch_size must be > 0, got {physical}"):
        gqc_jax.sbc(optax.sgd(0.1), 64, physical)


@pytest.mark.parametrize("logical", [0, -64])
def test_non_positive_logical_batch(logical):
    with pytest.raises(ValueError, match="logical_batch_size must be finite and > 0"):
        gqc_jax.sbc(optax.sgd(0.1), logical, 8)


def test_physical_batch_not_an_int():
    with pytest.raises(TypeError, match="physical_batch_size must be an int"):
        gqc_jax.sbc(optax.sgd(0.1), 64, 8.0)


@pytest.mark.parametrize("inner", [None, "adam", optax.adam, 0.1])
def test_inner_not_an_optax_transformation(inner):
    with pytest.raises(TypeError, match="inner must be an optax.GradientTransformation"):
        gqc_jax.gnts(inner)


def test_bad_criterion():
    with pytest.raises(TypeError, match="lacks init, should_step, reset"):
        gqc_jax.adaptive_accumulation(optax.sgd(0.1), object())


def test_bad_accumulator_dtype():
    with pytest.raises(ValueError, match="accumulator_dtype must be a floating dtype"):
        gqc_jax.gnts(optax.sgd(0.1), accumulator_dtype=jnp.int32)


def test_gradient_tree_mismatch_is_clear():
    tx = gqc_jax.gnts(optax.sgd(0.1))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    state = tx.init(params)
    with pytest.raises(ValueError, match="gradient tree does not match"):
        tx.update({"w": jnp.zeros(3)}, state, params)
    with pytest.raises(ValueError, match=r"Gradient leaf \['w'\] has shape \(4,\)"):
        jax.jit(tx.update)({"w": jnp.zeros(4), "b": jnp.zeros(())}, state, params)


def test_value_must_be_scalar():
    tx = gqc_jax.gnts(optax.sgd(0.1))
    params = {"w": jnp.zeros(3)}
    with pytest.raises(ValueError, match="value= must be a scalar loss"):
        tx.update({"w": jnp.zeros(3)}, tx.init(params), params, value=jnp.ones(2))


def test_traced_max_draws_names_the_fix():
    with pytest.raises(TypeError, match="static_args=\\('max_draws',\\)"):
        jax.jit(lambda m: gqc_jax.gnts(optax.sgd(0.1), max_draws=m).init({}))(3)


def test_schedules_and_traced_values_are_accepted():
    gqc_jax.gnts(optax.sgd(0.1), threshold=optax.linear_schedule(1.0, 0.1, 100))
    jax.jit(lambda t: gqc_jax.gnts(optax.sgd(0.1), threshold=t).init({"w": jnp.zeros(1)}))(0.5)
