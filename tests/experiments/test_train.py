import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments.checkpoints import CheckpointError, Checkpoints
from experiments.config import CONTROLLERS
from experiments.run_log import read_metrics
from experiments.train import PreemptedError, Trainer, main, train_once
from tests.experiments.conftest import start_two_processes, tiny_config, train_command
from tests.helpers import finish, unboxed

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 120  # microbatches of the command-line runs


def _params(trainer: Trainer):
    return jax.device_get(trainer.state.params)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_each_controller_trains_end_to_end(tmp_path, data_dir, controller):
    config = tiny_config(
        tmp_path,
        data_dir,
        gqc__controller=controller,
        gqc__max_draws=4,
        train__tensorboard=controller == "none",
    )
    summary = Trainer(config).fit()
    records = read_metrics(tmp_path)
    steps = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert summary["microbatches"] == 24 and summary["steps"] == len(steps) >= 24 // 5
    # Every microbatch up to the last step is in exactly one step's window.
    assert sum(r["gqc/draws"] for r in steps) == steps[-1]["microbatch"]
    assert [r["microbatch"] for r in evals] == [0, 8, 16, 24]
    assert np.isfinite(summary["eval_loss"]) and evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert {k.split("/")[0] for r in records for k in r if "/" in k} == {
        "train",
        "eval",
        "gqc",
        "perf",
        "weights",
        "diag",
        "optim",
    }
    if controller != "none":
        assert "gqc/num_steps" in steps[-1] and steps[-1]["gqc/num_steps"] == len(steps)
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"]
    if config.train.tensorboard:
        events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0


@pytest.mark.parametrize(
    ("settings", "power"),
    [
        ({"gqc__controller": "gnts", "gqc__relative": True, "gqc__lr_scaling": "sqrt"}, 0.5),
        ({"gqc__controller": "sbc", "gqc__sbc_draws": 3, "gqc__lr_scaling": "linear"}, 1.0),
        ({"gqc__controller": "batch_warmup", "gqc__warmup_fractions": "0.25,0.5"}, 0.5),
        ({"gqc__controller": "seesaw"}, 0.5),
        ({"gqc__controller": "none"}, 0.0),
    ],
)
def test_the_applied_learning_rate_and_batch_are_logged_per_step(
    tmp_path, data_dir, settings, power
):
    from experiments.optimizer import learning_rate

    config = tiny_config(tmp_path, data_dir, gqc__max_draws=8, **settings)
    Trainer(config).fit()
    steps = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    schedule = learning_rate(config, 24)
    for r in steps:
        k = r["gqc/draws"]
        clock = r["microbatch"] if r.get("gqc/flushed") else r["microbatch"] - 1
        assert r["optim/lr"] == pytest.approx(float(schedule(clock)) * k**power, rel=1e-6)
        assert r["train/batch_sequences"] == 8 * k
        if "gqc/lr_factor" in r:
            assert r["gqc/lr_factor"] == pytest.approx(k**power, rel=1e-6)
    windows = [r["gqc/draws"] for r in steps]
    if settings["gqc__controller"] == "batch_warmup":  # doubles at microbatches 6 and 12
        assert windows == [1] * 6 + [2] * 3 + [4] * 3
    if settings["gqc__controller"] == "seesaw":
        assert windows[:4] == [1] * 4 and max(windows) > 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"gqc__lr_scaling": "cubic"},
            r"gqc.lr_scaling='cubic'.*lr_scaling must be None, \"sqrt\", \"linear\" or a power",
        ),
        ({"gqc__lr_scaling": "-1"}, r"gqc.lr_scaling='-1'.*got -1.0"),
        (
            {"gqc__reference_draws": 0.0},
            r"gqc.reference_draws=0.0: reference_draws must be a finite number > 0",
        ),
        (
            {"gqc__controller": "batch_warmup", "gqc__warmup_fractions": "0.5,0.2"},
            r"gqc.warmup_fractions='0.5,0.2': fractions must be strictly increasing",
        ),
        (
            {"gqc__controller": "batch_warmup", "gqc__warmup_fractions": "half"},
            "gqc.warmup_fractions must be comma-separated numbers, got 'half'",
        ),
        (
            {"gqc__controller": "gnr", "gqc__lr_scaling": "sqrt"},
            "needs an accumulating controller",
        ),
        (
            {"gqc__controller": "none", "gqc__token_time": True},
            "gqc.token_time needs an accumulating controller",
        ),
    ],
)
def test_lr_coupling_settings_are_checked(tmp_path, data_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, data_dir, **overrides)


@pytest.mark.parametrize(
    "controller",
    # sbc in the slow suite for time; every controller's state round-trips through
    # orbax mid-window bit-identically in tests/test_invariants.py.
    [pytest.param("sbc", marks=pytest.mark.slow), "gnts"],
)
def test_resume_is_bit_identical(tmp_path, data_dir, controller):
    settings = dict(
        gqc__controller=controller, gqc__sbc_draws=5, gqc__relative=True, model__dropout=0.1
    )
    straight = Trainer(tiny_config(tmp_path / "a", data_dir, **settings))
    straight.fit()
    first = Trainer(tiny_config(tmp_path / "b", data_dir, train__stop_after=12, **settings))
    first.fit()
    if controller == "sbc":  # stopped inside a window: its state must be in the checkpoint
        assert int(jax.device_get(first.state.opt_state.num_draws)) == 12 % 5
    resumed = Trainer(tiny_config(tmp_path / "b", data_dir, train__resume=True, **settings))
    resumed.fit()
    _assert_same(_params(straight), _params(resumed))
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "a")) == strip(read_metrics(tmp_path / "b"))


def test_same_seed_same_run_other_seed_other_run(tmp_path, data_dir):
    runs = [
        Trainer(
            tiny_config(
                tmp_path / str(i),
                data_dir,
                train__seed=s,
                train__tokens=8 * 32 * 8,
                train__eval_every=2,
            )
        )
        for i, s in enumerate([0, 0, 1])
    ]
    for r in runs:
        r.fit()
    _assert_same(_params(runs[0]), _params(runs[1]))
    assert not np.array_equal(
        jax.tree.leaves(_params(runs[0]))[0], jax.tree.leaves(_params(runs[2]))[0]
    )
    # Bit-identical eval curves (and every other logged number but the clock).
    curve = lambda i: [  # noqa: E731
        {k: v for k, v in r.items() if not k.startswith("perf/")}
        for r in read_metrics(tmp_path / str(i))
    ]
    evals = [r["eval/loss"] for r in curve(0) if "eval/loss" in r]
    assert len(evals) == 5 and curve(0) == curve(1)
    assert evals != [r["eval/loss"] for r in curve(2) if "eval/loss" in r]


def test_weight_metrics_are_logged_per_layer_at_each_step(tmp_path, data_dir):
    Trainer(tiny_config(tmp_path, data_dir, train__tokens=8 * 32 * 6)).fit()
    steps = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    names = {"embed", "position", "norm", "blocks.0", "blocks.1"}
    assert len(steps) == 6
    for r in steps:
        assert {k.split("/")[1] for k in r if k.startswith("weights/")} == names
    for r in steps[1:]:  # the warmup's first learning rate is 0
        assert all(r[f"weights/{n}/update_ratio"] > 0 for n in names)
    assert steps[0]["weights/blocks.0/norm"] != steps[-1]["weights/blocks.0/norm"]
    # Adam diagnostics: a window of one cancels nothing; momentum starts at 0.
    assert all(r["diag/mean_over_microbatch_norm"] == 1.0 for r in steps)
    assert steps[0]["diag/grad_momentum_cos"] == 0.0
    assert all(-1 <= r["diag/grad_momentum_cos"] <= 1 for r in steps)
    assert all(r["diag/second_moment"] > 0 for r in steps)


def test_second_eval_corpus_is_logged_at_every_evaluation(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, data__second_eval="python-stdlib")
    Trainer(config).fit()
    evals = [r for r in read_metrics(tmp_path) if "eval/loss" in r]
    assert len(evals) == 4 and all("eval2/loss" in r for r in evals)
    assert evals[-1]["eval2/loss"] < evals[0]["eval2/loss"]
    assert all(r["eval2/loss"] != r["eval/loss"] for r in evals)


def test_window_mean_norm_over_microbatch_norms_under_a_controller(tmp_path, data_dir):
    config = tiny_config(
        tmp_path, data_dir, gqc__controller="sbc", gqc__sbc_draws=3, train__tokens=8 * 32 * 12
    )
    Trainer(config).fit()
    steps = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    assert [r["gqc/draws"] for r in steps] == [3, 3, 3, 3]
    ratios = [r["diag/mean_over_microbatch_norm"] for r in steps]
    # ||mean of 3 gradients|| <= mean of their norms, with equality only if aligned.
    assert all(0 < q < 1 for q in ratios), ratios
    assert all(abs(r["diag/grad_momentum_cos"]) <= 1 for r in steps)


def test_the_collector_skips_the_setup_objects_during_the_loop_only(tmp_path, data_dir):
    trainer = Trainer(tiny_config(tmp_path, data_dir, train__tokens=8 * 32 * 6))
    step, frozen = trainer.step_fn, []

    def counting(state, tokens):
        frozen.append(gc.get_freeze_count())
        return step(state, tokens)

    trainer.step_fn = counting
    trainer.fit()
    assert len(frozen) == 6 and min(frozen) > 0  # the model, the steps, jax's caches
    assert gc.get_freeze_count() == 0  # a later run, or the caller, collects as usual


def test_the_open_window_is_stepped_on_at_the_end_of_the_run(tmp_path, data_dir):
    # Three microbatches, and a window that never closes by itself (threshold 0,
    # cap 16): before the flush the run ended with 0 steps and trained nothing.
    settings = dict(
        gqc__controller="gnts",
        gqc__threshold=0.0,
        gqc__max_draws=16,
        train__tokens=8 * 32 * 3,
        train__eval_every=3,
        optim__warmup=1,
    )
    straight = Trainer(tiny_config(tmp_path / "a", data_dir, **settings))
    summary = straight.fit()
    assert summary["steps"] == 1 and summary["flushed_draws"] == 3
    assert summary["draws_per_step"] == 3.0
    records = read_metrics(tmp_path / "a")
    (step,) = [r for r in records if "train/loss" in r]
    assert step["microbatch"] == 3 and step["gqc/flushed"] and step["gqc/draws"] == 3
    evals = [r["eval/loss"] for r in records if "eval/loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    # A run stopped early does not flush; its resumed end does, to the same weights.
    first = Trainer(tiny_config(tmp_path / "b", data_dir, train__stop_after=2, **settings))
    assert first.fit()["flushed_draws"] == 0
    resumed = Trainer(tiny_config(tmp_path / "b", data_dir, train__resume=True, **settings))
    assert resumed.fit()["flushed_draws"] == 3
    _assert_same(_params(straight), _params(resumed))


def test_checkpoint_from_another_configuration_is_refused(tmp_path, data_dir):
    Trainer(tiny_config(tmp_path, data_dir, train__stop_after=4)).fit()
    other = tiny_config(tmp_path, data_dir, train__resume=True, model__width=32)
    with pytest.raises(CheckpointError, match=r"model.width: None -> 32"):
        Trainer(other).fit()
    fresh = tiny_config(tmp_path, data_dir)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        Trainer(fresh).fit()


def test_corrupted_checkpoint_is_reported_and_older_ones_restore(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, train__checkpoint_every=1, train__stop_after=6)
    Trainer(config).fit()
    steps = Checkpoints(tmp_path / "checkpoints", keep=3).steps()
    assert len(steps) == 3
    for f in (tmp_path / "checkpoints" / str(steps[-1]) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage")
    # Chosen explicitly, it is an error (--train.resume alone falls back to the
    # newest readable one: tests/experiments/test_checkpoints.py).
    resume = tiny_config(tmp_path, data_dir, train__resume=True, train__resume_step=steps[-1])
    with pytest.raises(CheckpointError, match=rf"checkpoint {steps[-1]} .*corrupted.*{steps[-2]}"):
        Trainer(resume).fit()
    older = tiny_config(tmp_path, data_dir, train__resume=True, train__resume_step=steps[-2])
    assert Trainer(older).fit()["microbatches"] == 24
    kept = Checkpoints(tmp_path / "checkpoints", keep=3)
    assert kept.steps()[-1] == 24
    for step in kept.steps():  # the corrupted one is gone, every kept one reads
        kept.read_state(step)


def _files(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(directory.rglob("*"))}


def test_a_branch_continues_another_run_under_its_own_settings(tmp_path, data_dir):
    """A small-batch run (windows of one microbatch), then branches from its
    checkpoint 8: one with the same settings continues it bit for bit, one with
    windows of 4 steps every 4 microbatches at lr x 2 (square-root rule); the
    run branched from is only read."""
    window = {"gqc__controller": "sbc", "gqc__lr_scaling": "sqrt"}
    ref = tmp_path / "ref"
    Trainer(
        tiny_config(
            ref,
            data_dir,
            **window,
            gqc__sbc_draws=1,
            train__checkpoint_every=4,
            train__keep_checkpoints=10,
        )
    ).fit()
    before = _files(ref)
    ref_evals = {r["microbatch"]: r["eval/loss"] for r in read_metrics(ref) if "eval/loss" in r}
    ref_lr = {r["microbatch"]: r["optim/lr"] for r in read_metrics(ref) if "train/loss" in r}

    def branch(out, draws, **extra):
        return tiny_config(
            tmp_path / out,
            data_dir,
            **{
                **window,
                "gqc__sbc_draws": draws,
                "train__branch_from": str(ref),
                "train__branch_step": 8,
                "train__stop_after": 8,
                **extra,
            },
        )

    same = Trainer(branch("same", 1))
    same.fit()
    np.testing.assert_equal(
        Checkpoints(tmp_path / "same" / "checkpoints", keep=3).read_state(16)["params"],
        Checkpoints(ref / "checkpoints", keep=10).read_state(16)["params"],
    )
    assert {
        r["microbatch"]: r["eval/loss"] for r in read_metrics(tmp_path / "same") if "eval/loss" in r
    } == {8: ref_evals[8], 16: ref_evals[16]}

    Trainer(branch("wide", 4)).fit()
    steps = [r for r in read_metrics(tmp_path / "wide") if "train/loss" in r]
    assert [(r["microbatch"], r["gqc/draws"]) for r in steps] == [(12, 4), (16, 4)]
    for r in steps:  # the run's schedule at that microbatch, times sqrt(4)
        assert r["optim/lr"] == pytest.approx(2 * ref_lr[r["microbatch"]], rel=1e-6)
    assert steps[0]["step"] == 8 + 1  # the optimizer steps so far carry over
    assert _files(ref) == before

    with pytest.raises(CheckpointError, match="laid out otherwise.*criterion_state"):
        Trainer(branch("gnts", 1, gqc__controller="gnts")).fit()
    with pytest.raises(CheckpointError, match="model.depth.*A branch keeps the model"):
        Trainer(branch("deeper", 1, model__depth=3)).fit()
    with pytest.raises(CheckpointError, match="no checkpoints folder"):
        Trainer(branch("nowhere", 1, train__branch_from=str(tmp_path / "missing"))).fit()
    assert _files(ref) == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train__mesh": "data=3"}, "needs 3 devices but 8"),
        ({"data__microbatch_size": 12}, "divisible by the mesh's data x fsdp size"),
        ({"model__heads": 3}, r"width \(64\) must be divisible by heads \(3\)"),
        ({"optim__warmup": 100}, "optim.warmup .100. must be smaller"),
    ],
)
def test_impossible_settings_are_clear_errors(tmp_path, data_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(tmp_path, data_dir, **overrides)).fit()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--model.dept=2", "Unrecognized options: --model.dept=2"),
        # These printed a traceback, or named the library's argument.
        (
            "--model.dtype=float8",
            "model.dtype must be one of ('float32', 'bfloat16', 'float16'), got 'float8'",
        ),
        ("--gqc.sbc_draws=0", "gqc.sbc_draws must be >= 1, got 0"),
    ],
)
def test_main_reports_errors_without_a_traceback(tmp_path, data_dir, capsys, flag, message):
    assert main([f"--train.out_dir={tmp_path}", "--gqc.controller=sbc", flag]) == 2
    err = unboxed(capsys.readouterr().err)
    assert message in err and "Traceback" not in err


def _cli(out_dir, data_dir, *extra):
    return train_command(out_dir, data_dir, f"--train.tokens={8 * 32 * TOTAL}", *extra)


def _interrupt_after_first_checkpoint(cmd, sig) -> tuple[int, str, float]:
    """Starts ``cmd``, sends ``sig`` once a checkpoint exists: (exit code, stderr,
    seconds from the signal to the exit)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out_dir = Path(cmd[[i for i, a in enumerate(cmd) if "out_dir" in a][0]].split("=", 1)[1])
    deadline = time.time() + 120
    sent = time.perf_counter()
    while time.time() < deadline and proc.poll() is None:
        ckpts = out_dir / "checkpoints"
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            proc.send_signal(sig)
            sent = time.perf_counter()
            break
        time.sleep(0.02)
    err = finish(proc, 120)
    return proc.returncode, err, time.perf_counter() - sent


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(_cli(out, data_dir), cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGKILL, -9),
        # Ctrl-C and SIGTERM save at the next microbatch boundary; both are kept out
        # of the default suite for time (test_faults.py preempts a two-process run
        # with SIGTERM there, and the resume above is the same restore).
        pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, 0, marks=pytest.mark.slow),
    ],
)
def test_killed_interrupted_or_preempted_run_resumes_to_the_same_parameters(
    tmp_path, data_dir, uninterrupted, sig, code
):
    returncode, err, seconds = _interrupt_after_first_checkpoint(_cli(tmp_path, data_dir), sig)
    assert returncode == code, err[-3000:]  # it was stopped mid-run, not finished
    saved = Checkpoints(tmp_path / "checkpoints", keep=3).steps()
    assert saved and saved[-1] < TOTAL
    if sig != signal.SIGKILL:  # Ctrl-C and SIGTERM save where they stopped
        assert f"checkpoint saved at microbatch {saved[-1]}" in err
        assert not (tmp_path / "summary.json").exists()  # not an ended run
    if sig == signal.SIGTERM:
        assert "preempted (SIGTERM)" in err
        # Save and exit within a preemption notice's grace period (30 s on
        # Kubernetes; about 0.5 s measured here for the tiny model).
        assert seconds < 30, seconds
    subprocess.run(
        _cli(tmp_path, data_dir, "--train.resume"),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = Checkpoints(tmp_path / "checkpoints", keep=3)
    reference = Checkpoints(uninterrupted / "checkpoints", keep=3)
    assert done.steps()[-1] == reference.steps()[-1] == TOTAL
    _assert_same(done.read_state(TOTAL), reference.read_state(TOTAL))


@pytest.mark.slow  # 97 s; tests/test_multihost.py checks two processes against one in the suite
def test_two_processes_train_like_one(tmp_path, data_dir, uninterrupted):
    """Two processes with 4 CPU devices each, each reading only its own rows of every
    microbatch, end with the parameters of one process with 8 devices."""
    procs = start_two_processes(_cli(tmp_path, data_dir))
    for p in procs:
        err = finish(p, 300)
        assert p.returncode == 0, err[-3000:]
    done = Checkpoints(tmp_path / "checkpoints", keep=3)
    reference = Checkpoints(uninterrupted / "checkpoints", keep=3)
    state, expected = done.read_state(TOTAL), reference.read_state(TOTAL)
    # The cross-process mean sums the gradient in another order than one process
    # does; Adam divides by sqrt(v), which magnifies that rounding where v is tiny
    # (one weight of 16,384 once ended 1.2e-6 apart). A lost or doubled share of
    # the batch moves weights by about the learning rate, 3e-3.
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    assert len(read_metrics(tmp_path)) == len(read_metrics(uninterrupted))


def _tb_events(run_dir: Path) -> list:
    """Every event of a run's TensorBoard files (TFRecord framing: length, crc,
    data, crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            length = int.from_bytes(data[at : at + 8], "little")
            events.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def test_run_records_across_a_resume(tmp_path, data_dir, capsys):
    settings = dict(gqc__controller="sbc", gqc__sbc_draws=2, train__noise_probe=0)
    first = Trainer(tiny_config(tmp_path, data_dir, train__stop_after=12, **settings))
    first_summary = first.fit()
    # A session that trained past its checkpoint and died: the resumed run
    # replaces microbatches 13-16 in metrics.jsonl and hides them in TensorBoard.
    records = read_metrics(tmp_path)
    lost = {**records[-1], "microbatch": 16, "tokens": 16 * 8 * 32}
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(lost) + "\n")
    resumed = Trainer(
        tiny_config(tmp_path, data_dir, train__resume=True, train__tensorboard=True, **settings)
    )
    summary = resumed.fit()
    # elapsed_s counts both sessions, not only the last one.
    assert summary["elapsed_s"] >= resumed.session_s + 0.5 * first_summary["elapsed_s"]
    starts = [e.step for e in _tb_events(tmp_path) if e.session_log.status == 1]
    assert starts == [lost["tokens"]]
    assert [r for r in read_metrics(tmp_path) if r["microbatch"] <= 12] == records
    # NaN (no noise probe) is the same string in summary.json as in metrics.jsonl,
    # and reads back as a float.
    text = (tmp_path / "summary.json").read_text()
    assert '"noise_scale_microbatches": "nan"' in text
    assert math.isnan(train_once(resumed.config)["noise_scale_microbatches"])
    # Resuming a finished run says so and rewrites nothing.
    capsys.readouterr()
    again = Trainer(tiny_config(tmp_path, data_dir, train__resume=True, **settings)).fit()
    assert "run complete" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == text
    assert again["elapsed_s"] == summary["elapsed_s"]


def test_train_once_continues_a_preempted_run_and_refuses_other_settings(
    tmp_path, data_dir, monkeypatch
):
    reference = train_once(tiny_config(tmp_path / "reference", data_dir))
    config = tiny_config(tmp_path / "run", data_dir)
    progress = Trainer._progress

    def preempt_at_10(self, done):
        if done == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        progress(self, done)

    monkeypatch.setattr(Trainer, "_progress", preempt_at_10)
    with pytest.raises(PreemptedError, match=r"preempted \(SIGTERM\) at microbatch 1[01],"):
        train_once(config)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "summary.json").exists()
    summary = train_once(config)  # continued from its checkpoint, not started again

    def eval_losses(run):
        return [r["eval/loss"] for r in read_metrics(run) if "eval/loss" in r]

    assert summary["eval_loss"] == reference["eval_loss"]
    assert eval_losses(tmp_path / "run") == eval_losses(tmp_path / "reference")
    # Read back whatever the session settings; refused under other run settings.
    again = train_once(tiny_config(tmp_path / "run", data_dir, train__checkpoint_every=3))
    assert again["eval_loss"] == summary["eval_loss"]
    with pytest.raises(ValueError, match=r"other settings \(optim\.lr: .* -> 0\.0123\)"):
        train_once(tiny_config(tmp_path / "run", data_dir, optim__lr=0.0123))


def test_train_once_reads_back_a_branch_named_by_another_path_to_its_parent(tmp_path, data_dir):
    train_once(tiny_config(tmp_path / "reference", data_dir))
    branch = {"train__branch_from": str(tmp_path / "reference"), "train__branch_step": 8}
    done = train_once(tiny_config(tmp_path / "branch", data_dir, **branch))
    relative = {**branch, "train__branch_from": os.path.relpath(tmp_path / "reference")}
    assert train_once(tiny_config(tmp_path / "branch", data_dir, **relative)) == done
    other = {**branch, "train__branch_from": str(tmp_path / "elsewhere")}
    with pytest.raises(ValueError, match=r"other settings \(train\.branch_from: "):
        train_once(tiny_config(tmp_path / "branch", data_dir, **other))


def test_the_budget_is_checked_before_the_data_and_a_remainder_is_stated(
    tmp_path, data_dir, capsys, monkeypatch
):
    def no_data(*args, **kwargs):
        raise AssertionError("the data set was built before the budget was checked")

    monkeypatch.setattr("experiments.train.TokenData", no_data)
    with pytest.raises(ValueError, match="optim.warmup .100. must be smaller"):
        Trainer(tiny_config(tmp_path, data_dir, optim__warmup=100))
    with pytest.raises(ValueError, match=r"train.tokens \(100\) is less than one microbatch"):
        Trainer(tiny_config(tmp_path, data_dir, train__tokens=100))
    monkeypatch.undo()
    trainer = Trainer(tiny_config(tmp_path, data_dir, train__tokens=8 * 32 * 24 + 100))
    assert trainer.total == 24
    assert "train.tokens=6244 is 24.39 microbatches" in capsys.readouterr().err


def test_a_token_array_run_needs_no_tfds_and_a_time_limit_ends_it_cleanly(tmp_path, monkeypatch):
    # A bare GPU machine has no TFDS: the program trains on token files alone.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    folder = tmp_path / "tokens"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "train.npy", rng.integers(0, 64, 40_000).astype(np.uint16))
    np.save(folder / "validation.npy", rng.integers(0, 64, 4_000).astype(np.uint16))
    config = tiny_config(
        tmp_path / "run", "unused", data__dataset=f"tokens:{folder}", train__time_limit_s=1e-6
    )
    summary = Trainer(config).fit()
    # The limit ends the session after its first microbatch: evaluated, saved, summarized.
    assert summary["microbatches"] == 1 and summary["time_limited"] is True
    assert not (tmp_path / "run" / "summary.json").exists()  # the run has not ended
    records = read_metrics(tmp_path / "run")
    assert [r["microbatch"] for r in records if "eval/loss" in r] == [0, 1]
    assert summary["eval_loss"] == records[-1]["eval/loss"]
    # The session ended, not the run: resuming without the limit trains to the end.
    rest = Trainer(
        tiny_config(
            tmp_path / "run", "unused", data__dataset=f"tokens:{folder}", train__resume=True
        )
    ).fit()
    assert rest["microbatches"] == 24 and "time_limited" not in rest
    with pytest.raises(ValueError, match="train.time_limit_s must be >= 0 and needs one process"):
        tiny_config(
            tmp_path,
            "unused",
            train__time_limit_s=5,
            train__num_processes=2,
            train__coordinator="localhost:1",
        )
