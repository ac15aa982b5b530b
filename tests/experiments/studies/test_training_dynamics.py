"""experiments.studies.training_dynamics: the whole study on a tiny model."""

from experiments.studies import training_dynamics as td


def test_cli_runs_permutations_and_a_repeat_and_writes_the_page(tmp_path, data_dir):
    args = [
        "--permutations=2",
        "--tokens=2048",
        "--microbatch=8",
        "--seq_len=32",
        "--preset=tiny",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'd.md'}",
    ]
    assert td.main(args) == 0
    page = (tmp_path / "d.md").read_text()
    assert "are bit-identical (largest difference 0)" in page
    assert "| adamw | blocks.1 |" in page and "| adamw+gnts | embed |" in page
    assert (tmp_path / "d.png").stat().st_size > 10_000
    runs = tmp_path / "runs"
    assert sorted(p.name for p in (runs / "adamw").iterdir()) == ["perm0", "perm0-repeat", "perm1"]
    # Same initialisation, other data order: the curves start together and then part.
    x0, y0 = td.eval_curve(runs / "adamw" / "perm0")
    x1, y1 = td.eval_curve(runs / "adamw" / "perm1")
    assert x0 == x1 and y0[0] == y1[0] and y0[-1] != y1[-1]
    # The page is written from the run folders alone: a rerun trains nothing and
    # writes the same bytes.
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.jsonl")}
    assert td.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (tmp_path / "d.md").read_text() == page


def test_permutations_must_give_a_spread(capsys):
    import pytest

    with pytest.raises(SystemExit):
        td.main(["--permutations=1"])
    assert "--permutations must be at least 2" in capsys.readouterr().err
