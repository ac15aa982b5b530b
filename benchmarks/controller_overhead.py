"""Per-microbatch cost and memory of the controllers against optax.MultiSteps.

All figures are ratios measured side by side in one process (designs are
interleaved so machine drift hits all alike):

* non-step ``update`` vs the bare accumulate ``acc + g`` (target <= 2x; the
  inner optimizer must not run), and vs ``optax.MultiSteps(adamw, k)``;
* step ``update`` vs accumulate + one adamw update (target <= 1.3x);
* the whole per-microbatch loop through ``gqc_jax.microstep`` vs the bare
  accumulate (target <= 1.5x);
* each pass a non-step update makes over memory (finiteness check, running
  mean, norm, zero updates), timed alone, to show where its time goes;
* memory from ``memory_analysis()``: the controller state's bytes over adamw's
  (target: one gradient-sized accumulator plus O(1) scalars) and temp bytes.

The script checks that every "non-step" row took no step and every "step" row
stepped on every call.

    python benchmarks/controller_overhead.py [--params 30_000_000] [--samples 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gqc_jax
from gqc_jax._tree import global_norm, has_finite_norm


def make_tree(total: int):
    """Four float32 leaves summing to ``total`` elements."""
    sizes = [int(total * f) for f in (0.4, 0.3, 0.25)]
    sizes.append(total - sum(sizes))
    keys = jax.random.split(jax.random.key(0), 4)
    return {
        f"p{i}": 1e-3 * jax.random.normal(k, (n,))
        for i, (k, n) in enumerate(zip(keys, sizes, strict=True))
    }


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def fresh(tree):
    """Distinct device buffers (zeros of one shape may share one), safe to donate."""
    return jax.tree.map(lambda x: jax.device_put(np.array(x)), tree)


def timed(fn, state, grads, calls=3):
    """Seconds per call of ``fn(state, grads) -> (state, out)``, state donated."""
    start = time.perf_counter()
    for _ in range(calls):
        state, out = fn(state, grads)
    jax.block_until_ready((state, out))
    return (time.perf_counter() - start) / calls, state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=30_000_000)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3, help="calls per timed sample")
    args = parser.parse_args(argv)

    params = make_tree(args.params)
    grads = jax.tree.map(lambda p: p * 0.5 + 1e-4, params)
    adamw = optax.adamw(1e-3)
    # Non-step: a criterion that never passes (runtime threshold) and no cap in
    # reach. Step: one that always passes, and a cap of one draw, since GNS cannot
    # pass on a window's first draw (one norm has no variance).
    never, always = (0.0, 1_000_000), (1e30, 1)

    controllers = {
        "gnts": lambda thr, cap: gqc_jax.gnts(adamw, thr, max_draws=cap),
        "gns": lambda thr, cap: gqc_jax.gns(adamw, thr, max_draws=cap),
        "mht": lambda thr, cap: gqc_jax.mht(adamw, 0.95, thr or 1e-30, max_draws=cap),
        "sbc": lambda thr, cap: gqc_jax.sbc(adamw, 1e9 if not thr else 1.0, 1, max_draws=cap),
    }

    # --- designs, each a donated jitted function of (state, grads) -> (state, grads)
    def bare(acc, g):
        acc = jax.tree.map(jnp.add, acc, g)
        return acc, acc["p3"][:1]

    def bare_step(acc_and_state, g):
        acc, state = acc_and_state
        acc = jax.tree.map(jnp.add, acc, g)
        updates, state = adamw.update(acc, state, params)
        return (acc, state), updates

    def as_update(tx):
        def f(state, g):
            updates, state = tx.update(g, state, params, value=jnp.float32(2.0))
            return state, updates

        return f

    def as_microstep(tx):
        def f(carry, g):
            p, state = carry
            p, state = gqc_jax.microstep(tx, g, state, p, value=jnp.float32(2.0))
            return (p, state), p["p3"][:1]

        return f

    def as_loop(tx):  # update + apply_updates, the plain user loop, one jit
        def f(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p, value=jnp.float32(2.0))
            p = optax.apply_updates(p, updates)
            return (p, state), p["p3"][:1]

        return f

    # Each pass of a non-step update alone (same memory traffic, nothing else).
    def window_count(acc):  # a runtime count, so XLA cannot fold the division
        return 3.0 + 0.0 * acc["p3"][0]

    def pass_finite(acc, g):
        return acc, has_finite_norm(g)

    def pass_mean(acc, g):
        n = window_count(acc)
        return jax.tree.map(lambda a, x: a + (x - a) / n, acc, g), n

    def pass_norm(acc, g):
        return acc, global_norm(acc)

    def pass_zeros(acc, g):
        return acc, jax.tree.map(jnp.zeros_like, g)

    passes = {
        "finite check": pass_finite,
        "running mean": pass_mean,
        "norm of the mean": pass_norm,
        "zero updates": pass_zeros,
    }

    designs = {
        "bare acc+g": (bare, lambda: jax.tree.map(jnp.zeros_like, params)),
        "acc+g then adamw": (
            bare_step,
            lambda: (jax.tree.map(jnp.zeros_like, params), adamw.init(params)),
        ),
        "MultiSteps non-step": (
            as_update(optax.MultiSteps(adamw, 1_000_000)),
            lambda: optax.MultiSteps(adamw, 1_000_000).init(params),
        ),
    }

    def never_state(name, tx):
        state = tx.init(params)
        if name == "gns":
            # The same gradient every call: the norms' variance would be 0, which
            # passes any tolerance >= 0. A window opened by one zero gradient keeps
            # the variance positive (statistic 1/n for n draws): tolerance 0 never passes.
            zeros = jax.tree.map(jnp.zeros_like, params)
            state = tx.update(zeros, state, params, value=jnp.float32(2.0))[1]
        return state

    for name, make in controllers.items():
        designs[f"{name} non-step"] = (
            as_update(make(*never)),
            lambda name=name, make=make: never_state(name, make(*never)),
        )
        designs[f"{name} step"] = (
            as_update(make(*always)),
            lambda make=make: make(*always).init(params),
        )
    gnts_never = controllers["gnts"](*never)
    designs["gnts microstep loop"] = (
        as_microstep(gnts_never),
        lambda: (jax.tree.map(jnp.copy, params), gnts_never.init(params)),
    )
    designs["gnts update+apply loop"] = (
        as_loop(gnts_never),
        lambda: (jax.tree.map(jnp.copy, params), gnts_never.init(params)),
    )

    for name, fn in passes.items():
        designs[f"pass: {name}"] = (fn, lambda: jax.tree.map(jnp.zeros_like, params))

    compiled, carries = {}, {}
    for name, (fn, init) in designs.items():
        jitted = jax.jit(fn, donate_argnums=0)
        compiled[name] = jitted
        carries[name] = timed(jitted, fresh(init()), grads, calls=2)[1]

    samples = {name: [] for name in designs}
    for _ in range(args.samples):
        for name in designs:
            seconds, carries[name] = timed(compiled[name], carries[name], grads, args.calls)
            samples[name].append(seconds)
    ms = {name: 1e3 * statistics.median(v) for name, v in samples.items()}
    for name in controllers:  # every timed call did what its row says
        for kind, want in (("non-step", 0), ("step", None)):
            state = carries[f"{name} {kind}"]
            steps, calls = int(state.num_steps), int(state.num_batches)
            if steps != (calls if want is None else want):
                raise AssertionError(f"{name} {kind}: {steps} steps in {calls} calls")

    bare_ms, ref_step_ms = ms["bare acc+g"], ms["acc+g then adamw"]
    print(
        f"device: {jax.devices()[0].device_kind}; {args.params:,} float32 parameters; "
        f"median of {args.samples} samples x {args.calls} calls, donated state"
    )
    print(f"{'design':<26}{'ms/call':>9}{'ratio':>8}  against            target")
    rows = [("bare acc+g", bare_ms, "", "")]
    rows.append(("MultiSteps non-step", ms["MultiSteps non-step"], "bare", ""))
    for name in controllers:
        rows.append((f"{name} non-step", ms[f"{name} non-step"], "bare", "<= 2"))
    rows.append(("acc+g then adamw", ref_step_ms, "", ""))
    for name in controllers:
        rows.append((f"{name} step", ms[f"{name} step"], "acc+g then adamw", "<= 1.3"))
    rows.append(("gnts microstep loop", ms["gnts microstep loop"], "bare", "<= 1.5"))
    rows.append(("gnts update+apply loop", ms["gnts update+apply loop"], "bare", ""))
    digits = 1 if bare_ms >= 1 else 3
    for name, value, against, target in rows:
        base = {"bare": bare_ms, "acc+g then adamw": ref_step_ms}.get(against)
        ratio = f"{value / base:8.2f}" if base else " " * 8
        verdict = ""
        if target:
            verdict = "ok" if value / base <= float(target.split()[-1]) else "MISSED"
        print(f"{name:<26}{value:>9.{digits}f}{ratio}  {against:<18} {target:<7}{verdict}")
    for name in controllers:
        slower = ms[f"{name} non-step"] / ms["MultiSteps non-step"]
        print(f"{name} non-step / MultiSteps non-step: {slower:.2f} (target < 1)")

    print("\nwhere a non-step update's time goes (each pass alone, x bare):")
    for name in passes:
        print(f"  {name:<24}{ms[f'pass: {name}'] / bare_ms:6.2f}")
    total = sum(ms[f"pass: {name}"] for name in passes)
    print(
        f"  {'all four':<24}{total / bare_ms:6.2f}  (gnts non-step "
        f"{ms['gnts non-step'] / bare_ms:.2f})\n"
        f"  {'all but the zeros':<24}{(total - ms['pass: zero updates']) / bare_ms:6.2f}"
        f"  (gnts microstep loop {ms['gnts microstep loop'] / bare_ms:.2f})"
    )

    # --- memory
    print("\nmemory (memory_analysis of the jitted, donated update):")
    inner_state = nbytes(adamw.init(params))
    for name, tx in [("MultiSteps", optax.MultiSteps(adamw, 4))] + [
        (n, make(*never)) for n, make in controllers.items()
    ]:
        state = fresh(tx.init(params))
        extra = nbytes(state) - inner_state
        fn = jax.jit(as_update(tx), donate_argnums=0)
        analysis = fn.lower(state, grads).compile().memory_analysis()
        temp = getattr(analysis, "temp_size_in_bytes", float("nan"))
        print(
            f"  {name:<11} state over adamw: {extra / nbytes(params):.4f} x params "
            f"({extra - nbytes(params):+d} bytes beyond one accumulator); temp {temp / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
