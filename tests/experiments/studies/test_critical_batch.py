"""experiments.studies.critical_batch: the protocol's checks, and the CLI on a
tiny budget (branches from a reference run). The critical-batch rule is kit's."""

import pytest

from experiments.studies import critical_batch as cb


def test_a_protocol_that_cannot_branch_where_asked_is_refused(capsys):
    with pytest.raises(SystemExit):
        cb.main(["--points=40,100", "--windows=2,4"])
    err = capsys.readouterr().err
    assert "--windows must start with 1" in err and "point 100:" in err


@pytest.mark.slow
def test_cli_branches_writes_the_page_and_reruns_from_files(tmp_path, data_dir):
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
    assert cb.main(args) == 0  # every run is read back: the same page
    assert (tmp_path / "c.md").read_text() == page
