"""Study: GQC on the steps-vs-tokens frontier, with the learning rate coupled to
the batch.

At one token budget every arm trains the same GPT on the same data order per
seed. The currency is optimizer steps (serial steps, what many accelerators turn
into wall-clock) at equal tokens and equal loss:

- fixed-batch AdamW at several batch sizes (the frontier), each with its own
  learning-rate sweep;
- the hand-made schedules: batch-size warmup (the window doubles at fixed
  fractions of the run, lr x sqrt(2) each time) and Seesaw (each halving of the
  cosine schedule becomes a doubled window, lr x sqrt(2) back);
- the adaptive controllers GNTS (relative and with the reference's schedule),
  GNS, ``snr`` and MHT, and the reference's SBC ramp (1 -> 8 microbatches), each
  as it is (learning rate fixed while the window grows) and with
  ``lr_scaling="sqrt"``.

Every arm's learning rate is the best of a 3-point sweep on the first seed
(``--extend N``: while the best rate is at an edge of the grid, up to ``N`` more
rates one grid step beyond it). The target of each seed is the small-batch
AdamW's final validation loss of that seed plus the seed noise band; an arm's
"steps to target" is where its evaluation curve first reaches it
(interpolated). Every run is an ``experiments.train`` run folder;
``docs/results/serial_steps.md`` and its figure are written from them.

    python -m experiments.studies.serial_steps [--seeds 0,1,2] [--tokens 300000]
        [--arms adamw-b1,gns+sqrt,...]

``--arms`` trains only the arms it names, in its order (the page lists them in
the plan's order): a long protocol, such as the ladder-xs one of ``make
serial-steps-xs``, can answer its main question first, and a rerun with more
arms reads the finished ones back.

``--critical_batch DIR`` sets every arm's batch per step against the critical
batch measured by branching in the critical-batch study's run folders ``DIR``
(``make critical-batch``, ``make critical-batch-xs``), read back through the kit:
a table per branch interval and the measured values drawn on the figure.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from experiments.config import Config
from experiments.studies import kit
from experiments.studies.kit import crossing, evals, mean_std, steps
from experiments.train import train_once

CONTROLLERS: dict[str, dict[str, Any]] = {
    "gnts-relative": {**kit.GNTS_RELATIVE},
    "gns": {"gqc.controller": "gns"},
    "snr": {"gqc.controller": "snr", "gqc.noise_ratio": 0.1},
    "gnts-reference": {**kit.GNTS_REFERENCE},
    "mht": {"gqc.controller": "mht"},
}
# Run with and without the coupling too, but a schedule made by hand, not adaptive.
RAMPS: dict[str, dict[str, Any]] = {
    "sbc-ramp": {"gqc.controller": "sbc", "gqc.sbc_draws": 1, "gqc.sbc_final_draws": 8},
}
SCHEDULES: dict[str, dict[str, Any]] = {
    "batch-warmup": {"gqc.controller": "batch_warmup"},
    "seesaw": {"gqc.controller": "seesaw"},
}
SCALE = {"preset": "ladder-s", "tokens": 20_000_000, "microbatch": 32, "seq_len": 256}


def arms(batches: list[int]) -> dict[str, tuple[int, dict]]:
    """name -> (batch multiplier of the microbatch, settings). The fixed-batch
    arms train on microbatches ``m`` times larger; the others draw the base
    microbatch."""
    out = {f"adamw-b{m}": (m, kit.ADAMW) for m in batches}
    out.update({name: (1, arm) for name, arm in SCHEDULES.items()})
    for name, arm in {**CONTROLLERS, **RAMPS}.items():
        out[name] = (1, arm)
        out[f"{name}+sqrt"] = (1, {**arm, "gqc.lr_scaling": "sqrt"})
    return out


def run_config(out: Path, args, seed: int, lr: float, multiplier: int, arm: dict) -> Config:
    return kit.run_config(
        out,
        {"gqc.max_draws": args.max_draws},
        arm,
        preset=args.preset,
        seq_len=args.seq_len,
        microbatch=args.microbatch * multiplier,
        tokens=args.tokens,
        seed=seed,
        evals=args.evals,
        data_dir=args.data_dir,
        lr=lr,
    )


def batch_per_step(run_dir: Path, sequences_per_draw: int) -> float:
    """Mean sequences per optimizer step over the run."""
    records = steps(run_dir)
    return sum(r["gqc/draws"] for r in records) * sequences_per_draw / max(len(records), 1)


def critical_intervals(cbs: list[dict]) -> list[tuple[int, int, list[int]]]:
    """(start, stop) in tokens of each branch interval, with its measured critical
    batch per seed."""
    intervals: dict[tuple[int, int], list[int]] = {}
    for row in cbs:
        intervals.setdefault((row["start"], row["stop"]), []).append(row["sequences"])
    return [(start, stop, values) for (start, stop), values in sorted(intervals.items())]


def figure(dirs: dict, plan: dict, seeds: list[int], args, out: Path, cbs: list[dict]) -> Path:
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for i, (name, (m, _)) in enumerate(plan.items()):
        color = plt.get_cmap("tab20")(i % 20)  # more arms than the default cycle's 10
        curves = [evals(dirs[(name, s)]) for s in seeds]
        n = min(len(c) for c in curves)
        loss = [statistics.mean(c[i]["eval/loss"] for c in curves) for i in range(1, n)]
        step = [statistics.mean(c[i]["step"] for c in curves) for i in range(1, n)]
        tokens = [curves[0][i]["tokens"] for i in range(1, n)]
        style = "--" if name.startswith("adamw") else "-"
        axes[0].plot(step, loss, style, marker=".", ms=3, color=color, label=name)
        axes[1].plot(tokens, loss, style, marker=".", ms=3, color=color, label=name)
        records = steps(dirs[(name, seeds[0])])
        size = args.microbatch * m
        axes[2].plot(
            [r["tokens"] for r in records],
            [r["gqc/draws"] * size for r in records],
            style,
            lw=1,
            color=color,
        )
    axes[0].set(title="val loss vs optimizer steps (mean of seeds)", xlabel="optimizer steps")
    axes[0].set(xscale="log", ylabel="val loss")
    axes[1].set(title="val loss vs tokens (mean of seeds)", xlabel="tokens")
    for j, (start, stop, values) in enumerate(critical_intervals(cbs)):
        of_seeds = f", mean of {len(values)} seeds" if len(values) > 1 else ""
        axes[2].hlines(
            statistics.mean(values),
            start,
            min(stop, args.tokens),  # a longer critical-batch run: up to this one's end
            color="k",
            lw=3,
            zorder=5,
            label=None if j else f"critical batch (measured{of_seeds})",
        )
    title = f"batch per step (seed {seeds[0]})" + (" and the critical batch" if cbs else "")
    axes[2].set(title=title, xlabel="tokens")
    axes[2].set(ylabel="sequences per step", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    # The arms' colours are the same in every panel: the right one names the bars alone.
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    if cbs:
        axes[2].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return kit.save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/serial_steps", "docs/results/serial_steps.md")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tokens", type=int, default=300_000, help="token budget per run")
    parser.add_argument("--microbatch", type=int, default=8, help="sequences per microbatch")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batches", default="1,2,4", help="fixed-batch AdamW: microbatches")
    parser.add_argument("--lr", type=float, default=3e-3, help="centre of every sweep")
    parser.add_argument("--sweep", default="0.5,1,2", help="multipliers of the centre lr")
    parser.add_argument(
        "--extend",
        type=int,
        default=0,
        help="rates added beyond a sweep whose best rate is at its edge, at most",
    )
    parser.add_argument("--max_draws", type=int, default=16)
    parser.add_argument("--evals", type=int, default=24, help="evaluations per run")
    parser.add_argument(
        "--arms", default="", help="only these arms, trained in this order (default: all)"
    )
    parser.add_argument(
        "--critical_batch",
        default="",
        help="a critical-batch study's run folders: its measured critical batch on the page",
    )
    parser.add_argument("--epsilon", type=float, default=0.02, help="its loss tolerance (nats)")
    args = kit.parse_args(parser, argv, SCALE)
    seeds = [int(s) for s in args.seeds.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    sweep = [float(v) for v in args.sweep.split(",")]
    plan = arms(batches)
    order = list(plan)
    if args.arms:
        order = args.arms.split(",")
        unknown = [name for name in order if name not in plan]
        if unknown:
            parser.error(f"--arms: unknown arm(s) {unknown}; expected names from {list(plan)}")
        if f"adamw-b{batches[0]}" not in order:
            parser.error(f"--arms must include adamw-b{batches[0]}, whose loss is the target")
        plan = {name: arm for name, arm in plan.items() if name in order}
    root = Path(args.out)
    cbs: list[dict] = []
    if args.critical_batch:
        try:
            cbs = kit.measured_critical_batch(Path(args.critical_batch), args.epsilon)
        except (OSError, ValueError) as error:
            parser.error(f"--critical_batch={args.critical_batch}: {error}")

    lrs, swept, dirs, results = {}, {}, {}, {}
    for name in order:
        m, arm = plan[name]
        # Fixed-batch arms sweep around the square-root rule's rate for their batch.
        centre = args.lr * math.sqrt(m)
        grid = [centre * v for v in sweep]
        for lr in grid:
            swept[(name, lr)] = sweep_run(root / name, args, seeds[0], lr, m, arm)
        lrs[name] = best_rate(swept, name)
        # A best rate at an edge of the grid: one more step of the grid beyond it.
        for _ in range(args.extend if len(grid) > 1 else 0):
            if lrs[name] == grid[-1]:
                grid.append(grid[-1] * grid[-1] / grid[-2])
                lr = grid[-1]
            elif lrs[name] == grid[0]:
                grid.insert(0, grid[0] * grid[0] / grid[1])
                lr = grid[0]
            else:
                break
            swept[(name, lr)] = sweep_run(root / name, args, seeds[0], lr, m, arm)
            lrs[name] = best_rate(swept, name)
        for seed in seeds:
            if seed == seeds[0]:
                out, result = swept[(name, lrs[name])]
            else:
                out = root / name / f"s{seed}"
                result = train_once(run_config(out, args, seed, lrs[name], m, arm))
            dirs[(name, seed)], results[(name, seed)] = out, result
    fig = figure(dirs, plan, seeds, args, Path(args.page).with_suffix(".png"), cbs)
    page = write_page(args, plan, seeds, batches, sweep, lrs, swept, dirs, results, fig, cbs)
    print(page.read_text())
    return 0


def sweep_run(root: Path, args, seed: int, lr: float, m: int, arm: dict) -> tuple[Path, dict]:
    """One point of an arm's learning-rate sweep: its folder and summary."""
    out = root / "lr-sweep" / f"lr{lr:.3g}"
    return out, train_once(run_config(out, args, seed, lr, m, arm))


def best_rate(swept: dict, name: str) -> float:
    """The swept rate of ``name`` with the lowest final validation loss."""
    losses = {lr: result["eval_loss"] for (n, lr), (_, result) in swept.items() if n == name}
    return min(losses, key=losses.__getitem__)


def analyse(plan, seeds, batches, dirs, results, args) -> dict:
    """Per arm: final losses, steps, steps to each seed's target, batch per step."""
    base = f"adamw-b{batches[0]}"
    finals = {name: [results[(name, s)]["eval_loss"] for s in seeds] for name in plan}
    band = statistics.stdev(finals[base]) if len(seeds) > 1 else 0.0
    targets = {s: results[(base, s)]["eval_loss"] + band for s in seeds}
    rows = {}
    for name, (m, _) in plan.items():
        reached = [crossing(dirs[(name, s)], targets[s]) for s in seeds]
        rows[name] = {
            "loss": finals[name],
            "steps": statistics.mean(results[(name, s)]["steps"] for s in seeds),
            "to_target": [r[0] for r in reached if r is not None],
            "batch": statistics.mean(
                batch_per_step(dirs[(name, s)], args.microbatch * m) for s in seeds
            ),
            "seconds": statistics.mean(results[(name, s)]["elapsed_s"] for s in seeds),
        }
    base_steps = statistics.mean(rows[base]["to_target"]) if rows[base]["to_target"] else None
    for row in rows.values():
        complete = len(row["to_target"]) == len(seeds)
        row["fewer"] = (
            1 - statistics.mean(row["to_target"]) / base_steps if complete and base_steps else None
        )
    return {"base": base, "band": band, "rows": rows}


def write_page(args, plan, seeds, batches, sweep, lrs, swept, dirs, results, fig, cbs) -> Path:
    a = analyse(plan, seeds, batches, dirs, results, args)
    base, band, rows = a["base"], a["band"], a["rows"]
    params = results[(base, seeds[0])]["params"]
    every = [r for _, r in swept.values()] + list(results.values())
    lines = [
        "# Serial steps at equal tokens: GQC against the batch-size frontier",
        "",
        kit.generated_by(
            f"python -m experiments.studies.serial_steps --seeds={args.seeds} "
            f"--tokens={args.tokens} --microbatch={args.microbatch} --preset={args.preset} "
            f"--batches={args.batches} --lr={args.lr:g} --sweep={args.sweep}"
            + (f" --extend={args.extend}" if args.extend else "")
            + (f" --arms={args.arms}" if args.arms else "")
            + (
                f" --critical_batch={args.critical_batch} --epsilon={args.epsilon:g}"
                if args.critical_batch
                else ""
            ),
            every,
        ),
        "",
        f"Model: `{args.preset}` GPT ({params:,} parameters, byte tokens, {args.seq_len}-token "
        f"sequences); data: the default corpus (Shakespeare); {args.tokens:,} tokens per run; "
        f"seeds {args.seeds} (a seed sets the initialisation and the data order; every arm of "
        "a seed sees the same tokens in the same order). AdamW (b1 0.9, b2 0.95, weight decay "
        "0.1, clip 1.0), warmup 5% then cosine to 10% on the microbatch clock. Fixed-batch arms "
        f"`adamw-bM` train on microbatches of M x {args.microbatch} sequences; every other arm "
        f"draws microbatches of {args.microbatch} and steps on windows of them (at most "
        f'{args.max_draws}). `+sqrt`: `lr_scaling="sqrt"`, a window of k microbatches steps '
        "at lr x sqrt(k); batch-warmup (windows double at 10%, 20%, 40% of the run) and "
        "Seesaw use the square-root rule too. Each arm's learning rate is the best of "
        f"{', '.join(f'x{v:g}' for v in sweep)} around {args.lr:g} (x sqrt(M) for `adamw-bM`) "
        f"on seed {seeds[0]}"
        + (
            f"; while the best rate is at an edge of the grid, up to {args.extend} more rates "
            "one grid step beyond it."
            if args.extend
            else "."
        ),
        "",
        f"Target of each seed: `{base}`'s final validation loss of that seed plus the seed "
        f"noise band (the std of `{base}`'s final losses over seeds, {band:.4f}). Steps to "
        "target: the optimizer step at which an arm's validation curve first reaches it, "
        f"interpolated between its {args.evals} evaluations, mean over seeds; fewer steps: "
        f"against `{base}`'s own steps to the same targets. A sweep whose best rate is at "
        "the edge of its grid is marked below: that arm may do better at a rate outside it.",
        "",
        "| arm | lr | val loss | opt steps | steps to target | fewer steps | "
        "batch/step (seqs) | wall-clock (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in plan:
        r = rows[name]
        reached = len(r["to_target"])
        to_target = (
            f"{statistics.mean(r['to_target']):.0f}"
            + ("" if reached == len(seeds) else f" ({reached} of {len(seeds)} seeds)")
            if reached
            else "never"
        )
        fewer = "–" if r["fewer"] is None else f"{r['fewer']:+.0%}"
        lines.append(
            f"| {name} | {lrs[name]:.3g} | {mean_std(r['loss'])} | {r['steps']:.0f} | "
            f"{to_target} | {fewer} | {r['batch']:.1f} | {r['seconds']:.0f} |"
        )
    lines += ["", "## Learning-rate sweeps (first seed, val loss)", ""]
    for name in plan:
        grid = sorted(lr for n, lr in swept if n == name)
        cells = ", ".join(f"{lr:.3g}: {swept[(name, lr)][1]['eval_loss']:.4f}" for lr in grid)
        edge = " (best at the edge of the grid)" if lrs[name] in (grid[0], grid[-1]) else ""
        lines.append(f"- {name}: {cells}{edge}")
    lines += ["", "## Against the goal", "", *verdict(rows, base, band, seeds), ""]
    if cbs:
        lines += against_critical_batch(args, plan, seeds, dirs, cbs)
    lines += [
        f"![serial steps]({fig.name})",
        "",
        "Left: validation loss against optimizer steps (log scale) and, middle, against "
        "tokens, mean of seeds. Right: sequences per optimizer step over training (first "
        "seed). Dashed: fixed-batch AdamW."
        + (" Black bars: the measured critical batch over each branch interval." if cbs else ""),
        "",
    ]
    return kit.write_page(args.page, lines)


def against_critical_batch(args, plan, seeds, dirs, cbs) -> list[str]:
    """The page's section: each arm's batch per step within each branch interval
    of the critical-batch study, against the critical batch measured there."""
    intervals = critical_intervals(cbs)
    means = [statistics.mean(values) for _, _, values in intervals]
    first = cbs[0]
    cbs_seeds = sorted({row["seed"] for row in cbs})
    lines = [
        "## Batch per step against the measured critical batch",
        "",
        f"The critical batch measured by branching in `{args.critical_batch}` (`{first['preset']}`"
        f", microbatches of {first['microbatch']} x {first['seq_len']}-token sequences, "
        f"{first['tokens']:,} tokens per run against {args.tokens:,} here, "
        f"seed{'s' * (len(cbs_seeds) > 1)} {', '.join(map(str, cbs_seeds))}; "
        f"epsilon {args.epsilon:g} nats; its own page gives the protocol): the largest batch, "
        "at lr x sqrt(batch / microbatch), whose loss after a branch stays within epsilon of "
        "the microbatch's. Cells: an arm's mean "
        "sequences per optimizer step over the steps that end within each branch interval "
        "(in tokens), mean over seeds; '–' where no step ends there.",
        "",
        "| arm | " + " | ".join(f"{a:,}-{b:,}" for a, b, _ in intervals) + " | above it |",
        "|---|" + "---|" * len(intervals) + "---|",
        "| **measured critical batch** | "
        + " | ".join(
            f"**{mean:.0f}**" + (f" ({min(v)}-{max(v)})" if min(v) < max(v) else "")
            for mean, (_, _, v) in zip(means, intervals, strict=True)
        )
        + " | |",
    ]
    for name, (m, _) in plan.items():
        cells = [
            statistics.mean(
                kit.mean_batch_between(dirs[(name, s)], args.microbatch * m, a, b) for s in seeds
            )
            for a, b, _ in intervals
        ]
        counted = [(c, v) for c, v in zip(cells, means, strict=True) if not math.isnan(c)]
        above = sum(c > v for c, v in counted)
        lines.append(
            f"| {name} | "
            + " | ".join("–" if math.isnan(c) else f"{c:.1f}" for c in cells)
            + f" | {above} of {len(counted)} |"
        )
    return [*lines, ""]


def verdict(rows: dict, base: str, band: float, seeds: list[int]) -> list[str]:
    """The goal: an adaptive arm within seed noise of the small-batch AdamW's
    final loss with >= 45% fewer steps, beating batch-size warmup and Seesaw."""
    base_loss = statistics.mean(rows[base]["loss"])
    adaptive = [n for n in rows if n.split("+")[0] in CONTROLLERS]

    def within(name):
        return statistics.mean(rows[name]["loss"]) <= base_loss + band

    def fewer(name):
        return rows[name]["fewer"] if rows[name]["fewer"] is not None else -1.0

    schedules = [n for n in SCHEDULES if n in rows]
    lines = []
    for name in schedules:
        f = rows[name]["fewer"]
        lines.append(
            f"- {name}: {'within' if within(name) else 'outside'} the noise band of `{base}`'s "
            f"final loss, "
            + (f"{f:.0%} fewer steps to target." if f is not None else "target not reached.")
        )
    if adaptive:
        # Closest: the most steps saved among arms that reach every target, else
        # the lowest final loss.
        reaching = [n for n in adaptive if rows[n]["fewer"] is not None]
        best = (
            max(reaching, key=fewer)
            if reaching
            else min(adaptive, key=lambda n: statistics.mean(rows[n]["loss"]))
        )
        reached = within(best) and fewer(best) >= 0.45
        ahead = all(fewer(best) > fewer(n) for n in schedules)
        if not (reached and ahead):
            goal = "not met"
        elif len(schedules) == len(SCHEDULES):
            goal = "met"
        else:
            goal = "met against the schedules run here (not all of them ran)"
        lines.append(
            f"- The adaptive arm that comes closest is **{best}**: "
            + (
                f"{fewer(best):.0%} fewer steps to target"
                if rows[best]["fewer"] is not None
                else f"the lowest final loss of them; it reaches the target in "
                f"{len(rows[best]['to_target'])} of {len(seeds)} seeds"
            )
            + f", final loss {statistics.mean(rows[best]['loss']):.4f} against "
            f"{base_loss:.4f} (band {band:.4f}). The goal (within the band, >= 45% fewer "
            f"steps, ahead of batch-size warmup and Seesaw) is {goal} here."
        )
    gaps = []
    for n in [*CONTROLLERS, *RAMPS]:
        if n not in rows or f"{n}+sqrt" not in rows:
            continue
        without, coupled = (statistics.mean(rows[a]["loss"]) - base_loss for a in (n, f"{n}+sqrt"))
        gaps.append(f"{n} {without:+.4f} -> {coupled:+.4f}" + " (closed)" * (coupled <= band))
    if gaps:
        lines.append(
            f"- The equal-token gap to `{base}`'s final loss, without -> with the square-root "
            "coupling (nats; closed: within the band): " + ", ".join(gaps) + "."
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
