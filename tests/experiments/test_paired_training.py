import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

from experiments.paired_training import train_paired  # noqa: E402
from experiments.train_step import split  # noqa: E402
from models.gpt import GPT, GPTConfig  # noqa: E402

CONFIG = GPTConfig(vocab_size=32, seq_len=8, depth=1, width=16, heads=2)
TOKENS = np.random.default_rng(0).integers(0, 32, size=(20, 4, 9), dtype=np.int32)
VALIDATION = np.random.default_rng(1).integers(0, 32, size=(6, 9), dtype=np.int32)


def _run(learning_rates, loss_scale=1.0):
    graphdef, params = split(GPT(CONFIG, rngs=nnx.Rngs(0)))
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)

    def init_one(lr):
        state = tx.init(params)
        state.hyperparams["learning_rate"] = lr
        return state

    def update(grads, state, params, loss):
        updates, state = tx.update(grads, state, params)
        return updates, state, {"update_norm": optax.tree.norm(updates), "loss": loss}

    states = jax.vmap(init_one)(jnp.asarray(learning_rates, jnp.float32))
    return train_paired(
        graphdef,
        params,
        states,
        update,
        lambda i: TOKENS[i],
        VALIDATION,
        steps=10,
        eval_every=4,
        loss_scale=loss_scale,
        eval_batch=4,
        probe=lambda p, t: jax.tree.leaves(p)[0].shape[0] + jnp.zeros([]),
    )


def test_settings_are_paired_and_each_matches_its_solo_run():
    paired = _run([0.0, 1e-2, 1e-2])
    assert paired["eval_steps"] == [0, 4, 8, 10]
    assert paired["val_loss"].shape == (4, 3) and paired["train_loss"].shape == (10, 3)
    # Same start and data: a frozen setting keeps its loss; equal settings are equal.
    np.testing.assert_array_equal(paired["val_loss"][:, 0], paired["val_loss"][0, 0])
    np.testing.assert_array_equal(paired["val_loss"][:, 1], paired["val_loss"][:, 2])
    assert paired["val_loss"][-1, 1] < paired["val_loss"][0, 1]
    # The update saw the unscaled loss, which is also what is reported.
    np.testing.assert_array_equal(paired["metrics"]["loss"], paired["train_loss"])
    assert [float(p) for p in paired["probes"]] == [3.0] * 4
    solo = _run([1e-2])
    np.testing.assert_allclose(solo["val_loss"][:, 0], paired["val_loss"][:, 1], rtol=1e-6)


def test_the_loss_scale_scales_gradients_not_the_reported_loss():
    plain, scaled = _run([1e-2]), _run([1e-2], loss_scale=0.01)
    np.testing.assert_allclose(plain["train_loss"][0], scaled["train_loss"][0], rtol=1e-6)
    # Adam is invariant to the gradient scale while |g| >> eps.
    np.testing.assert_allclose(plain["val_loss"], scaled["val_loss"], rtol=1e-3)
