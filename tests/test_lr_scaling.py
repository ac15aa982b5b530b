"""lr_scaling: a window of k microbatches steps at learning rate x (k / reference)^p.

Exactness is shown against the inner optimizer built with the scaled learning
rate, for the optimizers whose update is linear in it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gqc_jax
from tests.helpers import params_like, random_grads

LR = 1e-2
# Optimizers whose update is the learning rate times a direction computed without it.
LINEAR_IN_LR = {
    "sgd": optax.sgd,
    "sgd-nesterov": functools.partial(optax.sgd, momentum=0.9, nesterov=True),
    "adam": optax.adam,
    "adamw": functools.partial(optax.adamw, weight_decay=0.1),
    "lion": functools.partial(optax.lion, weight_decay=0.1),
    "muon": optax.contrib.muon,
    "adafactor": optax.adafactor,
}
CONTROLLERS = {
    "gnts": lambda inner, **kw: gqc_jax.gnts(inner, threshold=2.2, max_draws=6, **kw),
    "gns": lambda inner, **kw: gqc_jax.gns(inner, tolerance=0.05, max_draws=6, **kw),
    "mht": lambda inner, **kw: gqc_jax.mht(inner, 0.9, 0.02, max_draws=6, **kw),
    "sbc": lambda inner, **kw: gqc_jax.sbc(inner, 3, 1, **kw),
    "snr": lambda inner, **kw: gqc_jax.snr(inner, noise_ratio=0.3, max_draws=6, **kw),
    "adaptive_accumulation": lambda inner, **kw: gqc_jax.adaptive_accumulation(
        inner, gqc_jax.GradientNormThreshold(2.2), max_draws=6, **kw
    ),
}
LOSSES = [2.0 + 0.3 * np.sin(1.7 * i) for i in range(40)]


def _run(tx, grads, set_lr=None):
    """Parameters after the stream, and (stepped, window) per call."""
    params = params_like()
    state = tx.init(params)
    update = jax.jit(tx.update)
    steps = []
    for i, g in enumerate(grads):
        if set_lr is not None:
            state = set_lr(state, i)
        updates, state = update(g, state, params, value=LOSSES[i])
        params = optax.apply_updates(params, updates)
        s = jax.device_get(gqc_jax.stats(state))
        steps.append((bool(s["stepped"]), int(s["last_num_draws"]), float(s["lr_factor"])))
    return params, steps


@pytest.mark.parametrize("name", list(LINEAR_IN_LR))
def test_fixed_windows_equal_the_inner_optimizer_at_the_scaled_rate(name):
    make = LINEAR_IN_LR[name]
    grads = random_grads(0, 12, scale=0.5, offset=0.3)
    scaled, steps = _run(gqc_jax.sbc(make(LR), 4, 1, lr_scaling="sqrt"), grads)
    plain, _ = _run(gqc_jax.sbc(make(LR * 2.0), 4, 1), grads)  # sqrt(4 / 1) = 2
    assert [s for s in steps if s[0]] == [(True, 4, 2.0)] * 3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), scaled, plain)
    start = params_like()
    assert all(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(scaled), jax.tree.leaves(start), strict=True)
        if a.size > 1
    )


@pytest.mark.parametrize("controller", list(CONTROLLERS))
@pytest.mark.parametrize(
    ("lr_scaling", "power", "reference"),
    [("sqrt", 0.5, 1), ("linear", 1.0, 2), (0.7, 0.7, 3)],
)
def test_varying_windows_step_at_the_rate_of_their_own_size(
    controller, lr_scaling, power, reference
):
    """The same stream with the inner optimizer's learning rate set, before each
    call, to lr x (k / reference)^p for the window that call closes. The two
    differ by float32 rounding only (lr x f against f x (lr x u), over ~10 steps
    whose updates partly cancel); a wrong factor would differ by O(1)."""
    make = CONTROLLERS[controller]
    grads = random_grads(1, 40, scale=1.0, offset=0.4)
    tx = make(optax.adamw(LR, weight_decay=0.1), lr_scaling=lr_scaling, reference_draws=reference)
    scaled, steps = _run(tx, grads)
    windows = [k for stepped, k, _ in steps if stepped]
    assert len(windows) >= 3
    for stepped, k, factor in steps:
        if stepped:
            assert factor == pytest.approx((k / reference) ** power, rel=1e-6)

    def set_lr(state, i):
        stepped, k, _ = steps[i]
        lr = LR * (k / reference) ** power if stepped else LR
        inner = state.inner_state
        hyper = {**inner.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
        return state._replace(inner_state=inner._replace(hyperparams=hyper))

    inner = optax.inject_hyperparams(optax.adamw)(learning_rate=LR, weight_decay=0.1)
    reference_run, reference_steps = _run(make(inner), grads, set_lr)
    assert [s[:2] for s in reference_steps] == [s[:2] for s in steps]  # same decisions
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), scaled, reference_run
    )


def test_varying_windows_include_more_than_one_size():
    grads = random_grads(1, 40, scale=1.0, offset=0.4)
    for controller in ("gnts", "gns", "snr"):
        tx = CONTROLLERS[controller](optax.sgd(LR), lr_scaling="sqrt")
        _, steps = _run(tx, grads)
        assert len({k for stepped, k, _ in steps if stepped}) >= 2, controller


def test_without_lr_scaling_nothing_changes():
    grads = random_grads(2, 10, scale=0.5)
    a, steps = _run(gqc_jax.gnts(optax.adam(LR), threshold=0.9, max_draws=4), grads)
    b, _ = _run(gqc_jax.gnts(optax.adam(LR), threshold=0.9, max_draws=4, lr_scaling=0.0), grads)
    assert all(factor == 1.0 for *_, factor in steps)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_skipped_microbatches_do_not_count_and_flush_scales_the_open_window():
    params = {"w": jnp.zeros(2)}
    tx = gqc_jax.sbc(optax.sgd(1.0), 4, 1, lr_scaling="linear")
    state = tx.init(params)
    for g in (1.0, jnp.nan, 1.0):
        _, state = tx.update({"w": jnp.full(2, g)}, state, params)
    assert int(state.num_draws) == 2 and int(state.num_skipped) == 1
    updates, state = gqc_jax.flush(tx, state, params)
    assert float(gqc_jax.stats(state)["lr_factor"]) == 2.0
    np.testing.assert_array_equal(updates["w"], [-2.0, -2.0])  # lr 1 x 2 on mean 1


def test_bfloat16_updates_keep_their_dtype():
    params = {"w": jnp.zeros(3, jnp.bfloat16)}
    tx = gqc_jax.sbc(optax.sgd(0.5), 2, 1, lr_scaling="sqrt")
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), -0.5 * np.sqrt(2), rtol=1e-2)


def test_injected_lr_scaling_and_reference_equal_the_static_ones():
    grads = random_grads(3, 12, scale=0.5, offset=0.3)
    static, steps = _run(
        gqc_jax.sbc(optax.adam(LR), 3, 1, lr_scaling=0.5, reference_draws=2), grads
    )
    injected = optax.inject_hyperparams(
        gqc_jax.sbc, static_args=("max_draws", "physical_batch_size")
    )(optax.adam(LR), 3, 1, lr_scaling=0.5, reference_draws=2)
    params = params_like()
    state, update = injected.init(params), jax.jit(injected.update)
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    jax.tree.map(np.testing.assert_array_equal, params, static)
    assert float(gqc_jax.stats(state)["lr_factor"]) == pytest.approx(np.sqrt(1.5))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"lr_scaling": "cubic"},
            ValueError,
            'lr_scaling must be None, "sqrt", "linear" or a power p >= 0, got \'cubic\'',
        ),
        ({"lr_scaling": -0.5}, ValueError, "got -0.5"),
        ({"lr_scaling": float("nan")}, ValueError, "got nan"),
        ({"lr_scaling": True}, TypeError, "lr_scaling must be"),
        ({"lr_scaling": [0.5]}, TypeError, r"got \[0.5\]"),
        (
            {"lr_scaling": "sqrt", "reference_draws": 0},
            ValueError,
            "reference_draws must be .* got 0",
        ),
        ({"lr_scaling": "sqrt", "reference_draws": float("inf")}, ValueError, "got inf"),
        ({"reference_draws": "4"}, TypeError, "reference_draws must be"),
    ],
)
def test_bad_values_are_refused_at_construction(kwargs, error, match):
    for make in CONTROLLERS.values():
        with pytest.raises(error, match=match):
            make(optax.sgd(0.1), **kwargs)


def test_an_injected_value_out_of_range_leaves_the_update_unscaled():
    params = {"w": jnp.zeros(2)}
    tx = optax.inject_hyperparams(gqc_jax.sbc, static_args=("max_draws", "physical_batch_size"))(
        optax.sgd(1.0), 2, 1, lr_scaling=0.5, reference_draws=1.0
    )
    state = tx.init(params)
    state = state._replace(hyperparams={**state.hyperparams, "reference_draws": jnp.float32(-1)})
    update = jax.jit(tx.update)
    for _ in range(2):
        updates, state = update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], [-1.0, -1.0])
    assert float(gqc_jax.stats(state)["lr_factor"]) == 1.0
