"""No test waits a fixed time: every wait is on a condition with a deadline.

A test that sleeps "long enough" for something to happen is slow when the machine is
quiet and wrong when it is loaded (most of the races CI found were such waits). A wait
goes through one helper: ``sse_fast.testing.wait_for`` in an event loop,
``tests/support/waiting.until`` outside one; a clock the subject reads is injected and
moved (``WallClock``, the hub's ``clock``), not waited for.

Playwright's ``page.wait_for_timeout`` is such a sleep too.

A sleep is still right where the time is the subject's, not the test's: a generator
that paces its events, a slow client, a body that never comes. Such a sleep says so on
its line or the line above, with a comment that starts ``# pace:``. ``sleep(0)`` (a
turn of the loop) and a sleep of an hour or more (a wait that never ends by itself)
need no comment. The vendored originals' suites (``tests/adapters/originals``) are
theirs and not looked at.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

#: the tests' source, read: the same in both modes
pytestmark = pytest.mark.mode_independent

TESTS = Path(__file__).parent
#: where the fixed waits are allowed: the originals' suites, and the helper itself
EXEMPT = (TESTS / "adapters" / "originals", TESTS / "support" / "waiting.py")
MODULES = {"time", "asyncio", "anyio", "trio", "gevent"}
FOREVER = 3600  # seconds: a sleep this long is a wait that never ends by itself


def _sleep_names(tree: ast.Module) -> set[str]:
    """The bare names bound to a sleep (``from time import sleep``)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "") in MODULES
        for alias in node.names
        if alias.name == "sleep"
    }


def _is_sleep(call: ast.Call, names: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in names
    if isinstance(func, ast.Attribute) and func.attr == "wait_for_timeout":
        return True  # Playwright's page.wait_for_timeout(ms)
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "sleep"
        and isinstance(func.value, ast.Name)
        and func.value.id in MODULES
    )


def _needs_no_reason(call: ast.Call) -> bool:
    if not call.args:
        return False
    value = call.args[0]
    if isinstance(value, ast.Constant) and isinstance(value.value, int | float):
        if isinstance(call.func, ast.Attribute) and call.func.attr == "wait_for_timeout":
            return value.value == 0  # milliseconds: never "forever"
        return value.value == 0 or value.value >= FOREVER
    return False


def fixed_waits(source: str) -> list[int]:
    """The lines of ``source`` that sleep without saying why (``# pace:``)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    names = _sleep_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not _is_sleep(node, names) or _needs_no_reason(node):
            continue
        near = lines[max(0, node.lineno - 2) : node.end_lineno or node.lineno]
        if not any("# pace:" in line for line in near):
            found.append(node.lineno)
    return sorted(found)


def test_no_test_waits_a_fixed_time() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if any(path == exempt or exempt in path.parents for exempt in EXEMPT):
            continue
        for line in fixed_waits(path.read_text()):
            found.append(f"{path.relative_to(TESTS.parent)}:{line}")
    assert not found, (
        f"{len(found)} fixed waits: wait on a condition (sse_fast.testing.wait_for, "
        "tests/support/waiting.until) or move an injected clock; a sleep that is the "
        "subject's own pace says so with '# pace: <why>':\n" + "\n".join(found)
    )


def test_the_check_finds_what_it_looks_for() -> None:
    source = """\
import asyncio
import time
from time import sleep as nap

async def main(gap):
    await asyncio.sleep(0.5)
    time.sleep(1)
    nap(0.1)
    await asyncio.sleep(gap)
    await asyncio.sleep(0)
    await asyncio.sleep(3600)
    # pace: the generator's own rhythm
    await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # pace: a slow client
    other.sleep(1)
    page.wait_for_timeout(300)
    page.wait_for_timeout(5000)
"""
    assert fixed_waits(source) == [6, 7, 8, 9, 16, 17]
