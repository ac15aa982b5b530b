"""experiments.studies.serial_steps: the arms, and the whole study on a tiny budget."""

import pytest

from experiments.studies import serial_steps as ss


def test_every_arm_of_the_plan():
    plan = ss.arms([1, 4])
    assert list(plan) == [
        "adamw-b1",
        "adamw-b4",
        "batch-warmup",
        "seesaw",
        "gnts-relative",
        "gnts-relative+sqrt",
        "gns",
        "gns+sqrt",
        "snr",
        "snr+sqrt",
        "gnts-reference",
        "gnts-reference+sqrt",
        "mht",
        "mht+sqrt",
        "sbc-ramp",
        "sbc-ramp+sqrt",
    ]
    assert plan["adamw-b4"][0] == 4 and plan["snr+sqrt"][1]["gqc.lr_scaling"] == "sqrt"
    assert "gqc.lr_scaling" not in plan["snr"][1]


@pytest.mark.slow
def test_cli_runs_every_arm_and_rewrites_the_page_from_its_runs(tmp_path, data_dir):
    args = [
        "--seeds=0,1",
        "--tokens=4096",
        "--microbatch=8",
        "--seq_len=32",
        "--batches=1,2",
        "--sweep=1,2",
        "--max_draws=4",
        "--evals=4",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 's.md'}",
    ]
    assert ss.main(args) == 0
    page = (tmp_path / "s.md").read_text()
    for name in ss.arms([1, 2]):
        assert f"| {name} |" in page and f"- {name}: " in page
    assert "## Against the goal" in page and "The goal (within the band" in page
    assert "without -> with the square-root coupling" in page and "sbc-ramp " in page
    assert (tmp_path / "s.png").stat().st_size > 10_000
    # 16 arms x (2 sweep points + 1 more seed)
    assert len(list((tmp_path / "runs").rglob("summary.json"))) == 48
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("metrics.jsonl")}
    assert ss.main(args) == 0  # nothing retrains: the page is written from the run folders
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (tmp_path / "s.md").read_text() == page
