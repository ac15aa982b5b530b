import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gnts_regression_example_runs_and_reports_a_winner():
    out = subprocess.run(
        [sys.executable, "examples/gnts_regression.py", "--samples=4096"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    assert "adamw+gnts" in out and "adamw " in out
    assert "reached the lower eval loss" in out
