"""The kit every study is built from: run configurations from a few fields, the
run readers, the shared arms, the results page's header and number formats,
figure saving and the command-line flags.

A study is its plan (which runs), its analysis and its page; everything two
studies would otherwise repeat lives here, and no study imports another.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The arms several studies share, re-exported: a study names them ``kit.ADAMW``.
from experiments.arms import ADAMW as ADAMW
from experiments.arms import GNTS_REFERENCE as GNTS_REFERENCE
from experiments.arms import GNTS_RELATIVE as GNTS_RELATIVE
from experiments.config import Config, DataConfig, apply_overrides
from experiments.pages import commit as commit
from experiments.pages import pyplot as pyplot
from experiments.pages import save_figure as save_figure
from experiments.pages import write_page as write_page
from experiments.run_log import read_metrics

# A study's run: no checkpoint before the end, no progress bar, no TensorBoard files.
QUIET_RUN = {
    "train.checkpoint_every": 1_000_000,
    "train.progress": False,
    "train.tensorboard": False,
}


def run_config(
    out: Path,
    *overrides: Mapping,
    preset: str,
    seq_len: int,
    microbatch: int,
    tokens: int,
    seed: int,
    evals: int,
    model_seed: int | None = None,
    data_dir: str | None = None,
    lr: float | None = None,
    noise_probe: int = 0,
) -> Config:
    """A quiet training run writing to ``out``: ``tokens`` tokens in microbatches
    of ``microbatch`` sequences, a warmup of 5% of the microbatches, ``evals``
    evaluations, ``seed`` for the data order (and the initialisation unless
    ``model_seed`` is given); ``overrides`` (dotted config keys) are applied last,
    in order. ``data_dir`` and ``lr`` keep the config's defaults when ``None``."""
    total = tokens // (microbatch * seq_len)
    settings = {
        "model.preset": preset,
        "model.seq_len": seq_len,
        "data.microbatch_size": microbatch,
        "data.seed": seed,
        "optim.warmup": max(1, total // 20),
        "train.seed": seed if model_seed is None else model_seed,
        "train.tokens": tokens,
        "train.eval_every": max(1, total // evals),
        "train.noise_probe": noise_probe,
        **QUIET_RUN,
        "train.out_dir": str(out),
    }
    if data_dir is not None:
        settings["data.data_dir"] = data_dir
    if lr is not None:
        settings["optim.lr"] = lr
    for extra in overrides:
        settings.update(extra)
    return apply_overrides(Config(), settings)


def steps(run_dir: Path) -> list[dict]:
    """A run's optimizer-step records (those with a training loss)."""
    return [r for r in read_metrics(run_dir) if "train/loss" in r]


def evals(run_dir: Path) -> list[dict]:
    """A run's evaluation records."""
    return [r for r in read_metrics(run_dir) if "eval/loss" in r]


def mean_batch_between(run_dir: Path, sequences_per_draw: int, start: int, stop: int) -> float:
    """A run's token-weighted mean batch (sequences) over the optimizer steps
    that end within tokens ``(start, stop]``: the batch an average token was
    trained in, sum(b^2) / sum(b); NaN if no step ends there."""
    inside = [
        r["gqc/draws"] * sequences_per_draw for r in steps(run_dir) if start < r["tokens"] <= stop
    ]
    return sum(b * b for b in inside) / sum(inside) if inside else math.nan


def loss_at(run_dir: Path, microbatch: int) -> float:
    """A run's validation loss at its evaluation after ``microbatch`` microbatches."""
    for record in evals(run_dir):
        if record["microbatch"] == microbatch:
            return record["eval/loss"]
    raise ValueError(f"{run_dir}: no evaluation at microbatch {microbatch} (an unfinished run?).")


def critical_batch(losses: dict[int, float], epsilon: float, microbatch: int) -> int:
    """The critical batch (sequences): the largest ``k * microbatch`` for which
    every window ``j <= k`` passes, a window passing when its loss is within
    ``epsilon`` of every smaller window's (Merrill et al. 2025's rule)."""
    return critical_bracket(losses, epsilon, microbatch)[0]


def critical_bracket(
    losses: dict[int, float], epsilon: float, microbatch: int
) -> tuple[int, int | None]:
    """Where the critical batch lies: ``(low, high)``, ``low`` the critical batch
    of :func:`critical_batch` and ``high`` the next batch tried (the first that
    failed), None when every batch tried passed."""
    windows = sorted(losses)
    best = windows[0]
    for i, k in enumerate(windows[1:], start=1):
        if losses[k] > min(losses[j] for j in windows[:i]) + epsilon:
            return best * microbatch, k * microbatch
        best = k
    return best * microbatch, None


def measured_critical_batch(root: Path, epsilon: float) -> list[dict[str, Any]]:
    """The critical batch read back from a critical-batch study's run folders:
    each ``ROOT/seed*/reference`` and its branches ``ROOT/seed*/from*/window*``
    (``--train.branch_from``), by :func:`critical_batch` at ``epsilon``.

    Returns:
      One row per seed and branch point, ordered so: ``seed``, ``point`` and
      ``delta`` (microbatches), ``start`` and ``stop`` (the branches' interval in
      tokens), ``sequences`` (the critical batch), ``losses`` (window k -> L_k),
      and the reference's ``preset``, ``tokens`` (its run's), ``seq_len`` and
      ``microbatch``.
    """
    rows: list[dict[str, Any]] = []
    for ref in sorted(Path(root).glob("seed*/reference")):
        config = json.loads((ref / "config.json").read_text())
        microbatch, seq_len = config["data"]["microbatch_size"], config["model"]["seq_len"]
        branches: dict[tuple[int, int], dict[int, float]] = {}
        for branch in ref.parent.glob("from*/window*"):
            c = json.loads((branch / "config.json").read_text())
            point, delta = c["train"]["branch_step"], c["train"]["stop_after"]
            branches.setdefault((point, delta), {})[c["gqc"]["sbc_draws"]] = loss_at(
                branch, point + delta
            )
        for (point, delta), losses in sorted(branches.items()):
            losses = {1: loss_at(ref, point + delta), **losses}
            bracket = critical_bracket(losses, epsilon, microbatch)
            rows.append(
                {
                    "seed": config["data"]["seed"],
                    "point": point,
                    "delta": delta,
                    "start": point * microbatch * seq_len,
                    "stop": (point + delta) * microbatch * seq_len,
                    "sequences": bracket[0],
                    "bracket": bracket,
                    "losses": losses,
                    "preset": config["model"]["preset"],
                    "tokens": config["train"]["tokens"],
                    "seq_len": seq_len,
                    "microbatch": microbatch,
                }
            )
    if not rows:
        raise ValueError(
            f"{root}: no critical-batch runs (seed*/reference with branches from*/window*)."
        )
    return rows


def crossing(run_dir: Path, target: float) -> tuple[float, float] | None:
    """(optimizer steps, tokens) at which the eval loss first reaches ``target``,
    linearly interpolated between evaluations; None if it never does."""
    records = evals(run_dir)
    for a, b in zip(records, records[1:], strict=False):
        if b["eval/loss"] <= target:
            f = (a["eval/loss"] - target) / max(a["eval/loss"] - b["eval/loss"], 1e-12)
            return (
                a["step"] + f * (b["step"] - a["step"]),
                a["tokens"] + f * (b["tokens"] - a["tokens"]),
            )
    return None


def mean_std(values: Iterable[float], digits: int = 4) -> str:
    """``mean ± sample std`` of ``values``; the value alone when there is one."""
    values = list(values)
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def machine() -> str:
    """This machine, as the results pages state it."""
    return f"{platform.machine()} CPU, {platform.system()}, {os.cpu_count()} cores"


def training_time(summaries: Iterable[dict]) -> tuple[int, float]:
    """The number of distinct runs among ``summaries`` and their training minutes
    (the runs' own clocks; a run listed twice counts once)."""
    unique = {s["out_dir"]: s for s in summaries}
    return len(unique), sum(s["elapsed_s"] for s in unique.values()) / 60


def command(module: str, argv: list[str] | None) -> str:
    """The command line that ran the study ``module`` with ``argv`` (None: sys.argv)."""
    return " ".join(["python -m " + module, *(sys.argv[1:] if argv is None else argv)])


def with_steps(protocol: Any, steps: int | None) -> Any:
    """A protocol dataclass (fields ``steps``, ``warmup``, ``eval_every``) shortened or
    lengthened to ``steps``: warmup at most a tenth of them, an eval at least every
    quarter. None keeps it as it is."""
    if not steps:
        return protocol
    return dataclasses.replace(
        protocol,
        steps=steps,
        warmup=min(protocol.warmup, max(1, steps // 10)),
        eval_every=min(protocol.eval_every, max(1, steps // 4)),
    )


def generated_by(command: str, summaries: Iterable[dict]) -> str:
    """The page's first line: the command, the runs, their time and the machine."""
    runs, minutes = training_time(summaries)
    return (
        f"Generated by `{command}`: {runs} training runs, {minutes:.0f} min of training in "
        f"all (the runs' own clocks), on {machine()}."
    )


def parser(module: str, doc: str | None, out: str, page: str) -> argparse.ArgumentParser:
    """A study's argument parser with the flags every study has: ``--data_dir``,
    ``--out`` (its run folders) and ``--page`` (its results page)."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data_dir", default=DataConfig.data_dir)
    p.add_argument("--out", default=out, help="the study's run folders")
    p.add_argument("--page", default=page, help="the results page (its figures beside it)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, scale: dict | None = None):
    """``parser``'s arguments; with ``scale``, a ``--scale`` flag too: the
    ``scale`` defaults for larger hardware, where flags given on the command line
    still win."""
    if scale is not None:
        parser.add_argument(
            "--scale", action="store_true", help=f"larger defaults for a GPU: {scale}"
        )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if scale is not None and args.scale:
        args = parser.parse_args(argv, namespace=argparse.Namespace(**scale))
    return args
