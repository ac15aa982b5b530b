"""Per-layer weight norms and relative update sizes, for training-dynamics logs.

A layer is a top-level entry of the parameter dict (``embed``, ``position``,
``norm``) or one transformer block (``blocks.0``, ``blocks.1``, ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def layers(params: dict[str, Any]) -> dict[str, Any]:
    """The parameter dict regrouped as ``{layer name: subtree}``."""
    out = {}
    for name, sub in params.items():
        if name == "blocks":
            out.update({f"blocks.{i}": block for i, block in sub.items()})
        else:
            out[name] = sub
    return out


def weight_metrics(old: dict[str, Any], new: dict[str, Any]) -> dict[str, jax.Array]:
    """``weights/<layer>/norm`` (‖W‖ after the call) and ``weights/<layer>/update_ratio``
    (‖W_new − W_old‖ / ‖W_old‖; zero on a call that did not step).

    Example:
      >>> import jax.numpy as jnp
      >>> old = {"embed": {"w": jnp.array([3.0, 4.0])}, "blocks": {0: {"w": jnp.ones(4)}}}
      >>> new = {"embed": {"w": jnp.array([3.0, 4.5])}, "blocks": {0: {"w": jnp.ones(4)}}}
      >>> m = weight_metrics(old, new)
      >>> round(float(m["weights/embed/update_ratio"]), 3), float(m["weights/blocks.0/norm"])
      (0.1, 2.0)
    """
    out = {}
    new_layers = layers(new)
    for name, before in layers(old).items():
        after = new_layers[name]
        delta = jax.tree.map(jnp.subtract, after, before)
        out[f"weights/{name}/norm"] = optax.tree.norm(after)
        out[f"weights/{name}/update_ratio"] = optax.tree.norm(delta) / jnp.maximum(
            optax.tree.norm(before), jnp.finfo(jnp.float32).tiny
        )
    return out
