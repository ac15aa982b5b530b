"""The GPU campaign: a queue of small, self-contained training runs that any
device window advances, and the page their results make.

The plan (``experiments/campaign_plan.yaml``) lists runs in priority order, each
a set of the training program's settings. ``run`` trains, in plan order, every
run that has no result yet and whose estimated time fits the remaining budget,
through the training program itself (:func:`experiments.train.train`), and
writes one small JSON result per run (``OUT/results/NAME.json``) as soon as it
ends; it stops cleanly at the budget. Results are committed under
``docs/results/campaign/``, and ``page`` regenerates ``docs/results/campaign.md``
and its figure from whatever results exist (byte-identical on rerun), marking
what is still pending.

    python -m experiments.campaign run --budget 500 --out DIR [--commit SHA]
    python -m experiments.campaign page
    python -m experiments.campaign run --scale smoke --budget 60 --out DIR --results DIR/results

A run's time is estimated from the tokens/s of earlier results of the same model
(else the plan's estimate), times the plan's margin, plus its compile allowance.
A run that the budget cuts short (``train.time_limit_s``) leaves no result, so a
later window runs it again; run folders (checkpoints included) live under
``--work`` and never come back from a device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import yaml

from experiments import pages
from experiments.config import Config, apply_overrides
from experiments.data import PYTHON_SOURCE, TokenSource, token_source
from experiments.run_log import plain, read_metrics, read_record, tokens_per_s
from experiments.train import model_config, train
from models.gpt import peak_flops

ROOT = Path(__file__).resolve().parents[1]
PLAN = Path(__file__).with_name("campaign_plan.yaml")
RESULTS = ROOT / "docs" / "results" / "campaign"
PAGE = ROOT / "docs" / "results" / "campaign.md"


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of the plan: its name, stage, full settings and sweep links."""

    name: str
    stage: str
    settings: dict[str, Any]
    arm: str
    sweep: str = ""
    lr_from: str = ""
    probe: float = 0.0

    @property
    def tokens(self) -> int:
        return int(float(self.settings["train.tokens"]))

    @property
    def model_key(self) -> str:
        """The settings that set the model's speed (tokens/s estimates group by it)."""
        return json.dumps(
            {k: v for k, v in sorted(self.settings.items()) if k.startswith("model.")}
            | {"batch": self.settings.get("data.microbatch_size")}
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    runs: list[Run]
    arms: dict[str, dict[str, Any]]
    estimate_tokens_per_s: float
    compile_s: float
    margin: float


def load_plan(scale: str, path: Path = PLAN) -> Plan:
    """The plan of ``scale`` (``gpu`` or ``smoke``), every run's settings checked
    by the training program's own configuration."""
    plans = yaml.safe_load(path.read_text())
    if scale not in plans:
        raise ValueError(f"{str(path)!r} has no plan {scale!r}; plans: {sorted(plans)}.")
    p = plans[scale]
    runs, names = [], set()
    for entry in p["runs"]:
        name = entry["name"]
        if name in names:
            raise ValueError(f"plan {scale!r}: run {name!r} appears twice.")
        names.add(name)
        if entry["arm"] not in p["arms"]:
            raise ValueError(f"plan {scale!r}: run {name!r} has unknown arm {entry['arm']!r}.")
        settings = {**p["defaults"], **p["arms"][entry["arm"]], **entry.get("settings", {})}
        apply_overrides(Config(), settings)  # an unknown or bad setting fails here
        runs.append(
            Run(
                name=name,
                stage=str(entry["stage"]),
                settings=settings,
                arm=entry["arm"],
                sweep=entry.get("sweep", ""),
                lr_from=entry.get("lr_from", ""),
                probe=float(entry.get("probe", 0.0)),
            )
        )
    groups = {r.sweep for r in runs if r.sweep}
    for r in runs:
        if r.lr_from and r.lr_from not in groups:
            raise ValueError(
                f"plan {scale!r}: run {r.name!r} takes lr_from {r.lr_from!r}, no sweep."
            )
    return Plan(
        runs,
        p["arms"],
        float(p["estimate_tokens_per_s"]),
        float(p["compile_s"]),
        float(p["margin"]),
    )


def read_results(*folders: Path) -> dict[str, dict[str, Any]]:
    """Every result file in ``folders`` by run name (later folders win)."""
    results: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
            result = read_record(path.read_text())
            results[result["name"]] = result
    return results


def best_lr(plan: Plan, group: str, results: dict[str, dict]) -> float | None:
    """The swept learning rate of ``group`` with the lowest validation loss, or
    None while a point of the sweep has no result."""
    points = [r for r in plan.runs if r.sweep == group]
    if any(r.name not in results for r in points):
        return None
    best = min(points, key=lambda r: results[r.name]["val_loss"])
    return float(best.settings["optim.lr"])


def estimate_s(plan: Plan, run: Run, results: dict[str, dict]) -> float:
    """Seconds ``run`` should take: its tokens at the measured rate of its model
    (the median of earlier results; the plan's estimate before any), times the
    margin, plus the compile allowance; a probe takes its own seconds."""
    if run.probe:
        return run.probe + plan.compile_s
    rates = [
        r["tokens_per_s"]
        for r in results.values()
        if r.get("model_key") == run.model_key and not r.get("probe")
    ]
    rate = statistics.median(rates) if rates else plan.estimate_tokens_per_s
    return run.tokens / rate * plan.margin + plan.compile_s


def result_of(run: Run, config: Config, summary: dict, run_dir: Path, commit: str) -> dict:
    """The small record a run leaves: what the page needs, nothing to retrain."""
    records = read_metrics(run_dir)
    steps = [r for r in records if "train/loss" in r]
    rate = tokens_per_s(steps)  # from the first step after compiling
    device = jax.devices()[0]
    model = model_config(config, config.data.vocab_size or 256)
    peak = peak_flops(device.device_kind)
    every = max(1, len(steps) // 100)
    return {
        "name": run.name,
        "stage": run.stage,
        "arm": run.arm,
        "probe": bool(run.probe),
        "model_key": run.model_key,
        "settings": run.settings,
        "lr": config.optim.lr,
        "params": summary["params"],
        "tokens": summary["tokens"],
        "optimizer_steps": summary["steps"],
        "val_loss": summary["eval_loss"],
        "eval_curve": [[r["tokens"], r["eval/loss"]] for r in records if "eval/loss" in r],
        "batch_curve": [[r["tokens"], r["train/batch_sequences"]] for r in steps[::every]],
        "tokens_per_s": rate,
        "mfu": rate * model.flops_per_token() / peak if peak else None,
        "compile_s": steps[0]["perf/elapsed_s"],
        "seconds": summary["elapsed_s"],
        "device": f"{device.device_kind} ({device.platform})",
        "jax": jax.__version__,
        "host": platform.machine(),
        "commit": commit,
    }


def run_campaign(
    scale: str, budget: float, out: Path, results_dir: Path, work: Path, commit: str
) -> list[str]:
    """Trains the plan's pending runs that fit ``budget`` seconds; returns their names."""
    start = time.perf_counter()
    plan = load_plan(scale)
    (out / "results").mkdir(parents=True, exist_ok=True)
    corpora: dict[int, TokenSource] = {}
    trained = []
    results = read_results(results_dir, out / "results")
    for run in plan.runs:
        left = budget - (time.perf_counter() - start)
        if run.name in results:
            continue
        settings = dict(run.settings)
        if run.lr_from:
            lr = best_lr(plan, run.lr_from, results)
            if lr is None:
                print(f"[campaign] {run.name}: waits for sweep {run.lr_from!r}", flush=True)
                continue
            settings["optim.lr"] = lr
        need = estimate_s(plan, run, results)
        if need > left:
            print(f"[campaign] {run.name}: needs ~{need:.0f} s, {left:.0f} s left", flush=True)
            continue
        run_dir = work / run.name
        limit = run.probe or max(left - plan.compile_s / 2, 1.0)
        settings.update(
            {
                "train.out_dir": str(run_dir),
                "train.time_limit_s": limit,
                "train.progress": False,
                "train.tensorboard": False,
                "train.checkpoint_every": 10**9,
                "train.keep_checkpoints": 1,
            }
        )
        config = apply_overrides(Config(), settings)
        source = None
        if config.data.dataset == PYTHON_SOURCE:  # read once per command, not per run
            if config.data.corpus_bytes not in corpora:
                corpora[config.data.corpus_bytes] = token_source(config.data)
            read = corpora[config.data.corpus_bytes]
            source = TokenSource(read.train, read.validation, config.data.vocab_size or 256)
        print(f"[campaign] {run.name}: ~{need:.0f} s of {left:.0f} s left", flush=True)
        summary = train(config, source)
        if summary.get("time_limited") and not run.probe:
            print(f"[campaign] {run.name}: cut at the budget; no result", flush=True)
            continue
        result = result_of(run, config, summary, run_dir, commit)
        path = out / "results" / f"{run.name}.json"
        path.write_text(json.dumps(plain(result), indent=1) + "\n")
        results[run.name] = result
        trained.append(run.name)
    return trained


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def page(scale: str, results_dir: Path, page_path: Path) -> Path:
    """Writes the campaign page (and its figure, once a full run exists) from
    the results in ``results_dir``."""
    plan = load_plan(scale)
    results = read_results(results_dir)
    done = [r for r in plan.runs if r.name in results]
    lines = [
        "# The GPU campaign: does GQC beat AdamW at equal tokens at 50M parameters?",
        "",
        f"Generated by `python -m experiments.campaign page` from {len(done)} of "
        f"{len(plan.runs)} planned runs (`{PLAN.relative_to(ROOT)}`, plan `{scale}`); "
        f"results under `{_rel(results_dir)}`. Runs are added by "
        "`python -m experiments.campaign run --budget 500 --out DIR` on a GPU.",
        "",
    ]
    lines += [
        "Protocol: each run is a run of the training program with the plan's settings; "
        "every arm's learning rate is the best point of the same 3-point sweep at a short "
        "token count, on a seed that no full run uses, and every run is scored on the same "
        "fixed validation sequences. A controller's own hyperparameters are the reference "
        "recipe's or the best of the corrected CPU protocol "
        "([serial_steps.md](serial_steps.md)). AdamW decays its learning rate linearly to "
        "zero; the GNTS arms run the reference's recipe (constant learning rate after the "
        "warmup, weight decay annealed to zero); Seesaw runs in its paper's form, on the "
        "cosine rounded down to powers of two. Each arm's settings, on top of the plan's "
        "defaults:",
        "",
        *(
            f"- `{name}`: " + ", ".join(f"`{k}={v}`" for k, v in settings.items())
            for name, settings in plan.arms.items()
        ),
        "",
    ]
    lines += _verdict(plan, results)
    for stage in dict.fromkeys(r.stage for r in plan.runs):
        lines += [
            f"## Stage {stage}",
            "",
            "| run | lr | tokens | optimizer steps | val loss | tokens/s | MFU | device |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in plan.runs if r.stage == stage):
            res = results.get(r.name)
            if res is None:
                wait = f" (lr from sweep `{r.lr_from}`)" if r.lr_from else ""
                lines.append(f"| {r.name} | pending{wait} | | | | | | |")
                continue
            mfu = f"{res['mfu']:.1%}" if isinstance(res.get("mfu"), float) else "n/a"
            loss = "probe" if res.get("probe") else _fmt(res["val_loss"], ".4f")
            lines.append(
                f"| {r.name} | {res['lr']:.1e} | {res['tokens']:,} | {res['optimizer_steps']:,} | "
                f"{loss} | {_fmt(res['tokens_per_s'], ',.0f')} | {mfu} | {res['device']} |"
            )
        lines.append("")
    full = [r for r in plan.runs if r.name in results and r.lr_from]
    if full:
        figure = page_path.with_suffix(".png")
        _figure([results[r.name] for r in full], figure)
        lines += [f"![Validation loss against tokens]({figure.name})", ""]
    return pages.write_page(page_path, lines)


def _verdict(plan: Plan, results: dict[str, dict]) -> list[str]:
    """The answer so far, in words: each full run against AdamW's at its seed."""
    pairs = []
    for r in plan.runs:
        if not r.lr_from or r.arm == "adamw" or r.name not in results:
            continue
        seed = r.settings.get("train.seed", 0)
        base = next(
            (
                b
                for b in plan.runs
                if b.arm == "adamw" and b.lr_from and b.settings.get("train.seed", 0) == seed
            ),
            None,
        )
        if base is not None and base.name in results:
            diff = results[r.name]["val_loss"] - results[base.name]["val_loss"]
            pairs.append(f"- {r.name}: {diff:+.4f} nats against {base.name}.")
    if not pairs:
        return [
            "**No answer yet**: no full run of a controller and of AdamW at the same seed "
            "has a result. The tables say what is done and what is pending.",
            "",
        ]
    return [
        "Validation loss of each full run minus AdamW's at the same seed "
        "(negative: the controller is better):",
        "",
        *pairs,
        "",
    ]


def _figure(results: list[dict], out: Path) -> None:
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for res in results:
        tokens, losses = zip(*res["eval_curve"], strict=True)
        ax.plot([t / 1e6 for t in tokens], losses, label=res["name"])
    ax.set_xlabel("tokens (M)")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    pages.save_figure(fig, out)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.campaign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train the pending runs that fit the budget")
    run_p.add_argument("--budget", type=float, required=True, help="seconds for this command")
    run_p.add_argument("--out", type=Path, required=True, help="results come to OUT/results")
    run_p.add_argument("--work", type=Path, default=None, help="run folders (default: a temp dir)")
    run_p.add_argument("--commit", default="", help="the commit to record (default: git's)")
    page_p = sub.add_parser("page", help="regenerate the page from the results")
    page_p.add_argument("--page", type=Path, default=PAGE)
    for p in (run_p, page_p):
        p.add_argument("--scale", choices=("gpu", "smoke"), default="gpu")
        p.add_argument("--results", type=Path, default=RESULTS, help="committed results")
    args = parser.parse_args(argv)
    if args.command == "page":
        print(page(args.scale, args.results, args.page))
        return 0
    if args.budget <= 0:
        parser.error(f"--budget must be > 0 seconds, got {args.budget}.")
    commit = args.commit or pages.commit()
    with tempfile.TemporaryDirectory() as temp:
        work = args.work or Path(temp)
        trained = run_campaign(args.scale, args.budget, args.out, args.results, work, commit)
    print(f"[campaign] trained {len(trained)} run(s): {', '.join(trained) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
