"""The notebooks run top to bottom offline, and are stored without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_is_stored_stripped(path, tmp_path, monkeypatch):
    # The kernel runs as on Colab, on the one device it finds, not on the 8 fake
    # CPU devices the rest of the suite shards over.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    # A notebook's set-up cell installs what is missing, as on Colab; here pip
    # must not reach the index (tests run offline), so a missing package fails.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(c.outputs for c in code)
