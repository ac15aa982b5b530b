"""Tokenizers: UTF-8 bytes (vocabulary 256, the default) and GPT-2 BPE via tiktoken.

The BPE ranks come from a local ``.tiktoken`` file (GPT-2's is
``r50k_base.tiktoken``), never from the network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from experiments.config import DataConfig

# GPT-2's pre-tokenizer pattern, as tiktoken writes it for r50k_base.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
END_OF_TEXT = "<|endoftext|>"


class Tokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, tokens) -> str: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """Each UTF-8 byte is a token."""

    vocab_size: int = 256
    fingerprint: str = "bytes"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, tokens) -> str:
        return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


class TiktokenTokenizer:
    """GPT-2-style BPE from a local ``.tiktoken`` rank file (one ``base64 rank`` per line);
    ``<|endoftext|>`` follows the last rank."""

    def __init__(self, encoding_file: str):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        path = Path(encoding_file).expanduser()
        if not encoding_file or not path.is_file():
            raise FileNotFoundError(
                f"data.tokenizer='tiktoken' needs --data.encoding_file=PATH to a local "
                f".tiktoken file (e.g. r50k_base.tiktoken for GPT-2); got {encoding_file!r}."
            )
        ranks = load_tiktoken_bpe(str(path))
        self._encoding = tiktoken.Encoding(
            name=path.stem,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={END_OF_TEXT: len(ranks)},
        )
        self.vocab_size = self._encoding.n_vocab
        self.fingerprint = "tiktoken:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._encoding.encode_ordinary(text), dtype=np.int32)

    def decode(self, tokens) -> str:
        return self._encoding.decode([int(t) for t in tokens])


def make_tokenizer(config: DataConfig) -> Tokenizer:
    if config.tokenizer == "bytes":
        return ByteTokenizer()
    return TiktokenTokenizer(config.encoding_file)
