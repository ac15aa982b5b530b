"""Random values and types for every controller constructor and the training
program's configuration: each either works or raises a clear error naming the
argument, and a transformation that builds runs one jitted update cleanly."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gqc_jax
from experiments.config import Config, apply_overrides

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.builds(jnp.float32, st.floats(-2, 2)),
    st.builds(np.int32, st.integers(-3, 70)),
    st.just(lambda count: 0.5),
)

# Each constructor and its arguments besides the inner optimizer.
CONSTRUCTORS = {
    "gnts": (
        gqc_jax.gnts,
        ["threshold", "max_draws", "relative", "reference_beta", "outlier_clip"],
    ),
    "gns": (gqc_jax.gns, ["tolerance", "max_draws"]),
    "gnr": (gqc_jax.gnr, ["target_norm"]),
    "mht": (gqc_jax.mht, ["confidence", "percent_error", "update_beta", "max_draws"]),
    "sbc": (gqc_jax.sbc, ["logical_batch_size", "physical_batch_size", "max_draws"]),
    "snr": (gqc_jax.snr, ["noise_ratio", "min_draws", "max_draws", "smoothing"]),
    "skip_loss_spikes": (gqc_jax.skip_loss_spikes, ["sigmas", "beta", "warmup"]),
}
FACTORIES = {
    "gnts_with_cosine_annealing": ["initial_threshold", "final_threshold", "warmup_multiplier"],
    "gnr_with_cosine_annealing": ["initial_norm", "final_norm"],
    "gns_with_cosine_annealing": ["initial_tolerance", "final_tolerance", "warmup_multiplier"],
    "gns_default": ["tolerance"],
    "mht_with_warmup": ["confidence_level", "percent_error_threshold", "update_beta"],
    "sbc_with_polynomial": ["initial_batch_size", "final_batch_size", "polynomial_power"],
}
FACTORY_REQUIRED = {
    "gnr_with_cosine_annealing": {"initial_norm": 1.0, "final_norm": 0.5},
    "gns_with_cosine_annealing": {"initial_tolerance": 1.0, "final_tolerance": 0.5},
    "gns_default": {"tolerance": 1.0},
    "mht_with_warmup": {"confidence_level": 0.9, "percent_error_threshold": 0.1},
    "sbc_with_polynomial": {
        "physical_batch_size": 2,
        "initial_batch_size": 2,
        "final_batch_size": 8,
    },
}


def _factory(name):
    """``name``'s factory as ``(inner, **kwargs)``; it builds its own inner (sgd)."""

    def build(inner, **kwargs):
        steps = {"num_training_steps": 20, "num_warmup_steps": 4}
        steps.update({k: kwargs.pop(k) for k in list(steps) if k in kwargs})
        settings = {**FACTORY_REQUIRED.get(name, {}), **kwargs, **steps}
        return getattr(gqc_jax, name)(optax.sgd, learning_rate=0.1, **settings)

    return build


for name, fields in FACTORIES.items():
    counts = ["num_training_steps", "num_warmup_steps"]
    cap = [] if name == "gnr_with_cosine_annealing" else ["max_draws"]
    CONSTRUCTORS[name] = (_factory(name), [*fields, *counts, *cap])
REQUIRED = {
    "sbc": {"logical_batch_size": 8, "physical_batch_size": 4},
    "skip_loss_spikes": {"sigmas": 3.0},
}
PARAMS = {"w": jnp.array([0.5, -1.0, 2.0])}


def _build(name, kwargs):
    factory, _ = CONSTRUCTORS[name]
    # The spike guard passes non-finite microbatches on: around a controller,
    # which skips them.
    inner = gqc_jax.gnts(optax.sgd(0.1), 0.0) if name == "skip_loss_spikes" else optax.sgd(0.1)
    return factory(inner, **{**REQUIRED.get(name, {}), **kwargs})


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_controller_constructors(name, data):
    fields = CONSTRUCTORS[name][1]
    chosen = data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True))
    kwargs = {f: data.draw(VALUES, label=f) for f in chosen}
    try:
        tx = _build(name, kwargs)
    except (TypeError, ValueError) as e:
        assert any(f in str(e) for f in chosen), (kwargs, e)
        return
    state = tx.init(PARAMS)
    update = jax.jit(lambda g, s: tx.update(g, s, PARAMS, value=jnp.float32(1.0)))
    for g in (PARAMS, jax.tree.map(lambda x: x * jnp.nan, PARAMS), PARAMS):
        updates, state = update(g, state)
        # A non-finite microbatch never reaches the parameters' update.
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)), kwargs
    assert jax.tree.structure(state) == jax.tree.structure(tx.init(PARAMS))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_gradients_constructor(data):
    kwargs = {
        "digits": data.draw(VALUES, label="digits"),
        "mode": data.draw(st.one_of(st.sampled_from(gqc_jax.rounding.MODES), VALUES), label="mode"),
    }
    try:
        tx = gqc_jax.round_gradients(**kwargs)
    except (TypeError, ValueError) as e:
        assert "digits" in str(e) or "mode" in str(e), (kwargs, e)
        return
    out, _ = jax.jit(tx.update)(PARAMS, tx.init(PARAMS))
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(out))


FIELDS = [
    f"{section.name}.{f.name}"
    for section in dataclasses.fields(Config)
    for f in dataclasses.fields(
        section.type if isinstance(section.type, type) else type(getattr(Config(), section.name))
    )
]
TEXT = st.one_of(
    st.text(max_size=6),
    st.integers(-100, 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "none", "", "1e3", "5e3", "-1", "0", "nan", "inf"]),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(FIELDS), text=TEXT)
def test_config_values_from_the_command_line(key, text):
    """Any text for any key: a Config, or a ValueError that names the key."""
    try:
        apply_overrides(Config(), {key: text})
    except ValueError as e:
        assert key in str(e) or key.split(".")[1] in str(e), (key, text, e)
