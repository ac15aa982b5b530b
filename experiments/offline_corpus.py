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


class Windows:
    """Batches of ``seq_len + 1``-token windows of ``tokens``: a seeded permutation
    of the non-overlapping windows, a new permutation every epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.count = (tokens.size - 1) // seq_len
        if self.count < 1:
            raise ValueError(f"a corpus of {tokens.size} tokens holds no window of {seq_len + 1}.")
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def batch(self, step: int, size: int) -> np.ndarray:
        """The ``step``-th batch of ``size`` windows (int32)."""
        rows = []
        for j in range(step * size, (step + 1) * size):
            epoch, k = divmod(j, self.count)
            if epoch != self._epoch:
                self._epoch = epoch
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.count)
            start = int(self._order[k]) * self.seq_len
            rows.append(self.tokens[start : start + self.seq_len + 1])
        return np.stack(rows).astype(np.int32)

    def epochs(self, windows: int) -> float:
        """Epochs that ``windows`` windows make."""
        return windows / self.count
