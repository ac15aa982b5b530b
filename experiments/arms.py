"""Arms that several programs run: named settings of ``python -m experiments.train``
(dotted config keys), shared by the studies' kit and the GPU pack."""

from __future__ import annotations

from typing import Any

ADAMW: dict[str, Any] = {"gqc.controller": "none"}
# GNTS with the reference's schedule: cosine-annealed threshold 0.95 -> 0.25.
GNTS_REFERENCE: dict[str, Any] = {
    "gqc.controller": "gnts",
    "gqc.schedule": "reference",
    "gqc.threshold": 0.95,
    "gqc.final_threshold": 0.25,
}
GNTS_RELATIVE: dict[str, Any] = {**GNTS_REFERENCE, "gqc.relative": True}
