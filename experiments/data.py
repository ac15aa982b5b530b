"""Token data: a token source, served as deterministic, seeded microbatches
addressed by their index.

Sources (``data.dataset``): a TFDS text data set in array_record format, read
without TensorFlow and tokenized once (``shakespeare``, the default, is built
offline); ``python-source``, this machine's own Python source as bytes
(:mod:`experiments.offline_corpus`; no TFDS, so a bare GPU machine has it);
``tokens:DIR``, token arrays already on disk (``train`` and ``validation``
splits as ``.npy`` files or raw ``uint16`` ``.bin`` files, nanoGPT's
``train.bin``/``val.bin`` included); or arrays in memory
(:class:`TokenSource`, passed to :class:`TokenData` and the trainer).

The microbatch with index ``i`` is a pure function of (tokens, seed, ``i``), so
the iterator position is just the number of microbatches consumed (saved in the
train state) and a resumed run reads exactly what an uninterrupted one would.
On several hosts each process reads only its own rows of each microbatch.
"""

from __future__ import annotations

import hashlib
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.config import DataConfig
from experiments.tokenizers import Tokenizer, make_tokenizer


class DataError(RuntimeError):
    """A data set that cannot be read; the message says why and what to do."""


PYTHON_SOURCE = "python-source"
TOKEN_FILES = "tokens:"


@dataclass(frozen=True)
class TokenSource:
    """A data set as token arrays: its train and validation splits (integer
    arrays, e.g. memory-mapped) and the vocabulary the model needs (0: the
    largest token + 1, found by the same pass that checks the splits)."""

    train: np.ndarray
    validation: np.ndarray
    vocab_size: int = 0

    def __post_init__(self):
        bounds = {}
        for split in ("train", "validation"):
            tokens = getattr(self, split)
            if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
                raise DataError(
                    f"the {split} split must be a 1-D integer token array, got shape "
                    f"{tokens.shape} of {tokens.dtype}."
                )
            if tokens.size:
                bounds[split] = int(tokens.min()), int(tokens.max())
        if not self.vocab_size:
            largest = max((high for _, high in bounds.values()), default=0)
            object.__setattr__(self, "vocab_size", largest + 1)
        for split, (low, high) in bounds.items():
            if high >= self.vocab_size or low < 0:
                raise DataError(
                    f"the {split} split holds tokens in [{low}, {high}], outside the "
                    f"vocabulary [0, {self.vocab_size}); set --data.vocab_size."
                )


def token_source(config: DataConfig) -> TokenSource:
    """The configured data set's token arrays (see the module docstring)."""
    if config.dataset.startswith(TOKEN_FILES):
        return _token_files(config)
    if config.dataset == PYTHON_SOURCE:
        if config.tokenizer != "bytes":
            raise DataError(
                f"data.dataset={PYTHON_SOURCE!r} is byte tokens: use data.tokenizer=bytes."
            )
        from experiments.offline_corpus import build_corpus

        corpus = build_corpus(config.corpus_bytes)
        return TokenSource(corpus.train, corpus.validation, config.vocab_size or 256)
    tokenizer = make_tokenizer(config)
    return TokenSource(
        load_tokens(config, "train", tokenizer),
        load_tokens(config, "validation", tokenizer),
        config.vocab_size or tokenizer.vocab_size,
    )


def _token_files(config: DataConfig) -> TokenSource:
    """``tokens:DIR``: DIR/train.{npy,bin} and DIR/validation.{npy,bin} (or val.bin)."""
    folder = Path(config.dataset[len(TOKEN_FILES) :]).expanduser()
    splits = []
    for names in (("train",), ("validation", "val")):
        found = [folder / f"{n}.{ext}" for n in names for ext in ("npy", "bin")]
        path = next((f for f in found if f.is_file()), None)
        if path is None:
            raise DataError(
                f"data.dataset={config.dataset!r}: none of {[str(f) for f in found]} exists "
                "(a token-array data set is a folder of train and validation .npy files, or "
                "raw uint16 .bin files)."
            )
        tokens = (
            np.load(path, mmap_mode="r")
            if path.suffix == ".npy"
            else np.memmap(path, dtype=np.uint16, mode="r")
        )
        splits.append(tokens)
    return TokenSource(splits[0], splits[1], config.vocab_size)  # 0: inferred


def _prepared_dir(name: str, data_dir: Path) -> Path | None:
    """The newest prepared version folder of ``name`` (``builder[/config]``) or None."""
    base = data_dir / name
    if not base.is_dir():
        return None
    versions = sorted(
        (p for p in base.iterdir() if (p / "dataset_info.json").is_file()),
        key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()),
    )
    return versions[-1] if versions else None


def prepare_local_text(name: str, data_dir: Path) -> None:
    """Builds ``local_text/<config>`` (a config of :class:`LocalText`) under ``data_dir``."""
    import tensorflow_datasets as tfds

    from experiments.text_builder import LocalText

    tfds.disable_progress_bar()
    config = name.split("/", 1)[1] if "/" in name else "shakespeare"
    try:
        LocalText(
            config=config, data_dir=str(data_dir), file_format="array_record"
        ).download_and_prepare()
    except FileExistsError:  # a run started beside this one finished the same build first
        if _prepared_dir(name, data_dir) is None:
            raise


def read_texts(config: DataConfig, split: str) -> list[str]:
    """Every record's text in ``split`` of the configured data set, in record order.

    Never downloads: ``shakespeare`` (= ``local_text/shakespeare``) is built from
    local files when missing; any other data set must already be prepared in
    array_record format under ``data_dir``, else a ``DataError`` says so at once.
    """
    import tensorflow_datasets as tfds

    name = "local_text/shakespeare" if config.dataset == "shakespeare" else config.dataset
    data_dir = Path(config.data_dir).expanduser()
    prepared = _prepared_dir(name, data_dir)
    if prepared is None and name == "local_text/shakespeare":
        prepare_local_text(name, data_dir)
        prepared = _prepared_dir(name, data_dir)
    try:
        if prepared is not None:  # read from the files, no builder code needed
            source = tfds.builder_from_directory(str(prepared)).as_data_source(split=split)
        else:  # a registered data set (or one mocked by tfds.testing.mock_data)
            source = tfds.data_source(name, data_dir=str(data_dir), split=split, download=False)
    except Exception as e:  # tfds raises many kinds; name the data set and the cause
        if prepared is None:
            raise DataError(
                f"data set {config.dataset!r} is not prepared under {str(data_dir)!r} and "
                "nothing is downloaded at run time. Prepare it on a machine with network "
                "access (tfds build NAME --file_format=array_record --data_dir=DIR) and copy "
                "DIR here, or use --data.dataset=shakespeare (built offline)."
            ) from e
        raise DataError(f"cannot read split {split!r} of {config.dataset!r}: {e}") from e
    texts = []
    for i in range(len(source)):
        record = source[i]
        if config.text_key not in record:
            raise DataError(
                f"data set {config.dataset!r} has no field {config.text_key!r} "
                f"(fields: {sorted(record)}); set --data.text_key."
            )
        value = record[config.text_key]
        texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
    return texts


def load_tokens(config: DataConfig, split: str, tokenizer: Tokenizer) -> np.ndarray:
    """The split as one token array, cached next to the data set by tokenizer."""
    cache_dir = Path(config.data_dir).expanduser() / "tokens"
    key = hashlib.sha256(
        f"{config.dataset}|{config.text_key}|{split}|{tokenizer.fingerprint}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"{config.dataset.replace('/', '_')}-{split}-{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    texts = read_texts(config, split)
    tokens = np.concatenate([tokenizer.encode(t) for t in texts]) if texts else np.zeros(0)
    tokens = tokens.astype(np.uint16 if tokenizer.vocab_size <= 65536 else np.int32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.time_ns()}.tmp.npy")
    np.save(tmp, tokens)
    tmp.replace(path)  # atomic: concurrent readers never see half a file
    return tokens


@dataclass(frozen=True)
class Windows:
    """Non-overlapping windows of ``length`` tokens over a token array.

    Training order: epoch ``e`` visits the windows in the permutation drawn from
    ``(seed, e)``; row ``r`` of the infinite stream is window
    ``perm_e[r mod n]`` with ``e = r div n``.
    """

    tokens: np.ndarray
    length: int
    seed: int

    @property
    def count(self) -> int:
        return (len(self.tokens) - 1) // (self.length - 1)

    def window(self, j: int) -> np.ndarray:
        start = j * (self.length - 1)
        return np.asarray(self.tokens[start : start + self.length], dtype=np.int32)

    def _permutation(self, epoch: int) -> np.ndarray:
        # Drawn once per epoch, not per microbatch: a permutation of a large
        # corpus's windows costs milliseconds (600k windows: about 10 ms).
        cached = self.__dict__.get("_drawn")
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.count))
            object.__setattr__(self, "_drawn", cached)  # a cache, not a field
        return cached[1]

    def rows(self, first: int, number: int) -> np.ndarray:
        """Rows ``first .. first + number - 1`` of the shuffled stream, [number, length]."""
        out = []
        for r in range(first, first + number):
            epoch, slot = divmod(r, self.count)
            out.append(self.window(int(self._permutation(epoch)[slot])))
        return np.stack(out)

    def sequential(self, number: int) -> np.ndarray:
        """The first ``number`` windows in order (for evaluation), cycling if short."""
        return np.stack([self.window(j % self.count) for j in range(number)])

    def spread(self, number: int) -> np.ndarray:
        """``number`` windows spread evenly over the split (for evaluation):
        window ``floor(i * count / number)`` for ``i < number``; every window,
        cycling, if the split has fewer."""
        if number > self.count:
            return self.sequential(number)
        return np.stack([self.window(i * self.count // number) for i in range(number)])


def second_corpus_files(source: str) -> list[Path]:
    """The files of a second evaluation corpus, in a fixed order: this Python's
    standard-library ``.py`` sources for ``"python-stdlib"``, else every file
    under the folder ``source``."""
    if source == "python-stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = list(root.glob("*.py"))
    else:
        root = Path(source).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data.second_eval must be 'python-stdlib' or a folder of text files, got "
                f"{source!r}."
            )
        files = [f for f in root.rglob("*") if f.is_file()]
    if not files:
        raise DataError(f"data.second_eval {source!r} holds no files.")
    return sorted(files)


def second_corpus_tokens(source: str, tokenizer: Tokenizer, needed: int) -> np.ndarray:
    """At least ``needed`` tokens of the second corpus (fewer if it is shorter),
    read file by file in order."""
    parts, total = [], 0
    for f in second_corpus_files(source):
        tokens = tokenizer.encode(f.read_text(encoding="utf-8", errors="replace"))
        parts.append(tokens)
        total += len(tokens)
        if total >= needed:
            break
    return np.concatenate(parts)[:needed]


class TokenData:
    """Train microbatches by index and a fixed validation set, for one process."""

    def __init__(self, config: DataConfig, seq_len: int, source: TokenSource | None = None):
        self.config = config
        self.source = token_source(config) if source is None else source
        train = self.source.train
        if config.train_tokens > 0:
            train = train[: config.train_tokens]
        self.train = Windows(train, seq_len + 1, config.seed)
        self.validation = Windows(self.source.validation, seq_len + 1, config.seed)
        self.second = None
        if config.second_eval:
            needed = config.eval_batches * config.microbatch_size * seq_len + 1
            tokens = second_corpus_tokens(config.second_eval, make_tokenizer(config), needed)
            self.second = Windows(tokens, seq_len + 1, config.seed)
        splits = [("train", self.train), ("validation", self.validation)]
        if self.second is not None:
            splits.append((f"second_eval {config.second_eval!r}", self.second))
        for split, w in splits:
            if w.count < 1:
                raise DataError(
                    f"split {split!r} of {config.dataset!r} has {len(w.tokens)} tokens, fewer "
                    f"than one sequence of {seq_len + 1}; use a shorter --model.seq_len."
                )

    @property
    def vocab_size(self) -> int:
        return self.source.vocab_size

    def microbatch(self, index: int, rows: slice | None = None) -> np.ndarray:
        """Microbatch ``index`` (int32 [microbatch_size, seq_len + 1]), or its ``rows``."""
        size = self.config.microbatch_size
        rows = rows or slice(0, size)
        first = index * size + rows.start
        return self.train.rows(first, rows.stop - rows.start)

    def eval_batches(self, rows: slice | None = None, second: bool = False) -> list[np.ndarray]:
        """The fixed validation microbatches (or the second corpus's), or their
        ``rows``: ``data.eval_sequences`` sequences spread over the split when set."""
        size = self.config.microbatch_size
        rows = rows or slice(0, size)
        windows = self.second if second else self.validation
        if windows is None:
            raise DataError("no second evaluation corpus is configured (data.second_eval).")
        if self.config.eval_sequences and not second:
            every = windows.spread(self.config.eval_sequences)
        else:
            every = windows.sequential(self.config.eval_batches * size)
        return [
            every[b * size + rows.start : b * size + rows.stop] for b in range(len(every) // size)
        ]
