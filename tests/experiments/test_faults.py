"""Fault injection in the training program: non-finite storms, loss spikes, a
preempted or killed process of a two-process run."""

import signal
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.checkpoints import Checkpoints
from experiments.run_log import read_metrics
from experiments.train import NonFiniteStormError, Trainer
from tests.experiments.conftest import start_two_processes, tiny_config, train_command
from tests.helpers import finish


def _poison_from(trainer: Trainer, first: int) -> None:
    """From microbatch ``first`` on, every microbatch reports a NaN loss."""
    step = trainer.step_fn

    def poisoned(state, tokens):
        i = int(state.microbatch)
        state, metrics = step(state, tokens)
        if i + 1 >= first:
            metrics = {**metrics, "loss": jnp.float32(jnp.nan)}
        return state, metrics

    trainer.step_fn = poisoned


def test_a_non_finite_storm_stops_the_run_naming_the_checkpoint_before_it(tmp_path, data_dir):
    config = tiny_config(
        tmp_path, data_dir, train__checkpoint_every=3, train__max_consecutive_skipped=5
    )
    trainer = Trainer(config)
    _poison_from(trainer, 11)
    with pytest.raises(NonFiniteStormError) as error:
        trainer.fit()
    before = [s for s in Checkpoints(tmp_path / "checkpoints", keep=3).steps() if s < 11]
    assert "5 consecutive microbatches (11 to 15)" in str(error.value)
    assert f"--train.resume_step={before[-1]}" in str(error.value)
    assert not (tmp_path / "summary.json").exists()


def test_a_shorter_storm_does_not_stop_the_run(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, train__max_consecutive_skipped=5)
    trainer = Trainer(config)
    step = trainer.step_fn

    def four_bad(state, tokens):
        i = int(state.microbatch)
        state, metrics = step(state, tokens)
        return state, ({**metrics, "loss": jnp.float32(jnp.nan)} if 10 <= i < 14 else metrics)

    trainer.step_fn = four_bad
    assert trainer.fit()["microbatches"] == 24


def test_the_spike_guard_skips_a_garbage_microbatch(tmp_path, data_dir):
    """Microbatch 70 is replaced by constant tokens the model has never seen in a
    row: its loss spikes, it is skipped, counted and logged, and the run goes on."""
    config = tiny_config(
        tmp_path,
        data_dir,
        train__tokens=8 * 32 * 80,
        train__spike_sigmas=3.0,
        gqc__controller="none",
    )
    trainer = Trainer(config)
    read = trainer.data.microbatch

    def garbage_at_70(i, rows):
        tokens = read(i, rows)
        return np.full_like(tokens, 255) if i == 69 else tokens

    trainer.data.microbatch = garbage_at_70
    summary = trainer.fit()
    records = read_metrics(tmp_path)
    spikes = [r for r in records if "train/spike_loss" in r]
    assert [r["microbatch"] for r in spikes] == [70] and summary["loss_spikes"] == 1
    steps = [r for r in records if "train/loss" in r]
    assert len(steps) == 79 and 70 not in [r["microbatch"] for r in steps]


def _two_processes(out_dir, data_dir, *extra):
    return start_two_processes(
        train_command(out_dir, data_dir, f"--train.tokens={8 * 32 * 400}", *extra)
    )


@pytest.fixture
def two_processes(tmp_path, data_dir):
    """Starts a two-process run (extra flags as arguments); at teardown any of its
    processes still running is killed, whatever the test did."""
    started: list = []

    def start(*extra):
        started.extend(_two_processes(tmp_path, data_dir, *extra))
        return started

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _wait_for_checkpoint(out_dir: Path, procs, timeout=240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        ckpts = out_dir / "checkpoints"
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            return
        time.sleep(0.05)
    for p in procs:
        p.kill()
    raise AssertionError([finish(p, 30)[-2000:] for p in procs])


def test_sigterm_to_one_process_stops_both_at_the_same_microbatch(tmp_path, two_processes):
    procs = two_processes()
    _wait_for_checkpoint(tmp_path, procs)
    procs[1].send_signal(signal.SIGTERM)
    errs = [finish(p, 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    saved = Checkpoints(tmp_path / "checkpoints", keep=3).steps()[-1]
    assert saved < 400
    for err in errs:
        assert f"preempted (SIGTERM): checkpoint saved at microbatch {saved}" in err


def test_a_killed_process_makes_the_other_exit_with_an_error(tmp_path, two_processes):
    """kill -9 of process 1: process 0 stops within seconds with an error that
    says a peer died, instead of hanging in a collective or the shutdown barrier."""
    procs = two_processes("--train.peer_timeout_s=20")
    _wait_for_checkpoint(tmp_path, procs)
    procs[1].kill()
    killed = time.perf_counter()
    err = finish(procs[0], 120)
    seconds = time.perf_counter() - killed
    finish(procs[1], 30)
    assert procs[0].returncode != 0
    assert "another process has most likely died" in err or "JAX distributed service" in err, err[
        -3000:
    ]
    assert seconds < 60, seconds


def test_the_spike_guard_around_a_controller_flushes_the_last_window(tmp_path, data_dir):
    """sbc with windows of 3 over 25 microbatches leaves one microbatch open at
    the end: the end-of-run flush goes through the spike guard (it needs no
    loss), and the run finishes with its summary and final checkpoint."""
    config = tiny_config(
        tmp_path,
        data_dir,
        train__tokens=8 * 32 * 25,
        train__spike_sigmas=3.0,
        gqc__controller="sbc",
        gqc__sbc_draws=3,
    )
    summary = Trainer(config).fit()
    assert summary["microbatches"] == 25 and summary["flushed_draws"] == 1
    assert (tmp_path / "summary.json").exists()
    assert Checkpoints(tmp_path / "checkpoints", keep=3).steps()[-1] == 25
