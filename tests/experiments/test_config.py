import json
import re
import subprocess
import sys

import pytest

from experiments.config import Config, apply_overrides, from_file, parse_args
from tests.helpers import unboxed


def _rejected(argv, capsys) -> str:
    """The command line's error (tyro's box, joined into one line); it exits with 2."""
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    return unboxed(capsys.readouterr().err)


def test_defaults_and_dotted_overrides():
    config = parse_args(["--model.depth=4", "--gqc.controller", "gnts", "--optim.lr=1e-3"])
    assert config.model.depth == 4 and config.gqc.controller == "gnts"
    assert config.optim.lr == 1e-3
    assert config.data == Config().data  # untouched sections keep their defaults


def test_no_options_give_the_defaults():
    assert parse_args([]) == Config()


def test_types_are_converted_and_checked(capsys):
    config = parse_args(["--train.tokens=2e6", "--gqc.relative=yes", "--train.resume"])
    assert config.train.tokens == 2_000_000 and config.gqc.relative and config.train.resume
    assert parse_args(["--train.resume_step=none"]).train.resume_step is None
    assert parse_args(["--train.resume", "off", "--gqc.relative", "true"]).gqc.relative
    assert not parse_args(["--train.resume=false"]).train.resume
    assert "--model.depth: expects int or none, got 'four'" in _rejected(
        ["--model.depth=four"], capsys
    )
    assert "--train.tokens: expects int, got '1.5'" in _rejected(["--train.tokens=1.5"], capsys)
    assert "--gqc.relative: expects true or false, got 'maybe'" in _rejected(
        ["--gqc.relative=maybe"], capsys
    )
    with pytest.raises(ValueError, match=r"--model.depth expects int or none, got 'four'"):
        apply_overrides(Config(), {"model.depth": "four"})
    with pytest.raises(ValueError, match=r"--optim.lr expects float, got True"):
        apply_overrides(Config(), {"optim.lr": True})


def test_unknown_keys_are_named_with_a_suggestion(capsys):
    error = _rejected(["--model.dept=4"], capsys)
    assert "Unrecognized options: --model.dept=4" in error and "--model.depth" in error
    with pytest.raises(ValueError, match=r"unknown config key 'model.dept'.*'model.depth'"):
        apply_overrides(Config(), {"model.dept": 4})
    with pytest.raises(ValueError, match="unknown config key 'nothing.here'"):
        apply_overrides(Config(), {"nothing.here": 1})
    assert "Missing value for argument '--model.depth'" in _rejected(["--model.depth"], capsys)
    assert "Unrecognized options: model.depth=4" in _rejected(["model.depth=4"], capsys)


def test_invalid_values_are_rejected_with_the_value(capsys):
    for argv, message in [
        (["--gqc.controller=gnt"], "gqc.controller must be one of .* got 'gnt'"),
        (["--train.branch_step=40"], "train.branch_step=40 needs train.branch_from"),
        (["--data.microbatch_size=0"], "data.microbatch_size must be >= 1, got 0"),
        (["--train.noise_probe=1"], "noise_probe"),
    ]:
        assert re.search(message, _rejected(argv, capsys)), argv
        with pytest.raises(ValueError, match=message):
            apply_overrides(Config(), dict(arg[2:].split("=") for arg in argv))


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


def _help(capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_args(["--help"])
    assert stop.value.code == 0
    return unboxed(capsys.readouterr().out)


def test_help_lists_every_field_with_its_default(capsys):
    text = _help(capsys)
    for section, fields in Config().to_dict().items():
        for name, value in fields.items():
            shown = str(value).lower() if value is None or isinstance(value, bool) else value
            shown = "''" if value == "" else shown
            assert re.search(
                rf"--{section}\.{name} \S+ .*?\(default: {re.escape(str(shown))}\)", text
            )


def test_help_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "--gqc.controller STR" in out and "--train.resume [BOOL]" in out


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
