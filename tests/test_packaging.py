"""The sdist and the wheel: built by ``python -m build``, the wheel holds
``gqc_jax`` alone, and it installs into a fresh virtual environment where a
README example runs."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import gqc_jax

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the pinned setuptools of this environment, no download.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


def test_build_makes_an_sdist_and_a_wheel_of_the_one_version(dist):
    wheels = list(dist.glob("*.whl"))
    sdists = list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    assert wheels[0].name.startswith(f"gqc_jax-{gqc_jax.__version__}-py3-none-any")
    assert sdists[0].name == f"gqc_jax-{gqc_jax.__version__}.tar.gz"


def test_the_wheel_holds_gqc_jax_alone(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"gqc_jax"}
    metadata = (
        zipfile.ZipFile(wheel).read(f"gqc_jax-{gqc_jax.__version__}.dist-info/METADATA").decode()
    )
    assert f"Version: {gqc_jax.__version__}" in metadata
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert not entry_points  # no console scripts into experiments/ any more


def _readme_example() -> str:
    """The README's first Python example (the quickstart)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return blocks[0]


def test_the_wheel_installs_into_a_fresh_environment_and_runs_the_readme(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The wheel unpacked by pip (offline, no dependencies); jax, optax and numpy
    # come from this environment's site-packages through a path entry, which
    # (unlike a site directory) does not run its .pth files, so the editable
    # install of the clone stays out of sight.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + ["--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = tmp_path / "example.py"
    script.write_text(
        "import gqc_jax, importlib.util\n"
        f"assert gqc_jax.__file__.startswith({str(site)!r}), gqc_jax.__file__\n"
        "assert importlib.util.find_spec('models') is None\n"
        "assert importlib.util.find_spec('experiments') is None\n" + _readme_example()
    )
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [str(python), str(script)], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
