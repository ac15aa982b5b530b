"""Study: controllers that need no per-model threshold tuning, at equal tokens.

Arms, on the same GPT, corpus, token budget and data order: AdamW (learning rate
picked by a small sweep at each microbatch size), GNTS with the reference's
absolute thresholds (0.95 -> 0.25, inverse warmup x10), GNTS with the same
schedule *relative* to the model's own single-microbatch gradient norm, and
``snr`` (step when the window mean's noise is at most ``noise_ratio`` of its
signal). Two microbatch sizes, chosen against the gradient noise scale measured
during training. Every run is a ``experiments.train`` run folder; the page
``docs/results/scale_free.md`` and its figure are written from those folders.

    python -m experiments.studies.scale_free [--seeds 0,1,2] [--tokens 500000] [--microbatches 1,16]
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from experiments.config import Config
from experiments.noise_scale import noise_scale
from experiments.run_log import read_metrics, read_record
from experiments.studies import kit
from experiments.studies.kit import mean_std
from experiments.train import SUMMARY_FILE, train_once

ARMS: dict[str, dict[str, Any]] = {
    "adamw": kit.ADAMW,
    "gnts-reference": {**kit.GNTS_REFERENCE, "gqc.max_draws": 64},
    "gnts-relative": {**kit.GNTS_RELATIVE, "gqc.max_draws": 64},
    "snr": {"gqc.controller": "snr", "gqc.noise_ratio": 0.1, "gqc.max_draws": 64},
}


def run_config(out: Path, args, microbatch: int, seed: int, lr: float, arm: str) -> Config:
    return kit.run_config(
        out,
        ARMS[arm],
        preset="ladder-xs",
        seq_len=args.seq_len,
        microbatch=microbatch,
        tokens=args.tokens,
        seed=seed,
        evals=10,
        data_dir=args.data_dir,
        lr=lr,
        noise_probe=max(8, 64 // microbatch),
    )


def cap_fraction(run_dir: Path) -> float:
    """Fraction of a run's optimizer steps whose window ran to the draw cap."""
    config = json.loads((run_dir / "config.json").read_text())
    if config["gqc"]["controller"] == "none":
        return 0.0
    cap = config["gqc"]["max_draws"]
    draws = [r["gqc/draws"] for r in read_metrics(run_dir) if "gqc/draws" in r]
    return sum(d >= cap for d in draws) / max(len(draws), 1)


def _noise_over_training(run_dir: Path) -> list[tuple[int, float]]:
    """(tokens, B_noise in sequences) per evaluation, from one run's records."""
    config = json.loads((run_dir / "config.json").read_text())
    size = config["data"]["microbatch_size"]
    out = []
    for r in read_metrics(run_dir):
        if "eval/grad_signal" in r and r["eval/grad_signal"] > 0:
            out.append((r["tokens"], r["eval/grad_noise"] / r["eval/grad_signal"] * size))
    return out


def late_noise_scale(run_dir: Path) -> float:
    """B_noise in sequences over the second half of a run (ratio of means), from its records."""
    config = json.loads((run_dir / "config.json").read_text())
    records = [r for r in read_metrics(run_dir) if "eval/grad_signal" in r]
    end = max(r["tokens"] for r in records)
    late = [r for r in records if 2 * r["tokens"] >= end]
    per_microbatch = noise_scale(
        [r["eval/grad_signal"] for r in late], [r["eval/grad_noise"] for r in late]
    )
    return per_microbatch * config["data"]["microbatch_size"]


def figure(dirs: dict, sizes: list[int], seeds: list[int], out: Path) -> Path:
    plt = kit.pyplot()

    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(5 * (len(sizes) + 1), 4))
    for ax, size in zip(axes, sizes, strict=False):
        for arm in ARMS:
            curves = [
                [
                    (r["tokens"], r["eval/loss"])
                    for r in read_metrics(dirs[(size, arm, s)])
                    if "eval/loss" in r
                ]
                for s in seeds
            ]
            x = [t for t, _ in curves[0]]
            y = [statistics.mean(c[i][1] for c in curves) for i in range(len(x))]
            ax.plot(x[1:], y[1:], marker="o", ms=3, label=arm)
        ax.set(
            title=f"microbatch {size} sequences", xlabel="tokens", ylabel="val loss (mean of seeds)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[-1]
    for size in sizes:
        for s in seeds:
            points = _noise_over_training(dirs[(size, "adamw", s)])
            ax.plot(*zip(*points, strict=True), ".", alpha=0.6, label=f"mb {size}, seed {s}")
    for size in sizes:
        ax.axhline(size, ls="--", color="gray", lw=0.8)
    ax.set(
        title="gradient noise scale under AdamW",
        xlabel="tokens",
        ylabel="B_noise (sequences)",
        yscale="log",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return kit.save_figure(fig, out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/scale_free", "docs/results/scale_free.md")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tokens", type=int, default=500_000)
    parser.add_argument("--microbatches", default="1,16", help="microbatch sizes in sequences")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2", help="AdamW sweep (seed 0)")
    parser.add_argument("--seq_len", type=int, default=128)
    args = kit.parse_args(parser, argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = [int(s) for s in args.microbatches.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    root = Path(args.out)

    best_lr, sweep = {}, {}
    for size in sizes:
        for lr in lrs:
            out = root / f"mb{size}" / "lr-sweep" / f"lr{lr:g}"
            cfg = run_config(out, args, size, seeds[0], lr, "adamw")
            sweep[(size, lr)] = train_once(cfg)["eval_loss"]
        losses = {lr: sweep[(size, lr)] for lr in lrs}
        best_lr[size] = min(lrs, key=losses.__getitem__)

    results, dirs = {}, {}
    for size in sizes:
        for arm in ARMS:
            for seed in seeds:
                out = root / f"mb{size}" / arm / f"s{seed}"
                if arm == "adamw" and seed == seeds[0]:  # the sweep already ran it
                    out = root / f"mb{size}" / "lr-sweep" / f"lr{best_lr[size]:g}"
                cfg = run_config(out, args, size, seed, best_lr[size], arm)
                results[(size, arm, seed)] = train_once(cfg)
                dirs[(size, arm, seed)] = out
    fig = figure(dirs, sizes, seeds, Path(args.page).with_suffix(".png"))
    page = write_page(args, sizes, seeds, lrs, sweep, best_lr, results, dirs, fig)
    print(page)
    return 0


def write_page(args, sizes, seeds, lrs, sweep, best_lr, results, dirs, fig) -> Path:
    summaries = list(results.values())
    for d in Path(args.out).glob("mb*/lr-sweep/*"):
        summaries.append(read_record((d / SUMMARY_FILE).read_text()))
    runs, run_minutes = kit.training_time(summaries)
    lines = [
        "# Scale-free GQC: relative thresholds and `snr` vs the reference thresholds",
        "",
        "Generated by `python -m experiments.studies.scale_free "
        + " ".join(
            f"--{k}={v}"
            for k, v in (
                ("seeds", args.seeds),
                ("tokens", args.tokens),
                ("microbatches", args.microbatches),
                ("lrs", args.lrs),
            )
        )
        + f"`: {runs} training runs, "
        f"{run_minutes:.0f} min of training in all (the runs' own clocks; a rerun reads finished "
        f"runs back), on {kit.machine()}.",
        "",
        f"Model: `ladder-xs` GPT (842,496 parameters, byte tokens, {args.seq_len}-token sequences); "
        f"data: the default corpus (Shakespeare); budget: {args.tokens:,} tokens per run; "
        "AdamW (b1 0.9, b2 0.95, weight decay 0.1, clip 1.0) with linear warmup over 5% of the "
        "microbatches and cosine decay to 10%, on the microbatch clock under a controller. "
        "Seeds set both the initialisation and the data order; all arms of a seed see the same "
        "microbatches in the same order. Validation loss is on 8 fixed validation microbatches. "
        "Tokens/s include evaluations and noise-scale probes, and other jobs shared this "
        "machine during some runs: compare them only loosely.",
        "",
        "## Learning-rate sweep (AdamW, seed 0)",
        "",
        "| microbatch (seqs) | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
        "|---|" + "---|" * (len(lrs) + 1),
    ]
    for size in sizes:
        lines.append(
            f"| {size} | "
            + " | ".join(f"{sweep[(size, lr)]:.4f}" for lr in lrs)
            + f" | {best_lr[size]:g} |"
        )
    lines += ["", "Every arm at a microbatch size uses the chosen learning rate.", ""]
    verdicts = []
    for size in sizes:
        noise = [late_noise_scale(dirs[(size, "adamw", s)]) for s in seeds]
        lines += [
            f"## Microbatch of {size} sequence{'s' if size > 1 else ''}",
            "",
            f"Gradient noise scale measured under AdamW (ratio of means over the evaluations of "
            f"the second half of each run): {mean_std(noise, 2)} sequences, i.e. "
            f"{statistics.mean(noise) / size:.2f} microbatches.",
            "",
            "| arm | val loss (mean ± std) | val ppl | opt steps | draws/step | steps at the cap "
            "| tokens/s |",
            "|---|---|---|---|---|---|---|",
        ]
        losses = {}
        for arm in ARMS:
            rs = [results[(size, arm, s)] for s in seeds]
            losses[arm] = [r["eval_loss"] for r in rs]
            ppl = statistics.mean(math.exp(x) for x in losses[arm])
            lines.append(
                f"| {arm} | {mean_std(losses[arm])} | {ppl:.3f} | "
                f"{statistics.mean(r['steps'] for r in rs):.0f} | "
                f"{statistics.mean(r['draws_per_step'] for r in rs):.2f} | "
                f"{statistics.mean(cap_fraction(dirs[(size, arm, s)]) for s in seeds):.0%} | "
                f"{statistics.mean(r['tokens_per_s'] for r in rs):.0f} |"
            )
        ranked = sorted(ARMS, key=lambda a: statistics.mean(losses[a]))
        best, second = ranked[0], ranked[1]
        gap = statistics.mean(losses[second]) - statistics.mean(losses[best])
        spread = max(statistics.stdev(losses[a]) if len(seeds) > 1 else 0.0 for a in (best, second))
        clear = (
            "clearly (gap larger than twice the larger seed std)"
            if gap > 2 * spread
            else "within seed noise"
        )
        verdicts.append((size, best, second, gap, clear, statistics.mean(noise)))
        snr_window = statistics.mean(noise) / ARMS["snr"]["gqc.noise_ratio"] / size
        snr_cap = statistics.mean(cap_fraction(dirs[(size, "snr", s)]) for s in seeds)
        lines += [
            "",
            f"Best: **{best}**, ahead of {second} by {gap:.4f} nats, {clear}. At equal tokens "
            "every extra draw is an optimizer step the controller gives up. `snr` asks for the "
            "window mean's residual noise to be at most "
            f"{ARMS['snr']['gqc.noise_ratio']} of its signal, i.e. windows of about "
            f"B_noise / {ARMS['snr']['gqc.noise_ratio']} = {snr_window:.0f} microbatches late in "
            f"training; it ran to its cap of {ARMS['snr']['gqc.max_draws']} on {snr_cap:.0%} of "
            "its steps.",
            "",
        ]
    lines += [
        "## Figure",
        "",
        f"![validation loss and noise scale]({Path(fig).name})",
        "",
        "Left panels: validation loss against tokens (mean over seeds) per microbatch size. "
        "Right: the gradient noise scale B_noise = tr(Σ)/|G|² in sequences at each evaluation "
        "of the AdamW runs; the dashed lines mark the microbatch sizes.",
        "",
    ]
    lines += ["## Summary", ""]
    for size, best, second, gap, clear, b_noise in verdicts:
        relation = "below" if size < b_noise else "above"
        lines.append(
            f"- Microbatch {size} ({relation} the measured noise scale of {b_noise:.2f} "
            "sequences): "
            f"{best} wins, {second} next ({gap:.4f} nats, {clear})."
        )
    return kit.write_page(args.page, lines)


if __name__ == "__main__":
    raise SystemExit(main())
