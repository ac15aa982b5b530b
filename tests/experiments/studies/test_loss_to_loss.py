"""experiments.studies.loss_to_loss: the shifted power-law fit, and the CLI on a tiny budget."""

import numpy as np
import pytest

from experiments.studies import loss_to_loss as ll


def test_fit_recovers_a_shifted_power_law_and_extrapolates():
    l1 = np.linspace(2.2, 4.0, 30)
    l2 = 0.8 * (l1 - 1.0) ** 1.3 + 0.5
    fit = ll.fit_shifted_power_law(l1[10:], l2[10:], grid=80)
    # Held out: the lowest losses (the "largest model"), predicted from the rest.
    np.testing.assert_allclose(ll.predict(fit, l1[:10]), l2[:10], rtol=0.02)


def test_needs_three_sizes(capsys):
    with pytest.raises(SystemExit):
        ll.main(["--sizes=1x16,1x32"])
    assert "--sizes needs at least 3 sizes" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_the_page(tmp_path, data_dir):
    args = [
        "--sizes=1x16,1x32,2x32",
        "--tokens=16384",
        "--microbatch=8",
        "--seq_len=32",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'l.md'}",
    ]
    assert ll.main(args) == 0
    page = (tmp_path / "l.md").read_text()
    assert "Held out: 2x32" in page and "3 training runs" in page
    assert (tmp_path / "l.png").stat().st_size > 10_000


def test_scale_switches_the_defaults_and_explicit_flags_still_win(monkeypatch):
    seen = []

    def fake_train_once(config):
        seen.append(config)
        raise StopIteration

    monkeypatch.setattr(ll, "train_once", fake_train_once)
    with pytest.raises(StopIteration):
        ll.main(["--scale", "--tokens=123456"])
    config = seen[0]
    assert (config.model.depth, config.model.width) == (4, 128)
    assert config.train.tokens == 123456 and config.data.microbatch_size == 32
