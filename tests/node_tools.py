"""Pinned npm tools the codegen tests run: TypeScript's ``tsc`` and ``elm-format``
(``@avh4/elm-format-linux-x64`` ships the binary). Installed once with npm into
a cache directory outside the repository; a machine without npm fails with
what to install (``.ci/run`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

TOOLS = {"typescript": "5.9.3", "@avh4/elm-format-linux-x64": "0.8.8-1"}
HOME = Path(os.environ.get("SSE_FAST_NODE_TOOLS", Path.home() / ".cache" / "sse-fast" / "node"))


def _installed(package: str) -> str | None:
    manifest = HOME / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def ensure() -> Path:
    """The directory holding ``node_modules`` with the pinned tools."""
    if all(_installed(p) == v for p, v in TOOLS.items()):
        return HOME
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the codegen tests need npm: apt-get install npm (.ci/run installs it)")
    HOME.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(HOME)]
        + [f"{p}@{v}" for p, v in TOOLS.items()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm install failed: {done.stderr[-2000:]}")
    return HOME


def tsc() -> Path:
    return ensure() / "node_modules" / ".bin" / "tsc"


def elm_format() -> Path:
    return ensure() / "node_modules" / "@avh4" / "elm-format-linux-x64" / "elm-format"
