"""experiments.controllers: each controller described once, and everything that
derives from it (the config's choices, field checks, --help, the run log)."""

import dataclasses
import re
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

import gqc_jax
from experiments.config import CONTROLLERS, Config, apply_overrides, parse_args
from experiments.controllers import CONTROLLERS as ENTRIES
from experiments.controllers import Controller, Option, controller_options, option
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
    assert entry.read(config.gqc) == entry.options()  # the defaults, typed


def test_help_names_the_controllers_that_read_each_field(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = unboxed(capsys.readouterr().out)
    for field in {f for entry in ENTRIES.values() for f in entry.fields}:
        owners = ", ".join(n for n, e in ENTRIES.items() if field in e.fields)
        assert re.search(rf"--gqc\.{field} \S+ read by {owners} only: [^(]", text), field
    assert re.search(r"--gqc\.max_draws INT \(default: 16\)", text)  # shared: no owner


def test_a_new_controller_is_its_module_plus_one_entry(tmp_path):
    # Run in a fresh interpreter: the entry is added before the configuration
    # is imported, as an entry in experiments/controllers.py would be.
    code = textwrap.dedent(
        """
        import dataclasses
        import jax.numpy as jnp
        import gqc_jax
        from experiments import controllers as c

        @dataclasses.dataclass(frozen=True)
        class MineOptions:
            \"\"\"step when the noise statistic falls to my_tolerance.\"\"\"

            my_tolerance: float = c.option(0.5, "my bound (> 0)")

            def __post_init__(self):
                if not self.my_tolerance > 0:
                    raise ValueError(f"gqc.my_tolerance must be > 0, got {self.my_tolerance}.")

        c.CONTROLLERS["mine"] = c.Controller(
            MineOptions,
            statistics=("noise_tolerance",),
            build=lambda o, cfg, inner, total, lr: gqc_jax.gns(
                inner, o.my_tolerance, max_draws=cfg.gqc.max_draws, **c.coupling(cfg)
            ),
        )
        from experiments.config import Config, apply_overrides, parse_args
        from experiments.optimizer import build_optimizer

        config = parse_args(["--gqc.controller=mine", "--gqc.my_tolerance=0.25"])
        stats = gqc_jax.stats(build_optimizer(config, 100).init({"w": jnp.zeros(2)}))
        print("tolerance", float(stats["noise_tolerance"]))
        try:
            apply_overrides(Config(), {"gqc.controller": "mine", "gqc.my_tolerance": -1.0})
        except ValueError as error:
            print("error", error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tolerance 0.25" in done.stdout
    assert "error gqc.my_tolerance must be > 0, got -1.0." in done.stdout


def test_two_controllers_share_an_option_only_if_it_agrees():
    @dataclasses.dataclass(frozen=True)
    class A:
        """a."""

        shared: int = option(2, "one")

    @dataclasses.dataclass(frozen=True)
    class B:
        """b."""

        shared: int = option(2, "one")

    @dataclasses.dataclass(frozen=True)
    class C:
        """c."""

        shared: float = option(2.0, "one")

    def build(*args):
        return None

    entries = {n: Controller(o, ("x",), build) for n, o in (("a", A), ("b", B))}
    assert controller_options(entries) == [Option("shared", int, 2, "one", ("a", "b"))]
    with pytest.raises(TypeError, match=r"gqc.shared: c declares float = 2.0, a int = 2"):
        controller_options({**entries, "c": Controller(C, ("x",), build)})
