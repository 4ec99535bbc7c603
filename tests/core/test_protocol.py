"""Our own words on the wire (``sse_fast.protocol``): the frames are the bytes
streams have always carried, they read back, and no other module spells them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sse_fast
from sse_fast import Parser
from sse_fast._control_frames import disconnect_frame, missed_data, missed_frame
from sse_fast.client import Disconnect, Missed, _typed
from sse_fast.protocol import (
    DISCONNECT,
    MISSED,
    RESUME_HEADER,
    Control,
    Reason,
    Resume,
    read_control,
)

from ..support.source import docstring_ids

PACKAGE = Path(sse_fast.__file__).resolve().parent  # the source tree, or an installed wheel


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            missed_frame(Reason.RELAY_RESTARTED, 1795),
            b'event: sse-fast-missed\nid: 1795\ndata: {"reason":"relay-restarted",'
            b'"last_event_id":null}\n\n',
        ),
        (
            missed_frame(Resume.EVICTED, 42, "old-id", retry=3000),
            b'event: sse-fast-missed\nid: 42\nretry: 3000\ndata: {"reason":"evicted",'
            b'"last_event_id":"old-id"}\n\n',
        ),
        (
            disconnect_frame(Reason.DRAINING, retry=3500),
            b'event: sse-fast-disconnect\nretry: 3500\ndata: {"reason":"draining"}\n\n',
        ),
        (
            disconnect_frame(Reason.LAGGED, lost=17),
            b'event: sse-fast-disconnect\ndata: {"reason":"lagged","lost":17}\n\n',
        ),
        (
            disconnect_frame(Reason.TOKEN_EXPIRED),
            b'event: sse-fast-disconnect\ndata: {"reason":"token-expired"}\n\n',
        ),
    ],
    ids=["missed-break", "missed-resume", "draining", "lagged", "token-expired"],
)
def test_control_frames_are_the_bytes_streams_carry(frame: bytes, expected: bytes) -> None:
    assert frame == expected


def test_control_events_read_back_whatever_the_order_of_their_fields() -> None:
    for frame, control in (
        (missed_frame(Resume.UNKNOWN, 9, "x"), Control(MISSED, "unknown", "x")),
        (
            disconnect_frame(Reason.LAGGED, lost=3),
            Control(DISCONNECT, "lagged", None, {"lost": 3}),
        ),
    ):
        (event,) = Parser().feed(frame)
        assert read_control(event.event, event.data) == control
    upstream = missed_data(Reason.UPSTREAM_MISSED, upstream_reason="evicted")
    assert read_control(MISSED, upstream) == Control(
        MISSED, "upstream-missed", None, {"upstream_reason": "evicted"}
    )
    assert read_control(MISSED, '{"last_event_id": 5, "reason": "evicted"}') == Control(
        MISSED, "evicted", "5"
    )


@pytest.mark.parametrize(
    ("event", "data"),
    [("message", '{"reason":"lagged"}'), (MISSED, "not json"), (DISCONNECT, "[1, 2]")],
)
def test_what_is_not_a_control_event_reads_as_none(event: str, data: str) -> None:
    assert read_control(event, data) is None


def test_the_client_types_control_events_through_the_protocol() -> None:
    events = Parser().feed(
        missed_frame(Reason.REDIS_RESTARTED, 7) + disconnect_frame(Reason.LAGGED, lost=2)
    )
    missed, ended = (_typed(e) for e in events)
    assert isinstance(missed, Missed) and missed.reason == "redis-restarted"
    assert missed.id == "7" and missed.last_event_id is None
    assert isinstance(ended, Disconnect) and ended.reason == "lagged"
    assert dict(ended.details) == {"lost": 2}


def _string_constants(path: Path) -> set[str]:
    """The string literals of a module, its docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = docstring_ids(tree)
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    }


def test_no_other_module_spells_our_words() -> None:
    words = {MISSED, DISCONNECT, RESUME_HEADER, RESUME_HEADER.lower()}
    words |= {value for name, value in vars(Reason).items() if name.isupper() and "-" in str(value)}
    spelled = {
        str(path.relative_to(PACKAGE)): sorted(words & _string_constants(path))
        for path in PACKAGE.rglob("*.py")
        if path.name != "protocol.py"
    }
    seen = {"hub/_hub.py", "client.py", "locust/_subscriber.py"}
    assert seen <= spelled.keys()  # the scan saw them
    assert {name: found for name, found in spelled.items() if found} == {}
