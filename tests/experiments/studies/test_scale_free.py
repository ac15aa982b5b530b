import json

import pytest

from experiments.noise_scale import noise_scale
from experiments.studies.scale_free import late_noise_scale


def test_noise_scale_is_a_ratio_of_means():
    assert noise_scale([1.0, 3.0], [4.0, 4.0]) == pytest.approx(2.0)
    assert noise_scale([], []) != noise_scale([], [])  # nan
    assert noise_scale([-1.0], [1.0]) != noise_scale([-1.0], [1.0])


def test_late_noise_scale_reads_the_second_half_of_a_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"data": {"microbatch_size": 4}}))
    records = [
        {"microbatch": 0, "tokens": 0, "eval/grad_signal": 100.0, "eval/grad_noise": 1.0},
        {"microbatch": 5, "tokens": 40, "eval/grad_signal": 2.0, "eval/grad_noise": 4.0},
        {"microbatch": 6, "tokens": 50, "train/loss": 1.0},
        {"microbatch": 10, "tokens": 100, "eval/grad_signal": 1.0, "eval/grad_noise": 5.0},
        {"microbatch": 12, "tokens": 120, "eval/grad_signal": 3.0, "eval/grad_noise": 7.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # second half: tokens >= 60 -> signal mean 2, noise mean 6 -> 3 microbatches = 12 sequences
    assert late_noise_scale(tmp_path) == pytest.approx(12.0)
