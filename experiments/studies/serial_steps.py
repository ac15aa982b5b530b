"""Study: GQC on the steps-vs-tokens frontier, tuned, with Adam's clocks in tokens.

At one token budget every arm trains the same GPT on the same data order per
seed. The currency is optimizer steps (serial steps, what many accelerators turn
into wall-clock) at equal tokens and equal loss:

- fixed-batch AdamW at several batch sizes (the frontier), and small-batch AdamW
  with a linear decay to zero (``adamw-b1-d2z``, Bergsma et al. 2025) and with
  b1, b2 squared (``adamw-b1-sq``: Adam's memory halved, what ``+tt`` gives a
  window of 2), which tests whether the base's own decays are tuned;
- the hand-made schedules: batch-size warmup (the window doubles at fixed
  fractions of the run), a late switch to a 4x batch at 70% of the tokens
  (``late-4x``, Wang et al. 2026), Seesaw as today's variant (the cosine between
  cuts) and in the paper's form (``seesaw-paper``: a step decay, the learning rate
  constant between cuts, Meterez et al. 2025), all at lr x sqrt(window);
- the adaptive controllers GNTS (relative), GNS, ``snr`` and MHT, GNTS with the
  reference's recipe and the reference's SBC ramp, at lr x sqrt(window);
- every schedule and controller again with Adam's clocks counted in tokens
  (``+tt``: ``gqc.token_time``, decays b^k and weight decay x k / sqrt(k));
- GNTS (relative) with its window capped at 4 microbatches, without and with
  ``+tt`` (``gnts-relative+sqrt+cap4``): whether bounding the window's jump
  removes the harm token time does GNTS at the default cap of 16;
- fixed windows taken in turn (``cycle-1-4``: 1, 4, 1, 4, ... microbatches;
  ``cycle-2-3``), SBC at lr x sqrt(window), without and with ``+tt``: windows
  that vary from step to step as GNTS's do, but not with the gradient.

Protocol: every arm's learning rate is chosen on a selection seed that is not
reported (``--select_seed``), on a grid of ``--sweep`` multipliers (a sqrt(2)
grid by default) extended while the best rate sits at its edge; an adaptive
controller's own hyperparameter (GNS tolerance, ``snr`` noise ratio, GNTS's final
relative threshold, MHT's percent error) is swept with it, its grid extended
the same way at the best rate. The reported seeds
then train afresh. Every run is scored on one validation set of
``--eval_sequences`` sequences spread over the validation split, the same for
every arm. Results are paired per seed against small-batch AdamW: the final-loss
difference with a 95% t-interval, and the optimizer steps to reach the base's
own loss at 50%, 75% and 100% of its run.

Every run is an ``experiments.train`` run folder; a small record of each (final
loss, eval curve, batch per step, commit) is written beside the page
(``docs/results/serial_steps/``), and the page and its figure are written from
those records alone (``--from_records`` rewrites them without the run folders).

    python -m experiments.studies.serial_steps [--seeds 0,1,2,3,4] [--tokens 300000]
        [--arms adamw-b1,gns+sqrt,...]

``--arms`` trains only the arms it names, in its order. ``--critical_batch DIR``
sets every arm's batch per step against the critical batch measured by branching
in the critical-batch study's records ``DIR`` (``docs/results/critical_batch``),
and places ``batch-warmup-cbs``'s doublings where that critical batch first
reaches twice the batch. ``--compare DIR`` sets each arm against its result in
another page's records ``DIR`` (this study at another scale).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from experiments.config import Config
from experiments.controllers import CONTROLLERS as REGISTRY
from experiments.studies import kit
from experiments.train import train_once

BASE = "adamw-b1"


@dataclasses.dataclass(frozen=True)
class Arm:
    """An arm: its batch multiplier of the microbatch, its settings, and the
    controller hyperparameter swept with the learning rate (key, values)."""

    multiplier: int
    settings: dict[str, Any]
    hyper: tuple[str, tuple[float, ...]] | None = None


SQRT = {"gqc.lr_scaling": "sqrt"}
TT = {"gqc.token_time": True}
# The adaptive controllers, each with its own hyperparameter swept.
CONTROLLERS: dict[str, Arm] = {
    "gnts-relative": Arm(1, {**kit.GNTS_RELATIVE}, ("gqc.final_threshold", (0.25, 0.5, 0.75))),
    "gns": Arm(1, {"gqc.controller": "gns"}, ("gqc.tolerance", (0.005, 0.015, 0.05))),
    "snr": Arm(1, {"gqc.controller": "snr"}, ("gqc.noise_ratio", (0.1, 0.2, 0.4))),
    "mht": Arm(1, {"gqc.controller": "mht"}, ("gqc.percent_error", (0.05, 0.1, 0.2))),
}
# An adaptive controller again with its window capped (controller -> cap): with
# token time a step on a window of k microbatches decays Adam's moments by b^k at
# once (b1 0.9 -> 0.19 for k = 16), so a cap bounds the largest such jump; the
# pair (with and without ``+tt``) tests whether the cap removes +tt's harm.
CAPPED: dict[str, int] = {"gnts-relative": 4}
# Controllers run as their reference recipes: the learning rate alone is swept.
RECIPES: dict[str, Arm] = {
    "gnts-reference": Arm(1, {**kit.GNTS_REFERENCE}),
    "sbc-ramp": Arm(1, {"gqc.controller": "sbc", "gqc.sbc_draws": 1, "gqc.sbc_final_draws": 8}),
}
# Fixed batch schedules (lr x sqrt(window) by default).
SCHEDULES: dict[str, Arm] = {
    "batch-warmup": Arm(1, {"gqc.controller": "batch_warmup"}),
    # Merrill et al.'s warmup: the batch doubles where the critical batch measured
    # at this budget (docs/results/critical_batch.md, mean of 3 seeds' lower ends)
    # first reaches twice it: 16 sequences at microbatch 120 of 292, 32 at 200.
    # With --critical_batch the fractions come from those runs (cbs_fractions).
    "batch-warmup-cbs": Arm(
        1, {"gqc.controller": "batch_warmup", "gqc.warmup_fractions": "0.41,0.68"}
    ),
    "late-4x": Arm(
        1,
        {"gqc.controller": "batch_warmup", "gqc.warmup_fractions": "0.7", "gqc.warmup_growth": 4},
    ),
    "seesaw": Arm(1, {"gqc.controller": "seesaw"}),
    "seesaw-paper": Arm(1, {"gqc.controller": "seesaw", "optim.schedule": "cosine_steps"}),
}
# Fixed windows taken in turn: steps whose windows vary as GNTS's do (1 to 4),
# but on a clock, not with the gradient; with their +tt twins they test whether
# varying windows alone make token time hurt.
CYCLES: dict[str, Arm] = {
    f"cycle-{a}-{b}": Arm(1, {"gqc.controller": "sbc", "gqc.sbc_cycle": f"{a},{b}", **SQRT})
    for a, b in ((1, 4), (2, 3))
}
# A fixed window of 2 microbatches at lr x sqrt(2), adamw-b2's batch accumulated.
# GNS at its tuned tolerance steps on windows of 2 almost throughout, so with +tt
# this is its control without adaptivity: what token time alone does there.
FIXED: dict[str, Arm] = {
    "window-2": Arm(1, {"gqc.controller": "sbc", "gqc.sbc_draws": 2, **SQRT}),
}
SCALE = {"preset": "ladder-s", "tokens": 20_000_000, "microbatch": 32, "seq_len": 256}


def arms(batches: list[int]) -> dict[str, Arm]:
    """name -> arm: the fixed-batch AdamW arms (``adamw-bM`` train on microbatches
    ``M`` times larger), decay-to-zero AdamW, then every schedule and controller,
    the capped controllers, the window cycles and the fixed window, each without
    and with ``+tt``."""
    out = {f"adamw-b{m}": Arm(m, kit.ADAMW) for m in batches}
    out[f"adamw-b{batches[0]}-d2z"] = Arm(
        batches[0], {**kit.ADAMW, "optim.schedule": "linear", "optim.min_lr_ratio": 0.0}
    )
    out[f"adamw-b{batches[0]}-sq"] = Arm(
        batches[0], {**kit.ADAMW, "optim.b1": 0.9**2, "optim.b2": 0.95**2}
    )
    for name, arm in SCHEDULES.items():
        out[name] = arm
        out[f"{name}+tt"] = dataclasses.replace(arm, settings={**arm.settings, **TT})
    for name, arm in {**CONTROLLERS, **RECIPES}.items():
        out[f"{name}+sqrt"] = dataclasses.replace(arm, settings={**arm.settings, **SQRT})
        out[f"{name}+sqrt+tt"] = dataclasses.replace(arm, settings={**arm.settings, **SQRT, **TT})
    for name, cap in CAPPED.items():
        capped = {**CONTROLLERS[name].settings, **SQRT, "gqc.max_draws": cap}
        out[f"{name}+sqrt+cap{cap}"] = dataclasses.replace(CONTROLLERS[name], settings=capped)
        out[f"{name}+sqrt+cap{cap}+tt"] = dataclasses.replace(
            CONTROLLERS[name], settings={**capped, **TT}
        )
    for name, arm in {**CYCLES, **FIXED}.items():
        out[name] = arm
        out[f"{name}+tt"] = dataclasses.replace(arm, settings={**arm.settings, **TT})
    return out


def run_config(out: Path, args, seed: int, lr: float, arm: Arm, hyper: dict) -> Config:
    return kit.run_config(
        out,
        {"gqc.max_draws": args.max_draws, "data.eval_sequences": args.eval_sequences},
        arm.settings,
        hyper,
        preset=args.preset,
        seq_len=args.seq_len,
        microbatch=args.microbatch * arm.multiplier,
        tokens=args.tokens,
        seed=seed,
        evals=args.evals,
        data_dir=args.data_dir,
        lr=lr,
    )


def record(run_dir: Path, summary: dict, sequences_per_draw: int, settings: dict) -> dict:
    """A run's small record (:func:`kit.record`) with Adam's statistics per step."""
    return {
        **kit.record(run_dir, summary, sequences_per_draw, settings),
        "adam": [adam_point(r) for r in kit.steps(run_dir) if "diag/second_moment" in r],
    }


def adam_point(step: dict) -> list[float]:
    """[tokens, Adam's second moment sum nu, the update's global norm] of one step
    (the norm from each layer's update ratio times its norm after the step, which
    differs from the norm before by about the ratio, ~1e-3)."""
    squares = sum(
        (step[key] * step[key.replace("update_ratio", "norm")]) ** 2
        for key in step
        if key.endswith("/update_ratio")
    )
    return [
        step["tokens"],
        float(f"{step['diag/second_moment']:.6g}"),
        float(f"{squares**0.5:.6g}"),
    ]


def train(path: Path, out: Path, config: Config, arm: Arm, hyper: dict, args) -> dict:
    """The record at ``path``, trained into ``out`` first if it is not there
    (with ``--rebuild_records``, written again from the finished run in ``out``,
    keeping the commit it was trained at)."""
    rebuild = args.rebuild_records and path.is_file() and (out / "summary.json").is_file()
    point = {**hyper, "optim.lr": config.optim.lr}
    if path.is_file() and not rebuild:
        return read_record(path, arm, point)
    commit = json.loads(path.read_text())["commit"] if rebuild else args.commit
    summary = {**train_once(config), "commit": commit}
    settings = {**arm.settings, **point}
    value = record(out, summary, args.microbatch * arm.multiplier, settings)
    kit.write_record(path, value)
    return value


class StaleRecordError(ValueError):
    """A record trained with settings other than its arm's."""


def read_record(path: Path, arm: Arm, point: dict | None = None) -> dict:
    """The record at ``path``, refused if it was trained with settings other than
    ``arm``'s (a changed arm, or batch-warmup-cbs's doublings from another
    critical batch) or at another ``point`` (its learning rate and own
    hyperparameter: a seed's record after the sweep chose anew; None: any
    point): its page would show runs of another arm or point."""
    value = json.loads(path.read_text())
    free = {"optim.lr", *(arm.hyper[:1] if arm.hyper else ())} if point is None else set()
    want = {k: v for k, v in {**arm.settings, **(point or {})}.items() if k not in free}
    changed = [
        f"{key}={value['settings'].get(key)!r} (now: {want[key]!r})"
        for key in want
        if value["settings"].get(key) != want[key]
    ]
    if changed:
        raise StaleRecordError(
            f"{path}: trained with {', '.join(changed)}; remove the record and its run folder "
            "to retrain it."
        )
    return value


def point_name(lr: float, hyper: dict) -> str:
    return f"lr{lr:.3g}" + "".join(f"-{k.split('.')[-1]}{v:g}" for k, v in hyper.items())


def sweep(name: str, arm: Arm, args, records: Path, root: Path) -> dict[str, dict]:
    """An arm's sweep on the selection seed: point name -> record. The learning
    rate on the ``--sweep`` grid around the centre (x sqrt(M) for ``adamw-bM``)
    times each value of the arm's own hyperparameter; then, while the best point
    sits at an edge, one more value beyond it: the rate first (at the best own
    value, up to ``--extend`` times at each own value), else the own
    hyperparameter (up to ``--extend`` times, at the best rate and the rates
    beside it, so that its rate can be bracketed there too)."""
    centre = args.lr * math.sqrt(arm.multiplier)
    grid = [centre * v for v in args.sweep]
    hypers = [{arm.hyper[0]: v} for v in arm.hyper[1]] if arm.hyper else [{}]
    points: dict[str, tuple[float, dict]] = {}
    out: dict[str, dict] = {}

    def run(lr: float, hyper: dict) -> None:
        key = point_name(lr, hyper)
        points[key] = (lr, hyper)
        folder = root / name / "sweep" / key
        config = run_config(folder, args, args.select_seed, lr, arm, hyper)
        out[key] = train(records / name / "sweep" / f"{key}.json", folder, config, arm, hyper, args)

    for hyper in hypers:
        for lr in grid:
            run(lr, hyper)
    limit = args.extend if len(grid) > 1 else 0
    rates_added: dict[tuple, int] = {}  # per own value
    owns_added = 0
    while True:
        lr, hyper = points[min(out, key=lambda k: out[k]["eval_loss"])]
        row = sorted(r for r, h in points.values() if h == hyper)
        rate = beyond(row, lr)
        at = tuple(hyper.items())
        if rate is not None and rates_added.get(at, 0) < limit:
            rates_added[at] = rates_added.get(at, 0) + 1
            run(rate, hyper)
            continue
        if arm.hyper:
            key = arm.hyper[0]
            own = beyond([h[key] for _, h in points.values()], hyper[key])
            if own is not None and owns_added < limit:
                owns_added += 1
                i = row.index(lr)
                for rate in row[max(i - 1, 0) : i + 2]:
                    run(rate, {key: own})
                continue
        return out


def beyond(values: list[float], best: float) -> float | None:
    """The next value past ``best`` if it is the largest or smallest of
    ``values`` (their outermost ratio again), else None."""
    tried = sorted(set(values))
    if len(tried) < 2 or tried[0] < best < tried[-1]:
        return None
    return tried[-1] ** 2 / tried[-2] if best == tried[-1] else tried[0] ** 2 / tried[1]


def best_point(swept: dict[str, dict]) -> dict:
    """The swept record with the lowest final validation loss."""
    return min(swept.values(), key=lambda r: r["eval_loss"])


def edges(arm: Arm, swept: dict[str, dict]) -> list[str]:
    """What of the best swept point sits at an edge of its grid: ``lr`` (among the
    rates run at the best own value) and the arm's own hyperparameter's key."""
    best = best_point(swept)["settings"]
    own = arm.hyper[0] if arm.hyper else None
    rates = sorted(
        rec["settings"]["optim.lr"]
        for rec in swept.values()
        if own is None or rec["settings"][own] == best[own]
    )
    out = ["lr"] if best["optim.lr"] in (rates[0], rates[-1]) else []
    owns = [rec["settings"][own] for rec in swept.values()] if own else []
    if own and best[own] in (min(owns), max(owns)):
        out.append(own)
    return out


def crossing(rec: dict, target: float) -> float | None:
    """Optimizer steps at which the eval loss first reaches ``target``,
    linearly interpolated between evaluations; None if it never does."""
    for (_, _, s0, l0), (_, _, s1, l1) in zip(rec["evals"], rec["evals"][1:], strict=False):
        if l1 <= target:
            f = (l0 - target) / max(l0 - l1, 1e-12)
            return s0 + f * (s1 - s0)
    return None


def loss_at_fraction(rec: dict, fraction: float) -> float:
    """The eval loss at the evaluation nearest ``fraction`` of the run's tokens."""
    last = rec["evals"][-1][1]
    return min(rec["evals"], key=lambda e: abs(e[1] - fraction * last))[3]


def batch_per_step(rec: dict) -> float:
    """Mean sequences per optimizer step over the run."""
    draws = [d for _, d in rec["windows"]]
    return sum(draws) * rec["sequences_per_draw"] / max(len(draws), 1)


def paired(values: list[float]) -> tuple[float, float]:
    """Mean and 95% t-interval half-width of paired per-seed differences."""
    from gqc_jax.student_t import t_quantile

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan
    q = float(t_quantile(0.95, len(values) - 1))
    return mean, q * statistics.stdev(values) / math.sqrt(len(values))


FRACTIONS = (0.5, 0.75, 1.0)


def analyse(plan: dict[str, Arm], seeds: list[int], results: dict) -> dict[str, dict]:
    """Per arm: final losses, their paired difference against the base, steps,
    and per target fraction the steps saved against the base (per seed that
    reaches it)."""
    base = {s: results[(BASE, s)] for s in seeds}
    rows = {}
    for name in plan:
        recs = [results[(name, s)] for s in seeds]
        diffs = [r["eval_loss"] - base[s]["eval_loss"] for s, r in zip(seeds, recs, strict=True)]
        saved = {}
        for fraction in FRACTIONS:
            ratios = []
            for s, r in zip(seeds, recs, strict=True):
                target = loss_at_fraction(base[s], fraction)
                mine, theirs = crossing(r, target), crossing(base[s], target)
                if mine is not None and theirs:
                    ratios.append(1 - mine / theirs)
            saved[fraction] = ratios
        rows[name] = {
            "loss": [r["eval_loss"] for r in recs],
            "diff": paired(diffs),
            "steps": statistics.mean(r["steps"] for r in recs),
            "saved": saved,
            "batch": statistics.mean(batch_per_step(r) for r in recs),
            "seconds": statistics.mean(r["elapsed_s"] for r in recs),
        }
    return rows


def another_scale(folder: Path, names: list[str]) -> dict[str, tuple[float, float, int]]:
    """Each of ``names`` with records in another page's ``folder``: its paired
    difference against the base there (mean, 95% half-width, seeds paired)."""

    def finals(name: str) -> dict[str, float]:
        paths = (folder / name).glob("s*.json")
        return {p.stem: json.loads(p.read_text())["eval_loss"] for p in paths}

    base = finals(BASE)
    out = {}
    for name in names:
        mine = finals(name)
        common = sorted(set(mine) & set(base))
        if common:
            out[name] = (*paired([mine[s] - base[s] for s in common]), len(common))
    return out


def against_another_scale(args, plan, seeds, rows) -> list[str]:
    """The page's section: each arm's difference against the base here and in
    ``--compare``'s records (the same study at another scale), in plan order."""
    folder = Path(args.compare)
    names = list(arms([int(b) for b in args.batches.split(",")]))
    there = another_scale(folder, names)
    params = json.loads(next(folder.glob(f"{BASE}/s*.json")).read_text())["params"]

    def cell(diff: tuple[float, ...]) -> str:
        return f"{diff[0]:+.4f} ± {diff[1]:.4f}"

    lines = [
        f"## Against the records in `{args.compare}`",
        "",
        f"Each arm's paired difference against `{BASE}` there ({params:,} parameters) and "
        "here (mean ± 95% half-width, seeds paired within each page); '–': not run. Arms "
        f"run there and not here: {sum(n not in plan for n in there if n != BASE)}.",
        "",
        "| arm | Δ there | Δ here |",
        "|---|---|---|",
    ]
    for name in names:
        if name == BASE or (name not in plan and name not in there):
            continue
        old = "–"
        if name in there:
            n = there[name][2]
            old = cell(there[name]) + (f" ({n} seeds)" if n != len(seeds) else "")
        lines.append(f"| {name} | {old} | {cell(rows[name]['diff']) if name in plan else '–'} |")
    return [*lines, ""]


def within(row: dict) -> bool:
    """The arm's final loss is not worse than the base's: the paired 95%
    interval of the difference reaches zero or below."""
    mean, half = row["diff"]
    return mean - (0.0 if math.isnan(half) else half) <= 0.0


def saved_cell(ratios: list[float], seeds: int) -> str:
    if not ratios:
        return "never"
    text = f"{statistics.mean(ratios):+.0%}"
    return text if len(ratios) == seeds else f"{text} ({len(ratios)}/{seeds})"


def verdict(rows: dict, seeds: list[int]) -> list[str]:
    """Which arm, if any, matches small-batch AdamW's final loss with the most
    steps saved; whether the token-time coupling closes a gap; the goal."""
    n = len(seeds)

    def final_saved(name: str) -> float:
        ratios = rows[name]["saved"][1.0]
        return statistics.mean(ratios) if len(ratios) == n else -math.inf

    adaptive = [name for name in rows if name.split("+")[0] in CONTROLLERS]
    schedules = [name for name in rows if name.split("+")[0] in SCHEDULES]
    lines = []
    matching = [name for name in rows if name != BASE and within(rows[name])]
    if matching:
        best = max(matching, key=final_saved)
        saved = final_saved(best)
        lines.append(
            f"- Arms whose final loss is not significantly worse than `{BASE}`'s (the "
            f"paired 95% interval reaches zero): {', '.join(matching)}. Of these, **{best}** reaches "
            f"`{BASE}`'s final loss with the most steps saved"
            + (f" ({saved:.0%})." if saved > -math.inf else " (not on every seed).")
        )
    else:
        lines.append(f"- No arm matches `{BASE}`'s final loss (paired 95% intervals).")
    gaps = []
    for name in rows:
        if name.endswith("+tt") and name[: -len("+tt")] in rows:
            twin = rows[name[: -len("+tt")]]
            without, coupled = twin["diff"][0], rows[name]["diff"][0]
            # +tt against its own twin, seed by seed (the base cancels).
            mean, half = paired(
                [a - b for a, b in zip(rows[name]["loss"], twin["loss"], strict=True)]
            )
            if without <= 0:
                closed = ""
            elif coupled > without:
                closed = ", wider"
            else:
                closed = f", {1 - coupled / without:.0%} of the gap closed"
            gaps.append(
                f"{name[: -len('+tt')]} {without:+.4f} -> {coupled:+.4f} "
                f"({mean:+.4f} ± {half:.4f}){closed}"
            )
    if gaps:
        lines.append(
            f"- Final-loss difference to `{BASE}` (paired mean, nats), without -> with "
            "Adam's clocks in tokens (`+tt`), and in brackets `+tt` minus its twin per seed "
            "(mean and 95% t-interval): " + "; ".join(gaps) + "."
        )
    if adaptive:
        best = min(adaptive, key=lambda a: rows[a]["diff"][0])
        goal = (
            within(rows[best])
            and final_saved(best) >= 0.45
            and all(final_saved(best) > final_saved(s) for s in schedules)
        )
        lines.append(
            f"- The goal (an adaptive arm not significantly worse than `{BASE}`'s final loss with "
            f">= 45% fewer steps, ahead of batch-size warmup and Seesaw) is "
            f"{'met' if goal else 'not met'} here; the adaptive arm closest in final loss is **{best}** "
            f"(difference {rows[best]['diff'][0]:+.4f} nats, steps to the final target "
            f"{saved_cell(rows[best]['saved'][1.0], n)})."
        )
    return lines


def window_jumps(rec: dict) -> list[int]:
    """Indices of the steps whose window is at least twice the previous step's."""
    draws = [d for _, d in rec["windows"]]
    return [i for i in range(1, len(draws)) if draws[i] >= 2 * draws[i - 1]]


def responses(rec: dict) -> tuple[int, float, float] | None:
    """Around each step whose window at least doubles: Adam's update norm and
    second moment at that step over the step before, as geometric means over the
    jumps; with the number of jumps. None without Adam diagnostics or jumps."""
    adam = rec.get("adam") or []
    if len(adam) != len(rec["windows"]):
        return None
    jumps = [i for i in window_jumps(rec) if adam[i - 1][1] > 0 and adam[i - 1][2] > 0]
    if not jumps:
        return None

    def geomean(column: int) -> float:
        logs = [math.log(adam[i][column] / adam[i - 1][column]) for i in jumps]
        return math.exp(statistics.mean(logs))

    return len(jumps), geomean(2), geomean(1)


def largest_update(rec: dict) -> tuple[float, int, int, int] | None:
    """The run's largest Adam update norm: (norm, tokens at it, the previous
    step's window, its window); None without Adam diagnostics."""
    adam = rec.get("adam") or []
    if len(adam) != len(rec["windows"]) or len(adam) < 2:
        return None
    i = max(range(1, len(adam)), key=lambda j: adam[j][2])
    return adam[i][2], adam[i][0], rec["windows"][i - 1][1], rec["windows"][i][1]


def mechanism(plan, seeds, results, swept=None) -> list[str]:
    """The page's section: does Adam over-react when a window grows, and does
    counting its clocks in tokens remove it? ``swept`` (name -> sweep point ->
    record) compares the largest updates at the settings both twins ran."""
    swept = swept or {}
    pairs = [
        name[: -len("+tt")] for name in plan if name.endswith("+tt") and name[: -len("+tt")] in plan
    ]
    rows, largest = [], {}
    for base in pairs:
        cells = []
        for name in (base, f"{base}+tt"):
            found = [f for s in seeds if (f := responses(results[(name, s)])) is not None]
            peaks = [p for s in seeds if (p := largest_update(results[(name, s)])) is not None]
            largest[name] = peaks
            peak = f"{statistics.mean(p[0] for p in peaks):.2f}" if peaks else "–"
            if not found:
                cells.append(f"– | – | – | {peak}")
                continue
            jumps = sum(f[0] for f in found)
            update = math.exp(statistics.mean(math.log(f[1]) for f in found))
            second = math.exp(statistics.mean(math.log(f[2]) for f in found))
            cells.append(f"{jumps} | {update:.3f} | {second:.3f} | {peak}")
        rows.append(f"| {base} | {' | '.join(cells)} |")
    if not rows:
        return []
    notes = []
    base_peaks = [
        p
        for s in seeds
        if (BASE, s) in results and (p := largest_update(results[(BASE, s)])) is not None
    ]
    for base in pairs:
        coupled, plain = largest[f"{base}+tt"], largest[base]
        if not coupled or not plain:
            continue
        ratio = statistics.mean(p[0] for p in coupled) / statistics.mean(p[0] for p in plain)
        if ratio < 2:
            continue
        changes = sorted({f"{p[2]} -> {p[3]}" for p in coupled})
        at = sorted({p[1] for p in coupled})
        where = f"{at[0]:,}" if len(at) == 1 else f"{at[0]:,}-{at[-1]:,}"
        pairs_run = [
            (largest_update(swept[base][k]), largest_update(swept[f"{base}+tt"][k]))
            for k in sorted(set(swept.get(base, {})) & set(swept.get(f"{base}+tt", {})))
        ]
        same = [b[0] / a[0] for a, b in pairs_run if a is not None and b is not None]
        at_same = ""
        if same:
            low, high = f"{min(same):.1f}", f"{max(same):.1f}"
            at_same = (
                f" At the same settings ({len(same)} point{'s' if len(same) > 1 else ''} both "
                f"sweeps ran, on the selection seed) `+tt`'s is "
                f"{low if low == high else f'{low}-{high}'}x."
            )
        notes.append(
            f"- **{base}+tt**: {ratio:.1f}x {base}'s, each at its selected settings; the seeds' "
            f"largest updates come at steps whose window (the step before -> that step) is "
            f"{', '.join(changes)} microbatches, at {where} tokens.{at_same}"
        )
    if notes:
        reference = (
            f" `{BASE}`'s is {statistics.mean(p[0] for p in base_peaks):.2f}." if base_peaks else ""
        )
        notes = [
            "Largest update: the run's largest Adam update norm (mean over seeds)."
            f"{reference} With token time a step on a window of k microbatches decays Adam's "
            "moments by b1^k and b2^k at once (0.19 and 0.44 for k = 16), so that one "
            "window's mean gradient makes up most of both moments after it. Where `+tt` makes "
            "the largest update at least twice as large:",
            "",
            *notes,
            "",
        ]
    return [
        "## Mechanism: Adam around a growing window",
        "",
        "At each optimizer step whose window is at least twice the previous step's: "
        "Adam's update norm and its second moment (sum of nu) at that step over the step "
        "before (geometric mean over the jumps of a seed, then over seeds; all seeds' jumps "
        "counted). A ratio below 1 for the update norm is a step that shrinks when the batch "
        "grows; `+tt` should remove what the step-counted decays cause.",
        "",
        "| arm | jumps | update norm ratio | second moment ratio | largest update | jumps (+tt) | "
        "update norm ratio (+tt) | second moment ratio (+tt) | largest update (+tt) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *notes,
    ]


def mechanism_figure(plan, seed: int, results, out: Path) -> Path | None:
    """Adam's update norm and second moment over training (one seed) for every
    arm run with and without ``+tt``."""
    names = [n for n in plan if n.endswith("+tt") and n[: -len("+tt")] in plan]
    names = [m for n in names for m in (n[: -len("+tt")], n) if results[(m, seed)].get("adam")]
    if not names:
        return None
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for i, name in enumerate(names):
        adam = results[(name, seed)]["adam"]
        color = plt.get_cmap("tab20")(i % 20)
        style = ":" if name.endswith("+tt") else "-"
        tokens = [a[0] for a in adam]
        axes[0].plot(tokens, [a[2] for a in adam], style, lw=1, color=color, label=name)
        axes[1].plot(tokens, [a[1] for a in adam], style, lw=1, color=color, label=name)
    axes[0].set(title=f"Adam's update norm per step (seed {seed})", xlabel="tokens", yscale="log")
    axes[1].set(title="Adam's second moment (sum of nu)", xlabel="tokens", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    return kit.save_figure(fig, out)


def cbs_fractions(cbs: list[dict], sequences: int, tokens: int) -> str:
    """Merrill et al.'s batch-size warmup from a measured critical batch: a
    doubling of the batch (``sequences`` at the start) at the start of each
    branch interval where the critical batch (mean of the seeds' lower ends)
    first reaches twice the batch, as fractions of a run of ``tokens`` (two
    decimals, comma-separated; "" when it never does)."""
    fractions, batch = [], sequences
    for start, _, values in critical_intervals(cbs):
        while statistics.mean(values) >= 2 * batch and start < tokens:
            fractions.append(f"{start / tokens:.2f}")
            batch *= 2
    return ",".join(fractions)


def critical_intervals(cbs: list[dict]) -> list[tuple[int, int, list[int]]]:
    """(start, stop) in tokens of each branch interval, with its measured critical
    batch per seed."""
    intervals: dict[tuple[int, int], list[int]] = {}
    for row in cbs:
        intervals.setdefault((row["start"], row["stop"]), []).append(row["sequences"])
    return [(start, stop, values) for (start, stop), values in sorted(intervals.items())]


def against_critical_batch(args, plan, seeds, results, cbs) -> list[str]:
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
        f"epsilon {args.epsilon:g} nats; its own page gives the protocol). Cells: an arm's "
        "token-weighted mean batch (sequences) over the steps that end within each branch "
        "interval (in tokens), mean over seeds; '–' where no step ends there.",
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
    for name in plan:
        cells = [
            statistics.mean(kit.mean_batch_between(results[(name, s)], a, b) for s in seeds)
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


def figure(plan, seeds, results, out: Path, cbs: list[dict], tokens: int) -> Path:
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for i, name in enumerate(plan):
        color = plt.get_cmap("tab20")(i % 20)
        curves = [results[(name, s)]["evals"] for s in seeds]
        n = min(len(c) for c in curves)
        loss = [statistics.mean(c[j][3] for c in curves) for j in range(1, n)]
        step = [statistics.mean(c[j][2] for c in curves) for j in range(1, n)]
        toks = [curves[0][j][1] for j in range(1, n)]
        style = "--" if name.startswith("adamw") else ":" if name.endswith("+tt") else "-"
        axes[0].plot(step, loss, style, marker=".", ms=3, color=color, label=name)
        axes[1].plot(toks, loss, style, marker=".", ms=3, color=color, label=name)
        rec = results[(name, seeds[0])]
        axes[2].plot(
            [t for t, _ in rec["windows"]],
            [d * rec["sequences_per_draw"] for _, d in rec["windows"]],
            style,
            lw=1,
            color=color,
        )
    axes[0].set(title="val loss vs optimizer steps (mean of seeds)", xlabel="optimizer steps")
    axes[0].set(xscale="log", ylabel="val loss")
    axes[1].set(title="val loss vs tokens (mean of seeds)", xlabel="tokens")
    for j, (start, stop, values) in enumerate(critical_intervals(cbs)):
        axes[2].hlines(
            statistics.mean(values),
            start,
            min(stop, tokens),
            color="k",
            lw=3,
            zorder=5,
            label=None if j else "critical batch (measured)",
        )
    axes[2].set(title=f"batch per step (seed {seeds[0]})", xlabel="tokens")
    axes[2].set(ylabel="sequences per step", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=5, ncol=2)
    if cbs:
        axes[2].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return kit.save_figure(fig, out)


def non_accumulating(registry: dict[str, Any] = REGISTRY) -> str:
    """The page's sentence on the controllers that step on every microbatch.

    They save no steps, so they are not arms; the names come from the training
    program's registry (``accumulates=False``).
    """
    names = [name.upper() for name, entry in registry.items() if not entry.accumulates]
    if len(names) == 1:
        return (
            f"{names[0]}, the one controller that never accumulates (it steps on every "
            "microbatch), saves no steps and is not an arm."
        )
    return (
        f"{', '.join(names)}: the controllers that never accumulate (they step on every "
        "microbatch) save no steps and are not arms."
    )


def write_page(args, plan, seeds, swept, results, fig, cbs, mechanism_fig=None) -> Path:
    rows = analyse(plan, seeds, results)
    every = [r for points in swept.values() for r in points.values()] + list(results.values())
    params = results[(BASE, seeds[0])]["params"]
    # The widest spread of wall-clock time among one arm's seeds (equal work).
    spread = max(
        max(t) / min(t) for t in ([results[(a, s)]["elapsed_s"] for s in seeds] for a in plan)
    )
    n = len(seeds)
    caps = sorted(
        {a.settings["gqc.max_draws"] for a in plan.values() if "gqc.max_draws" in a.settings}
    )
    capped = "".join(f"; `+cap{c}`: at most {c}" for c in caps)
    lines = [
        "# Serial steps at equal tokens: tuned GQC against the batch-size frontier",
        "",
        kit.records_line(args.command, every, args.records),
        "",
        f"Model: `{args.preset}` GPT ({params:,} parameters, byte tokens, {args.seq_len}-token "
        f"sequences); data: the default corpus (Shakespeare); {args.tokens:,} tokens per run. "
        f"Seeds {', '.join(map(str, seeds))} are reported; learning rates and the controllers' "
        f"own hyperparameters were chosen on seed {args.select_seed}, which is not. A seed "
        "sets the initialisation and the data order: every arm of a seed sees the same tokens "
        "in the same order. AdamW (b1 0.9, b2 0.95, weight decay 0.1, clip 1.0), warmup 5% "
        "then cosine to 10% on the microbatch clock (`-d2z`: linear to zero; `-sq`: b1 "
        "0.81, b2 0.9025, Adam's memory halved). Fixed-batch "
        f"arms `adamw-bM` train on microbatches of M x {args.microbatch} sequences; every "
        f"other arm draws microbatches of {args.microbatch} and steps on windows of them (at "
        f"most {args.max_draws}{capped}), at lr x sqrt(window). `+tt`: Adam's decays b^k and weight "
        f"decay x k / sqrt(k) for a window of k (`gqc.token_time`). {non_accumulating()} "
        "Validation: the same "
        f"{args.eval_sequences} sequences, spread over the validation split, for every arm, "
        f"at {args.evals} points of each run."
        + (
            " `cycle-A-B`: SBC with fixed windows of A and B microbatches in turn, windows "
            "that vary from step to step but not with the gradient."
            if any(name.split("+")[0] in CYCLES for name in plan)
            else ""
        )
        + (
            " `window-2`: SBC with a fixed window of 2 microbatches, `adamw-b2`'s batch "
            "accumulated."
            if any(name.split("+")[0] in FIXED for name in plan)
            else ""
        ),
        "",
        f"Sweeps: the learning rate on the grid {', '.join(f'x{v:.4g}' for v in args.sweep)} "
        f"around {args.lr:g} (x sqrt(M) for `adamw-bM`), extended by up to {args.extend} "
        "rates while the best sits at an edge; for the adaptive controllers, times their own "
        "hyperparameter's values (listed below), extended the same way at the best rate (up "
        f"to {args.extend} own values, and up to {args.extend} rates at each).",
        "",
        f"Columns: the final validation loss (mean ± std over seeds); its paired difference "
        f"to `{BASE}` per seed (mean and 95% t-interval); optimizer steps; steps saved to "
        f"reach `{BASE}`'s own validation loss at 50%, 75% and 100% of its run (per seed, "
        "against its steps to the same loss, mean over the seeds that reach it; the count "
        "when not all do); the mean sequences per step; s/run, the mean wall-clock seconds "
        "of its seeds' runs. The machine is shared: one arm's seeds, on equal tokens, took up to "
        f"{spread:.1f}x one another's time, so s/run is indicative only.",
        "",
        "| arm | lr | own | val loss | Δ vs base (95% CI) | opt steps | saved @50% | "
        "saved @75% | saved @100% | batch/step (seqs) | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in plan.items():
        r = rows[name]
        chosen = best_point(swept[name])["settings"]
        own = f"{chosen[arm.hyper[0]]:g}" if arm.hyper else ""
        mean, half = r["diff"]
        diff = "0" if name == BASE else f"{mean:+.4f} ± {half:.4f}"
        saved = [saved_cell(r["saved"][f], n) for f in FRACTIONS]
        lines.append(
            f"| {name} | {chosen['optim.lr']:.3g} | {own} | {kit.mean_std(r['loss'])} | {diff} | "
            f"{r['steps']:.0f} | {' | '.join(saved)} | {r['batch']:.1f} | {r['seconds']:.0f} |"
        )
    lines += ["", f"## Sweeps (seed {args.select_seed}, val loss)", ""]
    unbracketed = False
    for name, arm in plan.items():
        own_key = arm.hyper[0] if arm.hyper else None
        ordered = sorted(
            swept[name].items(),
            key=lambda kv: (kv[1]["settings"].get(own_key, 0), kv[1]["settings"]["optim.lr"]),
        )
        cells = [f"{key}: {rec['eval_loss']:.4f}" for key, rec in ordered]
        at_edge = edges(arm, swept[name])
        unbracketed = unbracketed or bool(at_edge)
        edge = "".join(
            f" (best {'lr' if key == 'lr' else f'`{key}`'} at the edge of its grid)"
            for key in at_edge
        )
        own = f" (own: `{arm.hyper[0]}`)" if arm.hyper else ""
        lines.append(f"- {name}{own}: {', '.join(cells)}{edge}")
    if unbracketed:
        lines += [
            "",
            f"Where a best value still sits at an edge after {args.extend} extensions, its "
            "grid did not bracket the optimum.",
        ]
    lines += ["", "## Against the goal", "", *verdict(rows, seeds), ""]
    lines += mechanism(plan, seeds, results, swept)
    if mechanism_fig is not None:
        lines += [
            f"![Adam around the windows]({mechanism_fig.name})",
            "",
            f"Adam's update norm (left) and second moment (right) per step, seed {seeds[0]}; "
            "dotted: `+tt`.",
            "",
        ]
    if cbs:
        lines += against_critical_batch(args, plan, seeds, results, cbs)
    if args.compare:
        lines += against_another_scale(args, plan, seeds, rows)
    lines += [
        f"![serial steps]({fig.name})",
        "",
        "Left: validation loss against optimizer steps (log scale) and, middle, against "
        "tokens, mean of seeds. Right: sequences per optimizer step over training (first "
        "seed). Dashed: fixed-batch AdamW; dotted: `+tt`."
        + (" Black bars: the measured critical batch over each branch interval." if cbs else ""),
        "",
    ]
    return kit.write_page(args.page, lines)


def main(argv: list[str] | None = None) -> int:
    parser = kit.parser(__name__, __doc__, "runs/serial_steps", "docs/results/serial_steps.md")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="the reported seeds")
    parser.add_argument(
        "--select_seed", type=int, default=100, help="the seed sweeps choose on (not reported)"
    )
    parser.add_argument("--tokens", type=int, default=300_000, help="token budget per run")
    parser.add_argument("--microbatch", type=int, default=8, help="sequences per microbatch")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batches", default="1,2,4", help="fixed-batch AdamW: microbatches")
    parser.add_argument("--lr", type=float, default=3e-3, help="centre of every sweep")
    parser.add_argument(
        "--sweep", default="0.7071,1,1.4142", help="multipliers of the centre lr (a grid)"
    )
    parser.add_argument(
        "--extend",
        type=int,
        default=4,
        help="values added beyond an edge-best rate (per own value) or own value, at most",
    )
    parser.add_argument("--max_draws", type=int, default=16)
    parser.add_argument("--evals", type=int, default=12, help="evaluations per run")
    parser.add_argument(
        "--eval_sequences", type=int, default=512, help="the one validation set, in sequences"
    )
    parser.add_argument(
        "--arms", default="", help="only these arms, trained in this order (default: all)"
    )
    kit.records_flags(parser)
    parser.add_argument(
        "--rebuild_records",
        action="store_true",
        help="write each existing record again from its finished run folder",
    )
    parser.add_argument(
        "--critical_batch",
        default="",
        help="a critical-batch study's records: its measured critical batch on the page",
    )
    parser.add_argument("--epsilon", type=float, default=0.01, help="its loss tolerance (nats)")
    parser.add_argument(
        "--compare",
        default="",
        help="another page's records (this study at another scale): each arm's result there",
    )
    args = kit.parse_args(parser, argv, SCALE)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.select_seed in seeds:
        parser.error(f"--select_seed={args.select_seed} must not be a reported seed ({seeds})")
    batches = [int(b) for b in args.batches.split(",")]
    args.sweep = sorted(float(v) for v in args.sweep.split(","))
    plan = arms(batches)
    order = list(plan)
    if args.arms:
        order = args.arms.split(",")
        unknown = [name for name in order if name not in plan]
        if unknown:
            parser.error(f"--arms: unknown arm(s) {unknown}; expected names from {list(plan)}")
        if BASE not in order:
            parser.error(f"--arms must include {BASE}, the base every arm is paired with")
        plan = {name: arm for name, arm in plan.items() if name in order}
    if batches[0] != 1:
        parser.error("--batches must start at 1: adamw-b1 is the base")
    page = Path(args.page)
    records = kit.records_setup(args, "experiments.studies.serial_steps", argv)
    if args.compare and not any(Path(args.compare).glob(f"{BASE}/s*.json")):
        parser.error(f"--compare={args.compare}: no records of {BASE} there (its s*.json)")
    cbs: list[dict] = []
    if args.critical_batch:
        try:
            cbs = kit.measured_critical_batch(Path(args.critical_batch), args.epsilon)
        except (OSError, ValueError) as error:
            parser.error(f"--critical_batch={args.critical_batch}: {error}")
    if cbs and any(name.startswith("batch-warmup-cbs") for name in order):
        fractions = cbs_fractions(cbs, args.microbatch, args.tokens)
        if not fractions:
            parser.error(
                f"--critical_batch={args.critical_batch}: the critical batch never reaches "
                f"twice the microbatch ({args.microbatch} sequences), so batch-warmup-cbs has "
                "no doubling; leave it out of --arms."
            )
        for name in ("batch-warmup-cbs", "batch-warmup-cbs+tt"):
            if name in plan:
                settings = {**plan[name].settings, "gqc.warmup_fractions": fractions}
                plan[name] = dataclasses.replace(plan[name], settings=settings)
    root = Path(args.out)
    swept, results = {}, {}
    try:
        for name in order:
            arm = plan[name]
            if args.from_records:
                swept[name] = {
                    p.stem: read_record(p, arm)
                    for p in sorted((records / name / "sweep").glob("*.json"))
                }
                if not swept[name]:
                    parser.error(f"--from_records: no records of {name} under {records}")
            else:
                swept[name] = sweep(name, arm, args, records, root)
            chosen = best_point(swept[name])["settings"]
            hyper = {arm.hyper[0]: chosen[arm.hyper[0]]} if arm.hyper else {}
            point = {**hyper, "optim.lr": chosen["optim.lr"]}
            for seed in seeds:
                path = records / name / f"s{seed}.json"
                if args.from_records:
                    results[(name, seed)] = read_record(path, arm, point)
                    continue
                folder = root / name / f"s{seed}"
                config = run_config(folder, args, seed, chosen["optim.lr"], arm, hyper)
                results[(name, seed)] = train(path, folder, config, arm, hyper, args)
    except StaleRecordError as error:
        parser.error(str(error))
    fig = figure(plan, seeds, results, page.with_suffix(".png"), cbs, args.tokens)
    adam_fig = mechanism_figure(
        plan, seeds[0], results, page.with_name(f"{page.stem}_mechanism.png")
    )
    written = write_page(args, plan, seeds, swept, results, fig, cbs, adam_fig)
    print(written.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
