"""The library's own code uses only optax's and jax's public modules."""

from pathlib import Path

import gqc_jax


def test_no_private_optax_or_jax_imports():
    root = Path(gqc_jax.__file__).parent
    found = [
        f"{path.name}:{i}"
        for path in sorted(root.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "optax._src" in line or "jax._src" in line
    ]
    assert not found, found


# The package's public modules: everything else is private (a leading underscore),
# reached through ``gqc_jax``'s own names.
PUBLIC_MODULES = {"__init__", "rounding", "schedules", "student_t"}


def test_only_the_documented_modules_are_public():
    root = Path(gqc_jax.__file__).parent
    public = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")} | {"__init__"}
    assert public == PUBLIC_MODULES


def test_no_public_name_is_shadowed_by_a_module():
    import types

    for name in gqc_jax.__all__:
        obj = getattr(gqc_jax, name)
        assert name in {"schedules"} or not isinstance(obj, types.ModuleType), name
    assert callable(gqc_jax.gnts) and callable(gqc_jax.stats)
