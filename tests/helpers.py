"""Helpers shared by the test modules."""

import socket
import subprocess

import jax
import jax.numpy as jnp
import numpy as np


def params_like():
    """A small parameter tree with leaves of several shapes."""
    return {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4), "s": jnp.zeros(())}


def random_grads(seed: int, count: int, template=None, scale: float = 1.0, offset: float = 0.0):
    """A list of ``count`` seeded random gradient trees shaped like ``template``."""
    template = params_like() if template is None else template
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(
            lambda p: jnp.asarray(
                offset + scale * rng.standard_normal(np.shape(p)), dtype=jnp.asarray(p).dtype
            ),
            template,
        )
        for _ in range(count)
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a local JAX coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """Waits at most ``timeout`` seconds for ``proc`` and returns its stderr. A
    process still running then is killed and the test fails with its stderr:
    no test waits forever on a child."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(
            f"{proc.args!r} still ran after {timeout} s; killed. Its stderr:\n"
            + (err or b"").decode(errors="replace")[-3000:]
        ) from None
    return (err or b"").decode(errors="replace")


def unboxed(text: str) -> str:
    """A command-line message tyro printed in a box, as one line of words."""
    return " ".join(text.replace("\u2502", " ").split())
