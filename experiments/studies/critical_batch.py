"""Study: the critical batch size measured by branching, and the batches the
controllers choose.

The critical batch at a point of training is the largest batch that still
trains as well per token as a small one, with the learning rate scaled to the
batch (the square-root rule for Adam). It is measured the way Merrill et al.
(2025, "Critical Batch Size Revisited") do, by branching: one reference run per
seed trains AdamW on windows of one microbatch of ``B`` sequences and saves
checkpoints; from its checkpoints at several points, branches
(``--train.branch_from``) continue the same run on the same data and the same
learning-rate schedule with windows of ``k`` microbatches (a batch of ``kB``
sequences) at lr x sqrt(k), for ``delta`` microbatches. ``L_k`` is a branch's
validation loss at the end; the reference itself is the ``k = 1`` branch (a
branch with the reference's settings continues it bit for bit). A window
passes when its loss is within ``epsilon`` of every smaller window's; the
critical batch at that point is the largest ``kB`` for which every ``j <= k``
passes, bracketed by the next batch tried (Merrill et al.'s rule,
:func:`experiments.studies.kit.critical_bracket`).

GNTS (relative), GNS and ``snr``, each with ``lr_scaling="sqrt"`` at the
learning rate and own hyperparameter tuned on the tiny serial-steps page,
train from scratch on the same microbatches; the batches they choose (token
weighted) are set against the measured critical batch. Every run is scored on
the same 512 validation sequences. Every run is an
``experiments.train`` run folder under ``--out``; its small record (settings,
final loss, eval curve, window per step, commit: :func:`kit.record`) is written
beside the page (``docs/results/critical_batch/seed*/...json``), and the page and
its figure are written from those records alone: a rerun trains only the runs
whose records are missing (a branch's reference again if its checkpoints are
gone), and ``--from_records`` trains nothing.

    python -m experiments.studies.critical_batch [--seeds 0,1,2] [--windows 1,2,4,8,16,32]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from experiments.config import Config
from experiments.studies import kit
from experiments.studies.kit import critical_bracket, loss_at
from experiments.train import train_once

# The reference and its branches: windows of k microbatches at lr x sqrt(k).
WINDOW = {"gqc.controller": "sbc", "gqc.lr_scaling": "sqrt"}
# Learning rates and own hyperparameters as tuned on the tiny serial-steps page
# (docs/results/serial_steps.md, chosen on seed 100).
CONTROLLERS: dict[str, dict[str, Any]] = {
    "gnts-relative+sqrt": {
        **kit.GNTS_RELATIVE,
        "gqc.lr_scaling": "sqrt",
        "gqc.final_threshold": 0.75,
        "optim.lr": 0.0015,
    },
    "gns+sqrt": {
        "gqc.controller": "gns",
        "gqc.lr_scaling": "sqrt",
        "gqc.tolerance": 0.05,
        "optim.lr": 0.00212,
    },
    "snr+sqrt": {
        "gqc.controller": "snr",
        "gqc.noise_ratio": 0.2,
        "gqc.lr_scaling": "sqrt",
        "optim.lr": 0.00106,
    },
}
EVAL_SEQUENCES = 512  # one validation set for every run
SCALE = {
    "preset": "ladder-s",
    "tokens": 20_480_000,
    "microbatch": 32,
    "seq_len": 256,
    "points": "256,640,1280,1792",
    "delta": 512,
    "windows": "1,2,4,8,16,32,64",
    "checkpoint_every": 128,
    "eval_every": 128,
}


def _config(out: Path, args, seed: int, *extra: dict) -> Config:
    return kit.run_config(
        out,
        {
            "gqc.max_draws": max(_ints(args.windows)),
            "train.eval_every": args.eval_every,
            "data.eval_sequences": EVAL_SEQUENCES,
        },
        *extra,
        preset=args.preset,
        seq_len=args.seq_len,
        microbatch=args.microbatch,
        tokens=args.tokens,
        seed=seed,
        evals=1,
        data_dir=args.data_dir,
        lr=args.lr,
    )


# What every record's settings hold besides its arm's own keys.
RECORDED = ("model.preset", "model.seq_len", "data.microbatch_size", "data.seed", "train.tokens")


def _settings(config: Config, keys) -> dict[str, Any]:
    """``config``'s values of the dotted ``keys`` (``train.branch_from``, a local
    path, left out)."""
    tree = config.to_dict()
    return {
        key: tree[key.split(".")[0]][key.split(".")[1]]
        for key in keys
        if key != "train.branch_from"
    }


def _interval(bracket: tuple[int, int | None]) -> str:
    low, high = bracket
    return f"[{low}, {high})" if high is not None else f">= {low}"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/critical_batch", "docs/results/critical_batch.md")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--microbatch", type=int, default=8, help="B: sequences per microbatch")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.00212, help="the reference's (adamw-b1's)")
    parser.add_argument(
        "--points", default="40,80,120,160,200", help="branch points (microbatches)"
    )
    parser.add_argument("--delta", type=int, default=48, help="microbatches of each branch")
    parser.add_argument("--windows", default="1,2,4,8,16", help="k: microbatches per step")
    parser.add_argument("--epsilon", type=float, default=0.01, help="loss tolerance (nats)")
    parser.add_argument("--checkpoint_every", type=int, default=40)
    parser.add_argument("--eval_every", type=int, default=8)
    kit.records_flags(parser)
    args = kit.parse_args(parser, argv, SCALE)
    seeds, points, windows = _ints(args.seeds), _ints(args.points), _ints(args.windows)
    total = args.tokens // (args.microbatch * args.seq_len)
    problems = [
        f"--windows must start with 1, got {args.windows!r}" * (windows[0] != 1),
        f"--delta={args.delta} must be a multiple of every window"
        * bool(args.delta % max(windows)),
    ] + [
        f"point {p}: must be a multiple of --checkpoint_every={args.checkpoint_every}, "
        f"point + --delta a multiple of --eval_every={args.eval_every} and at most the "
        f"run's {total} microbatches"
        for p in points
        if p % args.checkpoint_every or (p + args.delta) % args.eval_every or p + args.delta > total
    ]
    if any(problems):
        parser.error("; ".join(filter(None, problems)))
    page = Path(args.page)
    records = kit.records_setup(args, "experiments.studies.critical_batch", argv)
    root = Path(args.out)

    def run(name: str, config: Config, arm: dict) -> dict:
        """The record ``name`` under the records, trained first if it is not there;
        its settings: the protocol's and ``arm``'s keys. A record of other
        settings is refused: the page would show another run."""
        path = records / f"{name}.json"
        settings = _settings(config, [*RECORDED, *arm])
        if path.is_file():
            value = json.loads(path.read_text())
            if value["settings"] != settings:
                changed = sorted(
                    f"{k}={value['settings'].get(k)!r} (now {v!r})"
                    for k, v in settings.items()
                    if value["settings"].get(k) != v
                )
                parser.error(
                    f"{path}: trained with {', '.join(changed) or 'other keys'}; "
                    "remove the record to retrain it."
                )
            return value
        if args.from_records:
            parser.error(f"--from_records: no record {path}")
        summary = {**train_once(config), "commit": args.commit}
        value = kit.record(Path(config.train.out_dir), summary, args.microbatch, settings)
        kit.write_record(path, value)
        return value

    runs: dict[str, dict] = {}  # record name -> record
    refs: dict[int, dict] = {}
    branches: dict[tuple[int, int, int], dict] = {}  # (seed, point, k) -> record
    chosen: dict[tuple[int, str], dict] = {}
    for seed in seeds:
        ref = root / f"seed{seed}" / "reference"
        keep = {
            "gqc.sbc_draws": 1,
            "train.checkpoint_every": args.checkpoint_every,
            "train.keep_checkpoints": total // args.checkpoint_every + 1,  # every one
        }
        ref_config = _config(ref, args, seed, WINDOW, keep)
        names = {
            (point, k): f"seed{seed}/from{point}/window{k}" for point in points for k in windows[1:]
        }
        if not args.from_records and not all(
            (records / f"{n}.json").is_file() for n in names.values()
        ):
            train_once(ref_config)  # a branch to train needs the reference's checkpoints
        name = f"seed{seed}/reference"
        refs[seed] = runs[name] = run(name, ref_config, WINDOW | {"gqc.sbc_draws": 1})
        for (point, k), name in names.items():
            branch = {
                "gqc.sbc_draws": k,
                "train.branch_from": str(ref),
                "train.branch_step": point,
                "train.stop_after": args.delta,
            }
            out = root / f"seed{seed}" / f"from{point}" / f"window{k}"
            config = _config(out, args, seed, WINDOW, branch)
            branches[(seed, point, k)] = runs[name] = run(name, config, WINDOW | branch)
        for controller, settings in CONTROLLERS.items():
            out = root / f"seed{seed}" / controller
            name = f"seed{seed}/{controller}"
            config = _config(out, args, seed, settings)
            chosen[(seed, controller)] = runs[name] = run(name, config, settings)

    losses = {}  # (seed, point) -> {k: loss after delta}
    for seed in seeds:
        for point in points:
            end = point + args.delta
            losses[(seed, point)] = {1: loss_at(refs[seed], end)} | {
                k: loss_at(branches[(seed, point, k)], end) for k in windows[1:]
            }
    brackets = {
        key: critical_bracket(values, args.epsilon, args.microbatch)
        for key, values in losses.items()
    }
    crit = {key: low for key, (low, _) in brackets.items()}  # the critical batch
    fig = figure(args, seeds, points, windows, losses, crit, chosen, page.with_suffix(".png"))
    write_page(args, seeds, points, windows, losses, brackets, chosen, refs, runs, fig)
    print(page.read_text())
    return 0


def _batches(rec: dict, tokens_per_microbatch: int) -> list[tuple[int, int]]:
    """A record's (microbatch at the step, sequences in the step's window) of every step."""
    return [(t // tokens_per_microbatch, d * rec["sequences_per_draw"]) for t, d in rec["windows"]]


def figure(args, seeds, points, windows, losses, crit, chosen, out: Path) -> Path:
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    sizes = [k * args.microbatch for k in windows]
    for j, point in enumerate(points):
        rises = [
            statistics.mean(losses[(s, point)][k] - losses[(s, point)][1] for s in seeds)
            for k in windows
        ]
        axes[0].plot(sizes, rises, marker="o", color=f"C{j}", label=f"from microbatch {point}")
    axes[0].axhline(args.epsilon, color="k", ls="--", lw=0.8, label=f"epsilon {args.epsilon:g}")
    axes[0].set(
        title=f"loss after {args.delta} microbatches, minus the batch of {args.microbatch}",
        xlabel="sequences per step (lr x sqrt(batch / B))",
        ylabel="val loss rise (nats, mean of seeds)",
        xscale="log",
    )
    axes[0].legend(fontsize=7)
    seed = seeds[0]
    for c, (name, marker) in enumerate(zip(CONTROLLERS, ".x+", strict=True)):
        points_ = _batches(chosen[(seed, name)], args.microbatch * args.seq_len)
        axes[1].plot(*zip(*points_, strict=True), marker, ms=4, ls="", color=f"C{c}", label=name)
    mids = [p + args.delta / 2 for p in points]
    measured = [[crit[(s, p)] for s in seeds] for p in points]
    axes[1].errorbar(
        mids,
        [statistics.mean(m) for m in measured],
        yerr=[
            [statistics.mean(m) - min(m) for m in measured],
            [max(m) - statistics.mean(m) for m in measured],
        ],
        fmt="s",
        color="k",
        capsize=3,
        label="critical batch (mean, range of seeds)",
    )
    axes[1].set(
        title=f"batch per step (seed {seed}) and the measured critical batch",
        xlabel="microbatch",
        ylabel="sequences per step",
        yscale="log",
    )
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return kit.save_figure(fig, out)


def write_page(args, seeds, points, windows, losses, brackets, chosen, refs, runs, fig):
    sizes = [k * args.microbatch for k in windows]
    lines = [
        "# Critical batch size by branching, and the batches the controllers choose",
        "",
        kit.records_line(args.command, list(runs.values()), args.records),
        "",
        f"Model: `{args.preset}` GPT, byte tokens, {args.seq_len}-token sequences; data: the "
        f"default corpus; seeds {args.seeds} (a seed sets the initialisation and the data "
        f"order). The reference run of each seed trains AdamW (lr {args.lr:g}, b1 0.9, b2 "
        "0.95, weight decay 0.1, clip 1.0, warmup 5% then cosine to 10%, on the microbatch "
        f"clock) on windows of one microbatch of B = {args.microbatch} sequences for "
        f"{args.tokens:,} tokens. From its checkpoints at microbatches {args.points}, "
        f"branches (`--train.branch_from`) train {args.delta} microbatches more on the same "
        "data and schedule with windows of k microbatches (`sbc`), a batch of kB sequences at "
        'lr x sqrt(k) (`lr_scaling="sqrt"`). L_k: a branch\'s validation loss at the end; '
        "the reference is the k = 1 branch. A batch passes when its L is within epsilon "
        f"= {args.epsilon:g} nats of every smaller batch's; the critical batch is the "
        "largest kB for which every batch up to it passes (Merrill et al. 2025's rule), "
        "given per seed as the interval [kB, the next batch tried), open when every batch "
        f"passed. Every run is scored on the same {EVAL_SEQUENCES} validation sequences, "
        "spread over the validation split.",
        "",
        "## Loss rise of each batch against the batch of B (mean ± std over seeds, nats)",
        "",
        "| from microbatch | tokens | "
        + " | ".join(f"{b} seqs" for b in sizes)
        + " | critical batch per seed | mean of the lower ends |",
        "|---|---|" + "---|" * len(sizes) + "---|---|",
    ]
    tokens_per_microbatch = args.microbatch * args.seq_len
    for point in points:
        cells = [
            kit.mean_std((losses[(s, point)][k] - losses[(s, point)][1] for s in seeds), 3)
            for k in windows
        ]
        per_seed = [brackets[(s, point)][0] for s in seeds]
        intervals = [_interval(brackets[(s, point)]) for s in seeds]
        lines.append(
            f"| {point} | {point * tokens_per_microbatch:,} | "
            + " | ".join(cells)
            + f" | {', '.join(intervals)} | {statistics.mean(per_seed):.1f} |"
        )
    means = [statistics.mean(brackets[(s, p)][0] for s in seeds) for p in points]
    grows = means[-1] > means[0]
    lines += [
        "",
        f"The critical batch {'grows' if grows else 'does not grow'} over training here: "
        + " -> ".join(f"{m:.0f}" for m in means)
        + f" sequences from microbatch {points[0]} to {points[-1]}.",
        "",
        "## The batches the controllers choose",
        "",
        f'Each controller trains from scratch with `lr_scaling="sqrt"`, microbatches of '
        f"{args.microbatch} sequences and at most {max(windows)} per step, at the learning "
        "rate and own hyperparameter tuned on the tiny serial-steps page: "
        + "; ".join(
            f"{name} " + ", ".join(f"`{k}={v}`" for k, v in s.items() if k != "gqc.controller")
            for name, s in CONTROLLERS.items()
        )
        + ". Cells: the token-weighted mean batch (sequences) over the steps that end within "
        "each branch interval (mean over seeds), against the critical batch measured there "
        "(the mean of the lower ends).",
        "",
        "| controller | val loss | "
        + " | ".join(f"{p}-{p + args.delta}" for p in points)
        + " | above the critical batch |",
        "|---|---|" + "---|" * len(points) + "---|",
    ]
    for name in CONTROLLERS:
        loss = kit.mean_std(chosen[(s, name)]["eval_loss"] for s in seeds)
        chosen_means = [
            statistics.mean(
                kit.mean_batch_between(
                    chosen[(s, name)],
                    p * tokens_per_microbatch,
                    (p + args.delta) * tokens_per_microbatch,
                )
                for s in seeds
            )
            for p in points
        ]
        above = sum(c > m for c, m in zip(chosen_means, means, strict=True))
        lines.append(
            f"| {name} | {loss} | "
            + " | ".join(f"{c:.1f}" for c in chosen_means)
            + f" | {above} of {len(points)} intervals |"
        )
    final = kit.mean_std(refs[s]["eval_loss"] for s in seeds)
    lines += [
        "",
        f"Reference (batch {args.microbatch}) final val loss: {final}.",
        "",
        f"![critical batch]({fig.name})",
        "",
        "Left: each batch's loss rise over the batch of B after the branch (mean of seeds), "
        "per branch point; dashed: epsilon. Right: sequences per step each controller chose "
        "(first seed) and the measured critical batch at the middle of each branch interval.",
        "",
    ]
    return kit.write_page(args.page, lines)


if __name__ == "__main__":
    raise SystemExit(main())
