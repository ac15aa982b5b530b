"""Fixtures for the training program's tests: the default corpus built once per
worker, and a tiny run configuration (seconds per run on 8 fake CPU devices)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import pytest

from tests.helpers import free_port

if TYPE_CHECKING:  # imported where used: the oldest-versions pass has no trainer stack
    from experiments.config import Config


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Runs here compile the same eval, probe and step programs many times: a
    persistent compilation cache for the session turns repeats into lookups."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """The default corpus, prepared once (TFDS array_record) with its token cache."""
    from experiments.config import Config, apply_overrides
    from experiments.data import TokenData

    path = tmp_path_factory.mktemp("tfds")
    TokenData(apply_overrides(Config(), {"data.data_dir": str(path)}).data, seq_len=32)
    return str(path)


def tiny_config(out_dir, data_dir: str, **overrides) -> Config:
    """A run of a 2-block, 64-wide GPT on 8 x 32-token microbatches."""
    from experiments.config import Config, apply_overrides

    settings = {
        "model.preset": "tiny",
        "model.seq_len": 32,
        "data.data_dir": data_dir,
        "data.microbatch_size": 8,
        "data.eval_batches": 2,
        "optim.warmup": 4,
        "train.out_dir": str(out_dir),
        "train.tokens": 8 * 32 * 24,
        "train.eval_every": 8,
        "train.noise_probe": 2,
        "train.checkpoint_every": 8,
        "train.progress": False,
        "train.tensorboard": False,
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return apply_overrides(Config(), settings)


def train_command(out_dir, data_dir, *extra: str) -> list[str]:
    """``python -m experiments.train`` on the tiny model (GNTS, relative); later
    ``extra`` flags override these."""
    args = [
        "--model.preset=tiny",
        "--model.seq_len=32",
        f"--data.data_dir={data_dir}",
        "--data.microbatch_size=8",
        "--data.eval_batches=2",
        "--optim.warmup=4",
        f"--train.out_dir={out_dir}",
        "--train.eval_every=100",
        "--train.noise_probe=0",
        "--train.checkpoint_every=5",
        "--train.progress=false",
        "--train.tensorboard=false",
        "--gqc.controller=gnts",
        "--gqc.relative=true",
    ]
    return [sys.executable, "-m", "experiments.train", *args, *extra]


def start_two_processes(command: list[str]) -> list[subprocess.Popen]:
    """``command`` as processes 0 and 1 of a two-process run on 127.0.0.1, each
    with 4 CPU devices (stderr piped: read it with ``tests.helpers.finish``)."""
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    flags = [f"--train.coordinator=127.0.0.1:{port}", "--train.num_processes=2"]
    return [
        subprocess.Popen(
            [*command, *flags, f"--train.process_id={i}"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
