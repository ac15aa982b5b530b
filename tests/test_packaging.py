"""The sdist and the wheel: built by ``python -m build``, the wheel holds
``gqc_jax`` alone with its LICENSE and ``py.typed``, and it installs with its
dependencies into a fresh virtual environment where the README's example runs."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
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


def test_the_wheel_and_the_sdist_ship_the_license_and_py_typed(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"gqc_jax-{gqc_jax.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names and "gqc_jax/py.typed" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        inside = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "gqc_jax/py.typed", "pyproject.toml"} <= inside
    assert not [n for n in inside if n.startswith("tests")]  # they need the clone


# The wheel's runtime dependencies as files, put beside the environment by `make`
# (pip download from requirements.lock: the newest jax, optax and numpy).
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


@pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason=f"no {WHEELHOUSE}: `make` downloads it")
def test_the_wheel_installs_into_a_fresh_environment_and_runs_the_readme(dist, tmp_path):
    """A new environment with pip and nothing else: the wheel and its dependencies
    install offline with no conflict (pip check), and the README's user loop runs
    there, importing the installed wheel, not the clone."""
    (wheel,) = dist.glob("*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args], cwd=tmp_path, env=clean, capture_output=True, text=True
        )

    pip = ["-m", "pip", "--disable-pip-version-check", "--no-input"]
    done = run(*pip, "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    done = run(*pip, "check")
    assert done.returncode == 0 and "No broken requirements" in done.stdout, done.stdout
    jax_version = run("-c", "import jax; print(jax.__version__)").stdout.strip()
    assert jax_version == importlib.metadata.version("jax")  # the newest pins
    script = tmp_path / "example.py"
    script.write_text(
        "import gqc_jax, importlib.util\n"
        f"assert gqc_jax.__file__.startswith({str(env)!r}), gqc_jax.__file__\n"
        "assert importlib.util.find_spec('models') is None\n"
        "assert importlib.util.find_spec('experiments') is None\n" + _readme_example()
    )
    done = run(str(script))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "optimizer steps" in done.stdout
