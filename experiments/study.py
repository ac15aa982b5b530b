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


def parse_args(parser, argv: list[str] | None, scale: dict):
    """``parser``'s arguments with a ``--scale`` flag: the ``scale`` defaults for
    larger hardware, where flags given on the command line still win."""
    import argparse
    import sys

    parser.add_argument("--scale", action="store_true", help=f"larger defaults for a GPU: {scale}")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.scale:
        args = parser.parse_args(argv, namespace=argparse.Namespace(**scale))
    return args
