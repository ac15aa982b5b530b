"""A run's outputs: metrics per optimizer step and per evaluation as JSONL
(``metrics.jsonl``) and TensorBoard event files, plus a progress bar.

Metric names are namespaced: ``train/`` (loss, gradient norms), ``eval/`` (held-out
loss, perplexity, gradient noise scale), ``gqc/`` (controller statistics),
``perf/`` (throughput, time). Every record carries ``microbatch``, ``tokens`` and
``step`` (optimizer steps so far).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.controllers import CONTROLLERS

METRICS_FILE = "metrics.jsonl"


NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _plain(value: Any) -> Any:
    """JSON-safe values (numpy/jax scalars to Python, non-finite floats to
    strings), inside dicts and lists too."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record as strict JSON writes it: ``metrics.jsonl``, ``summary.json`` and
    the campaign's results alike store NaN and infinities as the strings "nan",
    "inf", "-inf"."""
    return _plain(record)


def _restored(value: Any) -> Any:
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value


def read_record(text: str) -> dict[str, Any]:
    """A JSON record with "nan", "inf" and "-inf" read back as floats."""
    return json.loads(text, object_hook=lambda d: {k: _restored(v) for k, v in d.items()})


class RunLog:
    """Appends records to ``out_dir/metrics.jsonl`` and TensorBoard; shows progress.

    Args:
      out_dir: the run folder.
      total: microbatches in the run (for the progress bar and its ETA).
      start: microbatches already done (a resumed run).
      progress: show a tqdm progress bar on stderr.
      tensorboard: also write TensorBoard event files under ``out_dir/tb``.
      resume_from: on resume, records past this microbatch (written after the
        checkpoint being resumed) are dropped so the file reads as one run.
      enabled: False on every process but the first of a multi-host run, which
        alone writes the run's files.
    """

    def __init__(
        self,
        out_dir: str | Path,
        total: int,
        *,
        start: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        resume_from: int | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self._file = self._tb = self._bar = None
        if not enabled:
            return
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / METRICS_FILE
        purge = None
        if resume_from is None:
            path.write_text("")
        elif path.is_file():
            records = read_metrics(self.dir)
            kept = [r for r in records if r["microbatch"] <= resume_from]
            dropped = [r["tokens"] for r in records if r["microbatch"] > resume_from]
            path.write_text("".join(json.dumps(plain(r)) + "\n" for r in kept))
            # TensorBoard hides the earlier session's points from this step on.
            purge = min(dropped, default=None)
        self._file = path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="mb", dynamic_ncols=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = plain(record)
        assert self._file is not None  # opened whenever enabled
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if "/" in key and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, global_step=record["tokens"])

    def progress(self, done: int, postfix: dict[str, str]) -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run folder's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {str(run_dir)!r}: is it a run folder?")
    return [read_record(line) for line in path.read_text().splitlines() if line.strip()]


def tokens_per_s(steps: list[dict[str, Any]], first: int = 1) -> float:
    """Training tokens/s between step record ``first`` and the last, on the
    run's own clock (the time to record 0 includes compiling; ``first=1``
    leaves it out); nan when no time passed between them."""
    a, b = steps[min(first, len(steps) - 1)], steps[-1]
    seconds = b["perf/elapsed_s"] - a["perf/elapsed_s"]
    return (b["tokens"] - a["tokens"]) / seconds if seconds > 0 else float("nan")


def threshold_key(records, controller: str | None = None) -> str | None:
    """The controller's threshold recorded in ``records`` (``gqc/<statistic>``):
    the first of its statistics (:data:`experiments.controllers.CONTROLLERS`)
    present, or of any controller's when ``controller`` is None or ``"none"``."""
    entries = [CONTROLLERS[controller]] if controller in CONTROLLERS else CONTROLLERS.values()
    for entry in entries:
        for statistic in entry.statistics:
            if any(f"gqc/{statistic}" in r for r in records):
                return f"gqc/{statistic}"
    return None
