"""The public surface: every public module says what it exports, and the public
exceptions pickle under the names users import them by."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast

ROOT = Path(__file__).parent.parent


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


@pytest.mark.parametrize("name", PUBLIC_MODULES)
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
    assert {
        "sse_fast",
        "sse_fast.app",
        "sse_fast.app.routing",
        "sse_fast.hub.fanout",
        "sse_fast.brokers.redis",
        "sse_fast.protocol",
    }.issubset(PUBLIC_MODULES)


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
