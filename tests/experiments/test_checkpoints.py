"""experiments.checkpoints: checksums that catch what orbax reads without complaint,
rotation that keeps a finite state, and quiet failures."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.checkpoints import CheckpointError, Checkpoints, config_differences, fingerprint
from experiments.train import Trainer
from tests.experiments.conftest import tiny_config, train_command

ROOT = Path(__file__).resolve().parents[2]


def test_fingerprint_sees_one_changed_element_and_moved_elements():
    base = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "n": jnp.int32(3)}
    sums, finite = fingerprint(base)
    assert finite and set(sums) == {"w", "n"}
    for changed in (
        {**base, "w": base["w"].at[2, 3].set(np.nextafter(np.float32(11), np.float32(12)))},
        {**base, "w": base["w"][::-1]},  # the same values elsewhere
        {**base, "n": jnp.int32(4)},
    ):
        other, _ = fingerprint(changed)
        assert other != sums
    assert fingerprint({**base, "w": base["w"].at[0, 0].set(jnp.nan)})[1] is False
    assert fingerprint({"b": jnp.ones(3, jnp.bfloat16), "k": jnp.array([True, False])})[1]


def test_arrays_that_read_back_wrong_are_refused(tmp_path, data_dir):
    Trainer(tiny_config(tmp_path, data_dir, train__checkpoint_every=1, train__stop_after=6)).fit()
    store = Checkpoints(tmp_path / "checkpoints", keep=3)
    *older, last = store.steps()
    # The arrays of another checkpoint, readable by orbax, under the last one's record.
    state = tmp_path / "checkpoints" / str(last) / "state"
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "checkpoints" / str(older[-1]) / "state", state)
    store = Checkpoints(tmp_path / "checkpoints", keep=3)
    with pytest.raises(
        CheckpointError, match=rf"checkpoint {last} .*corrupted.*checksums.*{older}"
    ):
        store.read_state(last)
    chosen = tiny_config(tmp_path, data_dir, train__resume=True, train__resume_step=last)
    with pytest.raises(CheckpointError, match=rf"checkpoint {last} .*arrays differ"):
        Trainer(chosen).fit()
    store.read_state(older[-1])  # the others still verify


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
    """The final parameters of an uninterrupted tiny run."""
    out = tmp_path_factory.mktemp("straight")
    trainer = Trainer(tiny_config(out, data_dir, train__checkpoint_every=1))
    trainer.fit()
    return jax.device_get(trainer.state.params)


def _damage(folder: Path, fault: str) -> None:
    """What a crash or a bad disk leaves in checkpoint ``folder``."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = files[-1]  # the largest file: array bytes
    if fault == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif fault == "garbage":
        raw = bytearray(data.read_bytes())
        middle = len(raw) // 2
        raw[middle : middle + 4096] = np.random.default_rng(0).bytes(len(raw[middle:][:4096]))
        data.write_bytes(bytes(raw))
    elif fault == "empty":
        for f in files:
            f.write_bytes(b"")
    else:  # a save cut short by kill -9: orbax had not renamed its temporary folder yet
        data.write_bytes(data.read_bytes()[:100])
        folder.rename(folder.with_name(f"{folder.name}.orbax-checkpoint-tmp-1764000000"))


@pytest.mark.parametrize("fault", ["truncated", "garbage", "empty", "unfinished"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(
    tmp_path, data_dir, straight, fault, capfd
):
    """The newest checkpoint is damaged: --train.resume says so, naming it, goes on
    from the one before, and ends with the uninterrupted run's parameters."""
    config = tiny_config(tmp_path, data_dir, train__checkpoint_every=1)
    Trainer(tiny_config(tmp_path, data_dir, train__checkpoint_every=1, train__stop_after=6)).fit()
    *_, previous, last = Checkpoints(tmp_path / "checkpoints", keep=3).steps()
    _damage(tmp_path / "checkpoints" / str(last), fault)
    capfd.readouterr()
    resumed = Trainer(
        dataclasses.replace(config, train=dataclasses.replace(config.train, resume=True))
    )
    resumed.fit()
    err = capfd.readouterr().err
    if fault == "unfinished":
        assert "saves that never finished" in err and f"'{last}.orbax-checkpoint-tmp" in err
    else:
        assert f"checkpoint {last} " in err and f"Resuming from checkpoint {previous}" in err
    for x, y in zip(
        jax.tree.leaves(jax.device_get(resumed.state.params)),
        jax.tree.leaves(straight),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    # Nothing but the damaged checkpoint was lost; the run's own saves replaced it.
    assert Checkpoints(tmp_path / "checkpoints", keep=3).steps()[-1] == 24


def test_a_failed_save_deletes_nothing(tmp_path):
    store = Checkpoints(tmp_path, keep=2)
    good = {"params": {"w": jnp.ones(3)}}
    store.save(1, good, {})
    store.save(2, good, {})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    store.manager.save = fail
    with pytest.raises(OSError, match="disk full"):
        store.save(3, good, {})
    assert store.steps() == [1, 2]
    store.read_state(1), store.read_state(2)
    store.close()


def test_rotation_never_deletes_the_newest_finite_checkpoint(tmp_path):
    store = Checkpoints(tmp_path, keep=2)
    good, bad = {"params": {"w": jnp.ones(3)}}, {"params": {"w": jnp.full(3, jnp.nan)}}
    store.save(1, good, {})
    store.save(2, good, {})
    for step in (3, 4, 5):
        store.save(step, bad, {})
    assert store.steps() == [2, 4, 5]
    store.save(6, good, {})
    store.save(7, bad, {})
    assert store.steps() == [6, 7]
    assert Checkpoints(tmp_path, keep=2).read_run(7)["finite"] is False
    store.close()


def test_a_missing_manifest_is_one_error_line_without_tracebacks(tmp_path, data_dir):
    cmd = train_command(tmp_path, data_dir, f"--train.tokens={8 * 32 * 4}", "--optim.warmup=1")
    subprocess.run(
        [*cmd, "--train.stop_after=2"], cwd=ROOT, check=True, capture_output=True, timeout=300
    )
    (tmp_path / "checkpoints" / "2" / "state" / "manifest.ocdbt").unlink()
    done = subprocess.run(
        [*cmd, "--train.resume"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert "checkpoint 2 " in done.stderr and "corrupted" in done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr


def test_config_differences_compares_the_chosen_keys():
    saved = {"model": {"depth": 2}, "optim": {"lr": 1e-3}, "train": {"out_dir": "a", "old": 1}}
    current = {"model": {"depth": 3}, "optim": {"lr": 1e-3}, "train": {"out_dir": "b", "new": 2}}
    assert config_differences(saved, current, ("model",)) == ["model.depth: 2 -> 3"]
    assert config_differences(saved, current, None) == [
        "model.depth: 2 -> 3",
        "train.new: '<absent>' -> 2",
        "train.old: 1 -> '<absent>'",
        "train.out_dir: 'a' -> 'b'",
    ]
    assert config_differences(
        saved, current, None, exclude=frozenset({"train.out_dir"}), ignore_absent=True
    ) == ["model.depth: 2 -> 3"]
