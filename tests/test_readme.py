"""Every ```python block of the README runs."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 1  # the user loop; the other examples are in docs/


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_readme_is_a_front_page():
    """Set-up, install, the user loop, the transforms, the measurements in short:
    the rest lives in docs/ (tests/test_docs.py builds it)."""
    lines = README.read_text().splitlines()
    assert len(lines) < 220, len(lines)
    for page in (
        "docs/user_guide.md",
        "docs/results/index.md",
        "docs/semantics.md",
        "docs/training.md",
    ):
        assert f"]({page}" in README.read_text(), page
        assert (README.parent / page).is_file()
