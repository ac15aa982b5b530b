"""GPT model and sharding rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

from models.gpt import GPT, GPTConfig, count_params, next_token_loss, preset  # noqa: E402
from models.sharding import make_mesh, parse_mesh_spec  # noqa: E402

CONFIG = preset("tiny", vocab_size=64, seq_len=32, width=32, heads=4, depth=2)


def test_forward_shapes_and_dtype():
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    logits = model(jnp.zeros((3, 16), jnp.int32))
    assert logits.shape == (3, 16, 64) and logits.dtype == jnp.float32


def test_causal_masking():
    model = GPT(CONFIG, rngs=nnx.Rngs(1))
    tokens = jax.random.randint(jax.random.key(0), (2, 20), 0, 64)
    changed = tokens.at[:, 12].set((tokens[:, 12] + 7) % 64)
    a, b = model(tokens), model(changed)
    np.testing.assert_allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not np.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        preset("tiny", tied_embeddings=False, norm="rmsnorm"),
        preset("study"),
        GPTConfig(depth=3, width=48, heads=3, mlp_ratio=2, vocab_size=100, seq_len=40),
    ],
)
def test_parameter_count_formula(config):
    abstract = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == config.num_params()


def test_config_errors():
    with pytest.raises(ValueError, match="width \\(30\\) must be divisible by heads \\(4\\)"):
        GPTConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="exceeds seq_len"):
        GPT(CONFIG, rngs=nnx.Rngs(0))(jnp.zeros((1, 33), jnp.int32))


def test_mesh_spec_errors():
    assert parse_mesh_spec("data=4,fsdp=2") == {"data": 4, "fsdp": 2, "tensor": 1}
    with pytest.raises(ValueError, match="unknown mesh axis 'pipe'"):
        parse_mesh_spec("pipe=2")
    with pytest.raises(ValueError, match="needs 16 devices but 8"):
        make_mesh("data=8,fsdp=2")


def test_next_token_loss_at_init_is_about_log_vocab():
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    loss = next_token_loss(model, jax.random.randint(jax.random.key(2), (4, 33), 0, 64))
    assert abs(float(loss) - np.log(64)) < 0.1


def test_dropout_only_with_a_key_and_reproducible():
    config = preset("tiny", vocab_size=64, seq_len=32, width=32, heads=4, depth=2, dropout=0.3)
    model = GPT(config, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 64)
    plain = model(tokens)
    np.testing.assert_array_equal(
        plain,
        GPT(
            preset("tiny", vocab_size=64, seq_len=32, width=32, heads=4, depth=2), rngs=nnx.Rngs(0)
        )(tokens),
    )
    a, b = model(tokens, jax.random.key(1)), model(tokens, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain) and not np.allclose(a, model(tokens, jax.random.key(2)))
    with pytest.raises(ValueError, match="dropout must be in"):
        preset("tiny", dropout=1.0)


def test_models_hold_models_and_sharding_only():
    # The trainer (step, metrics, loop, distributed set-up) lives in experiments/.
    from pathlib import Path

    import models

    modules = {p.name for p in Path(models.__file__).parent.glob("*.py")}
    assert modules == {"__init__.py", "gpt.py", "sharding.py"}
