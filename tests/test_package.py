"""The library's own code uses only optax's and jax's public modules."""

from pathlib import Path

import gqc_jax


def test_no_private_optax_or_jax_imports():
    root = Path(gqc_jax.__file__).parent
    found = [
        f"{path.name}:{i}"
        for path in sorted(root.glob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "optax._src" in line or "jax._src" in line
    ]
    assert not found, found
