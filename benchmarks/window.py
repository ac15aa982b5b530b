"""In-step fast path: accumulate_window vs the per-microbatch loop, microbatches/s.

Same model, same controller, same microbatch stream; the per-microbatch loop
calls one jitted ``value_and_grad + microstep`` per microbatch (one dispatch
each), the fast path one jitted ``accumulate_window`` per window. Both read the
controller's statistics once at the end only.

    python benchmarks/window.py [--width 256] [--microbatches 2048]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gqc_jax


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--microbatches", type=int, default=2048)
    parser.add_argument("--max-draws", type=int, default=16)
    args = parser.parse_args(argv)

    dim, width, n = 32, args.width, args.microbatches
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, args.batch, dim)), jnp.float32)
    y = jnp.asarray(
        np.sin(np.asarray(x).sum(-1)) + rng.standard_normal((n, args.batch)), jnp.float32
    )
    params = {
        "w1": jnp.asarray(rng.standard_normal((dim, width)) / np.sqrt(dim), jnp.float32),
        "w2": jnp.asarray(rng.standard_normal((width,)) / np.sqrt(width), jnp.float32),
    }

    def loss_fn(p, batch):
        xb, yb = batch
        return jnp.mean((jnp.tanh(xb @ p["w1"]) @ p["w2"] - yb) ** 2)

    tx = gqc_jax.gnts(optax.adamw(1e-3), threshold=0.4, relative=True, max_draws=args.max_draws)

    @jax.jit
    def step(p, s, batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        return gqc_jax.microstep(tx, grads, s, p, value=loss)

    window = jax.jit(gqc_jax.accumulate_window, static_argnums=(0, 1))

    def run_loop():
        p, s = params, tx.init(params)
        for i in range(n):
            p, s = step(p, s, (x[i], y[i]))
        return jax.block_until_ready((p, s))

    m = args.max_draws
    pad = np.arange(m) % n  # cyclic padding so every superbatch has m rows
    xs = jnp.concatenate([x, x[pad]])
    ys = jnp.concatenate([y, y[pad]])

    def run_window():
        p, s, pointer = params, tx.init(params), 0
        while pointer < n:
            chunk = (
                jax.lax.dynamic_slice_in_dim(xs, pointer, m),
                jax.lax.dynamic_slice_in_dim(ys, pointer, m),
            )
            p, s, used = window(tx, loss_fn, p, s, chunk, num_available=min(m, n - pointer))
            pointer += int(used)  # the data pointer: one small read per window
        return jax.block_until_ready((p, s))

    for fn in (run_loop, run_window):  # compile
        fn()
    times = {}
    for name, fn in (("per-microbatch loop", run_loop), ("accumulate_window", run_window)) * 2:
        start = time.perf_counter()
        p, s = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        stats = jax.device_get(gqc_jax.stats(s))
    print(
        f"device: {jax.devices()[0].device_kind}; MLP {dim}x{width}, microbatch {args.batch}, "
        f"{n} microbatches, relative GNTS max_draws {m}; {int(stats['num_steps'])} steps"
    )
    base = min(times["per-microbatch loop"])
    for name, t in times.items():
        print(f"{name:<22}{n / min(t):>12.0f} microbatches/s{base / min(t):>8.2f}x")


if __name__ == "__main__":
    main()
