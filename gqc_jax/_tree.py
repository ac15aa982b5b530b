"""Small pytree helpers shared by the controllers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def global_norm(tree: Any) -> jax.Array:
    """Returns the L2 norm of all leaves of ``tree`` together, in float32.

    Each leaf is squared and summed in float32 (so bfloat16/float16 gradients do
    not overflow or lose the sum), then one square root is taken. Under
    ``jax.jit`` with sharded arrays the sums are global, so this is the true norm
    of the whole gradient, not a per-shard value.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    total = sum(jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in leaves)
    return jnp.sqrt(total)


def has_finite_norm(tree: Any) -> jax.Array:
    """Returns a ``bool[]``: True iff the squared global norm of ``tree`` is finite.

    That is, no element is NaN or inf and the sum of squares, taken in float32,
    does not overflow (which needs elements beyond about 1.8e19): a gradient
    whose norm overflows would make every norm-based decision NaN or inf. One
    float sum, which vectorises far better on CPU than a boolean ``all``
    reduction. Leaves that are not floating point are ignored.
    """
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.ones([], jnp.bool_)
    return jnp.isfinite(sum(jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in leaves))


def check_floating(grads: Any) -> None:
    """Raises ``TypeError`` naming the first gradient leaf that is not floating point.

    Runs at trace time on dtypes only. Controllers average gradients, which an
    integer leaf cannot hold.
    """
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        dtype = jnp.result_type(g)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"Gradient leaf {jax.tree_util.keystr(path)} has dtype {dtype}; gqc_jax "
                "controllers keep a real accumulator and real norms, so complex parameters "
                "are not supported: keep their real and imaginary parts as two real "
                "parameters, or leave them out with optax.masked."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"Gradient leaf {jax.tree_util.keystr(path)} has dtype {dtype}; gqc_jax "
                "controllers average gradients and need floating-point ones (cast the "
                "gradients, or leave integer parameters out with optax.masked)."
            )


def check_same_structure(grads: Any, reference: Any, what: str) -> None:
    """Raises ``ValueError`` if ``grads`` does not have ``reference``'s tree and shapes.

    Runs at trace time on static structure only, so it costs nothing under jit and
    replaces an XLA shape error deep inside the update with a readable message.
    """
    grads_def = jax.tree.structure(grads)
    ref_def = jax.tree.structure(reference)
    if grads_def != ref_def:  # type: ignore[operator]  # PyTreeDef defines !=
        raise ValueError(
            f"The gradient tree does not match the {what} the optimizer state was "
            f"initialised with.\n  gradients: {grads_def}\n  expected:  {ref_def}"
        )
    for (path, g), r in zip(
        jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(reference), strict=True
    ):
        if jnp.shape(g) != jnp.shape(r):
            raise ValueError(
                f"Gradient leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(g)}, but "
                f"the {what} leaf has shape {jnp.shape(r)}."
            )


def distinct_buffers(tree: Any) -> Any:
    """``tree`` with every array leaf in a buffer of its own.

    Outside ``jit``, ``init`` code that reuses one scalar (``zero`` for several
    counters) hands out one buffer for several leaves, and donating such a state
    fails ("Attempt to donate the same buffer twice"). A repeated buffer is
    copied; traced values and leaves seen once are returned as they are.
    """
    seen: set = set()

    def own(x):
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
            return x
        key = tuple(s.data.unsafe_buffer_pointer() for s in x.addressable_shards)
        if key in seen:
            return jnp.copy(x)
        seen.add(key)
        return x

    return jax.tree.map(own, tree)
