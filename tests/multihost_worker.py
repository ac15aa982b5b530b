"""One process of the 2-process loopback test (run by tests/test_multihost.py).

Usage: python tests/multihost_worker.py PORT PROCESS_ID NUM_PROCESSES OUT_JSON
With NUM_PROCESSES=1 it runs the same training on one process with 8 devices.
"""

import json
import os
import sys

port, process_id, num_processes, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // num_processes}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import gqc_jax  # noqa: E402
from experiments.distributed import global_batch, initialize, local_slice  # noqa: E402
from experiments.train_step import init_state, make_train_step  # noqa: E402
from models.gpt import GPT, preset  # noqa: E402
from models.sharding import make_mesh  # noqa: E402

if num_processes > 1:
    initialize(f"127.0.0.1:{port}", num_processes, process_id)
assert jax.device_count() == 8, jax.device_count()

config = preset("tiny", vocab_size=64, seq_len=32, width=32, heads=4, depth=2)
mesh = make_mesh("data=4,fsdp=2")
tx = gqc_jax.gnts(optax.adamw(3e-3), threshold=0.3, relative=True, max_draws=4)
graphdef, state, shardings = init_state(GPT(config, rngs=nnx.Rngs(0)), tx, mesh)
step = make_train_step(graphdef, tx, mesh, shardings)
data = np.asarray(jax.random.randint(jax.random.key(1), (10, 8, 33), 0, 64))
losses, stepped = [], []
for i in range(10):
    tokens = global_batch(data[i][local_slice(8)], mesh)
    state, metrics = step(state, tokens)
    losses.append(float(metrics["loss"]))
    stepped.append(bool(metrics["stepped"]))
if process_id == 0:
    with open(out, "w") as f:
        json.dump({"losses": losses, "stepped": stepped}, f)
