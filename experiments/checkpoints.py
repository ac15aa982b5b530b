"""Checkpoints with orbax: the whole train state (parameters, optimizer and
controller state mid-window, the microbatch counter that is also the data
position and the dropout clock) plus a JSON record of the run.

Checkpoints are numbered by microbatch. Restoring checks the saved run's
configuration against the current one first and names every key that differs;
an unreadable checkpoint raises a ``CheckpointError`` that lists the older
checkpoints still on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

# The fields whose change makes a saved state meaningless for this run (the
# budget, the data folder and bookkeeping may change on resume).
MUST_MATCH = ("model", "data.dataset", "data.tokenizer", "data.microbatch_size", "gqc", "optim")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which and why."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every configuration key that must match."""
    a, b = _flatten(saved), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if not any(key == m or key.startswith(m + ".") for m in MUST_MATCH):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


class Checkpoints:
    """Save / restore of the train state under ``directory``, keeping the last ``keep``."""

    def __init__(self, directory: str | Path, keep: int):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=True
            ),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "run": ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, microbatch: int, state: Any, run: dict) -> None:
        """Writes ``state`` (any pytree of arrays) and the JSON record ``run``."""
        self.manager.save(
            microbatch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run)),
            force=True,
        )
        self.manager.wait_until_finished()

    def drop_after(self, microbatch: int) -> None:
        """Deletes the checkpoints newer than ``microbatch``."""
        for step in self.steps():
            if step > microbatch:
                self.manager.delete(step)

    def read_state(self, microbatch: int) -> Any:
        """The saved state as numpy arrays in the saved tree structure, whatever the
        topology that wrote it: for inspection and comparison."""
        one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        try:
            saved = self.manager.item_metadata(microbatch)["state"]
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), saved
            )
            out = self.manager.restore(
                microbatch, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
        except Exception as e:
            raise self._unreadable(microbatch, e) from e
        return jax.device_get(out.state)

    def read_run(self, microbatch: int) -> dict:
        try:
            out = self.manager.restore(
                microbatch, args=ocp.args.Composite(run=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise self._unreadable(microbatch, e) from e
        return out.run

    def restore(self, microbatch: int | None, like: Any, shardings: Any, config: dict):
        """(state, run record) of checkpoint ``microbatch`` (the latest if None).

        Args:
          like: a state with the target structure, shapes and dtypes.
          shardings: the target shardings (same structure as ``like``).
          config: the current run's configuration, checked against the saved one.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {str(self.directory)!r} to resume from.")
        microbatch = steps[-1] if microbatch is None else microbatch
        if microbatch not in steps:
            raise CheckpointError(
                f"no checkpoint for microbatch {microbatch} in {str(self.directory)!r}; "
                f"available: {steps}."
            )
        run = self.read_run(microbatch)
        differences = config_differences(run.get("config", {}), config)
        if differences:
            raise CheckpointError(
                f"checkpoint {microbatch} in {str(self.directory)!r} was written by a run with "
                "a different configuration: "
                + "; ".join(differences)
                + ". Resume with the same settings, or start a new --train.out_dir."
            )
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like, shardings
        )
        try:
            out = self.manager.restore(
                microbatch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as e:
            raise self._unreadable(microbatch, e) from e
        return out.state, run

    def _unreadable(self, microbatch: int, error: Exception) -> CheckpointError:
        older = [s for s in self.steps() if s < microbatch]
        hint = (
            f" Older checkpoints: {older}; resume from one with --train.resume_step=N."
            if older
            else " No older checkpoint is available."
        )
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return CheckpointError(
            f"checkpoint {microbatch} in {str(self.directory)!r} is unreadable or corrupted "
            f"({type(error).__name__}: {first[:300]}).{hint}"
        )

    def close(self) -> None:
        self.manager.close()
