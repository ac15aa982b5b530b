"""Figures from run folders: ``python -m experiments.plot RUN [RUN ...] --out FIG.png``.

One PNG with four panels against tokens: validation (and training) loss, draws
per optimizer step, the controller's threshold, and gradient norms (mean
single-microbatch norm and the norm of the window mean the optimizer saw).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.run_log import read_metrics, threshold_key


def _series(records, key):
    points = [(r["tokens"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Writes the figure for ``run_dirs`` to ``out`` and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name for d in run_dirs]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (loss_ax, draws_ax), (thr_ax, norm_ax) = axes
    for run_dir, label in zip(run_dirs, labels, strict=True):
        records = read_metrics(run_dir)
        (line,) = loss_ax.plot(
            *_series(records, "eval/loss"), marker="o", ms=3, label=f"{label} val"
        )
        x, y = _series(records, "train/loss")
        loss_ax.plot(x, y, color=line.get_color(), alpha=0.3, lw=0.8, label=f"{label} train")
        draws_ax.plot(
            *_series(records, "gqc/draws"), ".", ms=3, color=line.get_color(), label=label
        )
        key = threshold_key(records, _controller(run_dir))
        if key is not None:
            thr_ax.plot(*_series(records, key), color=line.get_color(), label=f"{label} {key[4:]}")
        norm_ax.plot(
            *_series(records, "train/grad_norm_microbatch"),
            color=line.get_color(),
            alpha=0.5,
            label=f"{label} mean microbatch",
        )
        if any("gqc/last_grad_norm" in r for r in records):
            norm_ax.plot(
                *_series(records, "gqc/last_grad_norm"),
                "--",
                color=line.get_color(),
                label=f"{label} window mean",
            )
    loss_ax.set(xlabel="tokens", ylabel="loss (nats/token)", title="loss")
    draws_ax.set(xlabel="tokens", ylabel="microbatches", title="draws per optimizer step")
    thr_ax.set(xlabel="tokens", ylabel="threshold", title="controller threshold")
    norm_ax.set(xlabel="tokens", ylabel="L2 norm", title="gradient norm", yscale="log")
    if not thr_ax.lines:
        thr_ax.text(
            0.5, 0.5, "no threshold (plain optimizer)", ha="center", transform=thr_ax.transAxes
        )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _controller(run_dir) -> str | None:
    """The run's ``gqc.controller`` from its ``config.json`` (None without one)."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text())["gqc"]["controller"] if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.plot", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    parser.add_argument("--out", default=None, help="PNG path (default: FIRST_RUN/curves.png)")
    parser.add_argument("--labels", default=None, help="comma-separated legend labels")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        parser.error(f"--labels has {len(labels)} entries for {len(args.runs)} runs.")
    out = args.out or str(Path(args.runs[0]) / "curves.png")
    try:
        print(plot_runs(args.runs, out, labels))
    except FileNotFoundError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
