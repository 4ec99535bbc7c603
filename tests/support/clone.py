"""A copy of this checkout as ``git clone`` would give it, with the working tree's
changes: where the tests install the package into fresh virtual environments
(``tests/e2e/test_docs_site.py``, ``tests/e2e/test_install_lines.py``). An editable
install compiles the extension into its source tree, which must not be this working
tree; the copy has no built extension and no ``build/``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import sse_fast

__all__ = ["ROOT", "fresh_clone"]

#: the checkout the tests run from
ROOT = Path(__file__).resolve().parents[2]


def fresh_clone(into: Path) -> Path:
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
