import json

import pytest

from experiments.demo import table
from experiments.plot import main, plot_runs


def _fake_run(path, controller: bool):
    path.mkdir()
    records = [{"microbatch": 0, "tokens": 0, "step": 0, "eval/loss": 5.5, "eval/ppl": 244.7}]
    for i in range(1, 20):
        r = {
            "microbatch": i,
            "tokens": 1024 * i,
            "step": i,
            "train/loss": 5.5 - 0.1 * i,
            "train/grad_norm_microbatch": 1.0 / i,
            "gqc/draws": 1 + i % 3,
        }
        if controller:
            r.update({"gqc/gradient_norm_threshold": 2.0 / i, "gqc/last_grad_norm": 0.5 / i})
        records.append(r)
    records.append({"microbatch": 19, "tokens": 19 * 1024, "step": 19, "eval/loss": 3.6})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_plot_writes_a_png_for_several_runs(tmp_path):
    _fake_run(tmp_path / "a", controller=False)
    _fake_run(tmp_path / "b", controller=True)
    out = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "fig" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_command_line(tmp_path, capsys):
    _fake_run(tmp_path / "a", controller=True)
    assert main([str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing")])
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_demo_table_names_the_winner():
    row = dict(steps=10, draws_per_step=1.0, tokens_per_s=1000.0, noise_scale_sequences=3.0)
    text = table(
        {
            "adamw": dict(row, eval_loss=2.0, eval_ppl=7.389),
            "adamw+gnts": dict(row, eval_loss=2.5, eval_ppl=12.18, steps=4, draws_per_step=2.5),
        }
    )
    assert (
        "Winner at equal tokens: adamw (validation perplexity 39.3% lower than adamw+gnts)" in text
    )
    assert "adamw+gnts" in text.splitlines()[3] and "2.50" in text.splitlines()[3]
