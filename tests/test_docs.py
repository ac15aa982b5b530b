"""Every ```python block of the documentation pages runs (the API page's examples are
its docstrings', run as doctests; its ```python blocks are signatures)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCKS = [
    (page.name, i, block)
    for page in sorted(DOCS.glob("*.md"))
    if page.name != "api.md"
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
]


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_docs_block_runs(page, index, block, capsys):
    exec(compile(block, f"{page} block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_api_page_is_current():
    import subprocess
    import sys

    build = DOCS / "build_api.py"
    done = subprocess.run([sys.executable, str(build), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
