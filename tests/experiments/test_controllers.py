"""experiments.controllers: each controller described once, and everything that
derives from it (the config's choices, field checks, --help, the run log)."""

import re

import jax.numpy as jnp
import pytest

import gqc_jax
from experiments.config import CONTROLLERS, Config, apply_overrides, parse_args
from experiments.controllers import CONTROLLERS as ENTRIES
from experiments.optimizer import build_optimizer
from experiments.run_log import threshold_key
from tests.helpers import unboxed


def test_the_config_offers_every_entry():
    assert CONTROLLERS == ("none", *ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_entry_builds_its_controller_and_names_real_statistics(name):
    config = apply_overrides(Config(), {"gqc.controller": name, "optim.warmup": 2})
    state = build_optimizer(config, 100).init({"w": jnp.zeros(3)})
    stats = gqc_jax.stats(state)
    entry = ENTRIES[name]
    assert any(s in stats for s in entry.statistics), (name, sorted(stats))
    records = [{f"gqc/{k}": 1.0 for k in stats}]
    assert threshold_key(records, name) == f"gqc/{next(s for s in entry.statistics if s in stats)}"
    for field in entry.fields:  # a field it reads exists in the config
        assert hasattr(config.gqc, field)


def test_help_names_the_controllers_that_read_each_field(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = unboxed(capsys.readouterr().out)
    for field in {f for entry in ENTRIES.values() for f in entry.fields}:
        owners = ", ".join(n for n, e in ENTRIES.items() if field in e.fields)
        assert re.search(rf"--gqc\.{field} \S+ read by {owners} only \(default", text), field
    assert re.search(r"--gqc\.max_draws INT \(default: 16\)", text)  # shared: no owner
