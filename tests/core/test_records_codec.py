"""The data directory's records codec (``_core/records_*``): each implementation
reads back what it packs, both pack the same bytes and read any bytes the same
way, damage included (the format's promises are in ``brokers/durable/_records.py``)."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_implementation, needs_both

#: each implementation loaded by name: the same code in both modes (tests/conftest.py)
pytestmark = pytest.mark.implementations_by_name


class Item(NamedTuple):
    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes


class Event(NamedTuple):
    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    wall: float
    given: bool


TOPIC = st.text("abcxyz/:._-0123456789", min_size=1, max_size=20)
ITEMS = st.lists(
    st.builds(
        Item,
        st.integers(0, 2**62),
        st.one_of(st.none(), st.text(max_size=30)),  # None: the position's own id
        st.lists(TOPIC, min_size=1, max_size=4).map(tuple),
        st.binary(max_size=300),
    ).map(lambda i: i._replace(id=str(i.position) if i.id is None else i.id)),
    max_size=20,
)


def _records(impl: SimpleNamespace, items: list[Item], wall: float) -> list[Any]:
    data = impl.pack_events(items, wall)
    events, others, count, last, end, damage, kind = impl.scan_records(data, 0, Event)
    newest = items[-1].position if items else 0
    assert (others, count, last, end, damage) == ([], len(items), newest, len(data), "")
    assert kind == (1 if items else 0)
    return events


@settings(max_examples=200, deadline=None)
@given(items=ITEMS, wall=st.floats(allow_nan=False, allow_infinity=False))
def test_what_is_packed_reads_back(impl: SimpleNamespace, items: list[Item], wall: float) -> None:
    events = _records(impl, items, wall)
    assert [type(e) for e in events] == [Event] * len(items)
    assert events == [
        Event(i.position, i.id, i.topics, i.frame, wall, i.id != str(i.position)) for i in items
    ]


@needs_both
@settings(max_examples=200, deadline=None)
@given(items=ITEMS, wall=st.floats(allow_nan=False, allow_infinity=False))
def test_both_pack_the_same_bytes(items: list[Item], wall: float) -> None:
    ext, py = load_implementation("ext"), load_implementation("py")
    assert ext.pack_events(items, wall) == py.pack_events(items, wall)


def _record(body: bytes) -> bytes:
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


@needs_both
@settings(max_examples=300, deadline=None)
@given(
    items=ITEMS,
    cut=st.integers(0, 10_000),
    flip=st.one_of(st.none(), st.integers(0, 10_000)),
    tail=st.binary(max_size=40),
    start=st.integers(0, 20),
    build=st.booleans(),
)
def test_both_read_any_bytes_the_same_way(
    items: list[Item], cut: int, flip: int | None, tail: bytes, start: int, build: bool
) -> None:
    """Damaged, cut short, with other kinds of records, from any offset: the
    same events, the same other records, the same place and reason to stop."""
    data = bytearray(
        _record(b"\x04\x01boot-id")
        + load_implementation("py").pack_events(items, 1.5)
        + _record(struct.pack("<Bqq", 2, 5, 9))
    )
    if flip is not None and data:
        data[flip % len(data)] ^= 0x41
    data = data[: cut % (len(data) + 1)] + tail
    answers = [
        impl.scan_records(bytes(data), start, Event if build else None)
        for impl in (load_implementation("ext"), load_implementation("py"))
    ]
    assert answers[0] == answers[1]


@settings(max_examples=200, deadline=None)
@given(
    items=ITEMS,
    step=st.integers(1, 400),
    cut=st.integers(0, 10_000),
    tail=st.binary(max_size=40),
)
def test_reading_a_slice_at_a_time_gives_the_same_records(
    impl: SimpleNamespace, items: list[Item], step: int, cut: int, tail: bytes
) -> None:
    """``stop``: only the records that begin before it, the caller going on from
    ``end`` (a reader's slices, ``brokers/durable/_records.py``): the same events,
    other records, end and reason to stop as one read of the whole."""
    data = bytes(_record(b"\x04\x01boot-id") + impl.pack_events(items, 1.5))
    data = data[: cut % (len(data) + 1)] + tail
    whole = impl.scan_records(data, 0, Event)
    events: list[Any] = []
    others: list[tuple[int, int, bytes]] = []
    count = last = last_kind = end = 0
    while True:
        part, rare, counted, newest, end, damage, kind = impl.scan_records(
            data, end, Event, end + step
        )
        events += part
        others += rare
        count += counted
        last = newest if counted else last
        last_kind = kind or last_kind
        if damage or end >= len(data):
            break
    assert (events, others, count, last, end, damage, last_kind) == whole


@pytest.mark.parametrize(
    ("data", "damage"),
    [
        (b"\x01\x00\x00", "a record's length is cut short"),
        (struct.pack("<II", 0, 0), "a record runs past the end of the file"),
        (struct.pack("<II", 50, 0) + b"x" * 10, "a record runs past the end of the file"),
        (struct.pack("<II", 3, 0) + b"abc", "a record's checksum does not match"),
        (
            _record(struct.pack("<BqdBII", 1, 7, 0.0, 0, 100, 0) + b"x"),
            "an event record's lengths run past its end",
        ),
    ],
)
def test_what_stops_the_reading_is_said(impl: SimpleNamespace, data: bytes, damage: str) -> None:
    good = impl.pack_events([Item(3, "3", ("t",), b"data: x\n\n")], 2.0)
    events, _, count, last, end, said, kind = impl.scan_records(good + data, 0, Event)
    assert (count, last, end, said, kind) == (1, 3, len(good), damage, 1)
    assert [e.id for e in events] == ["3"]


def test_a_negative_start_is_refused(impl: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="start must not be negative"):
        impl.scan_records(b"", -1, None)


# -- the data directory's per-topic tally ----------------------------------------------


def _counts(tallies: dict[str, Any]) -> dict[str, tuple[int, float, int]]:
    return {name: (t.count, t.wall, t.segment) for name, t in tallies.items()}


def test_topics_are_tallied_per_event(impl: SimpleNamespace) -> None:
    """One tally per topic: its count, its newest wall, its segment; a topic joins a
    segment's live topics once, at its first event there."""
    tallies: dict[str, Any] = {"a": impl.Tally(5, 1.0, 10), "z": impl.Tally(1, 1.0, 10)}
    kept = tallies["a"]
    live: dict[str, Any] = {}
    items = [Item(1, "1", ("a", "b"), b""), Item(2, "2", ("b",), b""), Item(3, "3", ("a",), b"")]
    impl.tally_topics(items, 9.5, tallies, live, 20)
    assert _counts(tallies) == {"a": (7, 9.5, 20), "b": (2, 9.5, 20), "z": (1, 1.0, 10)}
    assert tallies["a"] is kept  # counted in place
    assert list(live) == ["a", "b"] and live["a"] is tallies["a"]
    impl.tally_topics([Item(4, "4", ("a",), b"")], 10.0, tallies, live, 20)
    assert list(live) == ["a", "b"] and _counts(tallies)["a"] == (8, 10.0, 20)
    impl.tally_topics([], 11.0, tallies, live, 20)
    assert _counts(tallies)["a"] == (8, 10.0, 20)
    fresh = impl.Tally()
    assert (fresh.count, fresh.wall, fresh.segment) == (0, 0.0, -1)
    assert repr(fresh) == "Tally(count=0, wall=0.0, segment=-1)"


@needs_both
@settings(max_examples=100, deadline=None)
@given(batches=st.lists(ITEMS, max_size=4))
def test_both_tally_alike(batches: list[list[Item]]) -> None:
    outcomes = []
    for name in ("ext", "py"):
        impl = load_implementation(name)
        tallies: dict[str, Any] = {}
        segments = []
        for wall, items in enumerate(batches):
            live: dict[str, Any] = {}
            impl.tally_topics(items, float(wall), tallies, live, wall // 2)  # two a segment
            segments.append(sorted(live))
        outcomes.append((_counts(tallies), segments))
    assert outcomes[0] == outcomes[1]
