"""experiments.studies.rounding_study: the study's metrics, a paired cell, the whole CLI."""

import numpy as np
import pytest

from experiments.studies import rounding_study as rs


def test_l2_uses_the_shorter_curve_grid_unnormalised():
    x = np.array([0.0, 1.0])
    assert rs.l2_distance(x, [1.0, 1.0], x, [1.0, 1.0]) == 0.0
    # a constant gap c over 500 points: L2 = c * sqrt(500)
    assert rs.l2_distance(x, [2.0, 2.0], x, [1.5, 1.5]) == pytest.approx(0.5 * np.sqrt(500))
    # the longer curve is cut to the shorter one's range: both are 0 on [0, 1]
    long_x = np.array([0.0, 1.0, 2.0])
    assert rs.l2_distance(x, [0.0, 0.0], long_x, [0.0, 0.0, 9.0]) == 0.0


def test_fft_mean_frequency_definitions():
    n = rs.GRID_POINTS
    flat = np.full(n, 3.0)
    assert rs.fft_mean_frequency(flat) == pytest.approx(0.0, abs=1e-12)  # only DC
    assert np.isnan(rs.fft_mean_frequency(flat, detrended=True))  # no wiggles at all
    t = np.arange(n)
    wave = np.cos(2 * np.pi * 50 * t / n)  # 50 cycles over 500 samples: 0.1 cycles/sample
    assert rs.fft_mean_frequency(wave) == pytest.approx(0.1)
    # The study's definition falls as the level rises (DC weighs in); the detrended does not.
    assert rs.fft_mean_frequency(wave + 10) < rs.fft_mean_frequency(wave + 1)
    assert rs.fft_mean_frequency(wave + 10, detrended=True) == pytest.approx(
        rs.fft_mean_frequency(wave + 1, detrended=True)
    )


def test_a_cell_is_paired_and_one_decimal_place_freezes_the_model(data_dir):
    protocol = rs.Protocol(steps=6, batch=4, seq_len=16, eval_every=3, eval_windows=8, warmup=1)
    r = rs.run_cell(1, 16, "decimals", 0, (1, 16), protocol, data_dir)
    assert r["settings"] == ["1", "16", "none"]
    assert r["eval_tokens"] == [0, 3 * 64, 6 * 64]
    val = r["val_loss"]
    # Same initialisation for every setting: the first evaluation is shared.
    assert val["1"][0] == val["16"][0] == val["none"][0]
    # At 0.01 x loss every gradient element is below 0.05: d=1 zeroes every non-zero one
    # (a batch can leave an element exactly zero, which is neither changed nor zeroed),
    # and Adam without weight decay then leaves the weights exactly where they were.
    assert r["fraction_zeroed"]["1"] == r["fraction_changed"]["1"]
    assert all(z > 0.999 for z in r["fraction_zeroed"]["1"])
    assert val["1"] == [val["1"][0]] * 3
    assert val["none"][-1] < val["none"][0] - 0.05
    assert r["fraction_zeroed"]["none"] == [0.0] * 6


@pytest.mark.slow  # 60-80 s; the low-bit and training-dynamics pages are rerun in the suite
def test_cli_writes_the_page_and_figures_and_reruns_from_files(tmp_path, data_dir, capsys):
    args = [
        "--steps=2",
        "--seeds=0,1",
        "--significant_seeds=0",
        "--sizes=1x8,1x16",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'r.md'}",
    ]
    assert rs.main(args) == 0
    page = (tmp_path / "r.md").read_text()
    for png in ("r_curves.png", "r_heatmaps.png", "r_modes.png"):
        assert (tmp_path / png).stat().st_size > 10_000 and png in page
    assert "**Threshold: d >= " in page and "## Significant digits" in page
    cells = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert cells == [
        "decimals-d1w16-seed0.json",
        "decimals-d1w16-seed1.json",
        "decimals-d1w8-seed0.json",
        "significant-d1w16-seed0.json",
    ]
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert rs.main(args) == 0  # nothing retrains: the cells are read back
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (tmp_path / "r.md").read_text() == page
