r"""The gradient noise scale of a model on its training data, measured at evaluation.

From :math:`K` microbatch gradients at fixed parameters, the library's unbiased
estimators (:func:`gqc_jax.gradient_noise_estimates`, McCandlish et al. 2018)
give :math:`|G|^2` and :math:`\operatorname{tr}\Sigma`, and
:math:`B_\text{noise} = \operatorname{tr}\Sigma / |G|^2` in microbatches. The
ratio of single estimates is noisy and biased; average the two terms over
several measurements before dividing (:func:`noise_scale`), as the paper does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gqc_jax
from experiments.train_step import loss_fn
from models.sharding import batch_sharding


def make_noise_probe(graphdef, mesh: Mesh, param_shardings):
    """``probe(params, batches[K, B, T+1]) -> {"signal": |G|^2, "noise": tr Sigma}``, jitted."""

    grad = jax.grad(loss_fn(graphdef))

    def probe(params, batches):
        def body(carry, tokens):
            total, squares = carry
            g = grad(params, tokens)
            total = jax.tree.map(jnp.add, total, g)
            return (total, squares + optax.tree.norm(g) ** 2), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (total, squares), _ = jax.lax.scan(body, (zeros, jnp.zeros([], jnp.float32)), batches)
        k = batches.shape[0]
        signal, noise = gqc_jax.gradient_noise_estimates(
            squares / k, optax.tree.norm(total) ** 2 / k**2, k
        )
        return {"signal": signal, "noise": noise}

    spec = batch_sharding(mesh).spec
    return jax.jit(
        probe,
        in_shardings=(param_shardings, NamedSharding(mesh, P(None, *spec))),
        out_shardings=NamedSharding(mesh, P()),
    )


def noise_scale(signals, noises) -> float:
    """:math:`B_\\text{noise}` in microbatches from several measurements (ratio of means);
    ``nan`` when there are none or the mean signal is not positive."""
    if not signals:
        return float("nan")
    signal = sum(signals) / len(signals)
    noise = sum(noises) / len(noises)
    return noise / signal if signal > 0 else float("nan")
