"""Shared fixtures: ``impl`` runs a test against each core implementation.

In the default mode both the Cython extension ("ext") and the pure-Python twin
("py") are tested; with SSE_FAST_NO_EXTENSIONS=1 only the twin is. A missing
extension in the default mode is a failure, not a skip: see test_extension.py.

Parity tests (the two compared with each other) run in both modes whenever the
extension is importable: the switch chooses what ``import sse_fast`` uses, not
what may be compared.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

import sse_fast
from sse_fast._core.native import NATIVE_MODULES

#: sse-starlette's and aiohttp-sse's own tests, vendored byte for byte: run by
#: tests/adapters/originals/ in pytest processes of their own (their configuration, their
#: plugins), against the originals and against our drop-ins, never collected here
collect_ignore_glob = ["adapters/originals/*/tests"]

#: tests marked ``alone`` run while no other test does, all in one stretch; a test that
#: starts a program says what only the program proves (see the modules)
pytest_plugins = ["tests.support.alone", "tests.support.processes"]

IMPLEMENTATIONS = ["py"] if sse_fast.NO_EXTENSIONS else ["ext", "py"]

#: Hypothesis without its timing checks: a test checks behaviour, the benchmarks speed
#: (benches/), and on two cores shared by six workers and their servers an example
#: may take a second (a 200 ms deadline failed a test as "flaky" under load)
hypothesis_settings.register_profile(
    "sse_fast", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("sse_fast")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the pure-Python mode, leave out the tests marked ``mode_independent``: what
    they check is the same in both modes (the docs site's build, the docs' code
    blocks, which a reader runs in the default mode, the embedding examples' fresh
    venvs, which build a pure-Python wheel anyway, the docstrings), and the
    extension mode has run them.

    Leave out too, when the extension imports, the tests that load the core's
    implementations by name (``impl``, or marked ``implementations_by_name``): the
    switch does not choose what they load, so they run the same code in both modes
    and the extension mode ran them, the twin's ``[py]`` included (15 s of CPU a
    run, mostly Hypothesis). Where only the twins import, they run here: nowhere
    else can."""
    if not sse_fast.NO_EXTENSIONS:
        return
    by_name = EXTENSION_IMPORT_ERROR is None
    kept = [
        item
        for item in items
        if item.get_closest_marker("mode_independent") is None
        and not (by_name and _loads_implementations_by_name(item))
    ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def _loads_implementations_by_name(item: pytest.Item) -> bool:
    if item.get_closest_marker("implementations_by_name") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "impl" in callspec.params


def _extension_import_error() -> ImportError | None:
    try:
        for module in NATIVE_MODULES:
            importlib.import_module(f"sse_fast._core.{module}_ext")
    except ImportError as exc:
        return exc
    return None


EXTENSION_IMPORT_ERROR = _extension_import_error()
PARITY_IMPLEMENTATIONS = ["ext", "py"] if EXTENSION_IMPORT_ERROR is None else ["py"]
#: Why parity tests skip: None when both implementations can be compared.
PARITY_SKIP_REASON: str | None = None
if EXTENSION_IMPORT_ERROR is not None:
    PARITY_SKIP_REASON = f"the extension cannot be imported ({EXTENSION_IMPORT_ERROR}): " + (
        "SSE_FAST_NO_EXTENSIONS=1 and no extension was built (a build with the switch "
        "set skips it), so there is nothing to compare the pure twins with"
        if sse_fast.NO_EXTENSIONS
        else "it should have been built; tests/core/test_extension.py fails for this"
    )
needs_both = pytest.mark.skipif(PARITY_SKIP_REASON is not None, reason=PARITY_SKIP_REASON or "")


def load_implementation(name: str) -> SimpleNamespace:
    core = {m: importlib.import_module(f"sse_fast._core.{m}_{name}") for m in NATIVE_MODULES}
    return SimpleNamespace(
        name=name,
        encode=core["encoder"].encode,
        encode_many=core["encoder"].encode_many,
        encode_sequenced=core["encoder"].encode_sequenced,
        utf8_error_at=core["encoder"].utf8_error_at,
        Event=core["encoder"].Event,
        ORDER=core["encoder"].ORDER,
        ID_FIRST_ORDER=core["encoder"].ID_FIRST_ORDER,
        Parser=core["parser"].Parser,
        ParsedEvent=core["parser"].ParsedEvent,
        Ring=core["ring"].Ring,
        requests_of=core["publish"].requests_of,
        requests_of_lines=core["publish"].requests_of_lines,
        ack_lines=core["publish"].ack_lines,
        pack_events=core["records"].pack_events,
        scan_records=core["records"].scan_records,
        tally_topics=core["records"].tally_topics,
        Tally=core["records"].Tally,
    )


@pytest.fixture(params=IMPLEMENTATIONS, scope="session")
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    return load_implementation(request.param)


def as_tuples(events: list) -> list[tuple]:
    """Events of either implementation as comparable tuples."""
    return [(e.event, e.data, e.id, e.retry) for e in events]


def forgive(caplog: pytest.LogCaptureFixture, *fragments: str) -> None:
    """Errors a fault test causes on purpose (and checks) do not fail it."""
    caplog.records[:] = [
        r for r in caplog.records if not any(f in r.getMessage() for f in fragments)
    ]


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """A bug the server survives (and logs) must still fail the test."""
    yield
    errors = [
        r for r in caplog.get_records("call") if r.levelno >= 40 and r.name.startswith("sse_fast")
    ]
    assert not errors, f"sse_fast logged errors: {[r.getMessage() for r in errors]}"


@pytest.fixture(params=[True, False], ids=["eager", "lazy"])
def eager(request: pytest.FixtureRequest) -> bool:
    """Run an in-process test under a Granian-like eager ``send`` and a uvicorn-like
    lazy one (``asgi_harness.Stream``)."""
    return bool(request.param)


@pytest.fixture(autouse=True, scope="session")
def own_state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``sse-fast serve`` keeps its events in ``$XDG_STATE_HOME/sse-fast`` unless told
    otherwise: no test may use (or be refused by) the real one of whoever runs the
    suite. ``ServerProcess`` gives each server a directory of its own anyway; this
    covers servers started as a user would (README blocks, CLI tests), each
    process of the session in its own."""
    state = tmp_path_factory.mktemp("xdg-state")
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield
    if saved is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = saved
