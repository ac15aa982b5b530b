"""Device meshes from a spec string, and partition rules for every GPT parameter.

Axes: ``data`` (batch only), ``fsdp`` (batch, and parameters split along their
first dimension), ``tensor`` (Megatron-style: column-parallel in-projections,
row-parallel out-projections, vocab-parallel embeddings).
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """``"data=4,fsdp=2,tensor=1"`` -> ``{"data": 4, "fsdp": 2, "tensor": 1}``."""
    sizes = dict.fromkeys(AXES, 1)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in AXES:
            raise ValueError(f"unknown mesh axis {name!r} in {spec!r}; axes are {AXES}.")
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"mesh axis {name} needs a positive size, got {value!r} in {spec!r}.")
        sizes[name] = int(value)
    return sizes


def make_mesh(spec: str = "data=-1", devices=None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); ``data=-1`` takes the remaining devices."""
    devices = jax.devices() if devices is None else devices
    fill = "data=-1" in spec.replace(" ", "")
    sizes = parse_mesh_spec(spec.replace("data=-1", "data=1"))
    if fill:
        rest = math.prod(v for k, v in sizes.items() if k != "data")
        if len(devices) % rest:
            raise ValueError(f"{len(devices)} devices cannot be split by {spec!r}.")
        sizes["data"] = len(devices) // rest
    total = math.prod(sizes.values())
    if total != len(devices):
        raise ValueError(f"mesh {spec!r} needs {total} devices but {len(devices)} are available.")
    grid = np.asarray(devices).reshape([sizes[a] for a in AXES])
    return Mesh(grid, AXES)


# (path pattern, spec for a 2-d kernel/table); biases and norms are replicated,
# or split over "tensor" where they follow a column-parallel output.
_RULES = [
    (r"embed\.embedding$", P("tensor", "fsdp")),
    (r"position\.embedding$", P(None, "fsdp")),
    (r"(qkv|up)\.kernel$", P("fsdp", "tensor")),
    (r"(qkv|up)\.bias$", P("tensor")),
    (r"(proj|down)\.kernel$", P("tensor", "fsdp")),
    (r"head\.kernel$", P("fsdp", "tensor")),
    (r"head\.bias$", P("tensor")),
]


def _fits(shape, spec: P, mesh: Mesh) -> P:
    """Drops axes that do not divide the dimension they would split."""
    out = []
    for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        out.append(axis if axis is None or dim % mesh.shape[axis] == 0 else None)
    return P(*out)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The partition spec of the parameter at ``path`` (dotted), e.g. ``blocks.0.qkv.kernel``."""
    for pattern, spec in _RULES:
        if re.search(pattern, path):
            return _fits(shape, spec, mesh)
    return P()


def tree_specs(tree, mesh: Mesh):
    """Partition specs for a tree of parameters (or of same-shaped optimizer leaves)."""

    def spec(path, leaf):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return param_spec(name, np.shape(leaf), mesh)

    return jax.tree_util.tree_map_with_path(spec, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches (batch, time): the batch axis split over data and fsdp."""
    return NamedSharding(mesh, P(("data", "fsdp"), None))
