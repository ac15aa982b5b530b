"""experiments.studies.critical_batch: the fit, and the CLI on a tiny budget."""

import numpy as np
import pytest

from experiments.studies import critical_batch as cb


def test_fit_recovers_a_known_critical_batch():
    batches = [4, 8, 16, 32, 64]
    s_min, b_crit = 100.0, 20.0
    steps = [s_min * (1 + b_crit / b) for b in batches]
    fit = cb.fit_critical_batch(batches, steps)
    assert fit == pytest.approx((s_min, b_crit))
    assert cb.fit_critical_batch(batches, [10, 10, 11, 12, 13])[1] == 0.0  # no gain at all
    assert np.isinf(cb.fit_critical_batch([1, 2, 4], [100, 50, 25])[1])  # perfect scaling


@pytest.mark.slow
def test_cli_writes_the_page(tmp_path, data_dir):
    args = [
        "--batches=8,16,32",
        "--presets=tiny",
        "--tokens=16384",
        "--seq_len=32",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'c.md'}",
    ]
    assert cb.main(args) == 0
    page = (tmp_path / "c.md").read_text()
    assert "5 training runs" in page and "| tiny | gnts-relative |" in page
    assert (tmp_path / "c.png").stat().st_size > 10_000
