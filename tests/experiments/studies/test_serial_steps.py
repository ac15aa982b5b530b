"""experiments.studies.serial_steps: the arms, the sweep, the paired analysis,
and the page written from the runs' records alone."""

import argparse
import json
import math
import re
from pathlib import Path

import pytest

from experiments.controllers import CONTROLLERS
from experiments.studies import kit
from experiments.studies import serial_steps as ss


def test_every_arm_of_the_plan():
    plan = ss.arms([1, 4])
    assert list(plan) == [
        "adamw-b1",
        "adamw-b4",
        "adamw-b1-d2z",
        "adamw-b1-sq",
        "batch-warmup",
        "batch-warmup+tt",
        "batch-warmup-cbs",
        "batch-warmup-cbs+tt",
        "late-4x",
        "late-4x+tt",
        "seesaw",
        "seesaw+tt",
        "seesaw-paper",
        "seesaw-paper+tt",
        "gnts-relative+sqrt",
        "gnts-relative+sqrt+tt",
        "gns+sqrt",
        "gns+sqrt+tt",
        "snr+sqrt",
        "snr+sqrt+tt",
        "mht+sqrt",
        "mht+sqrt+tt",
        "gnts-reference+sqrt",
        "gnts-reference+sqrt+tt",
        "sbc-ramp+sqrt",
        "sbc-ramp+sqrt+tt",
        "gnts-relative+sqrt+cap4",
        "gnts-relative+sqrt+cap4+tt",
        "cycle-1-4",
        "cycle-1-4+tt",
        "cycle-2-3",
        "cycle-2-3+tt",
        "window-2",
        "window-2+tt",
    ]
    # Every controller that accumulates is an arm; those that step on every
    # microbatch (GNR) are not, and the page names them.
    used = {arm.settings.get("gqc.controller") for arm in plan.values()}
    assert {name for name, c in CONTROLLERS.items() if c.accumulates} <= used
    assert "gnr" in CONTROLLERS and "gnr" not in used
    assert ss.non_accumulating().startswith("GNR, the one controller that never accumulates")
    two = {**CONTROLLERS, "xyz": CONTROLLERS["gnr"]}
    assert ss.non_accumulating(two).startswith("GNR, XYZ: the controllers that never accumulate")
    assert plan["cycle-1-4+tt"].settings == {
        "gqc.controller": "sbc",
        "gqc.sbc_cycle": "1,4",
        "gqc.lr_scaling": "sqrt",
        "gqc.token_time": True,
    }
    assert plan["window-2+tt"].settings == {
        "gqc.controller": "sbc",
        "gqc.sbc_draws": 2,
        "gqc.lr_scaling": "sqrt",
        "gqc.token_time": True,
    }
    assert plan["adamw-b4"].multiplier == 4
    assert plan["adamw-b1-d2z"].settings["optim.schedule"] == "linear"
    squared = plan["adamw-b1-sq"].settings
    assert (squared["optim.b1"], squared["optim.b2"]) == (0.9**2, 0.95**2)
    assert plan["seesaw-paper"].settings["optim.schedule"] == "cosine_steps"
    assert plan["late-4x+tt"].settings["gqc.warmup_growth"] == 4
    assert plan["gns+sqrt+tt"].settings["gqc.token_time"] is True
    assert "gqc.token_time" not in plan["gns+sqrt"].settings
    assert plan["gns+sqrt"].hyper == ("gqc.tolerance", (0.005, 0.015, 0.05))
    assert plan["sbc-ramp+sqrt"].hyper is None
    capped, capped_tt = plan["gnts-relative+sqrt+cap4"], plan["gnts-relative+sqrt+cap4+tt"]
    assert capped.settings == {**plan["gnts-relative+sqrt"].settings, "gqc.max_draws": 4}
    assert capped_tt.settings == {**capped.settings, "gqc.token_time": True}
    assert capped.hyper == capped_tt.hyper == plan["gnts-relative+sqrt"].hyper


def _fake_training(monkeypatch, losses):
    """Training replaced by a record whose final loss is losses(lr, settings)."""
    trained = []

    def fake_train_once(config):
        trained.append(config)
        return {"eval_loss": 0.0, "steps": 1, "params": 1, "elapsed_s": 1.0}

    def fake_record(run_dir, summary, sequences_per_draw, settings):
        loss = losses(settings["optim.lr"], settings)
        return {
            "settings": settings,
            "eval_loss": loss,
            "steps": 4,
            "params": 1,
            "elapsed_s": 1.0,
            "sequences_per_draw": sequences_per_draw,
            "evals": [[0, 0, 0, loss + 1.0], [4, 100, 4, loss]],
            "windows": [[25 * i, 1] for i in range(1, 5)],
            "commit": summary["commit"],
        }

    monkeypatch.setattr(ss, "train_once", fake_train_once)
    monkeypatch.setattr(ss, "record", fake_record)
    return trained


@pytest.mark.parametrize(
    ("optimum", "extend", "expected"),
    [
        (5e-3, 2, [2e-3, 4e-3, 8e-3]),  # inside the grid: nothing added
        (2e-2, 1, [2e-3, 4e-3, 8e-3, 1.6e-2]),  # one more above, capped by extend=1
        (2e-2, 2, [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]),  # 1.6e-2 best: bracketed now
        (1e-3, 2, [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]),  # below, until bracketed
        (2e-2, 0, [2e-3, 4e-3, 8e-3]),  # no extension: the grid as given
    ],
)
def test_the_sweep_extends_beyond_an_edge_best_until_bracketed(
    optimum, extend, expected, tmp_path, monkeypatch
):
    trained = _fake_training(monkeypatch, lambda lr, s: abs(math.log(lr / optimum)))
    args = ["--seeds=0", "--lr=4e-3", "--sweep=0.5,1,2", f"--extend={extend}", "--arms=adamw-b1"]
    assert ss.main([*args, f"--out={tmp_path}", f"--page={tmp_path / 'p.md'}"]) == 0
    swept = [c.optim.lr for c in trained if c.data.seed == 100]
    assert sorted(swept) == pytest.approx(expected)
    # The reported seed trains afresh at the chosen rate; the selection seed is not reported.
    assert [c.data.seed for c in trained if c.data.seed != 100] == [0]
    assert "chosen on seed 100, which is not" in (tmp_path / "p.md").read_text()


def test_a_controller_sweeps_its_own_hyperparameter_with_the_rate(tmp_path, monkeypatch):
    def losses(lr, settings):
        tolerance = settings.get("gqc.tolerance", 0.015)
        return abs(math.log(lr / 4e-3)) + abs(math.log(tolerance / 0.015))

    trained = _fake_training(monkeypatch, losses)
    args = ["--seeds=0,1", "--lr=4e-3", "--sweep=0.5,1,2", "--arms=adamw-b1,gns+sqrt+tt"]
    assert ss.main([*args, f"--out={tmp_path}", f"--page={tmp_path / 'p.md'}"]) == 0
    gns = [c for c in trained if c.gqc.controller == "gns"]
    assert len(gns) == 9 + 2  # 3 rates x 3 tolerances, then 2 seeds
    assert {(c.gqc.tolerance, c.optim.lr) for c in gns if c.data.seed != 100} == {(0.015, 4e-3)}
    assert all(c.gqc.token_time and c.gqc.lr_scaling == "sqrt" for c in gns)
    assert all(c.data.eval_sequences == 512 for c in trained)
    page = (tmp_path / "p.md").read_text()
    assert "| gns+sqrt+tt | 0.004 | 0.015 |" in page
    assert "- gns+sqrt+tt (own: `gqc.tolerance`): lr0.002-tolerance0.005:" in page
    assert "at the edge of its grid" not in page and "did not bracket" not in page


UP = 0.05**2 / 0.015  # past the largest tolerance by the grid's outermost ratio
UP2 = UP**2 / 0.05
DOWN = 0.005**2 / 0.015


@pytest.mark.parametrize(
    ("tolerance", "lr", "extend", "points", "flags"),
    [
        # The own grid (0.005, 0.015, 0.05) is extended at the best rate and the rates
        # beside it, past either edge, until bracketed or --extend times.
        (0.12, 4e-3, 4, [(x, t) for t in (UP, UP2) for x in (2e-3, 4e-3, 8e-3)], []),
        (0.5, 4e-3, 1, [(x, UP) for x in (2e-3, 4e-3, 8e-3)], ["`gqc.tolerance`"]),
        (5e-4, 4e-3, 1, [(x, DOWN) for x in (2e-3, 4e-3, 8e-3)], ["`gqc.tolerance`"]),
        # The rate first (at the best own value), then the own value (at the best rate).
        (
            0.5,
            8e-3,
            1,
            [(1.6e-2, 0.05), (4e-3, UP), (8e-3, UP), (1.6e-2, UP)],
            ["`gqc.tolerance`"],
        ),
        # Each own value has its own rate budget: the rate is bracketed at UP too.
        (
            0.5,
            1.6e-2,
            1,
            [(1.6e-2, 0.05), (8e-3, UP), (1.6e-2, UP), (3.2e-2, UP)],
            ["`gqc.tolerance`"],
        ),
        (0.05, 8e-3, 0, [], ["lr", "`gqc.tolerance`"]),
        (0.015, 4e-3, 4, [], []),
    ],
)
def test_a_controllers_own_grid_is_extended_past_an_edge_and_flagged_if_still_there(
    tolerance, lr, extend, points, flags, tmp_path, monkeypatch
):
    def losses(rate, settings):
        own = settings.get("gqc.tolerance", 0.015)
        return abs(math.log(rate / lr)) + abs(math.log(own / tolerance))

    trained = _fake_training(monkeypatch, losses)
    args = ["--seeds=0", "--lr=4e-3", "--sweep=0.5,1,2", f"--extend={extend}"]
    args += ["--arms=adamw-b1,gns+sqrt", f"--out={tmp_path}", f"--page={tmp_path / 'p.md'}"]
    assert ss.main(args) == 0
    gns = [(c.optim.lr, c.gqc.tolerance) for c in trained if c.gqc.controller == "gns"]
    assert gns[9:-1] == [pytest.approx(p) for p in points]  # past the 3 x 3 grid
    page = (tmp_path / "p.md").read_text()
    line = next(s for s in page.splitlines() if s.startswith("- gns"))
    assert re.findall(r"\(best (\S+) at the edge of its grid\)", line) == flags, line
    assert ("grid did not bracket the optimum" in page) == bool(flags)


@pytest.mark.parametrize("from_records", [False, True])
def test_a_seed_record_at_a_point_the_sweep_no_longer_chooses_is_refused(
    from_records, tmp_path, monkeypatch, capsys
):
    _fake_training(monkeypatch, lambda lr, s: abs(math.log(lr / 4e-3)))
    args = ["--seeds=0", "--lr=4e-3", "--sweep=0.5,1,2", "--extend=0", "--arms=adamw-b1"]
    args += [f"--out={tmp_path / 'runs'}", f"--page={tmp_path / 'p.md'}"]
    assert ss.main(args) == 0
    # A later sweep point does better: seed 0's record is now at another rate.
    sweep = tmp_path / "p" / "adamw-b1" / "sweep"
    rec = json.loads((sweep / "lr0.008.json").read_text())
    better = {**rec, "eval_loss": -1.0}
    kit.write_record(sweep / "lr0.008.json", better)
    with pytest.raises(SystemExit):
        ss.main([*args, "--from_records"] if from_records else args)
    assert "s0.json: trained with optim.lr=0.004 (now: 0.008)" in capsys.readouterr().err


def test_compare_needs_the_base_records_there(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ss.main([f"--compare={tmp_path}"])
    assert f"--compare={tmp_path}: no records of adamw-b1 there" in capsys.readouterr().err


def test_the_selection_seed_must_not_be_reported(capsys):
    with pytest.raises(SystemExit) as exit_:
        ss.main(["--seeds=0,1", "--select_seed=1", "--arms=adamw-b1"])
    assert exit_.value.code == 2 and "must not be a reported seed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ("adamw-b1,gns+cubic", "unknown arm(s) ['gns+cubic']"),
        ("gns+sqrt", "must include adamw-b1"),
    ],
)
def test_arms_refuses_unknown_names_and_a_plan_without_the_base(arms, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ss.main([f"--arms={arms}"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_paired_interval_is_the_t_interval_of_the_differences():
    mean, half = ss.paired([0.01, 0.03, 0.02, 0.04, 0.00])
    # scipy.stats.t.ppf(0.975, 4) = 2.7764; std 0.015811; sqrt(5)
    assert mean == pytest.approx(0.02)
    assert half == pytest.approx(2.7764 * 0.0158114 / math.sqrt(5), rel=1e-4)
    assert math.isnan(ss.paired([0.1])[1])


def _rec(loss, steps_per_eval, draws=1):
    """A record whose eval curve falls linearly to ``loss`` over 4 evals."""
    evals = [[i, 100 * i, steps_per_eval * i, loss + 0.1 * (4 - i)] for i in range(5)]
    return {
        "eval_loss": loss,
        "steps": 4 * steps_per_eval,
        "elapsed_s": 1.0,
        "sequences_per_draw": 8,
        "evals": evals,
        "windows": [[100 * i, draws] for i in range(1, 5)],
    }


def test_analysis_pairs_each_seed_with_the_base():
    results = {
        ("adamw-b1", 0): _rec(2.0, 10),
        ("adamw-b1", 1): _rec(2.1, 10),
        ("gns+sqrt", 0): _rec(2.0, 5, draws=2),  # the same curve in half the steps
        ("gns+sqrt", 1): _rec(2.15, 5, draws=2),  # worse at the end: never the final target
    }
    plan = {"adamw-b1": None, "gns+sqrt": None}
    rows = ss.analyse(plan, [0, 1], results)
    assert rows["gns+sqrt"]["diff"][0] == pytest.approx(0.025)
    assert rows["gns+sqrt"]["saved"][0.5] == pytest.approx([0.5, 0.375])
    assert rows["gns+sqrt"]["saved"][1.0] == pytest.approx([0.5])
    assert rows["gns+sqrt"]["batch"] == 16.0
    assert ss.saved_cell(rows["gns+sqrt"]["saved"][1.0], 2) == "+50% (1/2)"
    assert ss.saved_cell([], 2) == "never"


def test_verdict_names_the_best_matching_arm_the_token_time_gaps_and_the_goal():
    def row(diff, half, saved, loss=(2.0, 2.0)):
        return {"diff": (diff, half), "saved": {1.0: saved}, "loss": list(loss)}

    rows = {
        "adamw-b1": row(0.0, 0.0, [0.0, 0.0]),
        "seesaw": row(0.0, 0.01, [0.2, 0.3]),
        "gns+sqrt": row(0.05, 0.01, [], loss=(2.06, 2.04)),
        "gns+sqrt+tt": row(0.0, 0.01, [0.5, 0.6], loss=(2.0, 2.0)),
    }
    lines = ss.verdict(rows, [0, 1])
    assert (
        "**gns+sqrt+tt** reaches `adamw-b1`'s final loss with the most steps saved (55%)"
        in (lines[0])
    )
    # +tt minus its twin per seed: -0.06 and -0.04, mean -0.05, t(0.975, 1) x 0.01.
    assert lines[1].endswith(
        "gns+sqrt +0.0500 -> +0.0000 (-0.0500 ± 0.1271), 100% of the gap closed."
    )
    assert "is met here" in lines[2]
    rows["gns+sqrt+tt"] = row(0.03, 0.01, [0.5, 0.6])
    assert "is not met here" in ss.verdict(rows, [0, 1])[2]


def _critical_batch_study(root: Path) -> Path:
    """Records as the critical-batch study writes them: a reference, and a window
    of 2 branched from microbatch 4 whose loss stays within epsilon."""
    for name, train, draws, loss in (
        ("reference", {}, 1, 3.0),
        ("from4/window2", {"train.branch_step": 4, "train.stop_after": 4}, 2, 3.01),
    ):
        settings = {
            "model.preset": "tiny",
            "model.seq_len": 32,
            "data.microbatch_size": 8,
            "data.seed": 0,
            "train.tokens": 4096,
            "gqc.sbc_draws": draws,
            **train,
        }
        kit.write_record(
            root / "seed0" / f"{name}.json", {"settings": settings, "evals": [[8, 0, 0, loss]]}
        )
    return root


def test_cli_trains_then_rewrites_the_page_from_its_records_alone(tmp_path, data_dir, capsys):
    """Real runs: the records beside the page are all the page needs; nothing
    retrains and the page comes back byte-identical without the run folders."""
    args = [
        f"--critical_batch={_critical_batch_study(tmp_path / 'cbs')}",
        "--seeds=0",
        "--select_seed=7",
        "--tokens=2048",
        "--microbatch=8",
        "--seq_len=32",
        "--batches=1",
        "--sweep=1",
        "--max_draws=4",
        "--evals=2",
        "--eval_sequences=16",
        "--arms=adamw-b1,late-4x+tt",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'results' / 's.md'}",
    ]
    assert ss.main(args) == 0
    page = (tmp_path / "results" / "s.md").read_text()
    records = sorted(
        p.relative_to(tmp_path / "results" / "s")
        for p in (tmp_path / "results" / "s").rglob("*.json")
    )
    assert [str(p) for p in records] == [
        "adamw-b1/s0.json",
        "adamw-b1/sweep/lr0.003.json",
        "late-4x+tt/s0.json",
        "late-4x+tt/sweep/lr0.003.json",
    ]
    assert "| adamw-b1 | 0.003 |  |" in page and "| late-4x+tt | 0.003 |" in page
    assert "GNR, the one controller that never accumulates" in page
    assert "| **measured critical batch** | **16** | |" in page
    assert (tmp_path / "results" / "s.png").stat().st_size > 10_000
    rec = json.loads((tmp_path / "results" / "s" / "late-4x+tt" / "s0.json").read_text())
    assert rec["settings"]["gqc.token_time"] is True and rec["evals"][-1][0] == 8
    assert len(rec["adam"]) == len(rec["windows"]) == rec["steps"]
    # A record written by an older format comes back whole from its run folder.
    path = tmp_path / "results" / "s" / "late-4x+tt" / "s0.json"
    path.write_text(json.dumps({**rec, "adam": [], "commit": "abc"}))
    assert ss.main([*args, "--rebuild_records"]) == 0
    assert json.loads(path.read_text()) == {**rec, "commit": "abc"}
    path.write_text(json.dumps(rec, sort_keys=True) + "\n")
    assert ss.main(args) == 0 and (tmp_path / "results" / "s.md").read_text() == page
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert ss.main([*args, "--from_records"]) == 0
    assert (tmp_path / "results" / "s.md").read_text() == page
    assert not (tmp_path / "runs").exists()
    # A record of other settings than its arm's is refused, not shown as the arm.
    stale = {**rec["settings"], "gqc.warmup_fractions": "0.5"}
    path.write_text(json.dumps({**rec, "settings": stale}))
    with pytest.raises(SystemExit):
        ss.main([*args, "--from_records"])
    assert "gqc.warmup_fractions='0.5' (now: '0.7')" in capsys.readouterr().err


def test_each_arm_is_set_against_its_result_at_another_scale(tmp_path):
    """Another page's records: paired per seed there, with the seed count where it
    differs from here; arms of neither page are left out."""
    there = {"adamw-b1": [2.0, 2.1, 2.2], "gns+sqrt": [2.1, 2.3], "seesaw": [1.9, 2.0, 2.1]}
    for name, losses in there.items():
        for seed, loss in enumerate(losses):
            record = {"eval_loss": loss, "params": 1234}
            kit.write_record(tmp_path / name / f"s{seed}.json", record)
    assert ss.another_scale(tmp_path, ["gns+sqrt", "snr"]) == {
        "gns+sqrt": pytest.approx((0.15, 12.706 * 0.1 / 2, 2), rel=1e-4)  # sd 0.1 / sqrt(2)
    }
    args = argparse.Namespace(compare=str(tmp_path), batches="1,2")
    rows = {"gns+sqrt": {"diff": (0.01, 0.02)}, "adamw-b2": {"diff": (0.5, 0.1)}}
    plan = {"adamw-b1": None, "gns+sqrt": None, "adamw-b2": None}
    lines = ss.against_another_scale(args, plan, [0, 1, 2], rows)
    assert "there (1,234 parameters)" in lines[2] and "not here: 1." in lines[2]
    assert lines[6:] == [
        "| adamw-b2 | – | +0.5000 ± 0.1000 |",
        "| seesaw | -0.1000 ± 0.0000 | – |",
        "| gns+sqrt | +0.1500 ± 0.6353 (2 seeds) | +0.0100 ± 0.0200 |",
        "",
    ]


def test_each_arm_is_set_against_the_critical_batch_of_each_interval():
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

    def rec(windows, per_draw):
        return {"windows": windows, "sequences_per_draw": per_draw}

    plan = {"adamw-b2": None, "gns+sqrt": None}
    results = {
        ("adamw-b2", 0): rec([(500, 1), (1000, 1), (1500, 1)], 16),
        # Windows of 1 and 3 microbatches of 8 in the first interval, none in the second.
        ("gns+sqrt", 0): rec([(200, 1), (1000, 3), (2500, 9)], 8),
    }
    args = argparse.Namespace(critical_batch="runs/cb", epsilon=0.02, tokens=3000, microbatch=8)
    lines = ss.against_critical_batch(args, plan, [0], results, cbs)
    text = "\n".join(lines)
    assert "`runs/cb` (`tiny`, microbatches of 8 x 32-token sequences, 4,000 tokens" in text
    assert "seeds 0, 1; epsilon 0.02" in text
    assert "| arm | 0-1,000 | 1,000-2,000 | above it |" in lines
    assert "| **measured critical batch** | **16** | **48** (32-64) | |" in lines
    assert "| adamw-b2 | 16.0 | 16.0 | 0 of 2 |" in lines
    # Steps of 8 and 24 sequences: the average token trained in a batch of 20.
    assert "| gns+sqrt | 20.0 | – | 1 of 1 |" in lines


def test_mechanism_measures_adam_at_each_window_that_at_least_doubles():
    def rec(draws, update, second):
        return {
            "windows": [[100 * i, d] for i, d in enumerate(draws, 1)],
            "adam": [
                [100 * i, v, u] for i, (u, v) in enumerate(zip(update, second, strict=True), 1)
            ],
        }

    # Jumps at steps 2 (1 -> 2) and 4 (2 -> 8); 2 -> 3 is not a doubling.
    plain = rec([1, 2, 3, 8], [1.0, 0.5, 0.5, 0.25], [4.0, 4.0, 2.0, 2.0])
    assert ss.window_jumps(plain) == [1, 3]
    jumps, update, second = ss.responses(plain)
    assert jumps == 2 and update == pytest.approx(0.5) and second == pytest.approx(1.0)
    assert ss.responses({"windows": plain["windows"], "adam": []}) is None
    coupled = rec([1, 2, 3, 8], [1.0, 1.0, 1.0, 1.0], [4.0, 2.0, 2.0, 1.0])
    plan = {"adamw-b1": None, "late-4x": None, "late-4x+tt": None}
    results = {("late-4x", 0): plain, ("late-4x+tt", 0): coupled}
    lines = ss.mechanism(plan, [0], results)
    assert "| late-4x | 2 | 0.500 | 1.000 | 0.50 | 2 | 1.000 | 0.500 | 1.00 |" in lines
    assert any(line.startswith("- **late-4x+tt**: 2.0x late-4x's") for line in lines)  # >= 2x
    assert ss.largest_update(plain) == (0.5, 200, 1, 2)  # the first step's is left out


def test_mechanism_names_where_token_time_makes_the_largest_update():
    def rec(draws, update):
        return {
            "windows": [[100 * i, d] for i, d in enumerate(draws, 1)],
            "adam": [[100 * i, 1.0, u] for i, u in enumerate(update, 1)],
        }

    plan = {"adamw-b1": None, "gnts": None, "gnts+tt": None}
    results = {
        ("adamw-b1", 0): rec([1, 1, 1], [0.1, 0.2, 0.2]),
        ("gnts", 0): rec([1, 16, 1], [0.1, 0.5, 0.2]),
        ("gnts+tt", 0): rec([1, 16, 1], [0.1, 2.5, 0.2]),
    }
    swept = {
        "gnts": {"lr1": rec([1, 16], [0.1, 0.5]), "lr2": rec([1, 16], [0.1, 1.0])},
        "gnts+tt": {"lr2": rec([1, 16], [0.1, 1.5]), "lr3": rec([1, 16], [0.1, 9.0])},
    }
    text = "\n".join(ss.mechanism(plan, [0], results, swept))
    assert "`adamw-b1`'s is 0.20." in text
    assert (
        "- **gnts+tt**: 5.0x gnts's, each at its selected settings; the seeds' largest updates "
        "come at steps whose window (the step before -> that step) is 1 -> 16 microbatches, at "
        "200 tokens. At the same settings (1 point both sweeps ran, on the selection seed) "
        "`+tt`'s is 1.5x." in text
    )
    swept["gnts+tt"]["lr1"] = rec([1, 16], [0.1, 1.0])
    text = "\n".join(ss.mechanism(plan, [0], results, swept))
    assert "(2 points both sweeps ran, on the selection seed) `+tt`'s is 1.5-2.0x." in text


def test_cbs_fractions_double_where_the_critical_batch_first_reaches_twice_the_batch():
    def row(seed, start, sequences):
        return {"seed": seed, "start": start, "stop": start + 100, "sequences": sequences}

    # Interval means: 8, 12, 16 (a doubling from 8), 40 (16 -> 32 only: 64 is not reached).
    cbs = [
        *(row(s, 0, 8) for s in (0, 1)),
        row(0, 1000, 8),
        row(1, 1000, 16),
        *(row(s, 2000, 16) for s in (0, 1)),
        row(0, 3000, 32),
        row(1, 3000, 48),
    ]
    assert ss.cbs_fractions(cbs, 8, 4000) == "0.50,0.75"
    assert ss.cbs_fractions(cbs, 4, 4000) == "0.00,0.50,0.75"  # 8 >= 2 x 4 at once
    assert ss.cbs_fractions(cbs, 32, 4000) == ""
