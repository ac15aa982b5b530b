"""Pieces every study module shares: the settings of a study's training run and
the machine line of its results page."""

from __future__ import annotations

import os
import platform

# A study's run: no checkpoint before the end, no progress bar, no TensorBoard files.
QUIET_RUN = {
    "train.checkpoint_every": 1_000_000,
    "train.progress": False,
    "train.tensorboard": False,
}


def machine() -> str:
    """This machine, as the results pages state it."""
    return f"{platform.machine()} CPU, {platform.system()}, {os.cpu_count()} cores"
