"""GNS, GNR and MHT rules, their fixed reference bugs, stats keys and factories."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax
from tests.helpers import params_like, random_grads


def _run(tx, grads, values=None, params=None):
    params = params_like() if params is None else params
    state = tx.init(params)
    update = jax.jit(tx.update)
    stepped = []
    for i, g in enumerate(grads):
        kwargs = {} if values is None else {"value": values[i]}
        updates, state = update(g, state, params, **kwargs)
        params = optax.apply_updates(params, updates)
        stepped.append(bool(state.stepped))
    return stepped, state, params


def _flat_norm(g):
    return np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(g)))


def test_gns_follows_its_rule():
    grads = random_grads(20, 80, scale=0.3, offset=0.1)
    tol, cap = 0.01, 6
    stepped, _, _ = _run(gqc_jax.gns(optax.sgd(0.1), tol, max_draws=cap), grads)
    expected, window = [], []
    for g in grads:
        window.append(_flat_norm(g))
        h = np.array(window)
        n = len(h)
        stat = h.var(ddof=1) / (np.mean(h**2) + 1e-8) if n > 1 else np.nan
        step = bool(stat <= n * tol) or n >= cap
        expected.append(step)
        if step:
            window = []
    assert stepped == expected
    assert 0 < sum(stepped) < len(grads)


def test_gns_never_steps_on_a_first_draw_and_tolerance_one_steps_at_two():
    stepped, _, _ = _run(gqc_jax.gns(optax.sgd(0.1), 1.0), random_grads(21, 10))
    assert stepped == [False, True] * 5


def test_gns_reports_no_nan_at_the_first_draw_of_a_window():
    """The statistic is undefined for one norm: it keeps its last defined value
    (0 before any), so loggers' NaN alarms stay quiet in normal operation."""
    tx = gqc_jax.gns(optax.sgd(0.1), 1.0)
    params = params_like()
    state, reported = tx.init(params), []
    for g in random_grads(21, 6):
        _, state = tx.update(g, state, params)
        reported.append(float(gqc_jax.stats(state)["gradient_noise_statistic"]))
    assert np.all(np.isfinite(reported)) and reported[0] == 0.0
    assert reported[2] == reported[1] and reported[4] == reported[3]  # first draws keep it
    assert reported[3] != reported[1]


def test_gnr_rescales_to_the_target():
    tx = gqc_jax.gnr(optax.sgd(1.0), target_norm=0.5)
    params = params_like()
    state = tx.init(params)
    for g in random_grads(22, 3, scale=3.0):
        updates, state = tx.update(g, state, params)
        np.testing.assert_allclose(_flat_norm(updates), 0.5, rtol=1e-5)
        assert bool(state.stepped) and int(state.num_draws) == 0


def test_gnr_zero_gradient_does_not_move_adamw():
    """Reference bug: a zero gradient still steps AdamW (decay, momentum). Ours skips."""
    tx = gqc_jax.gnr(optax.adamw(0.1, weight_decay=0.5), target_norm=1.0)
    params = jax.tree.map(lambda p: p + 1.0, params_like())
    g = random_grads(23, 1)[0]
    zero = jax.tree.map(jnp.zeros_like, g)
    stepped, state, after = _run(tx, [g, zero, zero], params=params)
    assert stepped == [True, False, False]
    assert int(state.num_skipped) == 2 and int(state.num_steps) == 1
    _, _, after_one = _run(tx, [g], params=params)
    jax.tree.map(np.testing.assert_array_equal, after, after_one)


def test_mht_first_call_steps_and_confidence_one_never_passes():
    values = [2.0, 2.01, 1.99, 2.0, 2.0, 2.0]
    grads = random_grads(24, len(values))
    stepped, _, _ = _run(gqc_jax.mht(optax.sgd(0.1), 0.9, 0.05), grads, values)
    assert stepped[0]
    # A constant confidence of 1 (the reference's default) never passes and is
    # rejected; a schedule reaching 1 is clamped to the float32 below 1 and counted.
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        gqc_jax.mht(optax.sgd(0.1), 1.0, 0.05)
    below_one = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    tx = gqc_jax.mht(optax.sgd(0.1), lambda count: below_one, 0.05, max_draws=3)
    expected, state, _ = _run(tx, grads, values)
    assert int(gqc_jax.stats(state)["num_invalid_hyperparameters"]) == 0
    tx = gqc_jax.mht(optax.sgd(0.1), lambda count: 1.0, 0.05, max_draws=3)
    stepped, state, _ = _run(tx, grads, values)
    assert stepped == expected
    assert int(gqc_jax.stats(state)["num_invalid_hyperparameters"]) == len(values)


def test_mht_zero_confidence_zero_percent_is_a_tie_that_steps():
    grads = random_grads(25, 3)
    zero = lambda count: 0.0  # noqa: E731 (schedules may reach 0; constants may not)
    stepped, state, _ = _run(gqc_jax.mht(optax.sgd(0.1), zero, zero), grads, [1.0, 3.0, 2.0])
    assert stepped == [True, True, True]
    assert int(gqc_jax.stats(state)["num_invalid_hyperparameters"]) == 0


def test_mht_decides_alike_for_losses_below_zero():
    """The interval is judged against |mean|: a loss stream and its negation (a
    Gaussian NLL, a negated reward) give the same decisions, and a tight stream
    below zero steps, as it does above zero (it never did: fixed windows of 8)."""
    values = [2.0, 2.3, 1.6, 2.1, 1.9, 2.05, 1.95, 2.0, 2.4, 1.7, 2.0, 2.0]
    grads = random_grads(26, len(values))
    tx = gqc_jax.mht(optax.sgd(0.1), 0.9, 0.1, max_draws=8)
    positive, _, _ = _run(tx, grads, values)
    negative, _, _ = _run(tx, grads, [-v for v in values])
    assert negative == positive
    assert negative[:8] == [True, False, False, False, False, True, True, True]
    # A mean of exactly zero has no relative error: only the draw cap steps.
    zero, _, _ = _run(gqc_jax.mht(optax.sgd(0.1), 0.5, 0.5, max_draws=4), grads[:4], [0.0] * 4)
    assert zero == [False, False, False, True]


def test_mht_needs_the_loss():
    tx = gqc_jax.mht(optax.sgd(0.1))
    params = params_like()
    with pytest.raises(ValueError, match="pass it to every update"):
        tx.update(random_grads(27, 1)[0], tx.init(params), params)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"confidence": 1.5}, r"confidence must be in \(0, 1\)"),
        ({"confidence": 0.0}, r"confidence must be in \(0, 1\)"),
        ({"percent_error": -0.1}, "percent_error must be finite and > 0"),
        ({"percent_error": 0.0}, "percent_error must be finite and > 0"),
        ({"update_beta": 2.0}, "update_beta must be"),
    ],
)
def test_mht_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        gqc_jax.mht(optax.sgd(0.1), **bad)


def test_gns_gnr_bad_input():
    with pytest.raises(ValueError, match="tolerance must be finite and >= 0"):
        gqc_jax.gns(optax.sgd(0.1), -1.0)
    with pytest.raises(ValueError, match="target_norm must be finite and > 0"):
        gqc_jax.gnr(optax.sgd(0.1), float("inf"))
    with pytest.raises(ValueError, match="target_norm must be finite and > 0, got 0"):
        gqc_jax.gnr(optax.sgd(0.1), 0.0)


@pytest.mark.parametrize(
    ("tx", "keys"),
    [
        (gqc_jax.gns(optax.sgd(0.1)), {"noise_tolerance", "gradient_noise_statistic"}),
        (gqc_jax.gnr(optax.sgd(0.1)), {"target_gradient_norm"}),
        (
            gqc_jax.mht(optax.sgd(0.1)),
            {"confidence_level", "percent_error_threshold", "running_mean", "update_beta"},
        ),
        (gqc_jax.sbc(optax.sgd(0.1), 8, 2), {"logical_batch_size", "physical_batch_size"}),
        (gqc_jax.gnts(optax.sgd(0.1)), {"gradient_norm_threshold"}),
    ],
)
def test_stats_keys_per_controller(tx, keys):
    params = params_like()
    state = tx.init(params)
    _, state = tx.update(random_grads(28, 1, scale=0.1)[0], state, params, value=1.0)
    s = gqc_jax.stats(state)
    assert keys <= set(s) and "num_batches" in s
    assert all(jnp.ndim(v) == 0 for v in s.values())


def test_factory_runs_lr_on_the_microbatch_clock():
    tx = gqc_jax.gnts_with_cosine_annealing(
        optax.adamw, 100, 10, learning_rate=1e-3, weight_decay=0.1, max_draws=4
    )
    params = params_like()
    state = tx.init(params)
    for g in random_grads(29, 6, scale=0.1):  # small norms: every draw steps in warmup
        _, state = tx.update(g, state, params)
        assert bool(state.stepped)
    # Values used at the 6th microbatch (clock 5): warmup fractions 5/10, not 6 steps.
    hp = jax.device_get(gqc_jax.find_controller_state(state).inner_state.hyperparams)
    assert set(hp) == {"learning_rate", "weight_decay"}
    np.testing.assert_allclose(hp["learning_rate"], 1e-3 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(hp["weight_decay"], 0.1 * 0.5, rtol=1e-5)


def test_factory_optimizer_without_weight_decay():
    tx = gqc_jax.gnts_with_cosine_annealing(optax.sgd, 100, 10, learning_rate=0.1)
    state = tx.init(params_like())
    assert set(gqc_jax.find_controller_state(state).inner_state.hyperparams) == {"learning_rate"}


def test_factory_needs_a_factory_and_a_learning_rate():
    with pytest.raises(TypeError, match="optimizer factory such as optax.adamw"):
        gqc_jax.gnts_with_cosine_annealing(optax.adamw(1e-3), 100, 10, learning_rate=1e-3)
    with pytest.raises(TypeError, match="learning_rate=... is required"):
        gqc_jax.gnts_with_cosine_annealing(optax.adamw, 100, 10)


def test_on_microbatch_clock_outside_a_controller_is_a_clear_error():
    tx = gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=0.1)
    params = params_like()
    with pytest.raises(ValueError, match="must be the inner optimizer of a gqc_jax controller"):
        tx.update(random_grads(30, 1)[0], tx.init(params), params)
    with pytest.raises(TypeError, match="has no argument"):
        gqc_jax.on_microbatch_clock(optax.sgd, learning_rate=0.1, betas=0.9)
    # Chained after something else it is not the controller's own inner: the same error.
    chained = gqc_jax.sbc(optax.chain(optax.clip(1.0), tx), 2, 1)
    with pytest.raises(ValueError, match="chain them inside the factory"):
        chained.update(random_grads(30, 1)[0], chained.init(params), params)
    inside = gqc_jax.on_microbatch_clock(
        lambda **kw: optax.chain(optax.clip(1.0), optax.sgd(**kw)), learning_rate=0.1
    )
    tx = gqc_jax.sbc(inside, 2, 1)
    state = tx.init(params)
    for g in random_grads(30, 2):
        _, state = tx.update(g, state, params)
    assert int(state.num_steps) == 1


def _grad_reading_inner():
    """An inner optimizer that refuses extra arguments it does not know, as
    optax's line searches do, and steps by the ``grad=`` it is given."""

    def update(updates, state, params=None, *, value=None, grad=None, **extra):
        del updates, params, value
        if extra:
            raise TypeError(f"unexpected extra arguments {sorted(extra)}")
        return grad, state

    return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def test_the_inner_gets_no_clock_it_did_not_ask_for_and_grad_is_the_window_mean():
    """Every inner received microbatch_count (optax.lbfgs failed on it), and a
    user's grad= reached it unchanged: the last microbatch's gradient, not the
    window mean it steps on."""
    tx = gqc_jax.sbc(_grad_reading_inner(), 3, 1)
    params = params_like()
    state = tx.init(params)
    grads = random_grads(31, 3)
    for g in grads:
        updates, state = jax.jit(tx.update)(g, state, params, value=1.0, grad=g)
    assert bool(state.stepped)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    jax.tree.map(lambda u, m: np.testing.assert_allclose(u, m, rtol=1e-5), updates, mean)


def test_lbfgs_with_its_line_search_runs_under_a_controller():
    def f(p):
        return jnp.sum((p["w"] - 3.0) ** 2)

    params = {"w": jnp.zeros(2)}
    tx = gqc_jax.sbc(optax.lbfgs(), 2, 1)
    state = tx.init(params)
    for _ in range(6):
        value, grad = jax.value_and_grad(f)(params)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], 3.0, rtol=1e-5)


def test_gnr_targets_near_the_float32_limit():
    """Found by tests/test_fuzz.py: 3.4028235677973366e38 is finite in Python but
    inf in float32; and a large finite target over a small norm overflowed."""
    with pytest.raises(ValueError, match=r"target_norm must be finite and > 0, got .*float32"):
        gqc_jax.gnr(optax.sgd(1.0), target_norm=3.4028235677973366e38)
    tx = gqc_jax.gnr(optax.sgd(1.0), target_norm=1e38)
    params = {"w": jnp.zeros(2)}
    updates, _ = tx.update({"w": jnp.array([3e-3, -4e-3])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-6e37, 8e37], rtol=1e-6)
