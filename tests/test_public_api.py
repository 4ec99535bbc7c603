"""The public surface: every public module says what it exports, and the public
exceptions pickle under the names users import them by.

The rule for what is public: a name stays in a public module's ``__all__`` only
when a user needs it, that is when the README, the docs' pages, the examples, the
drop-ins' originals' suites or a documented extension point (a ``Broker`` of your
own, embedding the ``Hub``, the Redis publish helpers, the load tools' Python API)
use it; the server's own parts live in ``_``-private modules, and nothing in the
repository imports from a public module a name that is not in its ``__all__``.
``sse_fast.locust`` is checked in an interpreter of its own: locust patches the process
that imports it (gevent)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pickle
import pickletools
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast

ROOT = Path(__file__).parent.parent
#: where the package's sources are: the source tree's, or the installed wheel's (the
#: sdist check runs the tests against the wheel, without the sources)
SOURCES = Path(sse_fast.__file__).resolve().parent.parent


def _public_modules() -> list[str]:
    """Every module with no part of its name starting with "_", subpackages' included:
    the list the docs site gives an API page each (``docs/hooks.py``, one definition)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    names: list[str] = hooks.public_modules()
    assert "sse_fast.hub" in names and "sse_fast._core" not in names
    return names


PUBLIC_MODULES = _public_modules()
#: imported in a process of their own: importing locust monkey-patches the process (gevent)
PATCHES_THE_PROCESS = {"sse_fast.locust"}
IMPORTED_APART = pytest.mark.processes("locust imported in a fresh interpreter, which it patches")


def export_problems(name: str) -> list[str]:
    """What is wrong with module ``name``'s ``__all__`` (nothing: an empty list)."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return [f"{name} has no __all__"]
    problems = [
        f"{name}.__all__ names {n!r}, which it does not have"
        for n in exported
        if not hasattr(module, n)
    ]
    if len(set(exported)) != len(exported):
        problems.append(f"{name}.__all__ names something twice")
    if not problems:
        namespace: dict[str, object] = {}
        exec(f"from {name} import *", namespace)
        if set(namespace) - {"__builtins__"} != set(exported):
            problems.append(f"from {name} import * does not give exactly __all__")
    return problems


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=IMPORTED_APART) if name in PATCHES_THE_PROCESS else name
        for name in PUBLIC_MODULES
    ],
)
def test_public_module_declares_what_it_exports(name: str) -> None:
    if name in PATCHES_THE_PROCESS:
        code = (
            "import json; from tests.test_public_api import export_problems; "
            f"print(json.dumps(export_problems({name!r})))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        problems = json.loads(done.stdout.splitlines()[-1])
    else:
        problems = export_problems(name)
    assert not problems


def test_the_public_modules_are_found() -> None:
    assert {"sse_fast", "sse_fast.app", "sse_fast.hub", "sse_fast.brokers.redis"} <= set(
        PUBLIC_MODULES
    )
    assert "sse_fast.hub._fanout" not in PUBLIC_MODULES


# -- the pinned list -----------------------------------------------------------------

#: the public API: each public module and the names of its ``__all__``, one line each;
#: a change to it is a change to what users may rely on, made on purpose: rewrite it
#: with ``python -m tests.test_public_api --write`` and say why in the commit
PINNED = ROOT / "tests" / "public_api.txt"


def _exports(name: str) -> list[str]:
    """Module ``name``'s ``__all__``, read from its source (importing
    ``sse_fast.locust`` patches the process for gevent)."""
    path = SOURCES / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return sorted(str(n) for n in ast.literal_eval(node.value))
    return []


def public_api() -> str:
    """The text of ``tests/public_api.txt`` for the package as it is."""
    lines = [f"{name}: {', '.join(_exports(name))}" for name in PUBLIC_MODULES]
    return "\n".join(lines) + "\n"


def test_the_public_api_is_the_pinned_list() -> None:
    """No module or name becomes public, or stops being so, by accident: internals
    start with an underscore, and what is public is listed in ``tests/public_api.txt``."""
    pinned, actual = PINNED.read_text().splitlines(), public_api().splitlines()
    added = [line for line in actual if line not in pinned]
    removed = [line for line in pinned if line not in actual]
    assert (added, removed) == ([], []), (
        "the public API changed; if on purpose: python -m tests.test_public_api --write"
    )


def test_the_docs_list_every_public_module() -> None:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.unlisted_modules() == []


#: ``from sse_fast.x import a, b`` and ``import sse_fast.x`` in the README, the docs'
#: pages and the examples
IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(sse_fast[\w.]*)[ \t]+import[ \t]+(?:\(([^)]*)\)|([\w \t,]+))"
    r"|import[ \t]+(sse_fast[\w.]*))",
    re.M,
)


def documented_imports() -> set[tuple[str, str]]:
    """Each (module, name) the docs and examples import (name "" for ``import m``)."""
    found: set[tuple[str, str]] = set()
    sources = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "examples").glob("*.py"),
    ]
    for source in sources:
        for module, bracketed, names, plain in IMPORT.findall(source.read_text()):
            if plain:
                found.add((plain, ""))
            for imported in (bracketed or names).replace("\n", " ").split(","):
                if imported.split():
                    found.add((module, imported.split()[0]))
    return found


def test_the_docs_import_only_the_public_api() -> None:
    """Every import the README, the docs and the examples show names a public
    module and a name of its ``__all__``, or a public module itself."""
    imports = documented_imports()
    assert ("sse_fast.hub", "Hub") in imports and len(imports) > 30
    problems = [
        f"{module}.{name}" if name else module
        for module, name in sorted(imports)
        if module not in PUBLIC_MODULES
        or (name and name not in _exports(module) and f"{module}.{name}" not in PUBLIC_MODULES)
    ]
    assert problems == []


#: where the repository's own code is: none of it may lean on a public module's
#: names beyond its ``__all__`` (a user reading it would take them for the API)
OWN_CODE = ("sse_fast", "tests", "benches", "examples", "docs")


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_from(path: Path) -> list[tuple[str, str, int]]:
    """Each (module, name, line) a file imports with ``from module import name``
    (relative imports resolved) or reads as ``module.name`` through an imported
    public module."""
    tree = ast.parse(path.read_text())
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, node.module or ""]).strip(".") if node.level else node.module
            for alias in node.names:
                found.append((str(module), alias.name, node.lineno))
                if f"{module}.{alias.name}" in PUBLIC_MODULES:
                    aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:  # import sse_fast.x as y; import sse_fast
                if alias.name in PUBLIC_MODULES and (alias.asname or "." not in alias.name):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def test_own_code_imports_only_the_public_names_of_public_modules() -> None:
    """The package, its tests, benches, examples and docs hooks import a server
    internal from its private module, never through a public module that happens
    to hold it (``sse_fast.cli.build_parser``, ``sse_fast.settings.split_list``)."""
    exports = {name: set(_exports(name)) for name in PUBLIC_MODULES}
    problems = []
    for path in sorted(p for top in OWN_CODE for p in (ROOT / top).rglob("*.py")):
        for module, name, line in _imported_from(path):
            if module not in exports or name == "*" or name.startswith("_"):
                continue
            where = SOURCES.joinpath(*module.split("."), name)
            submodule = where.is_dir() or where.with_suffix(".py").exists()
            if name not in exports[module] and not submodule:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module}.{name}")
    assert problems == [], "import these from their private module"


# -- exceptions ----------------------------------------------------------------------

#: each exception ``sse_fast`` exports: constructor arguments, and the name it pickles as
EXPORTED_ERRORS: dict[str, tuple[tuple[object, ...], str]] = {
    "EncodeError": (("id", "bad"), "sse_fast.EncodeError"),
    "ParseError": (("broken", ["an event"]), "sse_fast.ParseError"),
    "EventTooLarge": ((50, 10, ["an event"]), "sse_fast.EventTooLarge"),
    "Lagged": ((3, 7), "sse_fast.Lagged"),
    "PublishFailed": (("refused", 403, True), "sse_fast.publisher.PublishFailed"),
}


def _classes_named(data: bytes) -> set[str]:
    """The ``module.name`` of each class or function a pickle refers to."""
    named, strings = set(), []
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":  # protocols 0 to 3: "module name"
            named.add(str(argument).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":  # 4 and up: the two strings just pushed
            named.add(".".join(strings[-2:]))
        elif isinstance(argument, str):
            strings.append(argument)
    return named


def test_exported_errors_are_the_table() -> None:
    exported = {
        name
        for name in sse_fast.__all__
        if isinstance(getattr(sse_fast, name), type)
        and issubclass(getattr(sse_fast, name), BaseException)
    }
    assert exported == set(EXPORTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPORTED_ERRORS))
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_exported_errors_pickle_under_public_names(name: str, protocol: int) -> None:
    arguments, pickled_as = EXPORTED_ERRORS[name]
    error = getattr(sse_fast, name)(*arguments)
    data = pickle.dumps(error, protocol)
    assert _classes_named(data) == {pickled_as}  # not sse_fast._core.errors.Lagged
    copied = pickle.loads(data)
    assert type(copied) is type(error)
    assert (copied.args, vars(copied)) == (error.args, vars(error))  # Lagged.lost, ...


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_public_api --write")
    PINNED.write_text(public_api())
