"""Every benchmark script runs end to end at a tiny size and prints its table
(the figures themselves are recorded in docs/results/performance.md)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "argv", "expect"),
    [
        ("rounding", ["--elements", "4096", "--repeats", "3"], "significant"),
        pytest.param(  # the GPU pack's smoke test runs it too (tests/experiments)
            "controller_overhead",
            ["--params", "4096", "--samples", "1"],
            "gnts microstep loop",
            marks=pytest.mark.slow,
        ),
        ("window", ["--microbatches", "24", "--max-draws", "4"], "accumulate_window"),
        (
            "loop_overhead",
            ["--presets", "tiny", "--seq-len", "32", "--microbatches", "12", "--skip", "2"]
            + ["--rounds", "1"],
            "program tok/s",
        ),
        (
            "gpt_throughput",
            ["--preset", "tiny", "--steps", "3", "--rounds", "1", "--arms", "adamw,gnts"]
            + ["--attention", "xla"],
            "xla attention",
        ),
    ],
)
def test_benchmark_runs_and_prints_its_table(name, argv, expect, capsys):
    _load(name).main(argv)
    out = capsys.readouterr().out
    assert expect in out and "device:" in out


def test_torch_peer_jax_side_does_no_host_reads():
    """The JAX side of the peer comparison runs under a device-to-host transfer
    guard, so a host read in the loop would raise here."""
    result = _load("torch_peer").jax_side(microbatches=3, warmup=1)
    assert result["microbatches_per_s"] > 0
