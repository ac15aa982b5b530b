"""Results pages and where they came from: a page's text, its figures and the
commit of the code that made its runs (shared by the studies' kit, the GPU pack
and the campaign)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit(cwd: str | Path | None = None) -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes outside ``docs/``:
    a study writing its records and pages there changes no code), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd,
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":/",
                ":(exclude,top)docs",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd,
        )
    except OSError:
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_page(path: str | Path, lines: list[str]) -> Path:
    """Writes a results page (its lines, one newline at the end)."""
    page = Path(path)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    return page


def save_figure(fig, out: Path, dpi: int = 100) -> Path:
    """Saves a matplotlib figure next to its page and closes it."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
