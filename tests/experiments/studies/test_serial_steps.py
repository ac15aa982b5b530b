"""experiments.studies.serial_steps: the arms, and the whole study on a tiny budget."""

import argparse
import json
import math
from pathlib import Path

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


def _critical_batch_study(root: Path) -> Path:
    """Run folders as the critical-batch study leaves them: a reference, and a
    window of 2 branched from microbatch 4 whose loss stays within epsilon."""
    for name, train, draws, loss in (
        ("reference", {}, 1, 3.0),
        ("from4/window2", {"branch_step": 4, "stop_after": 4}, 2, 3.01),
    ):
        folder = root / "seed0" / name
        folder.mkdir(parents=True)
        config = {
            "model": {"preset": "tiny", "seq_len": 32},
            "data": {"microbatch_size": 8, "seed": 0},
            "train": {"tokens": 4096, **train},
            "gqc": {"sbc_draws": draws},
        }
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.jsonl").write_text(json.dumps({"microbatch": 8, "eval/loss": loss}))
    return root


@pytest.mark.slow
def test_cli_runs_every_arm_and_rewrites_the_page_from_its_runs(tmp_path, data_dir):
    args = [
        f"--critical_batch={_critical_batch_study(tmp_path / 'cbs')}",
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
    assert "| **measured critical batch** | **16** | |" in page  # tokens 1,024-2,048
    assert (tmp_path / "s.png").stat().st_size > 10_000
    # 16 arms x (2 sweep points + 1 more seed)
    assert len(list((tmp_path / "runs").rglob("summary.json"))) == 48
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("metrics.jsonl")}
    assert ss.main(args) == 0  # nothing retrains: the page is written from the run folders
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (tmp_path / "s.md").read_text() == page


def test_arms_trains_only_the_named_arms_in_their_order(tmp_path, data_dir, capsys):
    args = [
        "--seeds=0",
        "--tokens=2048",
        "--microbatch=8",
        "--seq_len=32",
        "--sweep=1",
        "--max_draws=4",
        "--evals=2",
        "--arms=gns+sqrt,adamw-b1",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 's.md'}",
    ]
    assert ss.main(args) == 0
    trained = [line for line in capsys.readouterr().err.splitlines() if line.startswith("-> ")]
    assert [Path(line[3:]).parts[-3] for line in trained] == ["gns+sqrt", "adamw-b1"]
    assert sorted(
        p.parent.parent.parent.name for p in (tmp_path / "runs").rglob("summary.json")
    ) == [
        "adamw-b1",
        "gns+sqrt",
    ]
    page = (tmp_path / "s.md").read_text()
    rows = [line.split(" | ")[0] for line in page.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| adamw-b1", "| gns+sqrt"]  # the plan's order, after the header
    assert "--arms=gns+sqrt,adamw-b1" in page and "The adaptive arm that comes closest" in page


@pytest.mark.parametrize(
    ("arms", "message"),
    [("adamw-b1,gns+cubic", "unknown arm(s) ['gns+cubic']"), ("gns", "must include adamw-b1")],
)
def test_arms_refuses_unknown_names_and_a_plan_without_the_target(arms, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ss.main([f"--arms={arms}"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_verdict_states_whether_the_goal_is_met():
    def row(loss, fewer):
        return {"loss": [loss], "fewer": fewer, "to_target": [1] if fewer is not None else []}

    rows = {
        "adamw-b1": row(2.0, 0.0),
        "batch-warmup": row(2.0, 0.43),
        "seesaw": row(2.0, 0.36),
        "gns": row(2.1, None),
        "gns+sqrt": row(2.005, 0.5),
    }
    lines = ss.verdict(rows, "adamw-b1", band=0.01, seeds=[0])
    assert "**gns+sqrt**: 50% fewer steps" in lines[2] and "is met here" in lines[2]
    assert lines[3].endswith("gns +0.1000 -> +0.0050 (closed).")
    del rows["seesaw"]
    assert "met against the schedules run here" in ss.verdict(rows, "adamw-b1", 0.01, [0])[1]
    rows["gns+sqrt"] = row(2.05, 0.5)
    assert "is not met here" in ss.verdict(rows, "adamw-b1", 0.01, [0])[1]


@pytest.mark.parametrize(
    ("optimum", "extend", "expected"),
    [
        (5e-3, 2, [2e-3, 4e-3, 8e-3]),  # inside the grid: nothing added
        (2e-2, 1, [2e-3, 4e-3, 8e-3, 1.6e-2]),  # one more above, capped by extend=1
        (2e-2, 2, [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]),  # 1.6e-2 best: bracketed now
        (1e-3, 2, [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]),  # below, until bracketed
        (2e-2, 0, [2e-3, 4e-3, 8e-3]),  # the default: the grid as given
    ],
)
def test_extend_adds_rates_beyond_an_edge_best_until_bracketed(
    optimum, extend, expected, tmp_path, monkeypatch
):
    trained = []

    def fake_train_once(config):
        trained.append(config.optim.lr)
        return {"eval_loss": abs(math.log(config.optim.lr / optimum))}

    monkeypatch.setattr(ss, "train_once", fake_train_once)
    monkeypatch.setattr(ss, "figure", lambda *a: None)
    monkeypatch.setattr(ss, "write_page", lambda *a: tmp_path / "page.md")
    (tmp_path / "page.md").write_text("")
    args = ["--seeds=0", "--lr=4e-3", f"--extend={extend}", "--arms=adamw-b1"]
    assert ss.main([*args, f"--out={tmp_path}"]) == 0
    assert sorted(trained) == pytest.approx(expected)


def test_a_critical_batch_folder_without_a_study_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        ss.main([f"--critical_batch={tmp_path}", "--arms=adamw-b1", f"--out={tmp_path}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"--critical_batch={tmp_path}: " in err
    assert "no critical-batch runs" in err and not list(tmp_path.iterdir())


def _steps(folder: Path, records: list[tuple[int, int]]) -> Path:
    """A run folder whose steps end at the given (tokens, draws)."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"tokens": t, "gqc/draws": d, "train/loss": 1.0}) for t, d in records]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_each_arm_is_set_against_the_critical_batch_of_each_interval(tmp_path):
    def cbs_row(seed, start, stop, sequences):
        return {
            "seed": seed,
            "start": start,
            "stop": stop,
            "sequences": sequences,
            "preset": "tiny",
            "tokens": 4000,
            "microbatch": 8,
            "seq_len": 32,
        }

    cbs = [
        cbs_row(0, 0, 1000, 16),
        cbs_row(0, 1000, 2000, 32),
        cbs_row(1, 0, 1000, 16),
        cbs_row(1, 1000, 2000, 64),
    ]
    assert ss.critical_intervals(cbs) == [(0, 1000, [16, 16]), (1000, 2000, [32, 64])]
    plan = {"adamw-b2": (2, {}), "gns": (1, {})}
    dirs = {
        ("adamw-b2", 0): _steps(tmp_path / "b2", [(500, 1), (1000, 1), (1500, 1)]),
        # Windows of 1 and 3 microbatches of 8 in the first interval, none in the second.
        ("gns", 0): _steps(tmp_path / "gns", [(200, 1), (1000, 3), (2500, 9)]),
    }
    args = argparse.Namespace(critical_batch="runs/cb", epsilon=0.02, tokens=3000, microbatch=8)
    lines = ss.against_critical_batch(args, plan, [0], dirs, cbs)
    text = "\n".join(lines)
    assert "`runs/cb` (`tiny`, microbatches of 8 x 32-token sequences, 4,000 tokens" in text
    assert "seeds 0, 1; epsilon 0.02" in text
    assert "| arm | 0-1,000 | 1,000-2,000 | above it |" in lines
    assert "| **measured critical batch** | **16** | **48** (32-64) | |" in lines
    assert "| adamw-b2 | 16.0 | 16.0 | 0 of 2 |" in lines
    assert "| gns | 16.0 | – | 0 of 1 |" in lines
    dirs[("gns", 0)] = _steps(tmp_path / "gns-big", [(1000, 3), (2000, 8)])
    assert "| gns | 24.0 | 64.0 | 2 of 2 |" in ss.against_critical_batch(args, plan, [0], dirs, cbs)
