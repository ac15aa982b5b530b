"""The training program's loop overhead: its tokens/s against the bare jitted step.

Both arms train the same model on the same microbatches with the same optimizer
(and controller): the *program* arm is ``experiments.train.Trainer.fit`` (data
windows cut on the host, placed on the mesh, metrics fetched one step late,
step records written, evaluations at the start and the end, a checkpoint at the
end), its rate read from its own step records between microbatch ``--skip`` and
the last (compilation and the first evaluation left out); the *bare* arm calls
the same jitted, donated step on batches already on the device, timed from the
same microbatch to the last. Arms alternate in rounds; the ratio is the median of
per-round ratios. Target: >= 0.95.

    python benchmarks/loop_overhead.py [--presets tiny,ladder-xs] [--microbatches 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ from the clone
from experiments.config import Config, apply_overrides  # noqa: E402
from experiments.data import TokenSource  # noqa: E402
from experiments.run_log import read_metrics, tokens_per_s  # noqa: E402
from experiments.train import Trainer  # noqa: E402


def _config(preset: str, args, out_dir: str) -> Config:
    return apply_overrides(
        Config(),
        {
            "model.preset": preset,
            "model.seq_len": args.seq_len,
            "data.microbatch_size": args.batch,
            "data.eval_sequences": args.batch,
            "optim.warmup": 10,
            "gqc.controller": args.controller,
            "train.tokens": args.microbatches * args.batch * args.seq_len,
            "train.eval_every": args.microbatches,
            "train.checkpoint_every": 10**9,
            "train.keep_checkpoints": 1,
            "train.noise_probe": 0,
            "train.progress": args.progress,
            "train.tensorboard": False,
            "train.out_dir": out_dir,
        },
    )


def program(preset: str, args, source: TokenSource) -> float:
    """Tokens/s of the training program from microbatch ``args.skip`` on."""
    with tempfile.TemporaryDirectory() as out:
        Trainer(_config(preset, args, out), source).fit()
        steps = [r for r in read_metrics(out) if "train/loss" in r]
    return tokens_per_s(
        steps, first=next(i for i, r in enumerate(steps) if r["microbatch"] >= args.skip)
    )


def bare(preset: str, args, source: TokenSource) -> float:
    """Tokens/s of the same jitted step on batches already on the device."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(_config(preset, args, out), source)  # the program's own step
        trainer.checkpoints.close()
        batches = [
            trainer._batch(trainer.data.microbatch(i, trainer.rows))
            for i in range(args.microbatches)
        ]
        state, step = trainer.state, trainer.step_fn
        for i in range(args.skip):
            state, metrics = step(state, batches[i])
        jax.block_until_ready((state, metrics))
        start = time.perf_counter()
        for i in range(args.skip, args.microbatches):
            state, metrics = step(state, batches[i])
        jax.block_until_ready((state, metrics))
    tokens = (args.microbatches - args.skip) * args.batch * args.seq_len
    return tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,ladder-xs")
    parser.add_argument("--controller", default="none", help="gqc.controller of both arms")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--microbatches", type=int, default=300)
    parser.add_argument("--skip", type=int, default=20, help="microbatches left out of the timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--progress", action="store_true", help="the program shows its bar")
    args = parser.parse_args(argv)
    if not 0 < args.skip < args.microbatches - 1:
        parser.error(f"--skip must be in (0, --microbatches - 1), got {args.skip}.")
    rng = np.random.default_rng(0)
    source = TokenSource(
        rng.integers(0, 256, 2_000_000, dtype=np.int32).astype(np.uint8),
        rng.integers(0, 256, 100_000, dtype=np.int32).astype(np.uint8),
        256,
    )
    print(
        f"device: {jax.devices()[0].device_kind} x {jax.device_count()}; controller "
        f"{args.controller}; {args.microbatches} microbatches of {args.batch} x {args.seq_len}, "
        f"timed from {args.skip}; {args.rounds} rounds"
    )
    print(f"{'preset':<12} {'program tok/s':>14} {'bare tok/s':>12} {'ratio':>7}  per round")
    for preset in args.presets.split(","):
        ratios, rates = [], []
        for r in range(args.rounds):
            order = (program, bare) if r % 2 == 0 else (bare, program)
            measured = {arm.__name__: arm(preset, args, source) for arm in order}
            rates.append(measured)
            ratios.append(measured["program"] / measured["bare"])
        program_rate = statistics.median(m["program"] for m in rates)
        bare_rate = statistics.median(m["bare"] for m in rates)
        print(
            f"{preset:<12} {program_rate:>14,.0f} {bare_rate:>12,.0f} "
            f"{statistics.median(ratios):>7.3f}  {', '.join(f'{x:.3f}' for x in ratios)}"
        )


if __name__ == "__main__":
    main()
