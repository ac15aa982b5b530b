"""Writes docs/api.md from the docstrings of every public name of gqc_jax.

    python docs/build_api.py          # rewrite docs/api.md
    python docs/build_api.py --check  # exit 1 if docs/api.md is out of date

The examples on the page are the docstrings' own, which the test suite runs as
doctests (``--doctest-modules``); ``tests/test_docs.py`` checks the page is current.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import gqc_jax

PAGE = Path(__file__).with_name("api.md")

GROUPS = [
    ("Controllers", ["gnts", "snr", "gns", "gnr", "mht", "sbc", "adaptive_accumulation"]),
    (
        "Factories with the reference's schedules",
        [
            "gnts_with_cosine_annealing",
            "gnts_with_cosine_annealing_conventional_lr",
            "gnr_with_cosine_annealing",
            "gnr_with_cosine_annealing_conventional_lr",
            "gns_with_cosine_annealing",
            "gns_default",
            "mht_with_warmup",
            "sbc_with_polynomial",
            "sbc_with_polynomial_conventional_lr",
            "on_microbatch_clock",
        ],
    ),
    ("Batch-size schedules", ["batch_size_warmup", "seesaw"]),
    (
        "Running and inspecting",
        [
            "microstep",
            "accumulate_window",
            "flush",
            "stats",
            "find_controller_state",
            "current_mean",
        ],
    ),
    ("Gradient rounding", ["round_gradients", "RoundGradientsState"]),
    ("Loss-spike guard", ["skip_loss_spikes", "loss_spike_stats", "SkipLossSpikesState"]),
    (
        "Criteria and states (for writing or inspecting controllers)",
        [
            "Criterion",
            "Draw",
            "AdaptiveAccumulationState",
            "GradientNormThreshold",
            "GradientNormThresholdState",
            "RelativeGradientNormThreshold",
            "RelativeGradientNormThresholdState",
            "SignalToNoise",
            "SignalToNoiseState",
            "GradientNoiseScale",
            "GradientNoiseScaleState",
            "GradientNormRescale",
            "GradientNormRescaleState",
            "MetricHypothesisTest",
            "MetricHypothesisTestState",
            "ScheduledBatch",
            "ScheduledBatchState",
            "MicrobatchClockState",
            "ScalarOrSchedule",
        ],
    ),
]


def _signature(name: str, obj) -> str:
    if inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return f"class {name}({', '.join(obj._fields)})"
    try:
        sig = str(inspect.signature(obj)).replace("'", "")  # annotations are strings here
    except (TypeError, ValueError):
        return name
    prefix = "class " if inspect.isclass(obj) else ""
    return f"{prefix}{name}{sig}"


def _doc(obj) -> str:
    """The docstring, with doctest examples fenced as ``pycon`` blocks."""
    doc = inspect.getdoc(obj) or ""
    out, in_example = [], False
    for line in doc.splitlines():
        is_code = line.lstrip().startswith((">>>", "..."))
        if is_code and not in_example:
            out.append("```pycon")
            in_example = True
        elif in_example and not line.strip():
            out.append("```")
            in_example = False
        out.append(line.strip() if in_example else line)
    if in_example:
        out.append("```")
    return "\n".join(out)


def _entry(name: str, obj) -> list[str]:
    if name == "ScalarOrSchedule":  # a type alias: its module documents it
        signature = "ScalarOrSchedule = float | int | jax.Array | Callable[[jax.Array], ArrayLike]"
        doc = _doc(sys.modules["gqc_jax._hyperparams"])
        return [f"### `{name}`", "", "```python", signature, "```", "", doc, ""]
    return [f"### `{name}`", "", "```python", _signature(name, obj), "```", "", _doc(obj), ""]


def render() -> str:
    listed = {n for _, names in GROUPS for n in names} | {"schedules"}
    missing = sorted(set(gqc_jax.__all__) - listed)
    if missing:
        raise SystemExit(f"public names missing from docs/build_api.py GROUPS: {missing}")
    lines = [
        "# gqc_jax API reference",
        "",
        "Generated from the docstrings by `python docs/build_api.py`; every example below",
        "runs as a doctest in the test suite. See the [user guide](user_guide.md) for how",
        "the pieces fit together.",
        "",
    ]
    for title, names in GROUPS:
        lines += [f"## {title}", ""]
        for name in names:
            lines += _entry(name, getattr(gqc_jax, name))
    lines += ["## Schedules (`gqc_jax.schedules`)", "", inspect.getdoc(gqc_jax.schedules), ""]
    for name, fn in inspect.getmembers(gqc_jax.schedules, inspect.isfunction):
        if not name.startswith("_") and fn.__module__ == gqc_jax.schedules.__name__:
            lines += _entry(f"schedules.{name}", fn)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print("docs/api.md is out of date: run python docs/build_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(PAGE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
