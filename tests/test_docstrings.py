"""Docstring coverage: every public name has its documentation, the text the
API reference (docs/reference/api/, mkdocstrings) renders.

Public, as ``tests/test_public_api.py`` has it: every module with no part of its
name starting with "_", and in it the names of its ``__all__``. The internal modules
that declare an ``__all__`` (what their package's other modules use) are held to the
same rule, for contributors; the native core's twins are pinned by their stubs. Each of them
needs a docstring: modules, classes, functions, and the public methods and
properties of the classes (``__init__`` is the class's; other dunders and
instance attributes are described by their class). A constant or type alias is
documented by a ``#:`` comment above it (read as its docstring, as the docs
build reads it: griffe-sphinx).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import griffe  # the docs extra's, which the test extra includes
import pytest

import sse_fast

from .test_public_api import PUBLIC_MODULES

#: the source tree's package, or the installed wheel's (the sdist check)
PACKAGE_DIR = Path(sse_fast.__file__).resolve().parent


@functools.cache
def _load() -> Any:
    """The package as griffe reads it (when a test first asks: a second's work that
    every worker's collection paid)."""
    extensions = griffe.load_extensions("griffe_sphinx")
    return griffe.load(
        "sse_fast",
        search_paths=[str(PACKAGE_DIR.parent)],
        extensions=extensions,
        resolve_aliases=True,
        resolve_external=False,
    )


def _target(obj: Any) -> Any:
    while obj.is_alias:
        obj = obj.final_target
    return obj


def undocumented(package: Any, module_name: str) -> list[str]:
    """The public names of ``module_name`` without a docstring."""
    _, _, below = module_name.partition(".")
    module = package[below] if below else package
    missing = [] if module.docstring else [f"{module_name} (the module)"]
    for name in module.exports or ():
        obj = _target(module[str(name)])
        where = f"{module_name}.{name}"
        if not obj.docstring:
            missing.append(where)
        if obj.kind is griffe.Kind.CLASS:
            for member_name, member in obj.members.items():
                if member_name.startswith("_") or member.is_alias:
                    continue
                method = member.kind is griffe.Kind.FUNCTION
                prop = "property" in member.labels
                if (method or prop) and not member.docstring:
                    missing.append(f"{where}.{member_name}")
    return missing


def internal_modules() -> list[str]:
    """The modules with a part of their name starting with "_" that declare an
    ``__all__``, outside the native core (``sse_fast._core``)."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        name = ".".join(parts)
        if name in PUBLIC_MODULES or name.startswith("sse_fast._core"):
            continue
        # a top-level assignment, found without parsing (each worker's collection
        # runs this): a line that starts with it
        if re.search(r"^__all__\s*=", path.read_text(), re.MULTILINE):
            names.append(name)
    return names


INTERNAL_MODULES = internal_modules()
#: read from the sources, not imported: the same in both modes
pytestmark = pytest.mark.mode_independent


def test_the_internal_modules_are_found() -> None:
    assert {"sse_fast.hub._fanout", "sse_fast.brokers._relay.wire"} <= set(INTERNAL_MODULES)
    assert len(INTERNAL_MODULES) > 60


@pytest.mark.parametrize("module_name", PUBLIC_MODULES + INTERNAL_MODULES)
@pytest.mark.processes("griffe, which runs git to place the sources")
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    missing = undocumented(_load(), module_name)
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


@pytest.mark.processes("griffe, which runs git to place the sources")
def test_the_check_finds_a_missing_docstring(tmp_path: Path) -> None:
    """The check itself: a module with an undocumented export fails it."""
    package = tmp_path / "undocumented_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""A package."""\n__all__ = ["f", "C", "N"]\n'
        "N = 1\n"
        "def f():\n    pass\n"
        'class C:\n    """A class."""\n    def m(self):\n        pass\n'
        "    def _private(self):\n        pass\n"
    )
    loaded = griffe.load("undocumented_pkg", search_paths=[str(tmp_path)])
    assert undocumented(loaded, "undocumented_pkg") == [
        "undocumented_pkg.f",
        "undocumented_pkg.C.m",
        "undocumented_pkg.N",
    ]
