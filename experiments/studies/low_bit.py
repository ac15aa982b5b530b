"""Study: gradient rounding to 1-7 mantissa bits, round-to-nearest against stochastic.

The rounding study's paired protocol on its default model and corpus: within a
cell every setting starts from one initialisation and sees the same
microbatches, all settings vmapped in one compiled step
(:func:`experiments.paired_training.train_paired`). A setting is a mantissa bit
count (1, 2, 3, 4, 5, 7) with round-to-nearest-even (RTN) or unbiased
stochastic rounding (SR), an E5M2-like format with a per-tensor scale (RTN), or
the unrounded control. Every step averages a fixed window of ``window``
microbatches under a controller (``gqc_jax.sbc``); a cell rounds either every
microbatch gradient before the controller accumulates it (``microbatch``) or
the window mean once, as the controller's inner transform (``window``). One
JSON file per cell (placement, seed); ``docs/results/low_bit.md`` and its figure
are written from those files alone.

    python -m experiments.studies.low_bit [--seeds 0,1,2] [--steps 300] [--scale]
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gqc_jax
from experiments.config import DataConfig
from experiments.data import TokenData
from experiments.paired_training import train_paired
from experiments.studies import kit
from experiments.studies.kit import mean_std
from experiments.train_step import split
from gqc_jax.student_t import t_quantile
from models.gpt import GPT, GPTConfig, count_params

BITS = (1, 2, 3, 4, 5, 7)
RULES = ("rtn", "sr")
CONTROL = "none"
E5M2 = "e5m2"
PLACEMENTS = ("microbatch", "window")
KIND = {CONTROL: 0, "rtn": 1, "sr": 2, E5M2: 3}
DEFAULT_SIZE_NOTE = ", the rounding study's default size"
E5M2_MAX = float(jnp.finfo(jnp.float8_e5m2).max)  # 57344


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A cell's training: a byte-level GPT (``depth`` x ``width``), AdamW with
    warmup-cosine over ``steps`` optimizer steps, each the mean of ``window``
    microbatches of ``microbatch`` x ``seq_len`` tokens; validation every
    ``eval_every`` steps on ``eval_windows`` fixed windows."""

    steps: int = 300
    microbatch: int = 8
    window: int = 4
    seq_len: int = 64
    eval_every: int = 15
    eval_windows: int = 256
    peak_lr: float = 3e-3
    warmup: int = 30
    loss_scale: float = 0.01
    depth: int = 2
    width: int = 64
    head_width: int = 16


SCALE_PROTOCOL = Protocol(
    steps=2000, microbatch=16, seq_len=128, eval_every=50, eval_windows=512, depth=4, width=256
)


def settings() -> list[str]:
    """The settings of a cell: ``rtn-3`` is 3 mantissa bits, round-to-nearest."""
    return [f"{rule}-{b}" for rule in RULES for b in BITS] + [E5M2, CONTROL]


def _setting(label: str) -> tuple[int, int]:
    """(kind, bits) of a setting label."""
    if label in (CONTROL, E5M2):
        return KIND[label], 0
    rule, bits = label.split("-")
    return KIND[rule], int(bits)


def round_e5m2(g: jax.Array) -> jax.Array:
    """E5M2 with a per-tensor scale: the tensor's largest magnitude maps to E5M2's
    largest value (57344), every element is cast to E5M2 (round-to-nearest-even,
    2 mantissa bits, 5 exponent bits, subnormals down to 2^-16) and back."""
    amax = jnp.max(jnp.abs(g))
    scale = jnp.where(amax > 0, amax / E5M2_MAX, 1.0).astype(jnp.float32)
    x = (g.astype(jnp.float32) / scale).astype(jnp.float8_e5m2)
    return (x.astype(jnp.float32) * scale).astype(g.dtype)


class LowBitState(NamedTuple):
    """The state of :func:`low_bit_rounding`: both rounders' states (their
    ``digits`` hold the setting's bit count), the setting's kind, and the last
    call's statistics."""

    rtn: gqc_jax.RoundGradientsState
    sr: gqc_jax.RoundGradientsState
    kind: jax.Array
    fraction_changed: jax.Array
    cosine: jax.Array


def low_bit_rounding(seed: int) -> optax.GradientTransformation:
    """One transform for every setting: computes each rounding and keeps the one
    the state's ``kind`` selects, so settings are data and can be vmapped."""
    rtn = gqc_jax.round_gradients(1, mode="mantissa_bits")
    sr = gqc_jax.round_gradients(1, mode="mantissa_bits", stochastic=True, seed=seed)

    def init(params):
        zero = jnp.zeros([], jnp.float32)
        kind = jnp.zeros([], jnp.int32)
        return LowBitState(rtn.init(params), sr.init(params), kind, zero, zero + 1)

    def update(grads, state, params=None):
        del params
        near, rtn_state = rtn.update(grads, state.rtn)
        stochastic, sr_state = sr.update(grads, state.sr)
        out = jax.tree.map(
            lambda g, a, b: jnp.select(
                [state.kind == 1, state.kind == 2, state.kind == 3], [a, b, round_e5m2(g)], g
            ),
            grads,
            near,
            stochastic,
        )
        leaves = jax.tree.leaves(grads)
        changed = sum(
            jnp.sum(o != g) for o, g in zip(jax.tree.leaves(out), leaves, strict=True)
        ) / sum(g.size for g in leaves)
        dot = sum(jnp.vdot(o, g) for o, g in zip(jax.tree.leaves(out), leaves, strict=True))
        norms = optax.tree.norm(out) * optax.tree.norm(grads)
        cosine = jnp.where(norms > 0, dot / norms, 1.0)
        return out, LowBitState(
            rtn_state, sr_state, state.kind, changed.astype(jnp.float32), cosine
        )

    return optax.GradientTransformation(init, update)


def _find(state, cls):
    return next(
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls))
        if isinstance(s, cls)
    )


def run_cell(placement: str, seed: int, protocol: Protocol, data_dir: str) -> dict:
    """Trains every setting of one cell, paired, and returns its curves."""
    start = time.perf_counter()
    p = protocol
    data = TokenData(
        DataConfig(data_dir=data_dir, microbatch_size=p.microbatch, seed=seed), p.seq_len
    )
    config = GPTConfig(
        vocab_size=256,
        seq_len=p.seq_len,
        depth=p.depth,
        width=p.width,
        heads=max(1, p.width // p.head_width),
    )
    model = GPT(config, rngs=nnx.Rngs(seed))
    graphdef, params = split(model)
    labels = settings()
    kinds, bits = zip(*(_setting(label) for label in labels), strict=True)

    rounding = low_bit_rounding(seed)
    lr = optax.warmup_cosine_decay_schedule(0.0, p.peak_lr, p.warmup, p.steps, p.peak_lr * 0.1)
    adamw = optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-9, weight_decay=0.0)
    if placement == "microbatch":
        tx = optax.chain(rounding, gqc_jax.sbc(adamw, p.window, 1, max_draws=p.window))
    elif placement == "window":
        tx = gqc_jax.sbc(optax.chain(rounding, adamw), p.window, 1, max_draws=p.window)
    else:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}.")

    def init_one(kind, b):
        state = tx.init(params)
        low = _find(state, LowBitState)
        set_bits = low._replace(
            rtn=low.rtn._replace(digits=b), sr=low.sr._replace(digits=b), kind=kind
        )
        return jax.tree.map(
            lambda x: set_bits if x is low else x,
            state,
            is_leaf=lambda x: isinstance(x, LowBitState),
        )

    def update(grads, state, params, loss):
        updates, state = tx.update(grads, state, params, value=loss)
        low = _find(state, LowBitState)
        new = optax.apply_updates(params, updates)
        moved = [(u != 0) for u in jax.tree.leaves(updates)]
        cancelled = sum(
            jnp.sum(m & (a == b))
            for m, a, b in zip(moved, jax.tree.leaves(new), jax.tree.leaves(params), strict=True)
        )
        metrics = {
            "stepped": gqc_jax.stats(state)["stepped"],
            "fraction_changed": low.fraction_changed,
            "cosine": low.cosine,
            "cancelled": cancelled / jnp.maximum(sum(jnp.sum(m) for m in moved), 1),
        }
        return updates, state, metrics

    draws = p.steps * p.window
    curves = train_paired(
        graphdef,
        params,
        jax.vmap(init_one)(jnp.asarray(kinds, jnp.int32), jnp.asarray(bits, jnp.int32)),
        update,
        data.microbatch,
        data.validation.sequential(p.eval_windows),
        steps=draws,
        eval_every=p.eval_every * p.window,
        loss_scale=p.loss_scale,
    )
    m = curves["metrics"]
    stepped = m["stepped"][:, 0].astype(bool)  # a fixed window: every setting steps together
    if placement == "window":  # the rounding ran on the steps only
        rounded_at = stepped
    else:
        rounded_at = np.ones_like(stepped)

    def column(values, rows):
        return {label: float(np.mean(values[rows, k])) for k, label in enumerate(labels)}

    return {
        "placement": placement,
        "seed": seed,
        "params": count_params(model),
        "protocol": dataclasses.asdict(p),
        "settings": labels,
        "train_tokens": int(len(data.train.tokens)),
        "eval_tokens": [s * p.microbatch * p.seq_len for s in curves["eval_steps"]],
        "val_loss": {
            label: [float(v) for v in curves["val_loss"][:, k]] for k, label in enumerate(labels)
        },
        "final_train_loss": column(curves["train_loss"], slice(-p.window * p.eval_every, None)),
        "fraction_changed": column(m["fraction_changed"], rounded_at),
        "cosine": column(m["cosine"], rounded_at),
        "cancelled": column(m["cancelled"], stepped),
        "steps": int(stepped.sum()),
        "seconds": time.perf_counter() - start,
    }


def run_all(placements, seeds, protocol: Protocol, out: Path, data_dir: str) -> list[dict]:
    results = []
    for placement in placements:
        for seed in seeds:
            path = out / f"{placement}-seed{seed}.json"
            if path.is_file():
                result = json.loads(path.read_text())
                if result["protocol"] == dataclasses.asdict(protocol):
                    results.append(result)
                    continue
            print(f"[low_bit] {path.stem} ...", flush=True)
            result = run_cell(placement, seed, protocol, data_dir)
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
            print(f"[low_bit] {path.stem} done in {result['seconds']:.0f} s", flush=True)
            results.append(result)
    return results


def _threshold(rule: str, ok) -> int | None:
    """The smallest bit count from which every larger one is ``ok``."""
    for k, b in enumerate(BITS):
        if all(ok(f"{rule}-{c}") for c in BITS[k:]):
            return b
    return None


def analyse(results: list[dict]) -> dict:
    """Per placement and setting: final loss, its paired change against the control,
    within-noise flags and the smallest bit count within noise per rule."""
    out: dict = {}
    for placement in PLACEMENTS:
        cells = sorted((r for r in results if r["placement"] == placement), key=lambda r: r["seed"])
        if not cells:
            continue
        labels = cells[0]["settings"]
        final = {lab: [r["val_loss"][lab][-1] for r in cells] for lab in labels}
        delta = {lab: list(np.subtract(final[lab], final[CONTROL])) for lab in labels}
        seed_sd = float(np.std(final[CONTROL], ddof=1)) if len(cells) > 1 else float("nan")
        within = {lab: bool(abs(np.mean(delta[lab])) <= seed_sd) for lab in labels}
        # Paired t-test at 5% (two-sided) over seeds: the change stands out of its own
        # seed-to-seed spread.
        n = len(cells)
        critical = float(t_quantile(0.95, n - 1)) if n > 1 else float("inf")
        detected = {
            lab: bool(abs(np.mean(delta[lab])) > critical * np.std(delta[lab], ddof=1) / np.sqrt(n))
            if n > 1
            else False
            for lab in labels
        }
        threshold = {rule: _threshold(rule, within.get) for rule in RULES}
        undetected = {lab: not flag for lab, flag in detected.items()}
        paired_threshold = {rule: _threshold(rule, undetected.get) for rule in RULES}
        out[placement] = {
            "cells": cells,
            "labels": labels,
            "final": final,
            "delta": delta,
            "seed_sd": seed_sd,
            "within": within,
            "detected": detected,
            "critical": critical,
            "threshold": threshold,
            "paired_threshold": paired_threshold,
            "mean": {
                key: {lab: float(np.mean([r[key][lab] for r in cells])) for lab in labels}
                for key in ("fraction_changed", "cosine", "cancelled")
            },
        }
    return out


def figure(a: dict, page: Path) -> Path:
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    styles = {"rtn": ("tab:red", "o"), "sr": ("tab:blue", "s")}
    for placement, ls in zip(PLACEMENTS, ("-", "--"), strict=True):
        if placement not in a:
            continue
        s = a[placement]
        for rule, (color, marker) in styles.items():
            labs = [f"{rule}-{b}" for b in BITS]
            mean = [np.mean(s["delta"][lab]) for lab in labs]
            sd = [np.std(s["delta"][lab], ddof=1) if len(s["cells"]) > 1 else 0 for lab in labs]
            name = f"{rule.upper()}, {placement}"
            axes[0].errorbar(BITS, mean, yerr=sd, color=color, marker=marker, ls=ls, label=name)
            axes[1].plot(
                BITS,
                [1 - s["mean"]["cosine"][lab] for lab in labs],
                color=color,
                marker=marker,
                ls=ls,
                label=name,
            )
        axes[0].axhspan(-s["seed_sd"], s["seed_sd"], color="grey", alpha=0.12 if ls == "-" else 0)
        axes[0].axhline(
            np.mean(s["delta"][E5M2]),
            color="tab:green",
            ls=ls,
            lw=1,
            label=f"E5M2 per-tensor, {placement}",
        )
        cells = s["cells"]
        tokens = np.asarray(cells[0]["eval_tokens"], float)
        for lab, color in (("rtn-1", "tab:red"), ("sr-1", "tab:blue"), (CONTROL, "black")):
            curve = np.mean([r["val_loss"][lab] for r in cells], axis=0)
            axes[2].plot(tokens, curve, color=color, ls=ls, label=f"{lab}, {placement}")
    axes[0].set(
        title="final val loss − unrounded (paired, mean ± std of seeds)",
        xlabel="mantissa bits",
        ylabel="Δ val loss (nats/byte)",
        yscale="symlog",
    )
    axes[0].set_yscale("symlog", linthresh=0.01)
    axes[1].set(
        title="1 − cosine(rounded, unrounded gradient)", xlabel="mantissa bits", yscale="log"
    )
    axes[2].set(title="val loss at 1 mantissa bit", xlabel="tokens", ylabel="val loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = page.with_suffix(".png")
    kit.save_figure(fig, path)
    return path


def _label(lab: str) -> str:
    if lab == CONTROL:
        return "unrounded"
    if lab == E5M2:
        return "E5M2, per-tensor scale (RTN)"
    rule, b = lab.split("-")
    return f"{b} bit{'s' if b != '1' else ''}, {rule.upper()}"


def write_page(
    a: dict, results: list[dict], protocol: Protocol, command: str, page: Path, fig: Path
) -> Path:
    p = protocol
    first = results[0]
    minutes = sum(r["seconds"] for r in results) / 60
    tokens = p.steps * p.window * p.microbatch * p.seq_len
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "# Gradient rounding at low precision: mantissa bits, round-to-nearest and stochastic",
        "",
        f"Generated by `{command}` from {len(results)} cells (one JSON file each; a cell is one "
        f"placement and seed, with every setting trained in it): {minutes:.0f} min of training "
        f"in all (the cells' own clocks), on {kit.machine()}.",
        "",
        "## Protocol",
        "",
        f"- Model: byte-level GPT, depth {p.depth}, width {p.width} ({first['params']:,} "
        f"parameters){DEFAULT_SIZE_NOTE if (p.depth, p.width) == (2, 64) else ''}; "
        "data: the default corpus "
        f"(Shakespeare, bytes), {tokens:,} tokens "
        f"({tokens / first['train_tokens']:.2f} epochs); validation on {p.eval_windows} fixed "
        f"windows every {p.eval_every} steps.",
        f"- {p.steps} AdamW steps (b1 0.9, b2 0.95, eps 1e-9, no weight decay; warmup "
        f"{p.warmup} steps to {p.peak_lr:g}, cosine to 10%), each the mean of a fixed window of "
        f"{p.window} microbatches of {p.microbatch} x {p.seq_len} tokens under "
        f"`gqc_jax.sbc(adamw, {p.window}, 1)`. The loss is multiplied by {p.loss_scale:g} before "
        "differentiation, as in the rounding study (mantissa rounding is scale-free; only "
        "Adam's eps sees the scale).",
        '- Settings: `gqc_jax.round_gradients(b, mode="mantissa_bits")` for b in '
        + ", ".join(str(b) for b in BITS)
        + " with round-to-nearest-even (RTN) and with `stochastic=True` (SR); an E5M2-like "
        "format with a per-tensor scale (the tensor's largest |g| maps to 57344, then a cast to "
        "`float8_e5m2` and back: 2 mantissa bits and a 5-bit exponent range, RTN); the "
        "unrounded control. float32 keeps 23 bits; bfloat16 is 7.",
        "- Placement: **microbatch** rounds every microbatch gradient before the controller "
        "averages it (`optax.chain(round, sbc(adamw))`, as gradients are communicated); "
        "**window** rounds the window mean once (`sbc(optax.chain(round, adamw))`).",
        f"- Pairing: within a cell every setting starts from the same initialisation and sees "
        f"the same microbatches; the two placements share them too. Seeds {seeds} change both. "
        "On CPU the runs are deterministic, so the seed-to-seed spread of the control's final "
        "loss is the noise band; a setting is *within noise* when its mean paired change is "
        "at most that standard deviation.",
        "",
    ]
    for placement in PLACEMENTS:
        if placement not in a:
            continue
        s = a[placement]
        lines += [
            f"## Rounding every {'microbatch' if placement == 'microbatch' else 'window mean'}"
            f" ({len(s['cells'])} seeds)",
            "",
            "| setting | final val loss | Δ vs unrounded (paired) | within seed noise | "
            "paired change | elements changed | 1 − cos to unrounded | updates cancelled |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for lab in s["labels"]:
            lines.append(
                f"| {_label(lab)} | {mean_std(s['final'][lab])} | "
                f"{mean_std(s['delta'][lab])} | {'yes' if s['within'][lab] else 'no'} | "
                f"{_direction(s, lab)} | "
                f"{s['mean']['fraction_changed'][lab]:.1%} | "
                f"{1 - s['mean']['cosine'][lab]:.2e} | {s['mean']['cancelled'][lab]:.2e} |"
            )
        t, tp = s["threshold"], s["paired_threshold"]
        lines += [
            "",
            f"Noise band: the control's final loss has a standard deviation of "
            f"{s['seed_sd']:.4f} across seeds. Smallest bit count from which every larger one "
            f"is within that seed noise: **RTN {_bits(t['rtn'])}, SR {_bits(t['sr'])}**. "
            "The paired test is stricter: a change counts when its mean exceeds "
            f"{s['critical']:.2f} standard errors over the {len(s['cells'])} seeds (a two-sided "
            f"t-test at 5%, {len(s['cells']) - 1} degrees of freedom); no detectable change "
            f"from **RTN {_bits(tp['rtn'])}, SR {_bits(tp['sr'])}**. " + _reading(s),
            "",
        ]
    lines += [
        "## Updates cancelled",
        "",
        "The last column is the fraction of parameter elements whose AdamW update was non-zero "
        "and yet left the float32 weight unchanged (w + Δw == w), averaged over steps: the "
        "failure Zamirai et al. (2020) describe for round-to-nearest in low-precision weight "
        "updates. Here the weights stay float32 and only the gradient is rounded; "
        "the column shows whether rounding the gradient alone produces that cancellation. "
        + _cancelled(a),
        "",
        "## Figure",
        "",
        f"![low-bit]({fig.name})",
        "",
        "Left: paired change of the final validation loss against the unrounded control per "
        "bit count (mean ± std of seeds; grey: the control's seed band; green: E5M2 with a "
        "per-tensor scale); solid lines round every microbatch, dashed lines the window mean. "
        "Middle: how far the rounded gradient points from the unrounded one (1 − cosine, mean "
        "over the calls that rounded). Right: validation loss at 1 mantissa bit against the "
        "control.",
        "",
    ]
    return kit.write_page(page, lines)


def _reading(s: dict) -> str:
    """What the table's numbers bound: the largest paired change of any rounded
    setting, and the spread that a change of one bit in the last place causes."""
    rounded = [lab for lab in s["labels"] if lab != CONTROL]
    worst = max(rounded, key=lambda lab: np.mean(s["delta"][lab]))
    finest = [f"{rule}-{BITS[-1]}" for rule in RULES]
    spread = max(float(np.std(s["delta"][lab], ddof=1)) for lab in finest)
    return (
        f"The largest mean paired change of any rounded setting is "
        f"{np.mean(s['delta'][worst]):+.4f} nats ({_label(worst)}), against a final loss of "
        f"{np.mean(s['final'][CONTROL]):.3f}; at {BITS[-1]} bits, where rounding changes each "
        f"element by at most 2^-{BITS[-1]} of itself, the paired change already varies by "
        f"up to {spread:.4f} across seeds: training amplifies any perturbation, so changes of "
        "that size are the trajectory's, not the format's."
    )


def _cancelled(a: dict) -> str:
    """The cancelled fractions of the rounded settings against the control's."""
    parts, ratios = [], []
    for placement, s in a.items():
        values = [s["mean"]["cancelled"][lab] for lab in s["labels"] if lab != CONTROL]
        control = s["mean"]["cancelled"][CONTROL]
        ratios.append(max(values) / control if control > 0 else float("inf"))
        parts.append(
            f"{placement}: {min(values):.1e} to {max(values):.1e} (unrounded {control:.1e})"
        )
    text = "Rounded settings cancel " + "; ".join(parts) + " of their non-zero updates"
    if max(ratios) < 2:
        return text + (
            ": within a factor of two of the unrounded control at every bit count, so the "
            "cancellation is that of float32 weights taking small AdamW steps, and rounding "
            "the gradient does not add to it."
        )
    return text + f": up to {max(ratios):.1f} times the unrounded control's."


def _bits(b: int | None) -> str:
    if b is None:
        return "at none of the bit counts"
    return f">= {b} bit{'s' if b > 1 else ''}"


def _direction(s: dict, lab: str) -> str:
    if not s["detected"][lab]:
        return "none"
    return "worse" if np.mean(s["delta"][lab]) > 0 else "better"


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/low_bit", "docs/results/low_bit.md")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    parser.add_argument(
        "--size", help="depth x width of the model, e.g. 1x16 (default: the protocol's)"
    )
    parser.add_argument(
        "--scale", action="store_true", help="the larger protocol (4x256, 2000 steps): for a GPU"
    )
    args = kit.parse_args(parser, argv)
    protocol = kit.with_steps(SCALE_PROTOCOL if args.scale else Protocol(), args.steps)
    if args.size:
        depth, width = (int(v) for v in args.size.split("x"))
        protocol = dataclasses.replace(protocol, depth=depth, width=width)
    seeds = [int(s) for s in args.seeds.split(",")]
    placements = args.placements.split(",")
    results = run_all(placements, seeds, protocol, Path(args.out), args.data_dir)
    analysis = analyse(results)
    page = Path(args.page)
    command = kit.command("experiments.studies.low_bit", argv)
    fig = figure(analysis, page)
    write_page(analysis, results, protocol, command, page, fig)
    print(page.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
