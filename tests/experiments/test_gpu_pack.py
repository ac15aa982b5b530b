import json

from experiments import gpu_pack


def test_smoke_runs_every_part_and_writes_what_it_has(tmp_path, capsys):
    assert gpu_pack.main(["--out", str(tmp_path), "--scale", "smoke", "--commit", "abc123"]) == 0
    result = json.loads((tmp_path / "gpu_pack.json").read_text())
    assert result["commit"] == "abc123" and result["scale"] == "smoke"
    for part in ("throughput", "headline", "benchmarks"):
        assert "error" not in result[part], result[part]
        # A part overruns its budget by at most one arm's work.
        assert result[f"{part}_s"] < result["budgets_s"][part] + 30
    arms = result["throughput"]["arms"]
    # No cuDNN variant on a CPU.
    assert set(arms) == {*gpu_pack.THROUGHPUT_ARMS, "adamw-no-layer-metrics"}
    assert arms["adamw"]["tokens_per_s"] > 0 and arms["adamw"]["vs_adamw"] == 1.0
    for row in arms.values():
        assert "tokens_per_s" in row or row == {"skipped": "part budget reached"}
    h = result["headline"]
    assert set(h["arms"]) == set(gpu_pack.HEADLINE_ARMS)
    assert h["corpus"]["files"] > 0 and h["corpus"]["validation_tokens"] > 0
    for row in h["arms"].values():
        assert row["tokens"] == h["tokens"] or row["stopped_at_budget"]
        assert 0 < row["val_loss"] < 6 and row["optimizer_steps"] >= 1
    # GNTS accumulates windows: fewer optimizer steps than microbatches.
    assert h["arms"]["gnts_reference"]["optimizer_steps"] < h["arms"]["adamw"]["optimizer_steps"]
    page = (tmp_path / "gpu_pack.md").read_text()
    assert "## (a) Throughput" in page and "## (b) Headline" in page
    assert "`benchmarks/controller_overhead.py`" in page
    assert result["benchmarks"]["controller_overhead.py"].get("returncode", 0) == 0
