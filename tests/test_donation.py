"""A freshly initialised state can be donated: every controller's, factory's and
the rounding transform's ``init`` returns one buffer per leaf, built inside or
outside ``jit``."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gqc_jax

PARAMS = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
ADAMW = optax.adamw(1e-3)
SCHEDULE = {"num_training_steps": 40, "num_warmup_steps": 8, "learning_rate": 1e-3}

BUILDERS = {
    "gnts": lambda: gqc_jax.gnts(ADAMW, 1.0),
    "gnts relative": lambda: gqc_jax.gnts(ADAMW, 0.5, relative=True),
    "gns": lambda: gqc_jax.gns(ADAMW),
    "gnr": lambda: gqc_jax.gnr(ADAMW),
    "mht": lambda: gqc_jax.mht(ADAMW),
    "sbc": lambda: gqc_jax.sbc(ADAMW, 4, 1),
    "snr": lambda: gqc_jax.snr(ADAMW),
    "chain": lambda: optax.chain(optax.clip(1.0), gqc_jax.gnts(ADAMW, 1.0)),
    "rounding": lambda: gqc_jax.round_gradients(3),
    "gnts factory": lambda: gqc_jax.gnts_with_cosine_annealing(optax.adamw, **SCHEDULE),
    "gnts factory conventional": lambda: gqc_jax.gnts_with_cosine_annealing_conventional_lr(
        optax.adamw, **SCHEDULE
    ),
    "gnr factory": lambda: gqc_jax.gnr_with_cosine_annealing(optax.adamw, 1.0, 0.3, **SCHEDULE),
    "gnr factory conventional": lambda: gqc_jax.gnr_with_cosine_annealing_conventional_lr(
        optax.adamw, 1.0, 0.3, **SCHEDULE
    ),
    "gns factory": lambda: gqc_jax.gns_with_cosine_annealing(optax.adamw, 0.05, 0.01, **SCHEDULE),
    "gns default": lambda: gqc_jax.gns_default(optax.adamw, 0.01, **SCHEDULE),
    "mht factory": lambda: gqc_jax.mht_with_warmup(optax.adamw, 0.9, 0.05, **SCHEDULE),
    "sbc factory": lambda: gqc_jax.sbc_with_polynomial(
        optax.adamw, physical_batch_size=1, initial_batch_size=2.0, final_batch_size=4.0, **SCHEDULE
    ),
    "sbc factory conventional": lambda: gqc_jax.sbc_with_polynomial_conventional_lr(
        optax.adamw, physical_batch_size=1, initial_batch_size=2.0, final_batch_size=4.0, **SCHEDULE
    ),
}


@pytest.mark.parametrize("jit_init", [False, True], ids=["eager init", "jitted init"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_fresh_state_is_donated(name, jit_init):
    tx = BUILDERS[name]()
    state = (jax.jit(tx.init) if jit_init else tx.init)(PARAMS)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    buffers = {x.unsafe_buffer_pointer() for x in leaves}
    assert len(buffers) == len(leaves)

    @jax.jit
    def step(state, grads):
        extra = {} if name == "rounding" else {"value": jnp.float32(1.0)}
        return tx.update(grads, state, PARAMS, **extra)[1]

    donating = jax.jit(step, donate_argnums=0)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    for _ in range(2):
        state = donating(state, grads)
    jax.block_until_ready(state)
