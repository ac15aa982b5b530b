"""experiments.optimizer: every configured optimizer, plain and under a controller."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax
from experiments.config import OPTIMIZERS, Config, apply_overrides
from experiments.optimizer import build_optimizer, learning_rate


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("controller", ["none", "sbc"])
def test_every_optimizer_trains_a_quadratic_plain_and_under_a_controller(name, controller):
    lr = {"adamw": 0.05, "lion": 0.01, "adafactor": 0.5, "sgd": 0.05, "muon": 0.05}[name]
    config = apply_overrides(
        Config(),
        {
            "optim.name": name,
            "optim.lr": lr,
            "optim.warmup": 1,
            "gqc.controller": controller,
            "gqc.sbc_draws": 2,
            "data.microbatch_size": 1,
        },
    )
    tx = build_optimizer(config, total_microbatches=200)
    target = {"w": jnp.arange(12.0).reshape(3, 4) / 10, "b": jnp.ones(4)}
    params = jax.tree.map(lambda t: t + 1.0, target)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: optax.tree.norm(jax.tree.map(jnp.subtract, p, target)) ** 2)(
            params
        )
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    start = float(optax.tree.norm(jax.tree.map(jnp.subtract, params, target)))
    for _ in range(200):
        params, state = step(params, state)
    end = float(optax.tree.norm(jax.tree.map(jnp.subtract, params, target)))
    assert np.isfinite(end) and end < 0.7 * start, (name, controller, start, end)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optim.name must be one of .* got 'adam'"):
        apply_overrides(Config(), {"optim.name": "adam"})


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_weight_decay_is_decoupled_and_scaled_by_the_learning_rate(name):
    """With zero gradients an update is pure decay: lr * weight_decay * p (optax's
    adafactor would apply weight_decay_rate unscaled: 10% of the weights per step)."""
    config = apply_overrides(
        Config(),
        {"optim.name": name, "optim.lr": 0.01, "optim.warmup": 1, "optim.weight_decay": 0.1},
    )
    tx = build_optimizer(config, total_microbatches=1000)
    params = {"w": jnp.full((4, 4), 2.0)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    _, state = tx.update(zeros, state, params)  # count 0: warmup's lr is 0
    updates, _ = tx.update(zeros, state, params)
    np.testing.assert_allclose(updates["w"], -0.01 * 0.1 * 2.0, rtol=1e-3)


def stepped_windows(config, total_microbatches: int, microbatches: int) -> list[int]:
    """The window of each optimizer step over ``microbatches`` update calls."""
    tx = build_optimizer(config, total_microbatches=total_microbatches)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    windows = []
    for _ in range(microbatches):
        _, state = update({"w": jnp.ones(3)}, state, params)
        stats = gqc_jax.stats(state)
        if bool(stats["stepped"]):
            windows.append(int(stats["last_num_draws"]))
    return windows


def test_sbc_ramps_its_logical_batch_polynomially():
    config = apply_overrides(
        Config(),
        {
            "gqc.controller": "sbc",
            "gqc.sbc_draws": 1,
            "gqc.sbc_final_draws": 4,
            "optim.warmup": 2,
            "data.microbatch_size": 2,
        },
    )
    windows = stepped_windows(config, total_microbatches=60, microbatches=60)
    assert windows[:3] == [1, 1, 1] and windows[-1] == 4
    assert windows == sorted(windows)
    with pytest.raises(ValueError, match="gqc.sbc_final_draws must be >= 0"):
        apply_overrides(Config(), {"gqc.sbc_final_draws": -1})


def test_sbc_takes_the_windows_of_its_cycle_in_turn():
    config = apply_overrides(
        Config(),
        {"gqc.controller": "sbc", "gqc.sbc_cycle": "1,4,2", "data.microbatch_size": 8},
    )
    windows = stepped_windows(config, total_microbatches=100, microbatches=21)
    assert windows == [1, 4, 2, 1, 4, 2, 1, 4, 2]
    for bad, match in (
        ({"gqc.sbc_cycle": "1,0"}, "whole numbers >= 1, got '1,0'"),
        ({"gqc.sbc_cycle": "a"}, "whole numbers >= 1, got 'a'"),
        ({"gqc.sbc_cycle": "1,4", "gqc.sbc_final_draws": 8}, "two schedules; set one"),
    ):
        with pytest.raises(ValueError, match=match):
            apply_overrides(Config(), bad)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_token_time_rescales_every_optimizer_that_has_decays(name):
    """gqc.token_time reaches the library: a window of 2 steps at b1^2 (here
    read from the Adam-family state's first moment after one window of equal
    gradients: (1 - b1^2) g); adafactor has no decay to rescale and is refused."""
    config = apply_overrides(
        Config(),
        {
            "optim.name": name,
            "optim.warmup": 1,
            "optim.clip": 0.0,
            "gqc.controller": "sbc",
            "gqc.sbc_draws": 2,
            "gqc.token_time": True,
            "data.microbatch_size": 1,
        },
    )
    if name == "adafactor":
        with pytest.raises(ValueError, match="no decay"):
            build_optimizer(config, total_microbatches=20)
        return
    tx = build_optimizer(config, total_microbatches=20)
    params = {"w": jnp.ones((2, 3))}
    state = tx.init(params)
    for _ in range(2):
        _, state = tx.update({"w": jnp.full((2, 3), 0.5)}, state, params)
    assert int(gqc_jax.stats(state)["num_steps"]) == 1
    if name == "adamw":
        (adam,) = [
            s
            for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)
        ]
        np.testing.assert_allclose(adam.mu["w"], (1 - 0.9**2) * 0.5, rtol=1e-6)


def test_learning_rate_schedules():
    """cosine (to lr * min_lr_ratio), linear (to zero at min_lr_ratio 0) and
    cosine_steps (the cosine rounded down to lr / 2^j), each after one warmup."""

    def at(schedule, ratio, counts):
        config = apply_overrides(
            Config(),
            {"optim.schedule": schedule, "optim.min_lr_ratio": ratio, "optim.warmup": 10},
        )
        f = learning_rate(config, 100)
        return np.array([float(f(c)) for c in counts])

    counts = [5, 10, 40, 55, 70, 100]
    cosine = at("cosine", 0.1, counts)
    np.testing.assert_allclose(at("linear", 0.0, counts), [1.5e-3, 3e-3, 2e-3, 1.5e-3, 1e-3, 0.0])
    halvings = np.maximum(np.floor(np.log2(3e-3 / cosine[1:])), 0)
    np.testing.assert_allclose(at("cosine_steps", 0.1, counts)[1:], 3e-3 / 2**halvings)
    assert at("cosine_steps", 0.1, [5])[0] == cosine[0]  # the warmup is the cosine's
    assert list(halvings) == [0, 0, 0, 1, 3]
    with pytest.raises(ValueError, match="optim.schedule must be one of"):
        apply_overrides(Config(), {"optim.schedule": "step"})
    with pytest.raises(ValueError, match="gqc.warmup_growth must be >= 2, got 1"):
        apply_overrides(Config(), {"gqc.controller": "batch_warmup", "gqc.warmup_growth": 1})


def test_the_reference_recipe_constant_lr_and_annealed_weight_decay():
    """optim.schedule=constant holds lr after its warmup; weight_decay_schedule=
    cosine warms the decay up with it, then anneals it to zero by the run's end
    (on the microbatch clock under a controller too)."""
    settings = {"optim.schedule": "constant", "optim.warmup": 10, "optim.lr": 1.0}
    f = learning_rate(apply_overrides(Config(), settings), 100)
    np.testing.assert_allclose([float(f(c)) for c in (5, 10, 99)], [0.5, 1.0, 1.0])
    settings["optim.weight_decay_schedule"] = "cosine"
    for controller in ("none", "sbc"):
        extra = {"gqc.controller": controller} if controller != "none" else {}
        extra |= {"gqc.sbc_draws": 1} if controller == "sbc" else {}
        tx = build_optimizer(apply_overrides(Config(), {**settings, **extra}), 100)
        params = {"w": jnp.ones(2)}
        state, decays = tx.init(params), []
        for _ in range(100):  # zero gradients: the update is -lr(t) * wd(t) * w
            updates, state = tx.update({"w": jnp.zeros(2)}, state, params)
            decays.append(-float(updates["w"][0]))
        lr = np.array([float(f(c)) for c in range(100)])
        wd = 0.1 * np.array(
            [c / 10 if c < 10 else np.cos(np.pi / 2 * (c - 10) / 90) for c in range(100)]
        )
        np.testing.assert_allclose(decays, lr * wd, rtol=1e-5, atol=1e-9)
    with pytest.raises(
        ValueError, match="weight_decay_schedule='cosine' needs adamw, lion or muon"
    ):
        apply_overrides(Config(), {"optim.weight_decay_schedule": "cosine", "optim.name": "sgd"})
