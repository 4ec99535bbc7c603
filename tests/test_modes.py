"""What each mode's run leaves out (tests/conftest.py ``pytest_collection_modifyitems``):
the pure-Python run drops what the extension's run already ran the same way, and
keeps what only it can run."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import sse_fast

from . import conftest

pytestmark = pytest.mark.mode_independent  # it sets the mode itself


class Item:
    """What the hook reads of a collected test: its markers and parameters."""

    def __init__(self, name: str, *markers: str, **params: Any) -> None:
        self.name = name
        self.markers = set(markers)
        if params:
            self.callspec = SimpleNamespace(params=params)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


ITEMS = [
    Item("docs block", "mode_independent"),
    Item("properties", "implementations_by_name"),
    Item("ring [py]", impl="py"),
    Item("ring [ext]", impl="ext"),
    Item("a server's stream"),
    Item("a parametrized stream", workers=2),
]


def kept(monkeypatch: pytest.MonkeyPatch, twins: bool, extension_imports: bool) -> list[str]:
    monkeypatch.setattr(sse_fast, "NO_EXTENSIONS", twins)
    error = None if extension_imports else ImportError("not built")
    monkeypatch.setattr(conftest, "EXTENSION_IMPORT_ERROR", error)
    items: list[Any] = list(ITEMS)
    deselected: list[Any] = []
    config: Any = SimpleNamespace(
        hook=SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items))
    )
    conftest.pytest_collection_modifyitems(config, items)
    assert len(items) + len(deselected) == len(ITEMS)
    return [item.name for item in items]


def test_the_extensions_run_keeps_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kept(monkeypatch, twins=False, extension_imports=True) == [i.name for i in ITEMS]


def test_the_twins_run_leaves_out_what_the_extensions_run_ran_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kept(monkeypatch, twins=True, extension_imports=True) == [
        "a server's stream",
        "a parametrized stream",
    ]


def test_without_the_extension_the_twins_run_keeps_the_implementations_tests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kept(monkeypatch, twins=True, extension_imports=False) == [
        "properties",
        "ring [py]",
        "ring [ext]",
        "a server's stream",
        "a parametrized stream",
    ]
