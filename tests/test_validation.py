"""Bad input gives clear errors at construction (or trace) time, naming the value."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gqc_jax


@pytest.mark.parametrize("max_draws", [0, -3, 2**31, 10**12])
def test_max_draws_outside_the_int32_counters(max_draws):
    """Below 1, or beyond the int32 window counters (it failed at the first
    update with an unrelated overflow before)."""
    match = rf"max_draws must be in \[1, 2147483647\] \(the window counters are int32\), got {max_draws}"
    with pytest.raises(ValueError, match=match):
        gqc_jax.gnts(optax.sgd(0.1), max_draws=max_draws)


def test_the_largest_max_draws_updates():
    tx = gqc_jax.gns(optax.sgd(0.1), tolerance=0.01, max_draws=2**31 - 1)
    params = {"w": jnp.zeros(2)}
    _, state = jax.jit(tx.update)({"w": jnp.ones(2)}, tx.init(params), params)
    assert int(state.num_draws) == 1


@pytest.mark.parametrize("relative", ["no", "false", 0, 1, None])
def test_relative_must_be_a_bool(relative):
    with pytest.raises(TypeError, match=f"relative must be a bool, got {relative!r}"):
        gqc_jax.gnts(optax.sgd(0.1), threshold=0.5, relative=relative)


@pytest.mark.parametrize(
    "factory",
    [
        lambda N, L: gqc_jax.gnts_with_cosine_annealing(optax.adamw, N, L, learning_rate=1e-3),
        lambda N, L: gqc_jax.gns_default(optax.sgd, 0.01, N, L, learning_rate=0.1),
        lambda N, L: gqc_jax.mht_with_warmup(optax.adamw, 0.9, 0.05, N, L, learning_rate=1e-3),
        lambda N, L: gqc_jax.schedules.cosine_annealing_with_warmup(1.0, 0.0, L, N),
    ],
)
def test_a_warmup_longer_than_the_run_is_refused(factory):
    """Swapped positional arguments (N=500, L=10_000) gave a threshold that never
    reached its final value."""
    factory(10_000, 500)
    with pytest.raises(
        ValueError, match=r"num_warmup_steps \(10000\) must be at most num_training_steps \(500\)"
    ):
        factory(500, 10_000)


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


def test_integer_and_complex_gradients_are_refused_with_their_own_advice():
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=1.0)
    for dtype, match in [
        (jnp.int32, r"need floating-point ones .*optax.masked"),
        (jnp.complex64, r"complex parameters are not supported: keep their real and imaginary"),
    ]:
        params = {"w": jnp.zeros(2, dtype)}
        with pytest.raises(
            TypeError, match=rf"leaf \['w'\] has dtype {jnp.dtype(dtype)}; .*{match}"
        ):
            tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda v: gqc_jax.gns_default(optax.sgd, v, 100, 10, learning_rate=0.1), "tolerance"),
        (
            lambda v: gqc_jax.gnts_with_cosine_annealing(
                optax.sgd, 100, 10, initial_threshold=v, learning_rate=0.1
            ),
            "initial_threshold",
        ),
    ],
)
def test_a_factory_number_beyond_float32_is_refused_by_its_name(factory, name):
    """1e300 was cast to float32 inf with a NumPy overflow warning, and the
    controller then ran with an infinite threshold."""
    with pytest.raises(ValueError, match=rf"{name} must be at most 3.4e\+38 in magnitude"):
        factory(1e300)


@pytest.mark.parametrize(
    "factory",
    [
        lambda v: gqc_jax.gns_default(optax.sgd, v, 100, 10, learning_rate=0.1),
        lambda v: gqc_jax.gnts_with_cosine_annealing(
            optax.sgd, 100, 10, initial_threshold=v, learning_rate=0.1
        ),
        lambda v: gqc_jax.schedules.constant_with_inverse_warmup(v, 10, 20.0),
    ],
)
def test_an_inverse_warmup_that_would_start_at_inf_is_refused(factory):
    """A finite 1e38 times the warmup multiplier is inf in float32: the state
    held an infinite threshold through the warmup, silently."""
    with pytest.raises(ValueError, match=r"would start at 1e\+38 x \d+ = [\d.]+e\+3\d"):
        factory(1e38)
    factory(1e36)  # 2e37: representable
