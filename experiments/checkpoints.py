"""Checkpoints with orbax: the whole train state (parameters, optimizer and
controller state mid-window, the microbatch counter that is also the data
position and the dropout clock) plus a JSON record of the run.

Checkpoints are numbered by microbatch (the folder name), while
``train.checkpoint_every`` counts optimizer steps: under a controller a
checkpoint is written after every ``checkpoint_every`` steps, at whatever
microbatch that step ended. Restoring checks the saved run's configuration
against the current one first and names every key that differs. Resuming the
latest checkpoint falls back to the newest readable one, with a warning that
names each unreadable one passed over; a chosen checkpoint that is unreadable
raises a ``CheckpointError`` that lists the older checkpoints still on disk.
Orbax writes each checkpoint under a temporary name and renames it when
complete, so a save cut short (``kill -9``) leaves no checkpoint in the list and
deletes none: rotation runs only after a save has finished.

Each checkpoint's run record holds a checksum of every array of the state, taken
on the device before writing and verified after every read, so a checkpoint
whose bytes changed on disk is refused even where orbax reads it without
complaint. Rotation keeps the newest ``keep`` checkpoints and, besides them, the
newest one whose parameters were all finite, so a run that diverged can always
go back to a state before it did.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

# Orbax writes a checkpoint under NAME + this + a timestamp and renames it when
# complete.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# The fields whose change makes a saved state meaningless for this run (the
# budget, the data folder and bookkeeping may change on resume).
MUST_MATCH = ("model", "data.dataset", "data.tokenizer", "data.microbatch_size", "gqc", "optim")
# What a branch (a new run from another run's checkpoint) must share with it: the
# model and the data position; its optimizer and controller settings may differ.
BRANCH_MUST_MATCH = MUST_MATCH[:4]


class ChecksumError(ValueError):
    """The arrays read back are not the arrays that were written."""


def _quiet_closed_event_loop() -> None:
    """When a restore fails, reads that orbax had started for other arrays
    finish on tensorstore's threads and report to the event loop orbax has
    closed; each prints ``RuntimeError: Event loop is closed`` through
    ``sys.unraisablehook``, dozens after one clear error. Drops exactly those
    reports, nothing else."""
    if getattr(sys.unraisablehook, "_drops_closed_loop", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._drops_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which and why."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read or do not match their checksums."""


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """``uint32[]``: the sum, modulo 2^32, of each element's bits times an odd
    weight set by its position. Any change of one element changes it; the
    elementwise weights need no reshape, so a sharded array stays in place."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    position = jnp.zeros(bits.shape, jnp.uint32)
    for axis, size in enumerate(bits.shape):
        position = position * jnp.uint32(size) + jax.lax.broadcasted_iota(
            jnp.uint32, bits.shape, axis
        )
    weight = position * jnp.uint32(2654435761) + jnp.uint32(0x9E3779B9) | jnp.uint32(1)
    return jnp.sum(bits * weight, dtype=jnp.uint32)


def _path_name(path: tuple) -> str:
    """``params/blocks/0/...``: the same for a NamedTuple field, a dict key or a
    list index, so the saved tree and the tree orbax reads back name a leaf alike."""
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


@jax.jit
def _fingerprint(state: Any) -> tuple[dict[str, jax.Array], jax.Array]:
    """(checksum of every leaf by its path, whether every float parameter is finite)."""
    sums = {
        _path_name(path): _leaf_checksum(jnp.asarray(x))
        for path, x in jax.tree_util.tree_leaves_with_path(state)
    }
    params = (
        state.get("params", state) if isinstance(state, dict) else getattr(state, "params", state)
    )
    floats = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats])) if floats else True
    return sums, jnp.asarray(finite)


def fingerprint(state: Any) -> tuple[dict[str, int], bool]:
    """The checksums of ``state``'s arrays and whether its parameters are finite."""
    sums, finite = jax.device_get(_fingerprint(state))
    return {k: int(v) for k, v in sums.items()}, bool(finite)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def layout_differences(saved: Any, current: Any) -> list[str]:
    """``path: saved -> current`` for every leaf whose shape or dtype differs, or
    that only one of the two trees has (leaves: arrays or orbax metadata)."""

    def layout(tree: Any) -> dict[str, str]:
        return {
            _path_name(path): f"{jnp.dtype(x.dtype).name}{list(x.shape)}"
            for path, x in jax.tree_util.tree_leaves_with_path(tree)
        }

    a, b = layout(saved), layout(current)
    return [
        f"{key}: {a.get(key, '<absent>')} -> {b.get(key, '<absent>')}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def config_differences(
    saved: dict,
    current: dict,
    must_match: tuple[str, ...] | None = MUST_MATCH,
    *,
    exclude: frozenset[str] = frozenset(),
    ignore_absent: bool = False,
) -> list[str]:
    """``key: saved -> current`` for every configuration key that differs.

    Args:
      saved, current: nested configurations (``section -> key -> value``).
      must_match: the keys (and sections) compared; ``None`` compares all.
      exclude: keys never compared.
      ignore_absent: skip keys only one side has (settings added or removed since).
    """
    a, b = _flatten(saved), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in exclude or (ignore_absent and (key not in a or key not in b)):
            continue
        if must_match is not None and not any(
            key == m or key.startswith(m + ".") for m in must_match
        ):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


class Checkpoints:
    """Save / restore of the train state under ``directory``, keeping the last ``keep``."""

    def __init__(self, directory: str | Path, keep: int, read_only: bool = False):
        """``read_only``: another run's checkpoints (a branch reads them): nothing
        is created, rotated or cleaned up there, even while that run writes."""
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.read_only = read_only
        _quiet_closed_event_loop()
        self._finite: dict[int, bool] = {}
        unfinished = (
            sorted(p.name for p in self.directory.glob(f"*{TMP_SUFFIX}*"))
            if self.directory.is_dir() and not read_only
            else []
        )
        if unfinished and jax.process_index() == 0:
            print(
                f"warning: {str(self.directory)!r} holds saves that never finished (a run "
                f"killed while writing): {unfinished}; they are not checkpoints and are "
                "removed.",
                file=sys.stderr,
                flush=True,
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=None,
                enable_async_checkpointing=False,
                create=not read_only,
                cleanup_tmp_directories=not read_only,
            ),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "run": ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, microbatch: int, state: Any, run: dict) -> None:
        """Writes ``state`` (any pytree of arrays) and the JSON record ``run`` (to
        which the state's checksums and finiteness are added), then rotates."""
        if self.read_only:
            raise CheckpointError(f"{str(self.directory)!r} is another run's: it is only read.")
        checksums, finite = fingerprint(state)
        run = {**run, "checksums": checksums, "finite": finite}
        self.manager.save(
            microbatch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run)),
            force=True,
        )
        self.manager.wait_until_finished()
        self._finite[microbatch] = finite
        self._rotate()

    def _is_finite(self, microbatch: int) -> bool:
        if microbatch not in self._finite:
            try:  # a record from before finiteness was stored counts as finite
                self._finite[microbatch] = bool(self.read_run(microbatch).get("finite", True))
            except CheckpointError:
                self._finite[microbatch] = False
        return self._finite[microbatch]

    def _rotate(self) -> None:
        """Deletes all but the newest ``keep`` checkpoints and the newest finite one."""
        steps = self.steps()
        kept = set(steps[-self.keep :])
        if not any(self._is_finite(s) for s in kept):
            finite = [s for s in steps if self._is_finite(s)]
            kept |= set(finite[-1:])
        for step in steps:
            if step not in kept:
                self.manager.delete(step)

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
        self._verify(microbatch, out.state, self.read_run(microbatch))
        return jax.device_get(out.state)

    def read_run(self, microbatch: int) -> dict:
        try:
            out = self.manager.restore(
                microbatch, args=ocp.args.Composite(run=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise self._unreadable(microbatch, e) from e
        return out.run

    def restore(
        self,
        microbatch: int | None,
        like: Any,
        shardings: Any,
        config: dict,
        must_match: tuple[str, ...] = MUST_MATCH,
    ):
        """(state, run record) of checkpoint ``microbatch``; if None, of the newest
        readable one: an unreadable newer checkpoint (truncated, garbage, changed
        on disk) is named in a warning on stderr and the next older one is tried.
        An explicitly chosen checkpoint that cannot be read raises, and so does
        one whose state is laid out otherwise than ``like``.

        Args:
          like: a state with the target structure, shapes and dtypes.
          shardings: the target shardings (same structure as ``like``).
          config: the current run's configuration, checked against the saved one.
          must_match: the configuration keys (and sections) that must be equal.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {str(self.directory)!r} to resume from.")
        if microbatch is not None:
            if microbatch not in steps:
                raise CheckpointError(
                    f"no checkpoint for microbatch {microbatch} in {str(self.directory)!r}; "
                    f"available: {steps}."
                )
            return self._restore(microbatch, like, shardings, config, must_match)
        newest_first = steps[::-1]
        for step, older in zip(newest_first, [*newest_first[1:], None], strict=True):
            try:
                return self._restore(step, like, shardings, config, must_match)
            except UnreadableCheckpointError as e:
                if older is None:
                    raise
                print(
                    f"warning: {str(e).split(' Older checkpoints:')[0]} "
                    f"Resuming from checkpoint {older} instead.",
                    file=sys.stderr,
                    flush=True,
                )

    def _restore(self, microbatch: int, like: Any, shardings: Any, config: dict, must_match: tuple):
        run = self.read_run(microbatch)
        differences = config_differences(run.get("config", {}), config, must_match)
        if differences:
            raise CheckpointError(
                f"checkpoint {microbatch} in {str(self.directory)!r} was written by a run with "
                "a different configuration: "
                + "; ".join(differences)
                + (
                    ". Resume with the same settings, or start a new --train.out_dir."
                    if must_match == MUST_MATCH
                    else ". A branch keeps the model and data settings of the run it starts from."
                )
            )
        try:
            saved = self.manager.item_metadata(microbatch)["state"]
        except Exception as e:
            raise self._unreadable(microbatch, e) from e
        layout = layout_differences(saved, like)
        if layout:
            shown = "; ".join(layout[:4]) + (
                f"; and {len(layout) - 4} more" if len(layout) > 4 else ""
            )
            raise CheckpointError(
                f"checkpoint {microbatch} in {str(self.directory)!r} holds a state laid out "
                f"otherwise than this run's ({shown}): another optimizer or controller wrote it."
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
        self._verify(microbatch, out.state, run)
        return out.state, run

    def _verify(self, microbatch: int, state: Any, run: dict) -> None:
        """Raises ``CheckpointError`` if ``state`` differs from the checksums saved
        with it (a record written before checksums were stored is not checked)."""
        saved = run.get("checksums")
        if saved is None:
            return
        found, _ = fingerprint(state)
        bad = sorted(k for k in set(saved) | set(found) if saved.get(k) != found.get(k))
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise self._unreadable(
                microbatch, ChecksumError(f"{len(bad)} arrays differ from their checksums: {shown}")
            )

    def _unreadable(self, microbatch: int, error: Exception) -> UnreadableCheckpointError:
        older = [s for s in self.steps() if s < microbatch]
        hint = (
            f" Older checkpoints: {older}; resume from one with --train.resume_step=N."
            if older
            else " No older checkpoint is available."
        )
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return UnreadableCheckpointError(
            f"checkpoint {microbatch} in {str(self.directory)!r} is unreadable or corrupted "
            f"({type(error).__name__}: {first[:300]}).{hint}"
        )

    def close(self) -> None:
        self.manager.close()
