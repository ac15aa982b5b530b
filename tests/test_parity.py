"""Replays torch-gqc 0.10.4's recorded traces through gqc_jax.

The traces were recorded by ``tests/parity/generate_torch_traces.py`` (needs
torch and torch-gqc; not run here). Every step decision must be equal and the
parameters within 1e-5 after every microbatch.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax

TRACES = np.load(Path(__file__).parent / "parity" / "torch_gqc_traces.npz")
CASES = json.loads(str(TRACES["index"]))
KEYS = ("w", "b")  # the parameter order of the recording


def _inner(spec):
    if spec["kind"] == "sgd":
        return optax.sgd(spec["lr"], momentum=spec["momentum"])
    return optax.adamw(spec["lr"], weight_decay=spec["weight_decay"])


def _optimizer_kwargs(spec):
    kwargs = {"learning_rate": spec["lr"]}
    if spec["kind"] == "sgd":
        return optax.sgd, {**kwargs, "momentum": spec["momentum"]}
    return optax.adamw, {**kwargs, "weight_decay": spec["weight_decay"]}


def build(case):
    c, hp, spec = case["controller"], dict(case["hparams"]), case["optimizer"]
    m = hp.pop("max_draws", 64)
    if c == "gnts":
        return gqc_jax.gnts(_inner(spec), hp["threshold"], max_draws=m)
    if c == "gns":
        return gqc_jax.gns(_inner(spec), hp["tolerance"], max_draws=m)
    if c == "gnr":
        return gqc_jax.gnr(_inner(spec), hp["target_norm"])
    if c == "mht":
        return gqc_jax.mht(
            _inner(spec),
            hp["confidence"],
            hp["percent_error"],
            update_beta=hp["update_beta"],
            max_draws=m,
        )
    if c == "sbc":
        return gqc_jax.sbc(_inner(spec), hp["logical"], hp["physical"], max_draws=m)
    optimizer, kwargs = _optimizer_kwargs(spec)
    n, warm = hp.pop("num_training_steps"), hp.pop("num_warmup_steps")
    if c == "gnts_with_cosine_annealing":
        return gqc_jax.gnts_with_cosine_annealing(optimizer, n, warm, max_draws=m, **hp, **kwargs)
    if c == "gnr_with_cosine_annealing":
        return gqc_jax.gnr_with_cosine_annealing(
            optimizer, hp.pop("initial_norm"), hp.pop("final_norm"), n, warm, **hp, **kwargs
        )
    if c == "sbc_with_polynomial":
        return gqc_jax.sbc_with_polynomial(
            optimizer,
            hp.pop("physical"),
            hp.pop("initial_batch_size"),
            hp.pop("final_batch_size"),
            n,
            warm,
            max_draws=m,
            **hp,
            **kwargs,
        )
    if c == "gns_with_cosine_annealing":
        return gqc_jax.gns_with_cosine_annealing(
            optimizer,
            hp.pop("initial_tolerance"),
            hp.pop("final_tolerance"),
            n,
            warm,
            max_draws=m,
            **hp,
            **kwargs,
        )
    if c == "gns_default":
        return gqc_jax.gns_default(optimizer, hp.pop("tolerance"), n, warm, max_draws=m, **kwargs)
    if c == "mht_with_warmup":
        return gqc_jax.mht_with_warmup(
            optimizer,
            hp.pop("confidence_level"),
            hp.pop("percent_error_threshold"),
            n,
            warm,
            max_draws=m,
            **kwargs,
        )
    raise ValueError(c)


def replay(n, case):
    tx = build(case)
    params = {k: jnp.asarray(TRACES[f"{n}/init/{k}"]) for k in KEYS}
    grads = {k: jnp.asarray(TRACES[f"{n}/grads/{k}"]) for k in KEYS}
    losses = jnp.asarray(TRACES[f"{n}/losses"])

    def body(carry, x):
        p, s = carry
        g, loss = x
        u, s = tx.update(g, s, p, value=loss)
        p = optax.apply_updates(p, u)
        flat = jnp.concatenate([p[k].ravel() for k in KEYS])
        return (p, s), (s.stepped, flat, s.num_draws)

    _, (stepped, flat, _) = jax.jit(lambda c, xs: jax.lax.scan(body, c, xs))(
        (params, tx.init(params)), (grads, losses)
    )
    return np.asarray(stepped), np.asarray(flat)


@pytest.mark.parametrize(
    ("n", "case"),
    list(enumerate(CASES)),
    ids=[f"{c['controller']}-{c['optimizer']['kind']}-{i}" for i, c in enumerate(CASES)],
)
def test_replay_matches_reference(n, case):
    stepped, params = replay(n, case)
    want = TRACES[f"{n}/decisions"]
    mismatch = np.flatnonzero(stepped != want)
    assert mismatch.size == 0, f"first decision mismatch at microbatch {mismatch[:5]}"
    np.testing.assert_allclose(params, TRACES[f"{n}/params"], atol=1e-5, rtol=0)


def test_traces_exercise_accumulation_and_the_draw_cap():
    """The recorded streams are not trivial: windows of several draws, cap hits."""
    capped, multi = 0, 0
    for n, case in enumerate(CASES):
        decisions = TRACES[f"{n}/decisions"]
        cap = case["hparams"].get("max_draws", 64)
        sizes = np.diff(np.flatnonzero(np.concatenate([[True], decisions])))
        capped += int((sizes == cap).sum())
        multi += int((sizes > 1).sum())
    assert capped >= 10 and multi >= 100
