"""Hyperparameters: optax.inject_hyperparams takes effect, arrays are accepted, and
out-of-range values at run time are clamped and counted."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax

CONTROLLER_STATIC = ("max_draws",)
INNER = optax.adamw(1e-2)
FACTORY_STATIC = ("optimizer", "max_draws", "num_training_steps", "num_warmup_steps")


def _stream(seed, count, size=16):
    """Gradients with signal |G|^2 = size and noise 4 per element, and positive losses."""
    rng = np.random.default_rng(seed)
    grads = [
        {"w": jnp.asarray(1.0 + 2.0 * rng.standard_normal(size), jnp.float32)} for _ in range(count)
    ]
    values = [jnp.float32(2.0 + 0.3 * rng.standard_normal()) for _ in range(count)]
    return grads, values


def _run(tx, state, grads, values, params):
    """Per-call updates and step decisions, every call through one jitted update."""

    @jax.jit
    def update(g, s, v):
        return tx.update(g, s, params, value=v)

    updates, stepped = [], []
    for g, v in zip(grads, values, strict=True):
        u, state = update(g, state, v)
        updates.append(u["w"])
        stepped.append(bool(gqc_jax.stats(state)["stepped"]))
    return np.stack(updates), stepped, state


# (factory, static_args, positional args, keyword args, injected name, new value)
CASES = [
    (gqc_jax.gnts, CONTROLLER_STATIC, (INNER,), {"threshold": 5.0}, "threshold", 8.0),
    (
        gqc_jax.gnts,
        CONTROLLER_STATIC,
        (INNER,),
        {"threshold": 0.6, "relative": True},
        "threshold",
        0.9,
    ),
    (
        gqc_jax.gnts,
        CONTROLLER_STATIC,
        (INNER,),
        {"threshold": 0.6, "relative": True},
        "reference_beta",
        0.9,
    ),
    (
        gqc_jax.gnts,
        CONTROLLER_STATIC,
        (INNER,),
        {"threshold": 0.6, "relative": True},
        "outlier_clip",
        1.0,
    ),
    (gqc_jax.gns, CONTROLLER_STATIC, (INNER,), {"tolerance": 0.02}, "tolerance", 0.2),
    (gqc_jax.gnr, (), (optax.sgd(0.1),), {"target_norm": 1.0}, "target_norm", 3.0),
    (gqc_jax.mht, CONTROLLER_STATIC, (INNER,), {"confidence": 0.9}, "confidence", 0.5),
    (gqc_jax.mht, CONTROLLER_STATIC, (INNER,), {"percent_error": 0.05}, "percent_error", 0.5),
    (gqc_jax.mht, CONTROLLER_STATIC, (INNER,), {"update_beta": 0.01}, "update_beta", 1.0),
    (
        gqc_jax.sbc,
        CONTROLLER_STATIC,
        (INNER,),
        {"logical_batch_size": 32, "physical_batch_size": 8},
        "logical_batch_size",
        16.0,
    ),
    (
        gqc_jax.sbc,
        CONTROLLER_STATIC,
        (INNER,),
        {"logical_batch_size": 32, "physical_batch_size": 8},
        "physical_batch_size",
        4,
    ),
    (gqc_jax.snr, CONTROLLER_STATIC, (INNER,), {"noise_ratio": 0.5}, "noise_ratio", 5.0),
    (
        gqc_jax.snr,
        CONTROLLER_STATIC,
        (INNER,),
        {"noise_ratio": 0.5, "min_draws": 2},
        "min_draws",
        6,
    ),
    (
        gqc_jax.snr,
        CONTROLLER_STATIC,
        (INNER,),
        {"noise_ratio": 0.5, "smoothing": 0.0},
        "smoothing",
        0.9,
    ),
    (
        gqc_jax.gnts_with_cosine_annealing,
        FACTORY_STATIC,
        (optax.adamw, 40, 8),
        {"learning_rate": 1e-2, "initial_threshold": 0.95},
        "initial_threshold",
        0.5,
    ),
    (
        gqc_jax.gnts_with_cosine_annealing_conventional_lr,
        FACTORY_STATIC,
        (optax.adamw, 40, 8),
        {"learning_rate": 1e-2, "final_threshold": 0.25},
        "final_threshold",
        20.0,
    ),
    (
        gqc_jax.gnts_with_cosine_annealing,
        FACTORY_STATIC,
        (optax.adamw, 40, 8),
        {"learning_rate": 1e-2, "warmup_multiplier": 10.0},
        "warmup_multiplier",
        1.0,
    ),
    (
        gqc_jax.gnr_with_cosine_annealing,
        FACTORY_STATIC[:1] + FACTORY_STATIC[2:],
        (optax.adamw,),
        {
            "initial_norm": 1.0,
            "final_norm": 0.3,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "initial_norm",
        3.0,
    ),
    (
        gqc_jax.gnr_with_cosine_annealing_conventional_lr,
        FACTORY_STATIC[:1] + FACTORY_STATIC[2:],
        (optax.adamw,),
        {
            "initial_norm": 1.0,
            "final_norm": 0.3,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "final_norm",
        3.0,
    ),
    (
        gqc_jax.gns_with_cosine_annealing,
        FACTORY_STATIC,
        (optax.adamw,),
        {
            "initial_tolerance": 0.05,
            "final_tolerance": 0.01,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "final_tolerance",
        0.3,
    ),
    (
        gqc_jax.gns_default,
        FACTORY_STATIC,
        (optax.adamw,),
        {"tolerance": 0.01, "num_training_steps": 40, "num_warmup_steps": 8, "learning_rate": 1e-2},
        "tolerance",
        0.3,
    ),
    (
        gqc_jax.mht_with_warmup,
        FACTORY_STATIC,
        (optax.adamw,),
        {
            "confidence_level": 0.9,
            "percent_error_threshold": 0.05,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "percent_error_threshold",
        0.5,
    ),
    (
        gqc_jax.sbc_with_polynomial,
        FACTORY_STATIC + ("physical_batch_size",),
        (optax.adamw,),
        {
            "physical_batch_size": 8,
            "initial_batch_size": 16.0,
            "final_batch_size": 64.0,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "final_batch_size",
        8.0,
    ),
    (
        gqc_jax.sbc_with_polynomial_conventional_lr,
        FACTORY_STATIC + ("physical_batch_size",),
        (optax.adamw,),
        {
            "physical_batch_size": 8,
            "initial_batch_size": 16.0,
            "final_batch_size": 64.0,
            "num_training_steps": 40,
            "num_warmup_steps": 8,
            "learning_rate": 1e-2,
        },
        "polynomial_power",
        0.5,
    ),
]


@pytest.mark.parametrize(
    ("factory", "static", "args", "kwargs", "name", "new"),
    CASES,
    ids=[f"{c[0].__name__}-{c[4]}" for c in CASES],
)
def test_injected_value_is_the_one_used(factory, static, args, kwargs, name, new):
    """A value written into inject_hyperparams' state behaves exactly like a
    controller built with it, and differently from the one built with the old
    value (so a controller that ignored it would fail)."""
    params = {"w": jnp.zeros(16)}
    grads, values = _stream(0, 40)
    old_plain = factory(*args, **kwargs)
    new_plain = factory(*args, **{**kwargs, name: new})
    injected = optax.inject_hyperparams(factory, static_args=static)(*args, **kwargs)

    u_old, s_old, _ = _run(old_plain, old_plain.init(params), grads, values, params)
    u_inj, s_inj, _ = _run(injected, injected.init(params), grads, values, params)
    np.testing.assert_allclose(u_inj, u_old, rtol=1e-5, atol=1e-7)
    assert s_inj == s_old

    state = injected.init(params)
    state.hyperparams[name] = jnp.asarray(new, state.hyperparams[name].dtype)
    u_new, s_new, final = _run(new_plain, new_plain.init(params), grads, values, params)
    u_inj, s_inj, final_inj = _run(injected, state, grads, values, params)
    np.testing.assert_allclose(u_inj, u_new, rtol=1e-5, atol=1e-7)
    assert s_inj == s_new
    assert s_new != s_old or not np.allclose(u_new, u_old)
    stats, stats_inj = gqc_jax.stats(final), gqc_jax.stats(final_inj)
    assert set(stats) == set(stats_inj)
    assert int(stats_inj["num_invalid_hyperparameters"]) == 0


def test_a_schedule_given_to_inject_takes_effect():
    params = {"w": jnp.zeros(4)}
    tx = optax.inject_hyperparams(gqc_jax.gnts, static_args=CONTROLLER_STATIC)(
        optax.sgd(0.1), threshold=optax.linear_schedule(100.0, 0.0, 5)
    )
    _, stepped, state = _run(tx, tx.init(params), [{"w": jnp.ones(4)}] * 10, [1.0] * 10, params)
    assert stepped == [True] * 5 + [False] * 5  # norm 2: above the threshold from call 5 on
    assert float(gqc_jax.stats(state)["gradient_norm_threshold"]) == 0.0


def test_snr_noise_ratio_raised_through_inject_matches_a_fresh_controller():
    params = {"w": jnp.zeros(16)}
    grads, values = _stream(1, 100)
    tx = optax.inject_hyperparams(gqc_jax.snr, static_args=CONTROLLER_STATIC)(
        optax.sgd(0.1), noise_ratio=0.5
    )
    state = tx.init(params)
    state.hyperparams["noise_ratio"] = jnp.asarray(5.0)
    _, injected, _ = _run(tx, state, grads, values, params)
    fresh = gqc_jax.snr(optax.sgd(0.1), noise_ratio=5.0)
    _, expected, _ = _run(fresh, fresh.init(params), grads, values, params)
    low = gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.5)
    _, at_low, _ = _run(low, low.init(params), grads, values, params)
    assert injected == expected
    assert sum(expected) > 2 * sum(at_low)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda v: gqc_jax.gnts(optax.sgd(0.1), v), "gradient_norm_threshold"),
        (lambda v: gqc_jax.gnts(optax.sgd(0.1), v, relative=True), "gradient_norm_threshold"),
        (lambda v: gqc_jax.gns(optax.sgd(0.1), v), "noise_tolerance"),
        (lambda v: gqc_jax.gnr(optax.sgd(0.1), v), "target_gradient_norm"),
        (lambda v: gqc_jax.mht(optax.sgd(0.1), v), "confidence_level"),
        (lambda v: gqc_jax.sbc(optax.sgd(0.1), v * 64, jnp.int32(8)), "logical_batch_size"),
        (lambda v: gqc_jax.snr(optax.sgd(0.1), v, smoothing=jnp.float32(0.5)), "noise_ratio"),
    ],
)
def test_jax_array_arguments_are_accepted(make, field):
    tx = make(jnp.float32(0.5))
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    assert float(gqc_jax.stats(state)[field]) in (0.5, 32.0)
    tx.update({"w": jnp.ones(2)}, state, params, value=jnp.float32(1.0))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: gqc_jax.gnts(optax.sgd(0.1), jnp.float32(-1.0)),
            "threshold must be finite and >= 0",
        ),
        (
            lambda: gqc_jax.snr(optax.sgd(0.1), min_draws=10, max_draws=4),
            r"min_draws \(10\) must be at most max_draws \(4\)",
        ),
        (
            lambda: gqc_jax.snr(optax.sgd(0.1), min_draws=jnp.float32(3.0)),
            "min_draws must be an int",
        ),
        (
            lambda: gqc_jax.snr(optax.sgd(0.1), smoothing=jnp.float32(1.0)),
            r"smoothing must be in \[0, 1\)",
        ),
        (lambda: gqc_jax.mht(optax.sgd(0.1), confidence=1.0), r"confidence must be in \(0, 1\)"),
        (lambda: gqc_jax.mht(optax.sgd(0.1), confidence=0), r"confidence must be in \(0, 1\)"),
        (
            lambda: gqc_jax.mht(optax.sgd(0.1), update_beta=jnp.float32(1.5)),
            r"update_beta must be in \[0, 1\]",
        ),
        (lambda: gqc_jax.gnr(optax.sgd(0.1), target_norm=0), "target_norm must be finite and > 0"),
        (
            lambda: gqc_jax.gnts(optax.sgd(0.1), reference_beta=5.0),
            r"reference_beta must be in \(0, 1\]",
        ),
        (
            lambda: gqc_jax.gnts(optax.sgd(0.1), outlier_clip=0.5),
            "outlier_clip must be finite and >= 1",
        ),
        (lambda: gqc_jax.sbc(optax.sgd(0.1), 64, jnp.int32(0)), "physical_batch_size must be > 0"),
        (
            lambda: gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.0),
            "noise_ratio must be finite and > 0",
        ),
    ],
)
def test_bad_constants_are_refused_at_construction(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def _calls(tx, count, value=1.0, grad=1.0):
    params = {"w": jnp.zeros(4)}
    grads = [{"w": jnp.full(4, grad)}] * count
    _, stepped, state = _run(tx, tx.init(params), grads, [value] * count, params)
    return stepped, gqc_jax.stats(state)


@pytest.mark.parametrize("bad", [-1.0, math.nan, -math.inf])
def test_threshold_schedule_out_of_range_is_clamped_and_counted(bad):
    # Calls 0-3 at 100 (step), then the bad value: clamped to 0 (never passes) or,
    # for NaN, the value last in force (100: keeps stepping).
    schedule = lambda count: jnp.where(count < 4, 100.0, bad)  # noqa: E731
    stepped, stats = _calls(gqc_jax.gnts(optax.sgd(0.1), schedule, max_draws=3), 10)
    assert int(stats["num_invalid_hyperparameters"]) == 6
    if math.isnan(bad):
        assert stepped == [True] * 10
        assert float(stats["gradient_norm_threshold"]) == 100.0
    else:
        assert stepped == [True] * 4 + [False, False, True] * 2
        assert float(stats["gradient_norm_threshold"]) == 0.0


def test_other_schedules_out_of_range_are_clamped_and_counted():
    stepped, stats = _calls(gqc_jax.sbc(optax.sgd(0.1), lambda c: -32.0, 8, max_draws=4), 4)
    assert stepped == [True] * 4  # logical batch clamped to 0: every draw steps
    assert int(stats["num_invalid_hyperparameters"]) == 4
    assert float(stats["logical_batch_size"]) == 0.0

    _, stats = _calls(gqc_jax.snr(optax.sgd(0.1), lambda c: -1.0, max_draws=4), 4)
    assert int(stats["num_invalid_hyperparameters"]) == 4 and float(stats["noise_ratio"]) == 0.0

    _, stats = _calls(gqc_jax.mht(optax.sgd(0.1), lambda c: 1.5, 0.05, max_draws=4), 4)
    below_one = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    assert int(stats["num_invalid_hyperparameters"]) == 4
    assert float(stats["confidence_level"]) == below_one


def test_a_value_written_into_the_state_follows_the_same_rule():
    tx = gqc_jax.gns(optax.sgd(0.1), 0.1, max_draws=2)
    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    state = state._replace(
        criterion_state=state.criterion_state._replace(noise_tolerance=jnp.float32(-5.0))
    )
    _, state = tx.update({"w": jnp.ones(4)}, state, params)
    stats = gqc_jax.stats(state)
    assert float(stats["noise_tolerance"]) == 0.0
    assert int(stats["num_invalid_hyperparameters"]) == 1


def test_a_gradient_whose_norm_overflows_is_skipped():
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.0, max_draws=4)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(2)}, state, params)
    _, state = tx.update({"w": jnp.array([3e38, 1.0])}, state, params)  # finite, norm overflows
    stats = gqc_jax.stats(state)
    assert int(stats["num_skipped"]) == 1 and int(stats["num_draws"]) == 1
    np.testing.assert_array_equal(gqc_jax.current_mean(state)["w"], [1.0, 1.0])


def test_float32_gradients_with_bfloat16_parameters_match_multisteps():
    params = {"w": jnp.zeros(4, jnp.bfloat16)}
    grads = [{"w": jnp.full(4, 0.5 + i, jnp.float32)} for i in range(6)]
    tx = gqc_jax.sbc(optax.adamw(1e-2), 2, 1)
    reference = optax.MultiSteps(optax.adamw(1e-2), every_k_schedule=2)
    state, ref_state = tx.init(params), reference.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update(g, state, params)
        ref_u, ref_state = reference.update(g, ref_state, params)
        chex.assert_trees_all_equal_dtypes(u, ref_u)
        chex.assert_trees_all_close(u, ref_u, rtol=1e-6)
    chex.assert_trees_all_equal_dtypes(state.inner_state, tx.init(params).inner_state)


@pytest.mark.parametrize("param_dtype", [jnp.int32, jnp.float32])
def test_integer_gradients_are_refused_with_the_leaf_named(param_dtype):
    params = {"w": jnp.zeros(4, param_dtype)}
    tx = gqc_jax.gnts(optax.adamw(1e-3))
    with pytest.raises(TypeError, match=r"Gradient leaf \['w'\] has dtype int32"):
        tx.update({"w": jnp.ones(4, jnp.int32)}, tx.init(params), params)


def test_a_written_state_changes_a_number_but_not_a_jax_array():
    """The documented rule: a number lives in the state (a write changes it); a
    JAX array is the value in force at every call, as inject_hyperparams passes
    it, so a write to the state is overwritten by it at the next update."""
    params = {"w": jnp.zeros(2)}
    big = {"w": jnp.full(2, 3.0)}  # norm 4.24

    def stepped_after_writing(threshold):
        tx = gqc_jax.gnts(optax.sgd(0.1), threshold, max_draws=8)
        state = tx.init(params)
        written = state.criterion_state._replace(gradient_norm_threshold=jnp.float32(10.0))
        _, state = tx.update(big, state._replace(criterion_state=written), params)
        return bool(state.stepped), float(gqc_jax.stats(state)["gradient_norm_threshold"])

    assert stepped_after_writing(1.0) == (True, 10.0)
    assert stepped_after_writing(np.float32(1.0)) == (True, 10.0)
    assert stepped_after_writing(jnp.float32(1.0)) == (False, 1.0)
