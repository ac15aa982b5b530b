"""Shared test set-up: 8 fake CPU devices, a bounded hypothesis profile."""

import os
from pathlib import Path

# models/ and experiments/ are not installed (the wheel holds gqc_jax alone): they
# import from the clone. Subprocesses and notebook kernels the tests start get it too.
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

# Before jax is imported: tests of sharded and shard_map use 8 fake CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "gqc",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("gqc")


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
    """A persistent compilation cache for the processes the tests start (the
    training program, benchmarks, notebook kernels): they compile the same step
    programs again and again. One folder for the whole run, shared by the xdist
    workers (the parent of each worker's temporary folder), gone with pytest's
    old temporary folders."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    cache.mkdir(exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
