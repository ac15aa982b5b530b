"""experiments.studies.critical_batch: the protocol's checks, and the CLI on a
tiny budget (branches from a reference run). The critical-batch rule is kit's."""

import json
import shutil

import pytest

from experiments.studies import critical_batch as cb


def test_a_protocol_that_cannot_branch_where_asked_is_refused(capsys):
    with pytest.raises(SystemExit):
        cb.main(["--points=40,100", "--windows=2,4"])
    err = capsys.readouterr().err
    assert "--windows must start with 1" in err and "point 100:" in err


@pytest.mark.slow
def test_cli_branches_writes_the_page_and_reruns_from_files(tmp_path, data_dir, capsys):
    args = [
        "--seeds=0",
        "--tokens=12288",
        "--seq_len=32",
        "--points=8,16",
        "--delta=8",
        "--windows=1,2,4",
        "--checkpoint_every=8",
        "--eval_every=8",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'c.md'}",
    ]
    assert cb.main(args) == 0
    page = (tmp_path / "c.md").read_text()
    assert "8 training runs" in page and "| gns+sqrt |" in page
    assert "| 8 | 2,048 | 0.000 |" in page  # the reference is the batch of B
    assert (tmp_path / "c.png").stat().st_size > 10_000
    records = sorted(str(p.relative_to(tmp_path / "c")) for p in (tmp_path / "c").rglob("*"))
    assert records == [
        "seed0",
        "seed0/from16",
        "seed0/from16/window2.json",
        "seed0/from16/window4.json",
        "seed0/from8",
        "seed0/from8/window2.json",
        "seed0/from8/window4.json",
        "seed0/gns+sqrt.json",
        "seed0/gnts-relative+sqrt.json",
        "seed0/reference.json",
        "seed0/snr+sqrt.json",
    ]
    branch = json.loads((tmp_path / "c" / "seed0" / "from8" / "window4.json").read_text())
    assert branch["settings"] == {
        "data.microbatch_size": 8,
        "data.seed": 0,
        "gqc.controller": "sbc",
        "gqc.lr_scaling": "sqrt",
        "gqc.sbc_draws": 4,
        "model.preset": "tiny",
        "model.seq_len": 32,
        "train.branch_step": 8,
        "train.stop_after": 8,
        "train.tokens": 12288,
    }
    assert branch["evals"][-1][0] == 16 and branch["commit"]
    assert cb.main(args) == 0  # every run is read back: the same page
    assert (tmp_path / "c.md").read_text() == page
    # The records alone: the page comes back byte-identical without the run folders.
    shutil.rmtree(tmp_path / "runs")
    assert cb.main([*args, "--from_records"]) == 0
    assert (tmp_path / "c.md").read_text() == page and not (tmp_path / "runs").exists()
    # A record of other settings is refused, not shown as this protocol's run.
    path = tmp_path / "c" / "seed0" / "gns+sqrt.json"
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "settings": {**rec["settings"], "gqc.tolerance": 1.0}}))
    with pytest.raises(SystemExit):
        cb.main([*args, "--from_records"])
    assert "gqc.tolerance=1.0 (now 0.05)" in capsys.readouterr().err
    path.write_text(json.dumps(rec))
    # A missing branch record retrains the reference it branches from, then the branch.
    (tmp_path / "c" / "seed0" / "from16" / "window2.json").unlink()
    assert cb.main(args) == 0
    assert (tmp_path / "c.md").read_text() == page
    assert sorted(p.name for p in (tmp_path / "runs" / "seed0").iterdir()) == [
        "from16",
        "reference",
    ]
