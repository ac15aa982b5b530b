"""An offline corpus from what every Python machine holds: its own source code.

The Python standard library's and the installed packages' ``.py`` files, read
in a fixed order, deduplicated by content (the same file installed twice counts
once), byte-tokenized, and split into train / validation by a hash of each
file's content, so the split is the same on every machine that holds the file.
It needs no data set builder, no tokenizer file and no network, so it is there
on a bare GPU machine that only has Python packages.

    corpus = build_corpus(max_bytes=400_000_000)
    corpus.train, corpus.validation  # uint8 token arrays
    corpus.stats                     # files, bytes, duplicates dropped

The training program reads it as ``--data.dataset=python-source``
(:func:`experiments.data.token_source`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sysconfig
from pathlib import Path

import numpy as np

VALIDATION_PERCENT = 2  # files whose content hash falls in the first 2% of 100


@dataclasses.dataclass(frozen=True)
class Corpus:
    train: np.ndarray
    validation: np.ndarray
    stats: dict


def source_roots() -> list[Path]:
    """The standard library and the installed packages (purelib and platlib)."""
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("stdlib", "purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and all(root != r and root not in r.parents for r in roots):
            roots.append(root)
    return roots


def build_corpus(max_bytes: int = 0, roots: list[Path] | None = None) -> Corpus:
    """Reads the ``.py`` files under ``roots`` (default :func:`source_roots`) in
    sorted order until ``max_bytes`` unique bytes (0: all) and at least one
    held-out file, and splits them.

    Returns:
      A :class:`Corpus`; ``stats`` holds the files and bytes read, the duplicate
      files and bytes dropped, and the train / validation token counts.
    """
    roots = source_roots() if roots is None else roots
    seen: set[bytes] = set()
    train: list[bytes] = []
    validation: list[bytes] = []
    files = duplicates = duplicate_bytes = total = 0
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if max_bytes and total >= max_bytes and validation:
                break
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if not data:
                continue
            digest = hashlib.sha1(data).digest()
            if digest in seen:
                duplicates += 1
                duplicate_bytes += len(data)
                continue
            seen.add(digest)
            files += 1
            total += len(data)
            held_out = int.from_bytes(digest[:4], "little") % 100 < VALIDATION_PERCENT
            (validation if held_out else train).append(data + b"\n\n")
    to_tokens = lambda parts: np.frombuffer(b"".join(parts), np.uint8).copy()  # noqa: E731
    corpus_train, corpus_val = to_tokens(train), to_tokens(validation)
    stats = {
        "roots": [str(r) for r in roots],
        "files": files,
        "bytes": total,
        "duplicate_files": duplicates,
        "duplicate_bytes": duplicate_bytes,
        "train_tokens": int(corpus_train.size),
        "validation_tokens": int(corpus_val.size),
        "tokenizer": "bytes (vocabulary 256)",
    }
    return Corpus(corpus_train, corpus_val, stats)
