"""End-to-end GPT training throughput (tokens/s) with each controller vs plain AdamW.

Same model, microbatch and token stream for every arm; each arm runs the jitted,
donated train step of models/train_step.py once per microbatch, and arms are
interleaved in rounds so machine drift hits all alike. Target: <= 5% slowdown
per token against AdamW.

    python benchmarks/gpt_throughput.py [--preset ladder-xs] [--batch 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import optax
from flax import nnx

import gqc_jax
from models.gpt import GPT, preset
from models.sharding import make_mesh
from models.train_step import init_state, make_train_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ladder-xs")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="microbatches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mesh", default="data=1")
    args = parser.parse_args(argv)

    config = preset(args.preset, seq_len=args.seq_len)
    mesh = make_mesh(args.mesh, jax.devices()[: 1 if args.mesh == "data=1" else None])
    adamw = optax.adamw(1e-3)
    arms = {
        "adamw": adamw,
        "gnts": gqc_jax.gnts(adamw, threshold=0.5, relative=True, max_draws=8),
        "gns": gqc_jax.gns(adamw, 0.01, max_draws=8),
        "mht": gqc_jax.mht(adamw, 0.9, 0.05, max_draws=8),
        "sbc": gqc_jax.sbc(adamw, 4 * args.batch, args.batch, max_draws=8),
        "snr": gqc_jax.snr(adamw, 0.5, max_draws=8),
    }
    tokens = jax.random.randint(
        jax.random.key(0), (args.steps, args.batch, args.seq_len + 1), 0, config.vocab_size
    )
    runs = {}
    for name, tx in arms.items():
        graphdef, state, shardings = init_state(GPT(config, rngs=nnx.Rngs(0)), tx, mesh)
        step = make_train_step(graphdef, tx, mesh, shardings)
        state, _ = step(state, tokens[0])  # compile
        runs[name] = [step, state, []]
    for _ in range(args.rounds):
        for run in runs.values():
            step, state, times = run
            start = time.perf_counter()
            for i in range(args.steps):
                state, metrics = step(state, tokens[i])
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - start)
            run[1] = state
    per_round = args.steps * args.batch * args.seq_len
    base = statistics.median(runs["adamw"][2])
    print(
        f"device: {jax.devices()[0].device_kind}; preset {args.preset} "
        f"({config.num_params():,} params), microbatch {args.batch}x{args.seq_len}, "
        f"mesh {args.mesh}; median of {args.rounds} rounds of {args.steps} microbatches"
    )
    print(f"{'arm':<8}{'tokens/s':>12}{'time/token vs adamw':>22}  target")
    for name, (_, _, times) in runs.items():
        t = statistics.median(times)
        ratio = t / base
        verdict = "" if name == "adamw" else ("ok" if ratio <= 1.05 else "MISSED")
        target = "" if name == "adamw" else "<= 1.05"
        print(f"{name:<8}{per_round / t:>12.0f}{ratio:>22.3f}  {target} {verdict}")


if __name__ == "__main__":
    main()
