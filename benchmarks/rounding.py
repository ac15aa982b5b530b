"""Jitted gradient rounding vs a jitted elementwise multiply of the same array.

Both are memory-bound elementwise passes, so the ratio (rounding time / multiply
time, measured side by side in one process) is the figure of merit; target <= 2x.

    python benchmarks/rounding.py [--elements 100_000_000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import gqc_jax

CASES = [
    ("decimals", dict(mode="decimals")),
    ("significant", dict(mode="significant")),
    ("mantissa_bits", dict(mode="mantissa_bits")),
    ("decimals, stochastic", dict(mode="decimals", stochastic=True)),
    ("decimals, bf16 emulation", dict(mode="decimals", emulate_bf16=True)),
]


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile and warm up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=100_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--digits", type=int, default=4)
    args = parser.parse_args(argv)

    x = jax.random.normal(jax.random.key(0), (args.elements,), jnp.float32) * 1e-3
    multiply = jax.jit(lambda a: a * 1.0001)
    print(
        f"device: {jax.devices()[0].device_kind}, {args.elements:,} float32 elements, "
        f"digits={args.digits}, median of {args.repeats}"
    )
    print(f"{'mode':<26}{'round ms':>10}{'multiply ms':>13}{'ratio':>8}{'target':>8}")
    for name, kwargs in CASES:
        tx = gqc_jax.round_gradients(args.digits, **kwargs)
        state = tx.init(x)
        rounding = jax.jit(lambda a, s, tx=tx: tx.update(a, s)[0])
        # Interleave: multiply, round, multiply, ... so drift hits both alike.
        t_mul, t_round = [], []
        for _ in range(3):
            t_mul.append(_time(multiply, x, repeats=max(1, args.repeats // 3)))
            t_round.append(_time(rounding, x, state, repeats=max(1, args.repeats // 3)))
        mul, rnd = statistics.median(t_mul), statistics.median(t_round)
        ratio = rnd / mul
        verdict = "ok" if ratio <= 2.0 else "MISSED"
        print(f"{name:<26}{rnd * 1e3:>10.1f}{mul * 1e3:>13.1f}{ratio:>8.2f}{'<= 2':>8} {verdict}")


if __name__ == "__main__":
    main()
