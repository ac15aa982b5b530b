"""Study: is GQC Adam-specific? GNTS against its control under several optimizers.

For each optimizer (AdamW, Lion, Adafactor, SGD with Nesterov momentum, and Muon
from ``optax.contrib``) a small learning-rate sweep picks the control's rate on
the first seed; GNTS (thresholds relative to the model's own gradient norm,
the reference's schedule shape) then runs at that rate. Same model, data order
and tokens everywhere. Every run is an ``experiments.train`` run folder;
``docs/results/optimizers.md`` and its figure are written from them.

    python -m experiments.studies.optimizer_generality [--seeds 0,1] [--tokens 300000]
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from experiments.config import OPTIMIZERS, Config
from experiments.studies import kit
from experiments.studies.kit import evals, mean_std
from experiments.train import train_once

# Centre of each optimizer's learning-rate sweep (x 1/3, 1, 3).
BASE_LR = {"adamw": 3e-3, "lion": 3e-4, "adafactor": 1e-2, "sgd": 0.1, "muon": 0.02}
ARMS: dict[str, dict[str, Any]] = {"control": kit.ADAMW, "gnts": kit.GNTS_RELATIVE}


SCALE = {"preset": "ladder-s", "tokens": 20_000_000, "microbatch": 32, "seeds": "0,1,2"}


def run_config(out: Path, args, name: str, seed: int, lr: float, arm: str) -> Config:
    return kit.run_config(
        out,
        {"optim.name": name, "gqc.max_draws": 16},
        ARMS[arm],
        preset=args.preset,
        seq_len=args.seq_len,
        microbatch=args.microbatch,
        tokens=args.tokens,
        seed=seed,
        evals=12,
        data_dir=args.data_dir,
        lr=lr,
    )


def figure(dirs: dict, names: list[str], seeds: list[int], change: dict, out: Path) -> Path:
    plt = kit.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for k, name in enumerate(names):
        for arm, style in (("control", "-"), ("gnts", "--")):
            curves = [evals(dirs[(name, arm, s)]) for s in seeds]
            x = [r["tokens"] for r in curves[0]][1:]
            y = [statistics.mean(c[i]["eval/loss"] for c in curves) for i in range(1, len(x) + 1)]
            ax.plot(x, y, ls=style, color=f"C{k}", label=f"{name} {arm}")
    ax.set(title="val loss (mean of seeds); dashed: GNTS", xlabel="tokens", ylabel="val loss")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    ax.bar(names, [100 * change[n] for n in names], color=[f"C{k}" for k in range(len(names))])
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title="perplexity change of GNTS vs its control", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return kit.save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/optimizers", "docs/results/optimizers.md")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--tokens", type=int, default=300_000, help="token budget per run")
    parser.add_argument("--microbatch", type=int, default=8, help="sequences per microbatch")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    args = kit.parse_args(parser, argv, SCALE)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.optimizers.split(",")
    unknown = sorted(set(names) - set(OPTIMIZERS))
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {list(OPTIMIZERS)}.")
    root = Path(args.out)
    dirs, results, sweeps, best = {}, {}, {}, {}
    for name in names:
        grid = [BASE_LR[name] / 3, BASE_LR[name], BASE_LR[name] * 3]
        for lr in grid:
            out = root / name / "lr-sweep" / f"lr{lr:.3g}"
            sweeps[(name, lr)] = (
                out,
                train_once(run_config(out, args, name, seeds[0], lr, "control")),
            )
        losses = {lr: sweeps[(name, lr)][1]["eval_loss"] for lr in grid}
        best[name] = min(grid, key=losses.__getitem__)
        for arm in ARMS:
            for seed in seeds:
                if arm == "control" and seed == seeds[0]:
                    out, result = sweeps[(name, best[name])]
                else:
                    out = root / name / arm / f"s{seed}"
                    result = train_once(run_config(out, args, name, seed, best[name], arm))
                dirs[(name, arm, seed)], results[(name, arm, seed)] = out, result
    ppl = {
        (name, arm): statistics.mean(results[(name, arm, s)]["eval_ppl"] for s in seeds)
        for name in names
        for arm in ARMS
    }
    change = {name: ppl[(name, "gnts")] / ppl[(name, "control")] - 1 for name in names}
    fig = figure(dirs, names, seeds, change, Path(args.page).with_suffix(".png"))
    every = [r for _, r in sweeps.values()] + list(results.values())
    params = next(iter(results.values()))["params"]
    lines = [
        "# Is GQC Adam-specific? GNTS under five optimizers",
        "",
        kit.generated_by(
            f"python -m experiments.studies.optimizer_generality --seeds={args.seeds} "
            f"--tokens={args.tokens} --microbatch={args.microbatch} --preset={args.preset}",
            every,
        ),
        "",
        f"Model: `{args.preset}` GPT ({params:,} parameters, byte tokens, {args.seq_len}-token "
        f"sequences); data: the default corpus; {args.tokens:,} tokens per run in microbatches "
        f"of {args.microbatch} sequences; global-norm clip 1.0, warmup 5% then cosine to 10% "
        "(on the microbatch clock under GNTS); b1 0.9, b2 0.95 and weight decay 0.1 where the "
        "optimizer has them (SGD: Nesterov momentum 0.9; Muon: `optax.contrib.muon`, Adam for "
        "non-matrix parameters). GNTS: thresholds relative to the model's own single-microbatch "
        "gradient norm, the reference's schedule shape (0.95 -> 0.25), at most 16 draws. "
        "Each optimizer's learning rate is the best of three (x1/3, x1, x3 around a usual "
        f"value) for its control on seed {seeds[0]}; GNTS uses the same rate.",
        "",
        "| optimizer | lr sweep (control, val loss) | lr | control val loss | GNTS val loss "
        "| control ppl | GNTS ppl | ppl change | GNTS draws/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        grid = sorted(lr for n, lr in sweeps if n == name)
        control = [results[(name, "control", s)]["eval_loss"] for s in seeds]
        gnts = [results[(name, "gnts", s)]["eval_loss"] for s in seeds]
        draws = statistics.mean(results[(name, "gnts", s)]["draws_per_step"] for s in seeds)
        lines.append(
            f"| {name} | "
            + ", ".join(f"{lr:.3g}: {sweeps[(name, lr)][1]['eval_loss']:.3f}" for lr in grid)
            + f" | {best[name]:.3g}{'*' if best[name] in (grid[0], grid[-1]) else ''} | {mean_std(control)} | {mean_std(gnts)} | {ppl[(name, 'control')]:.3f} "
            f"| {ppl[(name, 'gnts')]:.3f} | {change[name]:+.1%} | {draws:.2f} |"
        )
    helped = [n for n in names if change[n] < 0]
    lines += [
        "",
        (
            f"GNTS lowered perplexity under {', '.join(helped)} and raised it under "
            f"{', '.join(n for n in names if n not in helped) or 'none'}"
            if helped
            else "GNTS raised perplexity under every optimizer"
        )
        + " at this scale and budget. "
        + (
            "The sign is the same under every optimizer: here GQC's effect does not depend "
            "on the optimizer being Adam."
            if len(helped) in (0, len(names))
            else "The sign differs between optimizers: here GQC's effect depends on the optimizer."
        )
        + " A learning rate marked * is at the edge of its sweep (a wider sweep may move it).",
        "",
        f"![optimizers]({fig.name})",
        "",
        "Left: validation loss per optimizer, control solid and GNTS dashed (mean of seeds). "
        "Right: the perplexity change of GNTS against its control.",
        "",
    ]
    page = kit.write_page(args.page, lines)
    print(page.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
