"""The settings are a package of private modules by section (``sse_fast/settings/``)
behind one public module, ``sse_fast.settings`` (its ``__all__`` is pinned in
``tests/public_api.txt``; mypy checks the other names the package imports from
it): its classes pickle and print under that name, and the package's docstring
says which file holds what."""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path

import pytest

import sse_fast.settings
from sse_fast.settings import Settings, SettingsError
from sse_fast.settings._handoff import Handoff

from ..test_public_api import _classes_named

#: the name each class pickles as: the public ones under the public module, the
#: hand-off (serve's, to its workers; no name users import) under its own module
PICKLED_AS = {
    SettingsError: "sse_fast.settings.SettingsError",
    Settings: "sse_fast.settings.Settings",
    Handoff: "sse_fast.settings._handoff.Handoff",
}


@pytest.mark.parametrize(
    "value",
    [SettingsError("port must be positive, got 0"), Settings(port=9001), Handoff(store_dir="/d")],
    ids=type,
)
@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_settings_classes_pickle_under_the_public_module(value: object, protocol: int) -> None:
    data = pickle.dumps(value, protocol)
    named = {n for n in _classes_named(data) if n.startswith("sse_fast")}
    assert named == {PICKLED_AS[type(value)]}  # not ..._checks.SettingsError
    copied = pickle.loads(data)
    assert type(copied) is type(value)
    assert copied == value if not isinstance(value, Exception) else copied.args == value.args


def test_a_settings_error_prints_under_the_public_module() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(http="3")
    last = traceback.format_exception_only(caught.value)[-1]
    assert last == "sse_fast.settings.SettingsError: http must be 1, 2 or auto, got '3'\n"
    assert repr(Settings).startswith("<class 'sse_fast.settings.Settings'")


def test_the_package_docstring_names_each_of_its_modules() -> None:
    package = Path(sse_fast.settings.__file__).parent
    modules = sorted(p.name for p in package.glob("_*.py") if p.name != "__init__.py")
    assert len(modules) >= 5  # the sections, the hand-off, the checks, ...
    doc = sse_fast.settings.__doc__ or ""
    assert [m for m in modules if f"``{m}``" not in doc] == []
