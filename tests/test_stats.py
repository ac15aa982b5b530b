"""gqc_jax.stats: finds the controller anywhere and reports the reference's keys."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gqc_jax

SHARED_KEYS = {
    "num_batches",
    "num_steps",
    "num_draws",
    "last_num_draws",
    "last_grad_norm",
    "lr_factor",
    "stepped",
    "num_skipped",
}


def test_keys_and_values_after_a_step():
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=10.0)
    params = {"v": jnp.zeros(2)}
    state = tx.init(params)
    _, state = tx.update({"v": jnp.array([3.0, 4.0])}, state, params)
    s = gqc_jax.stats(state)
    assert set(s) == SHARED_KEYS | {"gradient_norm_threshold", "num_invalid_hyperparameters"}
    assert all(isinstance(v, jax.Array) and v.shape == () for v in s.values())
    assert int(s["num_steps"]) == 1 and int(s["last_num_draws"]) == 1
    assert float(s["last_grad_norm"]) == pytest.approx(5.0)
    assert float(s["lr_factor"]) == 1.0  # no lr_scaling


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: optax.chain(optax.clip(1.0), tx, optax.scale(1.0)),
        lambda tx: optax.chain(optax.chain(tx)),
        lambda tx: optax.named_chain(("clip", optax.clip(1.0)), ("gqc", tx)),
        lambda tx: optax.masked(tx, {"v": True}),
    ],
)
def test_found_inside_wrappers(wrap):
    tx = wrap(gqc_jax.sbc(optax.sgd(0.1), 8, 4))
    params = {"v": jnp.zeros(2)}
    state = tx.init(params)
    _, state = tx.update({"v": jnp.ones(2)}, state, params)
    s = gqc_jax.stats(state)
    assert int(s["num_batches"]) == 1 and int(s["num_draws"]) == 1
    assert float(s["logical_batch_size"]) == 8.0


def test_inside_inject_hyperparams():
    tx = optax.inject_hyperparams(gqc_jax.gnts, static_args=("max_draws",))(
        optax.sgd(0.1), threshold=0.25, max_draws=4
    )
    state = tx.init({"v": jnp.zeros(2)})
    assert float(gqc_jax.stats(state)["gradient_norm_threshold"]) == 0.25


def test_works_under_jit():
    tx = gqc_jax.gnts(optax.sgd(0.1))
    params = {"v": jnp.zeros(2)}

    @jax.jit
    def run(state):
        _, state = tx.update({"v": jnp.ones(2)}, state, params)
        return gqc_jax.stats(state)

    assert int(run(tx.init(params))["num_batches"]) == 1


def test_no_controller_is_a_clear_error():
    with pytest.raises(ValueError, match="No gqc_jax controller state"):
        gqc_jax.stats(optax.adam(1e-3).init({"v": jnp.zeros(2)}))
