"""experiments.pages: the commit a study stamps on its records."""

import subprocess

import pytest

from experiments import pages


def test_the_commit_is_dirty_for_changed_code_not_for_changed_docs(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "record.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    head = pages.commit(tmp_path)
    assert len(head) == 12 and "+" not in head
    (tmp_path / "docs" / "record.json").write_text('{"eval_loss": 2.5}')
    (tmp_path / "docs" / "new.json").write_text("{}")
    assert pages.commit(tmp_path / "docs") == head  # records written: the code is unchanged
    (tmp_path / "code.py").write_text("x = 2")
    assert pages.commit(tmp_path / "docs") == f"{head}+dirty"


def test_the_commit_outside_a_checkout_is_unknown(tmp_path):
    if subprocess.run(["git", "rev-parse"], cwd=tmp_path, capture_output=True).returncode == 0:
        pytest.skip("the temporary folder is inside a checkout")
    assert pages.commit(tmp_path) == "unknown"
