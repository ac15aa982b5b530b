"""One rule for bad arguments across the public API (``gqc_jax._errors``): a wrong
type raises TypeError, a wrong value of the right type raises ValueError, and
both name the argument."""

import jax.numpy as jnp
import optax
import pytest

import gqc_jax
from gqc_jax import schedules
from gqc_jax._errors import ArgumentTypeError, is_int

SGD = optax.sgd(0.1)

# (name, constructor, the argument the error must name)
WRONG_TYPES = [
    ("digits str", lambda: gqc_jax.round_gradients("2"), "digits"),
    ("digits float", lambda: gqc_jax.round_gradients(2.5), "digits"),
    ("digits bool", lambda: gqc_jax.round_gradients(True), "digits"),
    ("threshold str", lambda: gqc_jax.gnts(SGD, "0.5"), "threshold"),
    ("max_draws float", lambda: gqc_jax.gnts(SGD, 0.5, max_draws=2.5), "max_draws"),
    ("max_draws None", lambda: gqc_jax.gns(SGD, max_draws=None), "max_draws"),
    ("lr_scaling list", lambda: gqc_jax.snr(SGD, lr_scaling=[0.5]), "lr_scaling"),
    ("steps float", lambda: schedules.constant_with_warmup(1.0, 2.5), "num_warmup_steps"),
    ("value str", lambda: schedules.constant_with_warmup("1", 2), "warmup_to_value"),
    ("total str", lambda: gqc_jax.batch_size_warmup(SGD, "10", (0.5,)), "total_microbatches"),
    ("schedule number", lambda: gqc_jax.seesaw(SGD, 0.1, 0.1), "lr_schedule"),
    ("peak_lr str", lambda: gqc_jax.seesaw(SGD, lambda c: 0.1, "0.1"), "peak_lr"),
    (
        "warmup float",
        lambda: gqc_jax.seesaw(SGD, lambda c: 0.1, 0.1, warmup_microbatches=1.5),
        "warmup_microbatches",
    ),
    ("spike warmup float", lambda: gqc_jax.skip_loss_spikes(SGD, 3.0, warmup=2.5), "warmup"),
    ("inner", lambda: gqc_jax.gnts("adam", 0.5), "inner"),
]

WRONG_VALUES = [
    ("digits negative", lambda: gqc_jax.round_gradients(-1), "digits"),
    ("mode unknown", lambda: gqc_jax.round_gradients(2, mode="binary"), "mode"),
    ("threshold negative", lambda: gqc_jax.gnts(SGD, -1.0), "threshold"),
    ("threshold not scalar", lambda: gqc_jax.gnts(SGD, jnp.ones(2)), "threshold"),
    ("max_draws zero", lambda: gqc_jax.gnts(SGD, 0.5, max_draws=0), "max_draws"),
    ("lr_scaling name", lambda: gqc_jax.snr(SGD, lr_scaling="cubic"), "lr_scaling"),
    ("lr_scaling negative", lambda: gqc_jax.snr(SGD, lr_scaling=-1.0), "lr_scaling"),
    ("reference_draws zero", lambda: gqc_jax.gns(SGD, reference_draws=0), "reference_draws"),
    ("steps negative", lambda: schedules.constant_with_warmup(1.0, -1), "num_warmup_steps"),
    ("value nan", lambda: schedules.constant_with_warmup(float("nan"), 2), "warmup_to_value"),
    ("total zero", lambda: gqc_jax.batch_size_warmup(SGD, 0, (0.5,)), "total_microbatches"),
    ("fractions", lambda: gqc_jax.batch_size_warmup(SGD, 10, (0.5, 0.2)), "fractions"),
    ("peak_lr zero", lambda: gqc_jax.seesaw(SGD, lambda c: 0.1, 0.0), "peak_lr"),
    ("spike sigmas", lambda: gqc_jax.skip_loss_spikes(SGD, 0.5), "sigmas"),
]


@pytest.mark.parametrize(("case", "build", "name"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_a_wrong_type_is_a_type_error(case, build, name):
    with pytest.raises(TypeError, match=name):
        build()


@pytest.mark.parametrize(("case", "build", "name"), WRONG_VALUES, ids=[c[0] for c in WRONG_VALUES])
def test_a_wrong_value_is_a_value_error_only(case, build, name):
    with pytest.raises(ValueError, match=name) as error:
        build()
    assert not isinstance(error.value, TypeError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: gqc_jax.round_gradients(2.5),
        lambda: schedules.constant_with_warmup(1.0, 2.5),
        lambda: gqc_jax.batch_size_warmup(SGD, 2.5, (0.5,)),
        lambda: gqc_jax.seesaw(SGD, lambda c: 0.1, 0.1, warmup_microbatches=1.5),
    ],
)
def test_checks_that_raised_value_error_for_a_type_still_do(build):
    """Code written against 0.1 that catches ValueError keeps working."""
    with pytest.raises(ArgumentTypeError) as error:
        build()
    assert isinstance(error.value, TypeError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, True),
        (jnp.int32(3), True),
        (jnp.asarray(3), True),
        (3.0, False),
        (True, False),
        (jnp.ones(2, jnp.int32), False),
        ("3", False),
    ],
)
def test_is_int(value, expected):
    assert is_int(value) is expected
