"""The sharded train step: sharding equals one device, the accumulator's memory,
metrics fetched one step late (8 fake CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

import gqc_jax  # noqa: E402
from experiments.train_step import (  # noqa: E402
    OneStepLate,
    PackedMetrics,
    init_state,
    make_eval_step,
    make_train_step,
)
from models.gpt import GPT, preset  # noqa: E402
from models.sharding import make_mesh, param_spec  # noqa: E402

CONFIG = preset("tiny", vocab_size=64, seq_len=32, width=32, heads=4, depth=2)


needs8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def _train(mesh_spec, tx_factory, steps=12):
    mesh = make_mesh(mesh_spec, jax.devices()[: 8 if mesh_spec != "data=1" else 1])
    tx = tx_factory()
    graphdef, state, shardings = init_state(GPT(CONFIG, rngs=nnx.Rngs(0)), tx, mesh)
    step = make_train_step(graphdef, tx, mesh, shardings)
    data = jax.random.randint(jax.random.key(1), (steps, 8, 33), 0, 64)
    losses, stepped = [], []
    for i in range(steps):
        state, metrics = step(state, data[i])
        losses.append(float(metrics["loss"]))
        stepped.append(bool(metrics["stepped"]))
    evaluate = make_eval_step(graphdef, mesh, shardings)
    return losses, stepped, float(evaluate(state.params, data[0])), state


def _gnts():
    return gqc_jax.gnts(optax.adamw(3e-3), threshold=0.3, relative=True, max_draws=4)


@needs8
@pytest.mark.parametrize("mesh_spec", ["data=8", "data=2,fsdp=4", "data=2,fsdp=2,tensor=2"])
def test_sharded_training_equals_one_device(mesh_spec):
    ref_losses, ref_stepped, ref_eval, _ = _train("data=1", _gnts)
    losses, stepped, eval_loss, state = _train(mesh_spec, _gnts)
    assert stepped == ref_stepped and 0 < sum(stepped) < len(stepped)
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    np.testing.assert_allclose(eval_loss, ref_eval, atol=1e-5)
    # Parameters, Adam moments and the GQC accumulator follow the rules.
    mesh = make_mesh(mesh_spec)
    qkv = state.params["blocks"][0]["qkv"]["kernel"]
    assert qkv.sharding.spec == param_spec("blocks.0.qkv.kernel", qkv.shape, mesh)
    controller = gqc_jax.find_controller_state(state.opt_state)
    acc = controller.acc["blocks"][0]["qkv"]["kernel"]
    mu = controller.inner_state[0].mu["blocks"][0]["qkv"]["kernel"]
    assert acc.sharding.is_equivalent_to(qkv.sharding, 2)
    assert mu.sharding.is_equivalent_to(qkv.sharding, 2)


def test_accumulator_costs_one_param_sized_buffer():
    mesh = make_mesh("data=1", jax.devices()[:1])
    sizes = {}
    for name, tx in (("adamw", optax.adamw(1e-3)), ("gnts", gqc_jax.gnts(optax.adamw(1e-3)))):
        graphdef, state, shardings = init_state(GPT(CONFIG, rngs=nnx.Rngs(0)), tx, mesh)
        step = make_train_step(graphdef, tx, mesh, shardings)
        tokens = jnp.zeros((8, 33), jnp.int32)
        analysis = step.lower(state, tokens).compile().memory_analysis()
        sizes[name] = analysis.argument_size_in_bytes
    param_bytes = 4 * CONFIG.num_params()
    extra = sizes["gnts"] - sizes["adamw"]
    assert param_bytes <= extra < param_bytes + 1024  # one accumulator plus scalars


def test_loss_decreases_under_gnts_on_one_device():
    losses, stepped, _, _ = _train("data=1", _gnts, steps=40)
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    assert sum(stepped) >= 5


def test_local_slice_on_one_process():
    from experiments.distributed import local_slice

    assert local_slice(8) == slice(0, 8)  # one process reads every row


def test_one_step_late_reports_every_step_in_order():
    mesh = make_mesh("data=1", jax.devices()[:1])
    tx = optax.adamw(1e-3)
    graphdef, state, shardings = init_state(GPT(CONFIG, rngs=nnx.Rngs(0)), tx, mesh)
    step = make_train_step(graphdef, tx, mesh, shardings)
    seen = []
    batches = [jnp.full((8, 33), i, jnp.int32) for i in range(5)]
    late = OneStepLate(seen.append)
    for tokens in batches:
        state, metrics = step(state, tokens)
        late.push(metrics)
        assert len(seen) == int(state.microbatch) - 1  # the previous step's, fetched late
    late.drain()
    assert len(seen) == 5 and int(state.microbatch) == 5
    assert all(isinstance(m["loss"], np.ndarray) for m in seen)


def test_packed_metrics_read_as_the_dict_they_pack():
    metrics = {
        "loss": jnp.float32(2.5),
        "stepped": jnp.bool_(True),
        "num_draws": jnp.int32(3),
        "grad_norm": jnp.float32(0.25),
    }
    packed = jax.jit(PackedMetrics.pack)(metrics)
    assert len(packed.vectors) == 3  # one transfer per dtype
    host = jax.device_get(packed)
    assert list(host) == sorted(metrics)  # the order jit gives a dict
    for key, value in metrics.items():
        assert host[key].shape == () and host[key].dtype == value.dtype
        assert host[key] == value
    assert host.scalars() == {"grad_norm": 0.25, "loss": 2.5, "num_draws": 3, "stepped": True}
    assert type(host.scalars()["num_draws"]) is int
    with pytest.raises(ValueError, match="'norms' has shape \\(2,\\)"):
        PackedMetrics.pack({"norms": jnp.zeros(2)})


def test_one_training_loop():
    """Every program trains through the training program's loop
    (``experiments.train``): the step makers are called by it alone, besides
    step-timing code (the GPU pack's throughput part, the benchmarks); the
    vmapped paired protocol is the one other stepper, and it builds its step
    from the train step's pieces (the loss and its gradient). A second loop, or
    a second loss differentiated, fails here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = {
        str(path.relative_to(root)): path.read_text()
        for folder in ("experiments", "models")
        for path in (root / folder).rglob("*.py")
    }

    def calling(*names: str) -> set[str]:
        pattern = re.compile(rf"\b({'|'.join(names)})\(")
        return {path for path, text in sources.items() if pattern.search(text)}

    assert calling("make_train_step", "make_flush_step", "make_eval_step") == {
        "experiments/train.py",  # the loop
        "experiments/train_step.py",  # the step it runs
        "experiments/gpu_pack.py",  # part (a): the step's tokens/s on random tokens
    }
    assert calling("value_and_grad", "grad", "next_token_loss") == {
        "experiments/train_step.py",  # loss_fn and loss_and_grads
        "experiments/noise_scale.py",  # the gradient of loss_fn at fixed parameters
        "experiments/studies/rounding_study.py",  # the same, for gradient quantiles
        "models/gpt.py",  # where the loss is defined
    }
    assert calling("loss_and_grads") == {
        "experiments/train_step.py",
        "experiments/paired_training.py",  # the vmapped rounding protocol
    }
