"""experiments.controllers: each controller described once, and everything that
derives from it (the config's choices, field checks, --help, the run log)."""

import jax.numpy as jnp
import pytest

import gqc_jax
from experiments.config import CONTROLLERS, Config, apply_overrides, help_text
from experiments.controllers import CONTROLLERS as ENTRIES
from experiments.optimizer import build_optimizer
from experiments.run_log import threshold_key


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


def test_help_names_the_controller_that_reads_each_field():
    text = help_text("prog")
    assert "--gqc.tolerance=1.0" in text and "(float; gns only)" in text
    assert "--gqc.max_draws=16               (int)" in text  # shared: no owner
