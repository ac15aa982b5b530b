"""Multi-host set-up: one program for one CPU, a GPU node, a multi-GPU cluster or a TPU pod."""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from models.sharding import batch_sharding


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str = "gloo",
    peer_timeout_s: int = 100,
) -> None:
    """Starts JAX's multi-process runtime when more than one process takes part.

    With no arguments, on a TPU pod or a cluster that JAX detects by itself
    (SLURM, Open MPI, Cloud TPU), ``jax.distributed.initialize()`` reads the
    topology from the environment; on a single machine nothing is started. On
    CPU the cross-process collectives use ``cpu_collectives`` (gloo). A process
    that sends no heartbeat for ``peer_timeout_s`` counts as dead, and the others
    stop. Several CPU processes compile afresh: see :func:`_no_cached_cpu_collectives`.
    """
    timeouts: dict[str, Any] = {
        "heartbeat_timeout_seconds": peer_timeout_s,
        "shutdown_timeout_seconds": peer_timeout_s,
    }
    # Call before anything touches a JAX backend (jax.devices() included).
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if num_processes is None and coordinator_address is None:
        try:
            jax.distributed.initialize(**timeouts)
        except (ValueError, RuntimeError):
            return  # a single process: nothing to join
    else:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            **timeouts,
        )
    _no_cached_cpu_collectives()


def _no_cached_cpu_collectives() -> None:
    """Turns the persistent compilation cache off for several CPU processes.

    On jax 0.12, two CPU processes whose programs came from a warm persistent
    cache (``jax_compilation_cache_dir``) waited forever in their first gloo
    all-reduce: 5 runs of 5 hung at their first evaluation, and 4 of 4 with no
    cache finished (jax 0.10.2 did not hang). GPU and TPU runs keep the cache.
    """
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        if jax.config.jax_compilation_cache_dir and jax.config.jax_enable_compilation_cache:
            jax.config.update("jax_enable_compilation_cache", False)
            print(
                "note: the persistent compilation cache is off for this multi-process CPU "
                "run (cached programs can hang in their cross-process all-reduce).",
                file=sys.stderr,
            )


def local_slice(global_batch_size: int) -> slice:
    """The rows of a global batch that this process reads."""
    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {count} processes.")
    per = global_batch_size // count
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def global_batch(local_tokens: np.ndarray, mesh: Mesh) -> jax.Array:
    """The global token batch from each process's own rows (no process sees all)."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(local_tokens))
