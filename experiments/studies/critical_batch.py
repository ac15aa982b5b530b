"""Study: the critical batch size, and the batch sizes GNTS and GNS choose.

For each model size, plain AdamW trains at fixed batch sizes ``B`` (sequences per
optimizer step) on one token budget. For a target loss, ``S(B)`` is the number
of optimizer steps and ``E(B) = B S(B)`` the sequences needed to reach it; the
empirical trade-off ``S = S_min (1 + B_crit / B)`` (McCandlish et al., 2018) is
fitted by least squares, giving the critical batch ``B_crit = E_min / S_min``,
the knee between perfect scaling and wasted data. Targets at several depths of
training show how ``B_crit`` moves as the loss falls; the sizes show how it
moves with the model. GNTS (relative thresholds) and GNS run on the smallest
batch as microbatch, and their windows (draws x microbatch) are the batch sizes
they choose by themselves. Every run is an ``experiments.train`` run folder;
``docs/results/critical_batch.md`` and its figure are written from them.

    python -m experiments.studies.critical_batch [--batches 8,16,32,64,128] [--tokens 400000]
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import Config
from experiments.studies import kit
from experiments.studies.kit import crossing, evals, steps
from experiments.train import train_once

CONTROLLERS: dict[str, dict[str, Any]] = {
    "gnts-relative": {**kit.GNTS_RELATIVE, "gqc.max_draws": 32},
    "gns": {"gqc.controller": "gns", "gqc.max_draws": 32},
}
TARGET_DEPTHS = (0.6, 0.8, 0.9)  # fractions of the way from the initial to the best final loss


SCALE = {"presets": "ladder-s,ladder-m", "batches": "8,16,32,64,128,256", "tokens": 20_000_000}


def run_config(out: Path, args, preset: str, batch: int, seed: int, extra: dict) -> Config:
    return kit.run_config(
        out,
        extra,
        preset=preset,
        seq_len=args.seq_len,
        microbatch=batch,
        tokens=args.tokens,
        seed=seed,
        evals=24,
        data_dir=args.data_dir,
        lr=args.lr,
    )


def fit_critical_batch(batches: list[int], step_counts: list[float]) -> tuple[float, float]:
    """(S_min, B_crit) of S = S_min + S_min B_crit / B by least squares in (1/B, S);
    B_crit is 0 where steps do not fall as the batch grows (no gain from larger
    batches at all), inf where S_min <= 0 (no saturation in the measured range)."""
    x = 1.0 / np.asarray(batches, float)
    slope, intercept = np.polyfit(x, np.asarray(step_counts, float), 1)
    if intercept <= 0:
        return float(intercept), float("inf")
    return float(intercept), max(float(slope / intercept), 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/critical_batch", "docs/results/critical_batch.md")
    parser.add_argument("--batches", default="8,16,32,64,128", help="sequences per step")
    parser.add_argument("--presets", default="tiny,ladder-xs", help="model sizes")
    parser.add_argument("--tokens", type=int, default=400_000)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = kit.parse_args(parser, argv, SCALE)
    batches = [int(b) for b in args.batches.split(",")]
    presets = args.presets.split(",")
    root = Path(args.out)
    fixed, chosen, summaries = {}, {}, {}
    for preset in presets:
        for b in batches:
            out = root / preset / f"batch{b}"
            summaries[out] = train_once(run_config(out, args, preset, b, args.seed, {}))
            fixed[(preset, b)] = out
        for name, settings in CONTROLLERS.items():
            out = root / preset / name
            cfg = run_config(out, args, preset, batches[0], args.seed, settings)
            summaries[out] = train_once(cfg)
            chosen[(preset, name)] = out

    fits = {}
    for preset in presets:
        start = evals(fixed[(preset, batches[0])])[0]["eval/loss"]
        best = min(evals(fixed[(preset, b)])[-1]["eval/loss"] for b in batches)
        for depth in TARGET_DEPTHS:
            target = start - depth * (start - best)
            crossings = {b: crossing(fixed[(preset, b)], target) for b in batches}
            reached = {b: c for b, c in crossings.items() if c is not None}
            usable = [b for b in batches if b in reached]
            fit = (
                fit_critical_batch(usable, [reached[b][0] for b in usable])
                if len(usable) >= 3
                else (float("nan"), float("nan"))
            )
            fits[(preset, depth)] = (target, crossings, fit)
    fig = figure(args, presets, batches, fits, chosen, Path(args.page).with_suffix(".png"))
    write_page(args, presets, batches, fits, chosen, summaries, fig)
    print(Path(args.page).read_text())
    return 0


def _window_batches(run_dir: Path, microbatch: int) -> list[tuple[int, int]]:
    return [(r["tokens"], r["gqc/draws"] * microbatch) for r in steps(run_dir)]


def figure(args, presets, batches, fits, chosen, out: Path) -> Path:
    plt = kit.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for k, preset in enumerate(presets):
        for j, depth in enumerate(TARGET_DEPTHS):
            target, reached, (s_min, b_crit) = fits[(preset, depth)]
            usable = [b for b in batches if reached[b] is not None]
            s = [reached[b][0] for b in usable]
            e = [reached[b][1] / args.seq_len for b in usable]
            axes[0].plot(
                e,
                s,
                marker="o",
                color=f"C{k}",
                alpha=0.4 + 0.3 * j,
                label=f"{preset}, loss {target:.2f}: B_crit {b_crit:.0f}",
            )
            if np.isfinite(b_crit):
                grid = np.geomspace(min(usable), max(usable) * 2, 50)
                axes[0].plot(
                    grid * s_min * (1 + b_crit / grid),
                    s_min * (1 + b_crit / grid),
                    ls=":",
                    color=f"C{k}",
                    alpha=0.6,
                )
    axes[0].set(
        title="steps vs sequences to a target loss (fixed batches; dotted: fit)",
        xlabel="sequences",
        ylabel="optimizer steps",
        xscale="log",
        yscale="log",
    )
    axes[0].legend(fontsize=6)
    for k, preset in enumerate(presets):
        for name, style in zip(CONTROLLERS, (".", "x"), strict=False):
            points = _window_batches(chosen[(preset, name)], batches[0])
            axes[1].plot(
                *zip(*points, strict=True), style, ms=3, color=f"C{k}", label=f"{preset} {name}"
            )
        b_crit = fits[(preset, TARGET_DEPTHS[-1])][2][1]
        if np.isfinite(b_crit):
            axes[1].axhline(b_crit, color=f"C{k}", ls="--", lw=0.8)
    axes[1].set(
        title="batch chosen per step (draws x microbatch); dashed: B_crit",
        xlabel="tokens",
        ylabel="sequences",
        yscale="log",
    )
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return kit.save_figure(fig, out)


def write_page(args, presets, batches, fits, chosen, summaries, fig) -> Path:
    lines = [
        "# Critical batch size, and the batches GNTS and GNS choose",
        "",
        kit.generated_by(
            f"python -m experiments.studies.critical_batch --batches={args.batches} "
            f"--presets={args.presets} --tokens={args.tokens}",
            summaries.values(),
        ),
        "",
        f"Plain AdamW (lr {args.lr:g}, warmup 5% then cosine to 10% over the budget, clip 1.0, "
        f"weight decay 0.1) at a fixed batch of B sequences of {args.seq_len} tokens per step, "
        f"{args.tokens:,} tokens per run, seed {args.seed}, default corpus. A target loss lies "
        "a fraction (depth) of the way from the initial loss to the best final loss over the "
        "batch sizes; S(B) is the interpolated step count at which the eval loss first reaches "
        "it. Fit: S = S_min (1 + B_crit / B) by least squares in 1/B, on the batch sizes that "
        "reached the target (at least 3). Note that every run's learning-rate schedule spans "
        "its own budget, so a larger batch also decays its rate in fewer steps.",
        "",
        "| model | depth | target loss | steps to target per B ("
        + ", ".join(map(str, batches))
        + ") | S_min | B_crit (sequences) |",
        "|---|---|---|---|---|---|",
    ]
    for preset in presets:
        for depth in TARGET_DEPTHS:
            target, reached, (s_min, b_crit) = fits[(preset, depth)]
            cells = ", ".join(f"{reached[b][0]:.0f}" if reached[b] else "–" for b in batches)
            lines.append(
                f"| {preset} | {depth:.2f} | {target:.3f} | {cells} | {s_min:.0f} | {b_crit:.1f} |"
            )
    lines += [
        "",
        "## The batches the controllers choose",
        "",
        f"Both run with microbatches of {batches[0]} sequences and at most 32 draws; a step's "
        "batch is draws x microbatch.",
        "",
        "| model | controller | val loss | batch per step: first quarter | last quarter | "
        "B_crit at the final target |",
        "|---|---|---|---|---|---|",
    ]
    for preset in presets:
        b_crit = fits[(preset, TARGET_DEPTHS[-1])][2][1]
        for name in CONTROLLERS:
            points = _window_batches(chosen[(preset, name)], batches[0])
            end = points[-1][0]
            first = [b for t, b in points if t <= end / 4] or [points[0][1]]
            last = [b for t, b in points if t >= 3 * end / 4] or [points[-1][1]]
            loss = evals(chosen[(preset, name)])[-1]["eval/loss"]
            lines.append(
                f"| {preset} | {name} | {loss:.4f} | {statistics.mean(first):.1f} | "
                f"{statistics.mean(last):.1f} | {b_crit:.1f} |"
            )
    finite = {
        p: [fits[(p, d)][2][1] for d in TARGET_DEPTHS if np.isfinite(fits[(p, d)][2][1])]
        for p in presets
    }
    trend = []
    for p in presets:
        if len(finite[p]) >= 2:
            grows = finite[p][-1] > finite[p][0]
            trend.append(
                f"{p}: B_crit {'grows' if grows else 'does not grow'} as the loss "
                f"falls ({' -> '.join(f'{v:.0f}' for v in finite[p])})"
            )
    lines += ["", ("; ".join(trend) + ".") if trend else "Too few fits for a trend.", ""]
    lines += [
        f"![critical batch]({fig.name})",
        "",
        "Left: optimizer steps against sequences consumed to reach each target, per batch "
        "size (points) with the fitted hyperbola (dotted). Right: the batch per step GNTS and "
        "GNS choose over training, against B_crit at the deepest target (dashed).",
        "",
    ]
    return kit.write_page(args.page, lines)


if __name__ == "__main__":
    raise SystemExit(main())
