"""Every ```python block of the documentation pages runs, and the site (Sphinx
with MyST; the API reference from the docstrings, whose examples run as
doctests) builds without a warning and lists every public name."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
# The site's pages: all but the build and the GPU pack's raw output (docs/conf.py).
PAGES = sorted(
    p
    for p in DOCS.rglob("*.md")
    if "_build" not in p.parts and not p.is_relative_to(DOCS / "results" / "gpu")
)
BLOCKS = [
    (str(page.relative_to(DOCS)), i, block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
]


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_docs_block_runs(page, index, block, capsys):
    exec(compile(block, f"{page} block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_api_reference_lists_every_public_name():
    import gqc_jax

    text = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto(?:function|class|data):: (\w+)", text, re.M))
    assert documented == set(gqc_jax.__all__) - {"schedules"}
    assert ".. automodule:: gqc_jax.schedules" in text


def test_the_site_builds_without_a_warning(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("sphinx")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
        + [str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "html" / "api.html").read_text()
    assert "gqc_jax.gnts" in page and "lr_scaling" in page and "t_quantile" in page
    built = {
        p.relative_to(tmp_path / "html").with_suffix("")
        for p in (tmp_path / "html").rglob("*.html")
    }
    assert {
        p.relative_to(DOCS).with_suffix("") for p in PAGES
    } <= built  # every page is on the site
