"""Study: the gradient-rounding experiment, reproduced on the default corpus.

Every digit setting (decimal places ``1..8, 10, 12, 16``) and a true unrounded
control train *paired*: one initialisation, one data order, all settings vmapped
in one compiled step (``digits`` is traced, so a setting is data, not a
program). The loss is multiplied by ``loss_scale`` before differentiation so
gradient magnitudes sit in the original study's regime (a 46M-parameter model's
gradients are about 100x smaller than a 100k-parameter model's); every loss
reported is the unscaled one. Each cell (model size, rounding mode, seed) writes
one JSON file; ``docs/results/rounding.md`` and its figures are written from
those files alone.

    python -m experiments.studies.rounding_study [--seeds 0,1,2] [--steps 300] [--scale]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import typing
from pathlib import Path

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
from experiments.train_step import loss_fn, split
from gqc_jax.rounding import Mode
from models.gpt import GPT, GPTConfig, count_params

DECIMALS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
# float32 keeps at most 9 significant digits: 9 and more are the identity.
SIGNIFICANT = (1, 2, 3, 4, 5, 6, 7, 8)
CONTROL = "none"
GRID_POINTS = 500  # the study's interpolation grid (spec section 2.6)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One cell's training: a byte-level GPT, AdamW with warmup-cosine, ``steps``
    optimizer steps of ``batch`` x ``seq_len`` tokens, evaluated every
    ``eval_every`` steps on a fixed validation set of ``eval_windows`` windows."""

    steps: int = 300
    batch: int = 32
    seq_len: int = 64
    eval_every: int = 15
    eval_windows: int = 256
    peak_lr: float = 3e-3
    warmup: int = 30
    loss_scale: float = 0.01
    head_width: int = 16


DEFAULT_SIZES = ((1, 32), (1, 64), (2, 32), (2, 64))  # (depth, width); the last is the default
SCALE_SIZES = ((2, 128), (4, 128), (2, 256), (4, 256))
SCALE_PROTOCOL = Protocol(steps=2000, batch=64, seq_len=128, eval_every=50, eval_windows=512)


def model_config(depth: int, width: int, protocol: Protocol) -> GPTConfig:
    return GPTConfig(
        vocab_size=256,
        seq_len=protocol.seq_len,
        depth=depth,
        width=width,
        heads=max(1, width // protocol.head_width),
    )


def run_cell(
    depth: int,
    width: int,
    mode: str,
    seed: int,
    digits: tuple[int, ...],
    protocol: Protocol,
    data_dir: str,
) -> dict:
    """Trains every setting of one cell, paired, and returns its curves."""
    start = time.perf_counter()
    p = protocol
    data = TokenData(DataConfig(data_dir=data_dir, microbatch_size=p.batch, seed=seed), p.seq_len)
    model = GPT(model_config(depth, width, p), rngs=nnx.Rngs(seed))
    graphdef, params = split(model)
    labels = [str(d) for d in digits] + [CONTROL]
    setting_digits = jnp.asarray(list(digits) + [0], jnp.int32)
    is_control = jnp.asarray([False] * len(digits) + [True])

    rounder = gqc_jax.round_gradients(1, mode=typing.cast(Mode, mode))
    lr = optax.warmup_cosine_decay_schedule(0.0, p.peak_lr, p.warmup, p.steps, p.peak_lr * 0.1)
    adamw = optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-9, weight_decay=0.0)

    def init_one(d, control):
        return rounder.init(params)._replace(digits=d), adamw.init(params), control

    def update(grads, state, params, loss):
        round_state, adam_state, control = state
        rounded, round_state = rounder.update(grads, round_state)
        rounded = jax.tree.map(lambda r, g: jnp.where(control, g, r), rounded, grads)
        updates, adam_state = adamw.update(rounded, adam_state, params)
        metrics = {
            "grad_norm": optax.tree.norm(rounded),
            "fraction_zeroed": jnp.where(control, 0.0, round_state.fraction_zeroed),
            "fraction_changed": jnp.where(control, 0.0, round_state.fraction_changed),
        }
        return updates, (round_state, adam_state, control), metrics

    def grad_quantiles(params, tokens):
        """|g| quantiles (10/50/90%) of the scaled loss's gradient, for the control."""
        control = jax.tree.map(lambda x: x[-1], params)
        grads = jax.grad(loss_fn(graphdef, p.loss_scale))(control, tokens)
        g = jnp.concatenate([jnp.abs(x).ravel() for x in jax.tree.leaves(grads)])
        return jnp.quantile(g, jnp.asarray([0.1, 0.5, 0.9]))

    curves = train_paired(
        graphdef,
        params,
        jax.vmap(init_one)(setting_digits, is_control),
        update,
        data.microbatch,
        data.validation.sequential(p.eval_windows),
        steps=p.steps,
        eval_every=p.eval_every,
        loss_scale=p.loss_scale,
        probe=grad_quantiles,
    )
    tokens_per_step = p.batch * p.seq_len

    def by_setting(rows):
        return {label: [float(r[k]) for r in rows] for k, label in enumerate(labels)}

    return {
        "depth": depth,
        "width": width,
        "params": count_params(model),
        "mode": mode,
        "seed": seed,
        "protocol": dataclasses.asdict(p),
        "settings": labels,
        "train_tokens": int(len(data.train.tokens)),
        "eval_tokens": [s * tokens_per_step for s in curves["eval_steps"]],
        "val_loss": by_setting(curves["val_loss"]),
        "train_loss": by_setting(curves["train_loss"]),
        **{
            k: by_setting(curves["metrics"][k])
            for k in ("grad_norm", "fraction_zeroed", "fraction_changed")
        },
        "control_grad_quantiles": [[float(v) for v in q] for q in curves["probes"]],
        "seconds": time.perf_counter() - start,
    }


# ---- the metrics of the original study's plotting code (spec section 2.6) ----


def on_grid(x: np.ndarray, y: np.ndarray, end: float) -> np.ndarray:
    """``y(x)`` linearly interpolated on ``GRID_POINTS`` points over [0, end]
    (values before the first point hold the first value)."""
    return np.interp(np.linspace(0.0, end, GRID_POINTS), x, y)


def l2_distance(xa, ya, xb, yb) -> float:
    """Unnormalised Euclidean distance of two curves on the shorter one's grid."""
    end = min(xa[-1], xb[-1])
    return float(np.linalg.norm(on_grid(xa, ya, end) - on_grid(xb, yb, end)))


def fft_mean_frequency(y: np.ndarray, detrended: bool = False) -> float:
    """sum |f| A_f / sum A_f of the curve's spectrum, DC included (the study's
    definition, which mostly tracks the loss level); ``detrended`` uses the first
    differences and leaves DC out, so only the curve's wiggles count."""
    if detrended:
        y = np.diff(y)
    amplitude = np.abs(np.fft.fft(y))
    freq = np.abs(np.fft.fftfreq(len(y)))
    if detrended:
        amplitude, freq = amplitude[1:], freq[1:]
    total = np.sum(amplitude)
    return float(np.sum(freq * amplitude) / total) if total > 0 else float("nan")


# ---- the study: cells, page and figures ----


@dataclasses.dataclass(frozen=True)
class Cell:
    depth: int
    width: int
    mode: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.mode}-d{self.depth}w{self.width}-seed{self.seed}"


def plan(seeds: list[int], sizes, significant_seeds: list[int]) -> list[Cell]:
    """Decimal places at the default (last) size for every seed; the other sizes at
    the first seed; significant digits at the default size for its seeds."""
    *others, (depth, width) = sizes
    cells = [Cell(depth, width, "decimals", s) for s in seeds]
    cells += [Cell(d, w, "decimals", seeds[0]) for d, w in others]
    cells += [Cell(depth, width, "significant", s) for s in significant_seeds]
    return cells


def run_all(cells: list[Cell], protocol: Protocol, out: Path, data_dir: str) -> list[dict]:
    results = []
    for cell in cells:
        path = out / f"{cell.name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            if result["protocol"] == dataclasses.asdict(protocol):
                results.append(result)
                continue
        digits = DECIMALS if cell.mode == "decimals" else SIGNIFICANT
        print(f"[rounding] {cell.name} ...", flush=True)
        result = run_cell(cell.depth, cell.width, cell.mode, cell.seed, digits, protocol, data_dir)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        print(f"[rounding] {cell.name} done in {result['seconds']:.0f} s", flush=True)
        results.append(result)
    return results


def _epochs(result: dict) -> np.ndarray:
    return np.asarray(result["eval_tokens"], float) / result["train_tokens"]


def _mean_curve(results: list[dict], label: str) -> np.ndarray:
    return np.mean([r["val_loss"][label] for r in results], axis=0)


def _by(results, **keys) -> list[dict]:
    return [r for r in results if all(r[k] == v for k, v in keys.items())]


def analyse(results: list[dict], sizes) -> dict:
    """Every number of the results page, from the cells' own files."""
    *_, default = sizes
    main = sorted(
        _by(results, mode="decimals", depth=default[0], width=default[1]), key=lambda r: r["seed"]
    )
    x = _epochs(main[0])
    labels = main[0]["settings"]
    final = {lab: [r["val_loss"][lab][-1] for r in main] for lab in labels}
    l2_control = {
        lab: [l2_distance(x, r["val_loss"][lab], x, r["val_loss"][CONTROL]) for r in main]
        for lab in labels
    }
    control_pairs = [
        l2_distance(x, a["val_loss"][CONTROL], x, b["val_loss"][CONTROL])
        for a, b in itertools.combinations(main, 2)
    ]
    seed_sd = float(np.std(final[CONTROL], ddof=1)) if len(main) > 1 else float("nan")
    seed_l2 = float(np.mean(control_pairs)) if control_pairs else float("nan")
    within = {
        lab: bool(
            abs(np.mean(np.subtract(final[lab], final[CONTROL]))) <= seed_sd
            and np.mean(l2_control[lab]) <= seed_l2
        )
        for lab in labels
    }
    digits = [lab for lab in labels if lab != CONTROL]
    threshold = None
    for k, lab in enumerate(digits):
        if all(within[m] for m in digits[k:]):
            threshold = int(lab)
            break

    grid = {}  # per size, seed-0 (first seed) decimals cells: L2 to 16, to the largest, FFT
    first_seed = main[0]["seed"]
    size_cells = {
        (d, w): _by(results, mode="decimals", depth=d, width=w, seed=first_seed)[0]
        for d, w in sizes
    }
    largest = size_cells[max(sizes, key=lambda s: size_cells[s]["params"])]
    for size, r in size_cells.items():
        xs, xl = _epochs(r), _epochs(largest)
        grid[size] = {
            "params": r["params"],
            "l2_to_16": {
                lab: l2_distance(xs, r["val_loss"][lab], xs, r["val_loss"]["16"])
                for lab in labels
                if lab != "16"
            },
            "l2_to_largest": {
                lab: l2_distance(xs, r["val_loss"][lab], xl, largest["val_loss"][lab])
                for lab in labels
            },
            "fft": {
                lab: fft_mean_frequency(on_grid(xs, r["val_loss"][lab], xs[-1])) for lab in labels
            },
            "fft_detrended": {
                lab: fft_mean_frequency(on_grid(xs, r["val_loss"][lab], xs[-1]), detrended=True)
                for lab in labels
            },
            "final": {lab: r["val_loss"][lab][-1] for lab in labels},
        }
    significant = sorted(_by(results, mode="significant"), key=lambda r: r["seed"])
    return {
        "main": main,
        "labels": labels,
        "final": final,
        "l2_control": l2_control,
        "seed_sd": seed_sd,
        "seed_l2": seed_l2,
        "within": within,
        "threshold": threshold,
        "grid": grid,
        "largest": (largest["depth"], largest["width"]),
        "significant": significant,
    }


def _label(lab: str) -> str:
    return "unrounded" if lab == CONTROL else f"d={lab}"


def figures(a: dict, page: Path) -> list[Path]:
    plt = kit.pyplot()

    main, labels = a["main"], a["labels"]
    tokens = np.asarray(main[0]["eval_tokens"], float)
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(labels) - 1)).tolist() + ["black"]
    paths = []

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    ax = axes[0]
    for lab, c in zip(labels, colors, strict=True):
        ax.plot(tokens, _mean_curve(main, lab), color=c, label=_label(lab))
    ax.set(
        title="(a) val loss, every setting (mean of seeds)",
        xlabel="tokens",
        ylabel="val loss (nats/byte)",
    )
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    late = tokens >= 0.7 * tokens[-1]
    for lab, c in zip(labels, colors, strict=True):
        if lab == CONTROL or int(lab) >= 6:
            ax.plot(
                tokens[late], _mean_curve(main, lab)[late], color=c, marker=".", label=_label(lab)
            )
    ax.set(title="(b) zoom: d >= 6, last 30% of tokens", xlabel="tokens")
    ax.legend(fontsize=7)
    ax = axes[2]
    for lab, c in (("8", "tab:blue"), ("16", "tab:orange"), (CONTROL, "black")):
        curves = np.asarray([r["val_loss"][lab] for r in main])
        mean, sd = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else 0 * curves[0]
        ax.plot(tokens, mean, color=c, label=f"{_label(lab)} ({len(curves)} seeds)")
        ax.fill_between(tokens, mean - sd, mean + sd, color=c, alpha=0.15)
    ax.set(
        title="(c) 8 vs 16 vs unrounded, mean ± std over seeds",
        xlabel="tokens",
        ylim=(None, float(np.max(_mean_curve(main, CONTROL)[len(tokens) // 3 :])) + 0.05),
    )
    ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(page.with_name(page.stem + "_curves.png"))
    kit.save_figure(fig, paths[-1])

    grid = a["grid"]
    sizes = sorted(grid, key=lambda s: grid[s]["params"])
    rows = [f"{d}x{w} ({grid[(d, w)]['params'] / 1e3:.0f}k)" for d, w in sizes]
    panels = [
        ("(d) L2 to d=16", "l2_to_16", [lab for lab in labels if lab != "16"]),
        (
            "(d) L2 to d=16, d >= 7",
            "l2_to_16",
            [lab for lab in labels if lab != "16" and (lab == CONTROL or int(lab) >= 7)],
        ),
        ("(e) FFT mean frequency (study's definition)", "fft", labels),
        ("(e) FFT mean frequency, detrended", "fft_detrended", labels),
        (
            f"(f) L2 to the largest model ({a['largest'][0]}x{a['largest'][1]})",
            "l2_to_largest",
            labels,
        ),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.2 * len(panels) + 1))
    for ax, (title, key, cols) in zip(axes, panels, strict=True):
        values = np.asarray([[grid[s][key][lab] for lab in cols] for s in sizes])
        im = ax.imshow(values, aspect="auto", cmap="magma_r")
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                f"{v:.3g}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v > np.nanmean(values) else "black",
            )
        ax.set_xticks(range(len(cols)), [_label(c).replace("d=", "") for c in cols], fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.tight_layout()
    paths.append(page.with_name(page.stem + "_heatmaps.png"))
    kit.save_figure(fig, paths[-1])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    modes = [("decimals", main)] + ([("significant", a["significant"])] if a["significant"] else [])
    for mode, cells in modes:
        digits = [lab for lab in cells[0]["settings"] if lab != CONTROL]
        zeroed = [np.mean([np.mean(r["fraction_zeroed"][lab]) for r in cells]) for lab in digits]
        finals = [np.mean([r["val_loss"][lab][-1] for r in cells]) for lab in digits]
        axes[0].plot([int(d) for d in digits], zeroed, marker="o", label=mode)
        axes[1].plot([int(d) for d in digits], finals, marker="o", label=mode)
    control = np.mean(a["final"][CONTROL])
    axes[1].axhline(control, color="black", ls="--", lw=0.8, label="unrounded")
    axes[0].set(
        title="fraction of gradient elements zeroed (mean over steps)",
        xlabel="digits",
        yscale="log",
    )
    axes[1].set(title="final val loss", xlabel="digits", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(page.with_name(page.stem + "_modes.png"))
    kit.save_figure(fig, paths[-1])
    return paths


def write_page(
    a: dict, results: list[dict], protocol: Protocol, command: str, page: Path, figs: list[Path]
) -> Path:
    main, labels = a["main"], a["labels"]
    d0, w0 = main[0]["depth"], main[0]["width"]
    minutes = sum(r["seconds"] for r in results) / 60
    p = protocol
    lines = [
        "# Gradient rounding: the study reproduced",
        "",
        f"Generated by `{command}` from {len(results)} cells (one JSON file each; a cell is one "
        f"model size, rounding mode and seed, with every digit setting trained in it): "
        f"{minutes:.0f} min of training in all (the cells' own clocks), on {kit.machine()}.",
        "",
        "## Protocol",
        "",
        f"- Model: byte-level GPT, depth {d0}, width {w0}, {w0 // p.head_width} heads "
        f"({main[0]['params']:,} parameters) at the default size; the size grid is "
        + ", ".join(
            f"{d}x{w} ({a['grid'][(d, w)]['params']:,})"
            for d, w in sorted(a["grid"], key=lambda s: a["grid"][s]["params"])
        )
        + " (depth x width).",
        f"- Data: the default corpus (Shakespeare, bytes); {p.steps} steps of {p.batch} x "
        f"{p.seq_len} tokens ({p.steps * p.batch * p.seq_len:,} tokens, "
        f"{p.steps * p.batch * p.seq_len / main[0]['train_tokens']:.2f} epochs); validation on "
        f"{p.eval_windows} fixed windows every {p.eval_every} steps.",
        f"- AdamW (b1 0.9, b2 0.95, eps 1e-9, no weight decay), warmup {p.warmup} steps to "
        f"{p.peak_lr:g} then cosine to 10%.",
        f"- Rounding: `gqc_jax.round_gradients` (float32, exact rule) on the gradient of "
        f"{p.loss_scale:g} x loss before AdamW, one microbatch per step (so rounding the running "
        "sum, as the study did, and rounding the gradient are the same). With the loss scale, "
        "the control's median |g| over training is "
        f"{np.median([q[1] for q in main[0]['control_grad_quantiles'][1:]]):.2g} "
        "(the study's 46M model: an RMS |g| of about 4e-5). Losses are unscaled.",
        "- Pairing: within a cell every setting starts from the same initialisation and sees "
        "the same microbatches; seeds change both. On CPU the runs are deterministic, so the "
        "seed-to-seed spread is the only noise yardstick.",
        "",
        f"## Decimal places, default size, {len(main)} seeds",
        "",
        "| setting | final val loss | Δ vs unrounded (paired) | L2 to unrounded | "
        "RMS gap | elements zeroed | within seed noise |",
        "|---|---|---|---|---|---|---|",
    ]
    for lab in labels:
        diff = np.subtract(a["final"][lab], a["final"][CONTROL])
        l2 = a["l2_control"][lab]
        zeroed = np.mean([np.mean(r["fraction_zeroed"][lab]) for r in main])
        lines.append(
            f"| {_label(lab)} | {mean_std(a['final'][lab])} | {np.mean(diff):+.4f} | "
            f"{np.mean(l2):.3f} | {np.mean(l2) / np.sqrt(GRID_POINTS):.4f} | {zeroed:.2%} | "
            f"{'yes' if a['within'][lab] else 'no'} |"
        )
    t = a["threshold"]
    study = "matches" if t == 7 else "does not match"
    lines += [
        "",
        f"Seed-noise band: the unrounded control's final loss has a standard deviation of "
        f"{a['seed_sd']:.4f} across seeds, and two seeds' control curves lie at an L2 of "
        f"{a['seed_l2']:.3f} from each other (mean over pairs). A setting is within seed noise when "
        "its mean paired final-loss change is at most that standard deviation and its mean L2 to "
        "the control at most that L2.",
        "",
        f"**Threshold: d >= {t}** is within seed noise of the unrounded control (every setting "
        f"from {t} up). This {study} the study's d >= 7. "
        + (
            "The threshold is a property of the gradient magnitudes, not of the digit count: "
            "multiplying the loss by c moves it by log10(1/c) digits (Adam is invariant to c as "
            "long as |g| >> eps), so matching it needs the study's gradient scale, which the loss "
            "scale above sets."
        ),
        "",
    ]
    sig = a["significant"]
    if sig:
        slabels = sig[0]["settings"]
        lines += [
            f"## Significant digits (claimed by the study, never run), default size, "
            f"{len(sig)} seed{'s' if len(sig) > 1 else ''}",
            "",
            "| setting | final val loss | Δ vs unrounded (paired) | L2 to unrounded | "
            "elements zeroed | elements changed |",
            "|---|---|---|---|---|---|",
        ]
        x = _epochs(sig[0])
        for lab in slabels:
            fin = [r["val_loss"][lab][-1] for r in sig]
            diff = [r["val_loss"][lab][-1] - r["val_loss"][CONTROL][-1] for r in sig]
            l2 = [l2_distance(x, r["val_loss"][lab], x, r["val_loss"][CONTROL]) for r in sig]
            zeroed = np.mean([np.mean(r["fraction_zeroed"][lab]) for r in sig])
            changed = np.mean([np.mean(r["fraction_changed"][lab]) for r in sig])
            lines.append(
                f"| {_label(lab)} | {mean_std(fin)} | {np.mean(diff):+.4f} | {np.mean(l2):.3f} | "
                f"{zeroed:.2%} | {changed:.1%} |"
            )
        lines += [
            "",
            "Significant-digit rounding is scale-free: it zeroes nothing (an element keeps its "
            "magnitude to N digits whatever its size), so it cannot reproduce the study's "
            "magnitude-set threshold; what it does is add relative noise of up to "
            "0.5 x 10^(1-N).",
            "",
        ]
    lines += [
        "## Model sizes (decimal places, first seed)",
        "",
        "| size | params | " + " | ".join(_label(lab) for lab in labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    grid = a["grid"]
    for size in sorted(grid, key=lambda s: grid[s]["params"]):
        g = grid[size]
        lines.append(
            f"| {size[0]}x{size[1]} final | {g['params']:,} | "
            + " | ".join(f"{g['final'][lab]:.3f}" for lab in labels)
            + " |"
        )
        lines.append(
            f"| {size[0]}x{size[1]} L2→16 | | "
            + " | ".join(f"{g['l2_to_16'].get(lab, 0.0):.2f}" for lab in labels)
            + " |"
        )
    lines += [
        "",
        "## Figures",
        "",
        f"![curves]({figs[0].name})",
        "",
        "(a) validation loss for every setting (mean of seeds); (b) the settings d >= 6 over the "
        "last 30% of tokens; (c) the mean ± std over seeds of d = 8, d = 16 and the unrounded "
        "control.",
        "",
        f"![heatmaps]({figs[1].name})",
        "",
        "(d) L2 distance to d = 16 (sizes x settings), all settings and d >= 7; (e) the FFT mean "
        "frequency in the study's definition (DC included: it mostly tracks the loss level, a "
        "flat high curve scores near 0) and detrended (first differences, DC left out: only the "
        "curve's wiggles count); (f) L2 to the largest model at the same setting. All on the "
        f"study's {GRID_POINTS}-point grid over the epoch axis, unnormalised (RMS gap = L2 / "
        f"{np.sqrt(GRID_POINTS):.1f}).",
        "",
        f"![modes]({figs[2].name})",
        "",
        "Fraction of gradient elements zeroed (mean over steps) and final validation loss per "
        "setting, decimal places vs significant digits.",
        "",
    ]
    return kit.write_page(page, lines)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/rounding", "docs/results/rounding.md")
    parser.add_argument("--seeds", default="0,1,2", help="seeds at the default size")
    parser.add_argument("--significant_seeds", default="0", help="seeds of the significant sweep")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the larger grid (sizes up to 4x256, 2000 steps): for a GPU",
    )
    parser.add_argument(
        "--sizes", help="model sizes as depth x width, the default (main) size last: 1x32,2x64"
    )
    args = kit.parse_args(parser, argv)
    protocol = kit.with_steps(SCALE_PROTOCOL if args.scale else Protocol(), args.steps)
    sizes: tuple[tuple[int, int], ...] = SCALE_SIZES if args.scale else DEFAULT_SIZES
    if args.sizes:
        sizes = tuple((int(s.split("x")[0]), int(s.split("x")[1])) for s in args.sizes.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    sig_seeds = [int(s) for s in args.significant_seeds.split(",") if s]
    results = run_all(plan(seeds, sizes, sig_seeds), protocol, Path(args.out), args.data_dir)
    analysis = analyse(results, sizes)
    page = Path(args.page)
    command = kit.command("experiments.studies.rounding_study", argv)
    figs = figures(analysis, page)
    write_page(analysis, results, protocol, command, page, figs)
    print(page.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
