"""Shared fixtures: ``impl`` runs a test against each core implementation.

In the default mode both the Cython extension ("ext") and the pure-Python twin
("py") are tested; with SSE_FAST_NO_EXTENSIONS=1 only the twin is (the
extension is not built in that mode). A missing extension in the default mode
is a failure, not a skip: see test_extension.py.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

import sse_fast

IMPLEMENTATIONS = ["py"] if sse_fast.NO_EXTENSIONS else ["ext", "py"]


def _extension_built() -> bool:
    try:
        importlib.import_module("sse_fast._encoder_ext")
    except ImportError:
        return False
    return True


# Parity tests compare both whenever the extension was built, in either mode: the
# switch chooses what ``import sse_fast`` uses, not what may be compared. Only a
# tree built with SSE_FAST_NO_EXTENSIONS=1 (no .so at all) has nothing to compare.
PARITY_IMPLEMENTATIONS = ["ext", "py"] if _extension_built() else ["py"]


def load_implementation(name: str) -> SimpleNamespace:
    encoder = importlib.import_module(f"sse_fast._encoder_{name}")
    parser = importlib.import_module(f"sse_fast._parser_{name}")
    ring = importlib.import_module(f"sse_fast._ring_{name}")
    return SimpleNamespace(
        name=name,
        encode=encoder.encode,
        encode_many=encoder.encode_many,
        Event=encoder.Event,
        Parser=parser.Parser,
        ParsedEvent=parser.ParsedEvent,
        Ring=ring.Ring,
    )


@pytest.fixture(params=IMPLEMENTATIONS, scope="session")
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    return load_implementation(request.param)


def as_tuples(events: list) -> list[tuple]:
    """Events of either implementation as comparable tuples."""
    return [(e.event, e.data, e.id, e.retry) for e in events]


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """A bug the server survives (and logs) must still fail the test."""
    yield
    errors = [
        r for r in caplog.get_records("call") if r.levelno >= 40 and r.name.startswith("sse_fast")
    ]
    assert not errors, f"sse_fast logged errors: {[r.getMessage() for r in errors]}"
