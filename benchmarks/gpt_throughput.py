"""End-to-end GPT training throughput (tokens/s) with each controller vs plain AdamW.

Same model, microbatch and token stream for every arm; each arm runs the jitted,
donated train step of experiments/train_step.py once per microbatch, and arms are
interleaved in rounds (the order rotating) so machine drift hits all alike; the
ratio to AdamW is the median of the per-round ratios. Target: <= 5% slowdown
per token against AdamW. On a GPU with a known peak the table adds the model
FLOPs utilisation (MFU: 6 x non-embedding params + attention, per token).

A second table measures the in-step fast path on the same model: GNTS through
a loss-only per-microbatch loop (one jitted ``value_and_grad + microstep`` per
microbatch) against ``gqc_jax.accumulate_window`` (one jitted ``while_loop``
per window, the data pointer read once per window).

    python benchmarks/gpt_throughput.py [--preset ladder-xs] [--batch 8] [--steps 20]
    python benchmarks/gpt_throughput.py --preset gpt2-124m --seq-len 1024 --batch 16
    python benchmarks/gpt_throughput.py ... --attention cudnn   # fused attention on NVIDIA GPUs
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import optax
from flax import nnx

import gqc_jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/ from the clone
from experiments.train_step import init_state, make_train_step  # noqa: E402
from models.gpt import GPT, next_token_loss, peak_flops, preset  # noqa: E402
from models.sharding import make_mesh  # noqa: E402


def fast_path(config, graphdef, tx, mesh, batches, max_draws, rounds):
    """Microbatches/s of the per-microbatch loop and of accumulate_window, GNTS."""

    def loss_fn(params, tokens):
        return next_token_loss(nnx.merge(graphdef, params), tokens)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def loop_step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        return gqc_jax.microstep(tx, grads, opt_state, params, value=loss)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def window_step(params, opt_state, stream, start):
        chunk = jax.lax.dynamic_slice_in_dim(stream, start, max_draws)
        return gqc_jax.accumulate_window(tx, loss_fn, params, opt_state, chunk)

    n = len(batches)
    # Padded (cyclically) so that every slice of max_draws rows is full.
    stream = jax.numpy.stack([batches[i % n] for i in range(n + max_draws)])

    def run_loop(state):
        params, opt_state = state
        for tokens in batches:
            params, opt_state = loop_step(params, opt_state, tokens)
        return jax.block_until_ready((params, opt_state)), n

    def run_window(state):
        params, opt_state = state
        pointer = 0
        while pointer < n:
            params, opt_state, used = window_step(params, opt_state, stream, pointer)
            pointer += int(used)  # one small read per window
        return jax.block_until_ready((params, opt_state)), pointer

    arms = {}
    for name, run in (("per-microbatch loop", run_loop), ("accumulate_window", run_window)):
        _, state, _ = init_state(GPT(config, rngs=nnx.Rngs(0)), tx, mesh)
        state, _ = run((state.params, state.opt_state))  # compile
        arms[name] = [run, state, []]
    for _ in range(rounds):
        for arm in arms.values():
            run, state, rates = arm
            start = time.perf_counter()
            state, used = run(state)
            rates.append(used / (time.perf_counter() - start))
            arm[1] = state
    steps = int(jax.device_get(gqc_jax.stats(arms["accumulate_window"][1][1])["num_steps"]))
    return {name: statistics.median(rates) for name, (_, _, rates) in arms.items()}, steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ladder-xs")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--attention",
        choices=["default", "xla", "cudnn"],
        default="default",
        help="GPTConfig.attention (default: None, jax.nn.dot_product_attention chooses)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="microbatches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mesh", default="data=1")
    parser.add_argument("--arms", default="adamw,gnts,gns,mht,sbc,snr")
    parser.add_argument("--max-draws", type=int, default=8)
    parser.add_argument("--no-fast-path", action="store_true")
    args = parser.parse_args(argv)

    attention = None if args.attention == "default" else args.attention
    config = preset(args.preset, seq_len=args.seq_len, attention=attention)
    mesh = make_mesh(args.mesh, jax.devices()[: 1 if args.mesh == "data=1" else None])
    adamw = optax.adamw(1e-3)
    m = args.max_draws
    all_arms = {
        "adamw": adamw,
        "gnts": gqc_jax.gnts(adamw, threshold=0.5, relative=True, max_draws=m),
        "gns": gqc_jax.gns(adamw, 0.01, max_draws=m),
        "mht": gqc_jax.mht(adamw, 0.9, 0.05, max_draws=m),
        "sbc": gqc_jax.sbc(adamw, 4 * args.batch, args.batch, max_draws=m),
        "snr": gqc_jax.snr(adamw, 0.5, max_draws=m),
    }
    names = args.arms.split(",")
    unknown = sorted(set(names) - set(all_arms))
    if unknown or "adamw" not in names:
        raise SystemExit(f"--arms must include adamw and name only {sorted(all_arms)}: {unknown}")
    tokens = jax.random.randint(
        jax.random.key(0), (args.steps, args.batch, args.seq_len + 1), 0, config.vocab_size
    )
    batches = [tokens[i] for i in range(args.steps)]
    runs = {}
    for name in names:
        tx = all_arms[name]
        graphdef, state, shardings = init_state(GPT(config, rngs=nnx.Rngs(0)), tx, mesh)
        step = make_train_step(graphdef, tx, mesh, shardings)
        state, _ = step(state, batches[0])  # compile
        runs[name] = [step, state, []]
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # order rotates
            run = runs[name]
            step, state, times = run
            start = time.perf_counter()
            for tokens_i in batches:
                state, metrics = step(state, tokens_i)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - start)
            run[1] = state
    device = jax.devices()[0].device_kind
    peak = peak_flops(device)
    per_round = args.steps * args.batch * args.seq_len
    print(
        f"device: {device}; preset {args.preset} ({config.num_params():,} params, "
        f"{jax.numpy.dtype(config.dtype).name} compute, {args.attention} attention), "
        f"microbatch {args.batch}x{args.seq_len}, "
        f"mesh {args.mesh}; median of {args.rounds} rounds of {args.steps} microbatches"
    )
    mfu_head = f"{'MFU':>8}" if peak else ""
    print(f"{'arm':<8}{'tokens/s':>12}{mfu_head}{'time/token vs adamw':>22}  target")
    for name, (_, _, times) in runs.items():
        t = statistics.median(times)
        # Median of the per-round ratios: each pairs runs a few seconds apart.
        ratio = statistics.median(a / b for a, b in zip(times, runs["adamw"][2], strict=True))
        mfu = f"{per_round / t * config.flops_per_token() / peak:>8.1%}" if peak else ""
        verdict = "" if name == "adamw" else ("ok" if ratio <= 1.05 else "MISSED")
        target = "" if name == "adamw" else "<= 1.05"
        print(f"{name:<8}{per_round / t:>12.0f}{mfu}{ratio:>22.3f}  {target} {verdict}")
    if peak:
        print(f"MFU against {peak / 1e12:.0f} TFLOP/s dense bf16 ({device})")
    if args.no_fast_path:
        return
    runs.clear()  # free the arms' states before the fast path builds its own
    rates, steps = fast_path(config, graphdef, all_arms["gnts"], mesh, batches, m, args.rounds)
    print(
        f"in-step fast path, relative GNTS max_draws {m}, {args.steps} microbatches a round "
        f"({steps} optimizer steps in all on the window side)"
    )
    base = rates["per-microbatch loop"]
    for name, rate in rates.items():
        print(f"{name:<22}{rate:>10.1f} microbatches/s{rate / base:>8.2f}x")


if __name__ == "__main__":
    main()
