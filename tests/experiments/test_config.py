import json
import subprocess
import sys

import pytest

from experiments.config import Config, apply_overrides, from_file, help_text, parse_args


def test_defaults_and_dotted_overrides():
    config = parse_args(["--model.depth=4", "--gqc.controller", "gnts", "--optim.lr=1e-3"])
    assert config.model.depth == 4 and config.gqc.controller == "gnts"
    assert config.optim.lr == 1e-3
    assert config.data == Config().data  # untouched sections keep their defaults


def test_types_are_converted_and_checked():
    config = parse_args(["--train.tokens=2e6", "--gqc.relative=yes", "--train.resume"])
    assert config.train.tokens == 2_000_000 and config.gqc.relative and config.train.resume
    assert parse_args(["--train.resume_step=none"]).train.resume_step is None
    with pytest.raises(ValueError, match=r"--model.depth expects int, got 'four'"):
        parse_args(["--model.depth=four"])
    with pytest.raises(ValueError, match="expects true or false"):
        parse_args(["--gqc.relative=maybe"])


def test_unknown_keys_are_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown config key 'model.dept'.*'model.depth'"):
        parse_args(["--model.dept=4"])
    with pytest.raises(ValueError, match="unknown config key 'nothing.here'"):
        apply_overrides(Config(), {"nothing.here": 1})
    with pytest.raises(ValueError, match="needs a value"):
        parse_args(["--model.depth"])
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_args(["model.depth=4"])


def test_invalid_values_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="gqc.controller must be one of .* got 'gnt'"):
        parse_args(["--gqc.controller=gnt"])
    with pytest.raises(ValueError, match="train.branch_step=40 needs train.branch_from"):
        parse_args(["--train.branch_step=40"])
    with pytest.raises(ValueError, match="data.microbatch_size must be >= 1, got 0"):
        parse_args(["--data.microbatch_size=0"])
    with pytest.raises(ValueError, match="noise_probe"):
        parse_args(["--train.noise_probe=1"])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_then_command_line(tmp_path, suffix):
    tree = {"model": {"depth": 3, "width": 96}, "gqc": {"controller": "snr"}}
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump(tree))
    else:
        path.write_text(json.dumps(tree))
    config = parse_args(["--config", str(path), "--model.depth=5"])
    assert (config.model.depth, config.model.width, config.gqc.controller) == (5, 96, "snr")
    path.write_text(
        json.dumps({"model": {"depthh": 3}}) if suffix == ".json" else "model: {depthh: 3}"
    )
    with pytest.raises(ValueError, match="model.depthh"):
        parse_args(["--config", str(path)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])


def test_help_lists_every_field_with_its_default():
    text = help_text("python -m experiments.train")
    for section, fields in Config().to_dict().items():
        for name, value in fields.items():
            assert f"--{section}.{name}={value!r}" in text


def test_help_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "--gqc.controller='none'" in out and "--train.resume=False" in out


@pytest.mark.parametrize(
    ("suffix", "text"), [(".yaml", "model:\n  width: [1, 2\n"), (".json", "{")]
)
def test_a_config_file_that_does_not_parse_is_named(tmp_path, suffix, text):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"config file '{path}' does not parse: "):
        from_file(path)


def test_a_run_config_reads_back_from_its_dict():
    config = parse_args(["--gqc.controller=sbc", "--gqc.sbc_draws=4", "--train.branch_from=x"])
    assert Config.from_dict(config.to_dict()) == config
