"""experiments.studies.gqc_ablation: the spike counter, and the whole study on a tiny budget."""

import json

import pytest

from experiments.studies import gqc_ablation as ab


def test_second_moment_jumps_are_counted_after_the_first_tenth(tmp_path):
    nu = [1.0] * 10 + [1.0, 2.0, 2.1, 5.0, 5.0] + [5.0] * 5
    records = [{"train/loss": 1.0, "tokens": i, "diag/second_moment": v} for i, v in enumerate(nu)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    count, worst = ab.spikes(tmp_path, factor=1.5)
    assert count == 2 and worst == pytest.approx(5.0 / 2.1)


@pytest.mark.slow
def test_cli_runs_every_part_and_writes_the_page(tmp_path, data_dir):
    args = [
        "--seeds=0,1",
        "--tokens=8192",
        "--microbatch=8",
        "--seq_len=32",
        "--lrs=1e-3,3e-3",
        "--epochs=2",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'a.md'}",
    ]
    assert ab.main(args) == 0
    page = (tmp_path / "a.md").read_text()
    for section in ("## A.", "## B.", "## C.", "## D.", "| fixed-"):
        assert section in page
    for arm in ab.ARMS:
        assert f"| {arm} |" in page
    assert (tmp_path / "a.png").stat().st_size > 10_000
