"""The Optax invariants for every controller, not only GNTS: inside chain and
scan, state types stable under jit, an unfoldable cond around update, and
inject_hyperparams with identical results and a single trace."""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import gqc_jax
from tests.helpers import params_like, random_grads

# name: (factory(inner, **hyperparameters), the float hyperparameters to inject)
CONTROLLERS = {
    "gnts": (functools.partial(gqc_jax.gnts, max_draws=4), {"threshold": 0.4}),
    "gnts_relative": (
        functools.partial(gqc_jax.gnts, max_draws=4, relative=True),
        {"threshold": 0.8, "reference_beta": 0.1},
    ),
    "snr": (functools.partial(gqc_jax.snr, max_draws=4), {"noise_ratio": 0.5}),
    "gns": (functools.partial(gqc_jax.gns, max_draws=4), {"tolerance": 0.5}),
    "gnr": (gqc_jax.gnr, {"target_norm": 0.5}),
    "mht": (functools.partial(gqc_jax.mht, max_draws=4), {"confidence": 0.9, "percent_error": 0.3}),
    "sbc": (
        functools.partial(gqc_jax.sbc, physical_batch_size=1, max_draws=4),
        {"logical_batch_size": 3.0},
    ),
    "gnts_sqrt_lr": (
        functools.partial(gqc_jax.gnts, max_draws=4, lr_scaling="sqrt"),
        {"threshold": 0.4, "reference_draws": 2.0},
    ),
    "batch_size_warmup": (  # no float hyperparameter: inject passes the ints as they are
        functools.partial(
            gqc_jax.batch_size_warmup, total_microbatches=12, fractions=(0.2, 0.5), max_draws=4
        ),
        {},
    ),
    "seesaw": (
        functools.partial(
            gqc_jax.seesaw,
            lr_schedule=optax.linear_schedule(1.0, 0.2, 12),
            warmup_microbatches=1,
            max_draws=4,
        ),
        {"peak_lr": 1.0},
    ),
}
LOSS = jnp.float32(2.0)  # mht tests the loss; the others ignore it


def _first(g):
    """A loss that varies from microbatch to microbatch (for mht)."""
    return jax.tree.leaves(g)[0].ravel()[0]


@pytest.fixture(params=sorted(CONTROLLERS))
def controller(request):
    return CONTROLLERS[request.param]


def test_inside_chain_and_scan(controller):
    factory, hyper = controller
    params = params_like()
    tx = optax.chain(optax.clip_by_global_norm(1.0), factory(optax.sgd(0.1), **hyper))
    state = tx.init(params)
    grads = jax.tree.map(lambda *g: jnp.stack(g), *random_grads(10, 12, scale=0.5))

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p, value=LOSS + _first(g))
        return (optax.apply_updates(p, u), s), gqc_jax.stats(s)["stepped"]

    (_, final), stepped = jax.jit(lambda c, g: jax.lax.scan(body, c, g))((params, state), grads)
    chex.assert_trees_all_equal_shapes_and_dtypes(final, state)
    assert int(gqc_jax.stats(final)["num_steps"]) == int(stepped.sum()) >= 3
    assert int(gqc_jax.stats(final)["num_batches"]) == 12


def test_state_types_identical_after_init_and_update_with_and_without_jit(controller):
    factory, hyper = controller
    params = params_like()
    tx = factory(optax.adamw(1e-3), **hyper)
    state = tx.init(params)
    g = random_grads(11, 1)[0]
    _, eager = tx.update(g, state, params, value=LOSS)
    _, jitted = jax.jit(lambda g, s: tx.update(g, s, params, value=LOSS))(g, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, eager)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, jitted)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6)


def test_unfoldable_cond_around_update_keeps_state_types(controller):
    factory, hyper = controller
    params = params_like()
    tx = factory(optax.adam(1e-3), **hyper)
    state = tx.init(params)
    g = random_grads(12, 1)[0]
    pred = jax.random.bernoulli(jax.random.PRNGKey(0))
    _, out = jax.lax.cond(
        pred,
        lambda s: tx.update(g, s, params, value=LOSS),
        lambda s: (jax.tree.map(jnp.zeros_like, g), s),
        state,
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(out, state)


def test_inject_hyperparams_gives_identical_results_with_one_trace(controller):
    factory, hyper = controller
    params = params_like()
    grads = random_grads(9, 10, scale=0.5)
    plain = factory(optax.adam(1e-2), **hyper)
    names = inspect.signature(factory).parameters
    static = [
        n for n in ("max_draws", "physical_batch_size", "min_draws", "lr_schedule") if n in names
    ]
    injected = optax.inject_hyperparams(factory, static_args=static)(optax.adam(1e-2), **hyper)
    s_plain, s_inj = plain.init(params), injected.init(params)

    chex.clear_trace_counter()  # one count per parametrised run

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update_injected(g, s):
        return injected.update(g, s, params, value=LOSS + _first(g))

    @jax.jit
    def update_plain(g, s):
        return plain.update(g, s, params, value=LOSS + _first(g))

    for g in grads:
        u_plain, s_plain = update_plain(g, s_plain)
        u_inj, s_inj = update_injected(g, s_inj)
        chex.assert_trees_all_close(u_plain, u_inj, atol=1e-6)
        assert bool(gqc_jax.stats(s_inj)["stepped"]) == bool(gqc_jax.stats(s_plain)["stepped"])
    # New values written into the state are used, still with one trace.
    for name, value in hyper.items():
        s_inj.hyperparams[name] = jnp.asarray(value * 0.9, jnp.float32)
    update_injected(grads[0], s_inj)


# The reference's factories build their own inner optimizer (AdamW on the
# microbatch clock): name -> kwargs.
FACTORIES = {
    "gnts_with_cosine_annealing": {"initial_threshold": 0.5, "final_threshold": 0.2},
    "gnr_with_cosine_annealing": {"initial_norm": 1.0, "final_norm": 0.5},
    "gns_with_cosine_annealing": {"initial_tolerance": 1.0, "final_tolerance": 0.5},
    "gns_default": {"tolerance": 1.0},
    "mht_with_warmup": {"confidence_level": 0.9, "percent_error_threshold": 0.1},
    "sbc_with_polynomial": {
        "physical_batch_size": 1,
        "initial_batch_size": 2,
        "final_batch_size": 4,
    },
}


def _every_transformation():
    for name, (factory, hyper) in sorted(CONTROLLERS.items()):
        yield pytest.param(functools.partial(factory, optax.adam(1e-2), **hyper), id=name)
    for name, kwargs in sorted(FACTORIES.items()):
        steps = {"num_training_steps": 20, "num_warmup_steps": 2}
        if name != "gnr_with_cosine_annealing":
            steps["max_draws"] = 4
        build = functools.partial(
            getattr(gqc_jax, name), optax.adamw, learning_rate=1e-2, **kwargs, **steps
        )
        yield pytest.param(build, id=name)


@pytest.mark.parametrize("build", list(_every_transformation()))
def test_orbax_round_trip_mid_window_continues_bit_identically(build, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = build()
    params = params_like()
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, value=LOSS + _first(g)))
    grads = random_grads(13, 12, scale=0.5)
    state = tx.init(params)
    drawn = 0
    for g in grads[:10]:  # until a window is open (gnr never keeps one)
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
        drawn += 1
        if int(gqc_jax.stats(state)["num_draws"]) > 0:
            break
    assert int(gqc_jax.stats(state)["num_draws"]) > 0 or isinstance(
        gqc_jax.find_controller_state(state).criterion_state, gqc_jax.GradientNormRescaleState
    )
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    abstract = jax.eval_shape(lambda: {"params": params, "opt_state": tx.init(params)})
    restored = checkpointer.restore(tmp_path / "ckpt", abstract)
    chex.assert_trees_all_equal_structs(restored["opt_state"], state)
    chex.assert_trees_all_equal(restored["opt_state"], state)
    a, b = (params, state), (restored["params"], restored["opt_state"])
    for g in grads[drawn:]:
        ua, sa = update(g, a[1], a[0])
        ub, sb = update(g, b[1], b[0])
        chex.assert_trees_all_equal(ua, ub)
        a, b = (optax.apply_updates(a[0], ua), sa), (optax.apply_updates(b[0], ub), sb)
    chex.assert_trees_all_equal(a, b)
    assert int(gqc_jax.stats(a[1])["num_batches"]) == 12
