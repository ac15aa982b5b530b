"""Peer comparison: the same GPT and microbatch stream under PyTorch + torch-gqc 0.10.4
and under JAX + gqc_jax, on this machine: microbatches per second and host syncs per
microbatch, GNTS with the reference's flagship schedule on both sides.

Rounds alternate (torch, jax, torch, ...) so machine drift hits both alike; each
round builds its model, warms up, then times ``--microbatches`` training
microbatches. Host syncs: on the torch side every ``Tensor.item``/``__bool__``/
``__float__``/``tolist`` call in the timed loop is counted; on the JAX side the
timed loop runs under ``jax.transfer_guard_device_to_host("disallow")``, so any
device-to-host read would raise, and the count is 0 by construction.

The torch side needs a separate environment (kept out of this project's install):

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 torch-gqc==0.10.4 \\
        torch-schedule-anything==1.2.3 numpy==2.4.6
    python benchmarks/torch_peer.py --torch-python /tmp/torchref/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SHAPE = dict(vocab=256, seq_len=128, depth=4, width=128, heads=2, batch=8)


def torch_side(microbatches: int, warmup: int) -> dict:
    """Runs in the torch environment: a pre-LN GPT equal in shape to ``ladder-xs``."""
    import gradient_quality_control as gqc
    import torch
    import torch.nn.functional as F
    from torch import nn

    s = SHAPE
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            w = s["width"]
            self.norm1, self.norm2 = nn.LayerNorm(w), nn.LayerNorm(w)
            self.qkv, self.proj = nn.Linear(w, 3 * w), nn.Linear(w, w)
            self.up, self.down = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

        def forward(self, x):
            b, t, w = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(w, dim=-1)
            shape = (b, t, s["heads"], w // s["heads"])
            q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, w))
            return x + self.down(F.gelu(self.up(self.norm2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(s["vocab"], s["width"])
            self.position = nn.Embedding(s["seq_len"], s["width"])
            self.blocks = nn.ModuleList(Block() for _ in range(s["depth"]))
            self.norm = nn.LayerNorm(s["width"])

        def forward(self, tokens):
            x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.norm(x) @ self.embed.weight.T

    model = GPT()
    for name, p in model.named_parameters():  # GPT-2 init, as models/gpt.py (close enough
        with torch.no_grad():  # that GNTS makes similar decisions on both sides)
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() > 1:
                p.normal_(0.0, 0.02)
    total = warmup + microbatches
    opt, schedule = gqc.make_gnts_with_cosine_annealing_schedule(
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        num_training_steps=total,
        num_warmup_steps=total // 10,
    )
    gen = torch.Generator().manual_seed(0)
    pool = [
        torch.randint(0, s["vocab"], (s["batch"], s["seq_len"] + 1), generator=gen)
        for _ in range(16)
    ]
    syncs = {"n": 0}
    counted = ("item", "__bool__", "__float__", "tolist")
    originals = {name: getattr(torch.Tensor, name) for name in counted}

    def counting(name):
        def call(self, *args, **kwargs):
            syncs["n"] += 1
            return originals[name](self, *args, **kwargs)

        return call

    def run(n, offset):
        steps = 0
        for i in range(n):
            tokens = pool[(offset + i) % len(pool)]
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, s["vocab"]), tokens[:, 1:].reshape(-1))
            loss.backward()
            steps += bool(opt.step())
            schedule.step()
        return steps

    run(warmup, 0)
    for name in counted:
        setattr(torch.Tensor, name, counting(name))
    start = time.perf_counter()
    steps = run(microbatches, warmup)
    elapsed = time.perf_counter() - start
    for name in counted:
        setattr(torch.Tensor, name, originals[name])
    return {
        "microbatches_per_s": microbatches / elapsed,
        "syncs_per_microbatch": syncs["n"] / microbatches,
        "optimizer_steps": steps,
        "threads": torch.get_num_threads(),
    }


def jax_side(microbatches: int, warmup: int) -> dict:
    import jax
    import optax
    from flax import nnx

    import gqc_jax
    from experiments.train_step import init_state, make_train_step
    from models.gpt import GPT, GPTConfig
    from models.sharding import make_mesh

    s = SHAPE
    config = GPTConfig(
        vocab_size=s["vocab"],
        seq_len=s["seq_len"],
        depth=s["depth"],
        width=s["width"],
        heads=s["heads"],
    )
    mesh = make_mesh("data=1", jax.devices()[:1])
    total = warmup + microbatches
    tx = gqc_jax.gnts_with_cosine_annealing(
        optax.adamw, num_training_steps=total, num_warmup_steps=total // 10, learning_rate=1e-3
    )
    graphdef, state, shardings = init_state(GPT(config, rngs=nnx.Rngs(0)), tx, mesh)
    step = make_train_step(graphdef, tx, mesh, shardings)
    keys = jax.random.split(jax.random.key(0), 16)
    pool = [jax.random.randint(k, (s["batch"], s["seq_len"] + 1), 0, s["vocab"]) for k in keys]

    def run(state, n, offset):
        for i in range(n):
            state, metrics = step(state, pool[(offset + i) % len(pool)])
        return state, metrics

    state, metrics = run(state, warmup, 0)
    jax.block_until_ready(state)
    with jax.transfer_guard_device_to_host("disallow"):
        start = time.perf_counter()
        state, metrics = run(state, microbatches, warmup)
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - start
    return {
        "microbatches_per_s": microbatches / elapsed,
        "syncs_per_microbatch": 0.0,
        "optimizer_steps": int(jax.device_get(gqc_jax.stats(state.opt_state)["num_steps"])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="/tmp/torchref/bin/python")
    parser.add_argument("--microbatches", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", choices=["torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side == "torch":
        print(json.dumps(torch_side(args.microbatches, args.warmup)))
        return
    if not __import__("pathlib").Path(args.torch_python).is_file():
        print(f"torch_peer: skipped, no torch environment at {args.torch_python} (see --help)")
        return
    torch_runs, jax_runs = [], []
    for _ in range(args.rounds):
        out = subprocess.run(
            [
                args.torch_python,
                __file__,
                "--side=torch",
                f"--microbatches={args.microbatches}",
                f"--warmup={args.warmup}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        torch_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        jax_runs.append(jax_side(args.microbatches, args.warmup))
    t = statistics.median(r["microbatches_per_s"] for r in torch_runs)
    j = statistics.median(r["microbatches_per_s"] for r in jax_runs)
    print(
        f"GPT {SHAPE}, GNTS (flagship schedule), {args.microbatches} timed microbatches, "
        f"median of {args.rounds} alternating rounds"
    )
    print(f"{'side':<26}{'microbatches/s':>16}{'host syncs/microbatch':>24}{'opt steps':>11}")
    print(
        f"{'torch + torch-gqc 0.10.4':<26}{t:>16.2f}"
        f"{torch_runs[0]['syncs_per_microbatch']:>24.2f}{torch_runs[0]['optimizer_steps']:>11}"
    )
    print(f"{'jax + gqc_jax':<26}{j:>16.2f}{0.0:>24.2f}{jax_runs[0]['optimizer_steps']:>11}")
    print(f"ratio jax / torch: {j / t:.2f}x (torch used {torch_runs[0]['threads']} threads)")


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
