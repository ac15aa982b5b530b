"""experiments.weight_stats: per-layer norms and relative updates."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.train_step import split
from experiments.weight_stats import layers, weight_metrics
from models.gpt import GPT, preset


def test_layers_split_blocks_and_keep_top_level_entries():
    _, params = split(GPT(preset("tiny"), rngs=nnx.Rngs(0)))
    assert set(layers(params)) == {"embed", "position", "norm", "blocks.0", "blocks.1"}
    total = sum(x.size for x in jax.tree.leaves(params))
    assert sum(x.size for x in jax.tree.leaves(layers(params))) == total


def test_metrics_match_numpy_and_are_zero_without_a_step():
    _, old = split(GPT(preset("tiny"), rngs=nnx.Rngs(0)))
    new = jax.tree.map(lambda x: x * 1.5 + 0.01, old)
    m = jax.jit(weight_metrics)(old, new)
    block = [np.asarray(x, np.float64) for x in jax.tree.leaves(old["blocks"][1])]
    after = [1.5 * x + 0.01 for x in block]
    norm = np.sqrt(sum(np.sum(x**2) for x in after))
    ratio = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, block, strict=True)))
    ratio /= np.sqrt(sum(np.sum(x**2) for x in block))
    np.testing.assert_allclose(float(m["weights/blocks.1/norm"]), norm, rtol=1e-5)
    np.testing.assert_allclose(float(m["weights/blocks.1/update_ratio"]), ratio, rtol=1e-4)
    same = weight_metrics(old, old)
    assert all(float(v) == 0 for k, v in same.items() if k.endswith("update_ratio"))
    zero = {"norm": {"scale": jnp.zeros(3)}}
    assert float(weight_metrics(zero, zero)["weights/norm/update_ratio"]) == 0.0
