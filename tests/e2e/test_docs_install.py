"""The docs extra alone builds the site: on a fresh clone, ``pip install -e '.[docs]'``
in a new virtual environment, then the strict build the README and CI give.

The build runs ``sse-fast loadgen --help`` for the command-line page (``docs/hooks.py``),
which needs the loadgen extra; the test environment has every extra installed, so only
a venv with nothing but the docs extra shows whether that extra says all the build needs.

The clone is a copy of this checkout's files (tracked and new, not the ignored ones:
no built extension, no ``build/``): an editable install compiles the extension into
its source tree, which must not be this working tree. As in
``test_embedding_installs.py``, the pure-Python build is installed
(``SSE_FAST_NO_EXTENSIONS=1``): the dependencies, not the extension, are what is
checked, and it keeps the test to about half a minute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast

ROOT = Path(__file__).resolve().parents[2]

#: in no group: it builds nothing in this tree (its clone is a copy) and shares nothing
#: with the embedding examples' venvs, so it runs beside them, not after them
pytestmark = pytest.mark.mode_independent


def _fresh_clone(into: Path) -> Path:
    """A copy of the checkout's files as ``git clone`` would give them, with the
    working tree's changes (new files included, ignored ones left out)."""
    if not (ROOT / "pyproject.toml").is_file() or "site-packages" in sse_fast.__file__:
        pytest.skip("needs the source checkout")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files a clone has")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # a tracked file deleted in the working tree is not
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def test_the_docs_extra_alone_builds_the_site_strictly(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path / "sse_fast")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SSE_FAST"))},
        "SSE_FAST_NO_EXTENSIONS": "1",
        "NO_MKDOCS_2_WARNING": "1",
    }
    env.pop("VIRTUAL_ENV", None)

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", *args], cwd=clone, env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    installed = run("pip", "install", "-q", "-e", ".[docs]", timeout=600)
    assert installed.returncode == 0, installed.stderr
    site = tmp_path / "site"
    built = run("mkdocs", "build", "--strict", "--site-dir", str(site), timeout=300)
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert "WARNING" not in output, output
    # the page the loadgen extra is needed for, with the command's own --help
    assert "usage: sse-fast loadgen" in (site / "reference" / "cli" / "index.html").read_text()
