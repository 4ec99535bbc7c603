"""The npm tools the codegen tests run, pinned and hash-checked like the examples'
JavaScript (``examples/vendor.py``, which fetches them with ``npm pack``):
TypeScript's ``tsc`` (run by node) and ``elm-format``
(``@avh4/elm-format-linux-x64`` ships the binary). A machine without npm or node
fails with what to install (``.ci/run`` installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from examples.vendor import Pinned, typescript_compiler, unpacked

ELM_FORMAT = Pinned(
    "npm",
    "@avh4/elm-format-linux-x64",
    "0.8.8-1",
    "avh4-elm-format-linux-x64-0.8.8-1.tgz",
    "3df28a5c6c9d0a8e625e80f5daec1b4fbe7882e85e2dc1c4bb7995098ab92ea0",
    "package/elm-format",
    "",
    "a9acb2fd6cd3fe81fd8cad44c6ea6b984c2706570b12a1510ca343cd7f079d00",
)


def tsc() -> list[str]:
    """The command that runs the pinned ``tsc`` (TypeScript 5.9.3)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the codegen tests need node: apt-get install nodejs npm")
    return [node, str(typescript_compiler())]


def elm_format() -> Path:
    """The pinned ``elm-format`` (0.8.8) binary."""
    return unpacked(ELM_FORMAT)
