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


def _relative_gnts_state():
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.5, relative=True)
    params = {"v": jnp.zeros(2)}
    _, state = tx.update({"v": jnp.array([3.0, 4.0])}, tx.init(params), params)
    return tx, params, state


RELATIVE_KEYS = SHARED_KEYS | {
    "gradient_norm_threshold",
    "effective_threshold",
    "reference_norm",
    "num_invalid_hyperparameters",
}


def test_a_host_copy_keeps_every_key():
    _, _, state = _relative_gnts_state()
    assert set(gqc_jax.stats(state)) == RELATIVE_KEYS
    host = gqc_jax.stats(jax.device_get(state))
    assert set(host) == RELATIVE_KEYS
    assert float(host["reference_norm"]) == pytest.approx(5.0)


def test_a_vmapped_state_keeps_every_key_with_its_batch_shape():
    tx, params, _ = _relative_gnts_state()
    grads = {"v": jnp.array([[3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])}
    states = jax.vmap(lambda g: tx.update(g, tx.init(params), params)[1])(grads)
    s = gqc_jax.stats(states)
    assert set(s) == RELATIVE_KEYS
    assert all(v.shape == (3,) for v in s.values())
    assert s["reference_norm"].tolist() == pytest.approx([5.0, 10.0, 1.0])


def test_an_nnx_optimizer_state_keeps_every_key_as_arrays():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    tx = gqc_jax.gnts(optax.sgd(0.1), threshold=0.5, relative=True)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    s = gqc_jax.stats(opt.opt_state)
    assert set(s) == RELATIVE_KEYS
    assert all(isinstance(v, jax.Array) and v.shape == () for v in s.values())
    assert int(s["num_batches"]) == 1


def test_two_controllers_side_by_side_are_ambiguous():
    tx = optax.multi_transform(
        {"a": gqc_jax.gnts(optax.sgd(0.1), 0.5), "b": gqc_jax.sbc(optax.sgd(0.1), 4, 1)},
        {"x": "a", "y": "b"},
    )
    state = tx.init({"x": jnp.zeros(2), "y": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"2 controller states side by side .*inner_states"):
        gqc_jax.stats(state)
    assert "logical_batch_size" in gqc_jax.stats(state.inner_states["b"])
    # A controller inside another's inner is not side by side: the outer one counts.
    nested = gqc_jax.gnts(gqc_jax.sbc(optax.sgd(0.1), 4, 1), 0.5)
    assert "gradient_norm_threshold" in gqc_jax.stats(nested.init({"x": jnp.zeros(2)}))
