"""experiments.studies.optimizer_generality: the CLI on a tiny budget."""

import pytest

from experiments.studies import optimizer_generality as og


def test_unknown_optimizer_is_refused(capsys):
    with pytest.raises(SystemExit):
        og.main(["--optimizers=adamw,adam"])
    assert "unknown optimizers ['adam']" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sweeps_runs_both_arms_and_writes_the_page(tmp_path, data_dir):
    args = [
        "--seeds=0",
        "--tokens=8192",
        "--microbatch=8",
        "--seq_len=32",
        "--optimizers=sgd",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'o.md'}",
    ]
    assert og.main(args) == 0
    page = (tmp_path / "o.md").read_text()
    assert "| sgd | 0.0333: " in page and "4 training runs" in page
    assert (tmp_path / "o.png").stat().st_size > 10_000
