"""The GPU pack: one command that measures throughput and tests the headline claim.

Three parts, each with a time budget; a part stops cleanly at its budget and
the pack writes what it has (``DIR/gpu_pack.json`` and ``DIR/gpu_pack.md``)
after every part:

(a) **throughput**: tokens/s and MFU of the jitted, donated train step at
    ``gpt2-124m`` (seq 1024, bf16 compute; on a GPU with cuDNN attention) for
    AdamW and each controller of the training program, and AdamW without the
    per-layer weight metrics and, on a GPU, with the default attention; MFU
    counts ``GPTConfig.flops_per_token`` (6 N + 12 L d T per token, N
    non-embedding parameters) against the device's dense bf16 peak.
(b) **headline**: runs of the training program (its one loop, under
    ``DIR/headline/``): a ~50M-parameter byte-level GPT (cuDNN attention on a GPU)
    on the offline corpus
    (:mod:`experiments.offline_corpus`: this machine's own Python source), AdamW
    against GNTS with the reference schedule and against Seesaw (the
    batch-aware arm that held the loss with fewer steps in
    docs/results/serial_steps.md), at equal tokens: as many as the part's budget
    fits, set from AdamW's measured rate. Validation loss and perplexity.
(c) **benchmarks**: ``benchmarks/controller_overhead.py``,
    ``benchmarks/rounding.py`` and, on a GPU, ``benchmarks/gpt_throughput.py``
    at part (a)'s model and batch (the same train step timed by another
    script, interleaved rounds) on the device, their output verbatim.

    python -m experiments.gpu_pack --out DIR [--scale gpu|smoke] [--commit SHA]

``--scale smoke`` runs every part at toy sizes on a CPU in under two minutes
(the test suite runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import pages
from experiments.arms import ADAMW, GNTS_REFERENCE
from experiments.config import Config, apply_overrides
from experiments.data import TokenSource
from experiments.offline_corpus import build_corpus
from experiments.optimizer import build_optimizer
from experiments.run_log import read_metrics, tokens_per_s
from experiments.train import train
from experiments.train_step import init_state, make_train_step
from models.gpt import GPT, GPTConfig, peak_flops, preset
from models.sharding import make_mesh

# The training program's controllers, as its flags set them.
THROUGHPUT_ARMS: dict[str, dict[str, Any]] = {
    "adamw": ADAMW,
    "gnts": GNTS_REFERENCE,
    "gns": {"gqc.controller": "gns"},
    "mht": {"gqc.controller": "mht"},
    "sbc": {"gqc.controller": "sbc", "gqc.sbc_draws": 4},
    "snr": {"gqc.controller": "snr"},
    "seesaw": {"gqc.controller": "seesaw"},
}
HEADLINE_ARMS: dict[str, dict[str, Any]] = {
    "adamw": ADAMW,
    "gnts_reference": GNTS_REFERENCE,
    "seesaw": {"gqc.controller": "seesaw"},
}


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes and budgets (seconds) of the three parts."""

    throughput_model: GPTConfig
    throughput_batch: int
    throughput_steps: int
    headline_model: GPTConfig
    headline_batch: int
    headline_lr: float
    headline_min_tokens: int
    headline_max_tokens: int
    eval_windows: int
    corpus_bytes: int
    budgets: dict[str, float]
    benchmark_args: dict[str, list[str]] = dataclasses.field(default_factory=dict)


SCALES = {
    "gpu": Scale(
        throughput_model=preset("gpt2-124m"),
        throughput_batch=16,
        throughput_steps=20,
        # ~50M parameters at bytes: 10 blocks of width 640, 64-wide heads.
        headline_model=GPTConfig(
            vocab_size=256, seq_len=1024, depth=10, width=640, heads=10, dtype=jnp.bfloat16
        ),
        headline_batch=32,
        headline_lr=1e-3,
        headline_min_tokens=10_000_000,
        headline_max_tokens=500_000_000,
        eval_windows=256,
        corpus_bytes=600_000_000,
        # From the H200 run (docs/results/gpu.md): part (a) took 158 s for 8 of
        # its 10 arms, and controller_overhead.py alone ran out 110 s.
        budgets={"throughput": 200.0, "headline": 170.0, "benchmarks": 140.0},
        benchmark_args={
            "controller_overhead.py": ["--calls=20", "--samples=5"],  # as on the H100
            "gpt_throughput.py": [
                "--preset=gpt2-124m",
                "--seq-len=1024",
                "--attention=cudnn",
                "--batch=16",
                "--steps=20",
                "--rounds=3",
                "--arms=adamw,gnts",
                "--no-fast-path",
            ],
        },
    ),
    "smoke": Scale(
        throughput_model=preset("tiny", seq_len=32),
        throughput_batch=2,
        throughput_steps=3,
        headline_model=GPTConfig(vocab_size=256, seq_len=32, depth=1, width=32, heads=2),
        headline_batch=8,  # whole sequences on each of the tests' 8 CPU devices
        headline_lr=3e-3,
        headline_min_tokens=4_096,
        headline_max_tokens=4_096,
        eval_windows=8,
        corpus_bytes=2_000_000,
        budgets={"throughput": 20.0, "headline": 50.0, "benchmarks": 20.0},
        benchmark_args={
            "controller_overhead.py": ["--params=100000", "--samples=1", "--calls=1"],
            "rounding.py": ["--elements=100000", "--repeats=1"],
        },
    ),
}


def _config(overrides: dict[str, Any], lr: float, tokens: int, microbatch: int) -> Config:
    return apply_overrides(
        Config(),
        {
            **overrides,
            "optim.lr": lr,
            "optim.warmup": 0 if tokens < 1_000_000 else 100,
            "train.tokens": tokens,
            "data.microbatch_size": microbatch,
        },
    )


def _setup(
    model_config: GPTConfig,
    overrides: dict,
    lr: float,
    tokens: int,
    batch: int,
    layer_metrics: bool = True,
):
    config = _config(overrides, lr, tokens, batch)
    total = max(1, tokens // (batch * model_config.seq_len))
    tx = build_optimizer(config, total)
    mesh = make_mesh("data=1", jax.devices()[:1])  # one chip
    model = GPT(model_config, rngs=nnx.Rngs(0))
    graphdef, state, shardings = init_state(model, tx, mesh)
    step = make_train_step(graphdef, tx, mesh, shardings, layer_metrics=layer_metrics)
    return state, step


def throughput(scale: Scale, deadline: float, out: Path) -> dict[str, Any]:
    """Part (a): tokens/s and MFU per arm on random tokens (the rate does not
    depend on the data)."""
    m, b, n = scale.throughput_model, scale.throughput_batch, scale.throughput_steps
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind)
    fast = _fast_attention(m)
    arms = [(name, overrides, fast, True) for name, overrides in THROUGHPUT_ARMS.items()]
    # The per-layer weight metrics' share of a step, and on a GPU the default
    # attention's, ahead of the controllers so that a tight budget skips those.
    arms.insert(1, ("adamw-no-layer-metrics", ADAMW, fast, False))
    if fast is not m:
        arms.insert(2, ("adamw-default-attention", ADAMW, m, True))
    rng = np.random.default_rng(0)
    batches = [
        jnp.asarray(rng.integers(0, m.vocab_size, (b, m.seq_len + 1)), jnp.int32) for _ in range(4)
    ]
    rows: dict[str, Any] = {}
    last = 0.0  # the previous arm's seconds: an arm that would overrun is not started
    for name, overrides, model_config, layer_metrics in arms:
        arm_start = time.perf_counter()
        if arm_start + last > deadline:
            rows[name] = {"skipped": "part budget reached"}
            continue
        try:
            state, step = _setup(model_config, overrides, 3e-4, 10**9, b, layer_metrics)
            start = time.perf_counter()
            state, metrics = step(state, batches[0])
            jax.block_until_ready(metrics)
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(n):
                state, metrics = step(state, batches[i % len(batches)])
            jax.block_until_ready((state, metrics))
            seconds = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - a variant the device lacks is recorded
            rows[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            continue
        tokens_per_s = n * b * m.seq_len / seconds
        rows[name] = {
            "tokens_per_s": tokens_per_s,
            "ms_per_step": 1e3 * seconds / n,
            "compile_s": compile_s,
            "mfu": tokens_per_s * model_config.flops_per_token() / peak if peak else None,
        }
        del state
        last = time.perf_counter() - arm_start
    base = rows.get("adamw", {}).get("tokens_per_s")
    for row in rows.values():
        if base and "tokens_per_s" in row:
            row["vs_adamw"] = row["tokens_per_s"] / base
    return {
        "model": _describe(fast),
        "batch": b,
        "steps_timed": n,
        "flops_per_token": m.flops_per_token(),
        "peak_flops": peak,
        "arms": rows,
    }


def _fast_attention(m: GPTConfig) -> GPTConfig:
    """On a GPU, cuDNN's fused attention: 1.87x AdamW's tokens/s at gpt2-124m on
    the H200 (docs/results/gpu.md); elsewhere ``m`` itself."""
    if jax.devices()[0].platform == "gpu":
        return dataclasses.replace(m, attention="cudnn")
    return m


def _describe(m: GPTConfig) -> dict[str, Any]:
    return {
        "attention": m.attention or "default",
        "depth": m.depth,
        "width": m.width,
        "heads": m.heads,
        "seq_len": m.seq_len,
        "vocab_size": m.vocab_size,
        "params": m.num_params(),
        "dtype": jnp.dtype(m.dtype).name,
    }


def headline(scale: Scale, deadline: float, out: Path) -> dict[str, Any]:
    """Part (b): AdamW vs GNTS (reference schedule) vs Seesaw at equal tokens,
    each arm a run of the training program (:class:`experiments.train.Trainer`)
    under ``out/headline/``."""
    m, b = _fast_attention(scale.headline_model), scale.headline_batch
    start = time.perf_counter()
    corpus = build_corpus(scale.corpus_bytes)
    source = TokenSource(corpus.train, corpus.validation, m.vocab_size)
    result: dict[str, Any] = {"model": _describe(m), "batch": b, "corpus": corpus.stats}
    result["corpus"]["seconds"] = time.perf_counter() - start
    runs = out / "headline"
    if runs.exists():
        shutil.rmtree(runs)  # a pack measures afresh
    # AdamW's measured rate and compile time set the equal token budget.
    compile_s, rate = _calibrate(scale, m, source, runs / "calibration")
    per_arm = (deadline - time.perf_counter()) / len(HEADLINE_ARMS)
    per_step = b * m.seq_len
    # On the H200 a margin of 0.8 left AdamW and Seesaw 4-5% short of the
    # tokens at their deadlines: the loop runs slower than the calibration.
    tokens = int(rate * max(per_arm - 1.5 * compile_s, 0.0) * 0.7)
    tokens = min(max(tokens, scale.headline_min_tokens), scale.headline_max_tokens)
    tokens = max(per_step, tokens // per_step * per_step)
    windows = len(corpus.train) // m.seq_len
    result.update(
        calibration={"compile_s": compile_s, "tokens_per_s": rate},
        tokens=tokens,
        epochs=tokens // m.seq_len / max(windows, 1),
    )
    arms: dict[str, Any] = {}
    for name, overrides in HEADLINE_ARMS.items():
        arm_start = time.perf_counter()
        left = max(deadline - arm_start, 1.0) / (len(HEADLINE_ARMS) - len(arms))
        # The limit guards the part's budget, but never below what the arm's
        # tokens need at the calibrated rate (with its compilations): on a
        # loaded machine a share of the rest alone could stop an arm before
        # its first optimizer step.
        need = tokens / rate + 2 * compile_s
        config = _headline_config(
            scale, m, overrides, tokens, runs / name, time_limit_s=max(left, need)
        )
        summary = train(config, source)
        arms[name] = {
            "microbatches": summary["microbatches"],
            "tokens": summary["tokens"],
            "optimizer_steps": summary["steps"],
            "stopped_at_budget": bool(summary.get("time_limited")),
            "seconds": time.perf_counter() - arm_start,
            "val_loss": summary["eval_loss"],
            "val_perplexity": summary["eval_ppl"],
            "bits_per_byte": summary["eval_loss"] / math.log(2),
        }
    result["arms"] = arms
    return result


def _headline_config(
    scale: Scale,
    m: GPTConfig,
    overrides: dict[str, Any],
    tokens: int,
    out_dir: Path,
    *,
    time_limit_s: float = 0.0,
    stop_after: int | None = None,
) -> Config:
    """A headline arm as the training program's configuration: the model of
    ``m``, the offline corpus, one evaluation at the end, no probes or logs
    beyond the run folder."""
    microbatches = tokens // (scale.headline_batch * m.seq_len)
    return apply_overrides(
        Config(),
        {
            **overrides,
            "model.depth": m.depth,
            "model.width": m.width,
            "model.heads": m.heads,
            "model.seq_len": m.seq_len,
            "model.mlp_ratio": m.mlp_ratio,
            "model.dtype": jnp.dtype(m.dtype).name,
            "model.attention": m.attention or "",
            "data.dataset": "python-source",
            "data.corpus_bytes": scale.corpus_bytes,
            "data.vocab_size": m.vocab_size,
            "data.microbatch_size": scale.headline_batch,
            "data.eval_sequences": scale.eval_windows,
            "optim.lr": scale.headline_lr,
            "optim.warmup": 0 if tokens < 1_000_000 else 100,
            "train.tokens": tokens,
            "train.out_dir": str(out_dir),
            "train.eval_every": max(microbatches, 1),
            "train.checkpoint_every": 10**9,
            "train.keep_checkpoints": 1,
            "train.noise_probe": 0,
            "train.progress": False,
            "train.tensorboard": False,
            "train.time_limit_s": time_limit_s,
            "train.stop_after": stop_after,
        },
    )


def _calibrate(
    scale: Scale, m: GPTConfig, source: TokenSource, out_dir: Path
) -> tuple[float, float]:
    """AdamW's compile seconds and training tokens/s at the headline size: six
    microbatches of the training program, timed from its own log."""
    tokens = scale.headline_max_tokens
    config = _headline_config(scale, m, ADAMW, tokens, out_dir, stop_after=6)
    train(config, source)
    steps = [r for r in read_metrics(out_dir) if "train/loss" in r]
    return steps[0]["perf/elapsed_s"], tokens_per_s(steps, first=0)


def benchmarks(scale: Scale, deadline: float, out: Path) -> dict[str, Any]:
    """Part (c): the benchmark scripts, each stopped at the part's deadline."""
    root = Path(__file__).resolve().parents[1]
    results: dict[str, Any] = {}
    # The quick ones first: controller_overhead.py compiles many variants.
    scripts = ["rounding.py", "controller_overhead.py"]
    if jax.devices()[0].platform == "gpu":
        scripts.insert(1, "gpt_throughput.py")
    for script in scripts:
        left = deadline - time.perf_counter()
        if left <= 1:
            results[script] = {"skipped": "part budget reached"}
            continue
        try:
            done = subprocess.run(
                [sys.executable, str(root / "benchmarks" / script)]
                + scale.benchmark_args.get(script, []),
                capture_output=True,
                text=True,
                timeout=left,
                cwd=root,
                # The library from this clone, whether or not it is installed.
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
                    # This process holds most of the device's memory: the child
                    # allocates what it uses instead of a fraction of the whole.
                    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                },
            )
            results[script] = {"returncode": done.returncode, "output": done.stdout + done.stderr}
        except subprocess.TimeoutExpired as error:
            partial = error.stdout or b""
            text = partial.decode() if isinstance(partial, bytes) else partial
            results[script] = {"timed_out": True, "output": text}
    return results


def markdown(result: dict[str, Any]) -> str:
    """The pack's tables."""
    lines = [
        f"# GPU pack: {result['device']}",
        "",
        f"Command: `{result['command']}`; commit {result['commit']}; jax {result['jax']}; "
        f"{result['seconds']:.0f} s in all.",
        "",
    ]
    a = result.get("throughput")
    if a:
        m = a["model"]
        lines += [
            f"## (a) Throughput: depth {m['depth']}, width {m['width']}, seq {m['seq_len']}, "
            f"vocab {m['vocab_size']}, {m['dtype']}, {m.get('attention', 'default')} attention, "
            f"batch {a['batch']}, "
            f"{a['flops_per_token'] / 1e6:.0f} MFLOP/token",
            "",
            "| arm | tokens/s | ms/step | vs AdamW | MFU | compile s |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in a["arms"].items():
            if "tokens_per_s" not in row:
                lines.append(f"| {name} | {row.get('error') or row.get('skipped')} | | | | |")
                continue
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
            lines.append(
                f"| {name} | {row['tokens_per_s']:,.0f} | {row['ms_per_step']:.1f} | "
                f"{row.get('vs_adamw', float('nan')):.3f} | {mfu} | {row['compile_s']:.1f} |"
            )
        lines.append("")
    b = result.get("headline")
    if b and "arms" in b:
        m, c = b["model"], b["corpus"]
        lines += [
            f"## (b) Headline: {m['params'] / 1e6:.1f}M-parameter byte-level GPT, "
            f"{b['tokens']:,} tokens per arm ({b['epochs']:.2f} epochs)",
            "",
            f"Corpus: {c['files']:,} unique .py files, {c['bytes'] / 1e6:.0f} MB "
            f"({c['duplicate_files']:,} duplicate files, {c['duplicate_bytes'] / 1e6:.0f} MB, "
            f"dropped); {c['train_tokens'] / 1e6:.0f}M train / "
            f"{c['validation_tokens'] / 1e6:.1f}M validation byte tokens.",
            "",
            "| arm | tokens | optimizer steps | val loss | perplexity | bits/byte | s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in b["arms"].items():
            cut = " (budget)" if row["stopped_at_budget"] else ""
            lines.append(
                f"| {name} | {row['tokens']:,}{cut} | {row['optimizer_steps']:,} | "
                f"{row['val_loss']:.4f} | {row['val_perplexity']:.3f} | "
                f"{row['bits_per_byte']:.4f} | {row['seconds']:.0f} |"
            )
        lines.append("")
    for script, row in (result.get("benchmarks") or {}).items():
        lines += [f"## (c) `benchmarks/{script}`", "", "```"]
        lines += [row.get("skipped") or row.get("output", "").rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_pack", description=__doc__)
    parser.add_argument("--out", required=True, help="folder for gpu_pack.json and .md")
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--parts", default="throughput,headline,benchmarks")
    parser.add_argument("--commit", default="", help="the commit to record (default: git's)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "command": "python -m experiments.gpu_pack "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": args.commit or pages.commit(),
        "device": f"{device.device_kind} ({device.platform}, {jax.device_count()} device(s))",
        "host": f"{platform.machine()}, {platform.system()}",
        "jax": jax.__version__,
        "scale": args.scale,
        "budgets_s": scale.budgets,
    }
    parts = {"throughput": throughput, "headline": headline, "benchmarks": benchmarks}
    for name in args.parts.split(","):
        part_start = time.perf_counter()
        deadline = part_start + scale.budgets[name]
        print(f"[gpu_pack] {name} (budget {scale.budgets[name]:.0f} s) ...", flush=True)
        try:
            result[name] = parts[name](scale, deadline, out)
        except Exception as error:  # noqa: BLE001 - the other parts still run and are written
            result[name] = {"error": f"{type(error).__name__}: {error}"[:1000]}
        result[f"{name}_s"] = time.perf_counter() - part_start
        result["seconds"] = time.perf_counter() - start
        (out / "gpu_pack.json").write_text(json.dumps(result, indent=2))
        (out / "gpu_pack.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
