"""How ``sse-fast serve`` is put together: the hand-off to its workers declared
once (``settings.Handoff``), the broker chosen by one function of the settings,
settings frozen once built."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

from sse_fast.cli import add_settings_flags
from sse_fast.settings import Handoff, Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def _declared_in(path: Path) -> dict[str, list[str]]:
    """For each class of ``path``, the names of the fields it declares."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            out[node.name] = [
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            ]
    return out


def test_the_hand_off_fields_are_declared_once() -> None:
    names = Handoff.names()
    assert names == {f.name for f in dataclasses.fields(Handoff)} and names
    declared = _declared_in(ROOT / "sse_fast" / "settings.py")
    assert [cls for cls, fields in declared.items() if names & set(fields)] == ["Handoff"]
    assert names <= {f.name for f in dataclasses.fields(Settings)}
    for derived in (ROOT / "sse_fast" / "cli.py", ROOT / "docs" / "hooks.py"):
        listed = names & _string_constants(derived)
        assert not listed, f"{derived.name} lists {sorted(listed)}: derive them from Handoff"
        assert "Handoff" in derived.read_text()


def test_the_hand_off_fields_are_no_flags_and_every_other_setting_is() -> None:
    serve = argparse.ArgumentParser()
    add_settings_flags(serve)
    flags = {action.dest for action in serve._actions} - {"help"}
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert flags == settings - Handoff.names()
