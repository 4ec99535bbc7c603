"""Durable history (``sse_fast/brokers/durable``): the format round trip, restarts
clean and unclean, torn and foreign files, retention, write failures, the local
broker's restore into a hub, the directory lock and the fsync policies."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sse_fast.brokers._sequencing import Sequenced, first_position
from sse_fast.brokers.durable import (
    EventLog,
    Loaded,
    StoreError,
    StoreWriteError,
    read,
)
from sse_fast.brokers.durable import _log as durable_log
from sse_fast.brokers.durable import _records as durable_records
from sse_fast.brokers.durable._directory import DataDirectory, default_data_dir
from sse_fast.brokers.durable._records import HEADER, MAGIC, segment_header
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.hub._resume import EVICTED, RESUMED, resolve
from sse_fast.hub._topics import read_since
from sse_fast.settings import Settings
from sse_fast.testing import wait_for

from ..conftest import forgive
from ..support.asgi_harness import attach
from ..support.waiting import until

Spec = tuple[str | None, tuple[str, ...], bytes]


# ---------------------------------------------------------------- helpers


def sequenced(log: EventLog, specs: Sequence[Spec]) -> list[Sequenced]:
    """Events from the log's next position on: ``(id or None, topics, frame)``."""
    start = log.next_position
    return [
        Sequenced(start + n, str(start + n) if i is None else i, topics, frame, 0.0)
        for n, (i, topics, frame) in enumerate(specs)
    ]


def put(log: EventLog, specs: Sequence[Spec]) -> list[Sequenced]:
    items = sequenced(log, specs)
    log.append(items)
    return items


def crash(log: EventLog) -> None:
    """Stop as a killed process would: no CLOSED record."""
    os.close(log._fd)
    log._fd = -1


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.endswith(".log"))


def newest(path: Path) -> Path:
    return files(path)[-1]


def frame(n: int, size: int = 20) -> bytes:
    return f"data: {n}:".encode() + b"x" * size + b"\n\n"


def as_tuples(events: Sequence[Any]) -> list[tuple[int, str, tuple[str, ...], bytes]]:
    return [(e.position, e.id, tuple(e.topics), bytes(e.frame)) for e in events]


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The log's wall clock (``time.time``), set by the test."""
    now = [1_000.0]
    monkeypatch.setattr(durable_log, "time", SimpleNamespace(time=lambda: now[0]))
    return now


@pytest.fixture
def reboots(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every run of a log starts on a new boot of the machine (its boot id, as
    ``records.current_boot_id`` reads it, differs at each open): an unclean stop
    is then a machine crash, which may have lost what was not synced yet."""
    boots = [0]

    def boot_id() -> str:
        boots[0] += 1
        return f"boot-{boots[0]}"

    monkeypatch.setattr(durable_records, "current_boot_id", boot_id)
    return boots


@pytest.fixture
def one_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of a log is on the same boot: an unclean stop is a killed process."""
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "the-boot")


def _clock_is_past(position: int) -> bool:
    return first_position() > position + 2


def clock_past(position: int) -> None:
    """Until the wall clock (where a sequence that may have lost events jumps to,
    ``first_position``) is past ``position`` by more than the two a jump keeps (a gap
    after it, and the marker's)."""
    until(lambda: _clock_is_past(position), 10, "the wall clock past the stored positions")


# ---------------------------------------------------------------- records


def test_events_round_trip_through_the_files(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path), fsync="never")
    loaded = log.open()
    assert loaded.sequence is None and loaded.events == [] and loaded.clean
    sequence = log.sequence
    assert abs(sequence - first_position()) < 60_000_000  # the wall clock in us
    before = time.time()
    first = put(
        log,
        [
            ("é-日本-🙂", ("a",), b""),
            (None, ("a", "b", "ü-topic"), b"id: 1\ndata: \x00\xff\n\n"),
            ("x" * 300, ("b",), os.urandom(70_000)),
        ],
    )
    second = put(log, [(None, ("c",), os.urandom(1)), ("last", ("a", "c"), b"z" * 4096)])
    after = time.time()
    log.close()
    stored = first + second
    for events in (read(str(tmp_path)), read(str(tmp_path), writer=True)):
        assert events.sequence == sequence and events.clean
        assert as_tuples(events.events) == as_tuples(stored)
        assert [e.given for e in events.events] == [True, False, True, False, True]
        assert all(before <= e.wall <= after for e in events.events)
        assert events.count == 5 and events.lost == [] and events.torn == []
        assert events.first_position == stored[0].position == sequence
        assert events.last_position == stored[-1].position
    assert read(str(tmp_path), events=False).count == 5


def test_checking_without_events_knows_the_same_positions(tmp_path: Path) -> None:
    """``read(events=False)`` (``sse-fast serve``'s check) counts the events and
    should know the same positions as a full read."""
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    put(log, [(None, ("a",), frame(n)) for n in range(4)])
    log.close()
    full = read(str(tmp_path))
    checked = read(str(tmp_path), events=False)
    assert checked.events == [] and checked.count == full.count == 4
    assert checked.first_position == full.first_position
    assert checked.last_position == full.last_position


def test_an_unknown_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sometimes"):
        EventLog(str(tmp_path), fsync="sometimes")


# ---------------------------------------------------------------- restarts


def test_a_clean_restart_continues_the_sequence(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    sequence = log.sequence
    one = put(log, [(None, ("a",), frame(n)) for n in range(3)])
    log.close()
    log = EventLog(str(tmp_path), fsync="never")
    loaded = log.open()
    assert loaded.clean and loaded.lost == []
    assert log.sequence == loaded.sequence == sequence
    assert log.next_position == one[-1].position + 1
    two = put(log, [("k", ("b",), frame(9))])
    assert two[0].position == one[-1].position + 1
    log.close()
    # a restart starts a segment; one that publishes nothing goes on in it
    names = files(tmp_path)
    assert len(names) == 2
    for _ in range(3):
        log = EventLog(str(tmp_path), fsync="never")
        assert log.open().clean
        assert log.next_position == two[0].position + 1
        log.close()
        assert len(files(tmp_path)) == 3
    assert files(tmp_path)[:2] == names
    loaded = read(str(tmp_path))
    assert as_tuples(loaded.events) == as_tuples(one + two)
    assert loaded.clean and loaded.last_position == two[0].position


def test_an_unclean_stop_records_the_positions_it_may_have_given(
    tmp_path: Path, reboots: list[int]
) -> None:
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    stored = put(log, [(None, ("a",), frame(n)) for n in range(3)])
    crash(log)
    assert not read(str(tmp_path)).clean
    clock_past(stored[-1].position)  # the wall clock moves past the stored positions
    log = EventLog(str(tmp_path), fsync="never")
    before = first_position()
    loaded = log.open()
    after = first_position()
    assert not loaded.clean
    assert before <= log.next_position <= after
    # the last position before the new ones is the marker's (``records.LOST``)
    gap = (stored[-1].position + 1, log.next_position - 2)
    assert gap[0] <= gap[1]
    assert loaded.lost == [gap]
    assert as_tuples(loaded.events) == as_tuples(stored)
    resumed = put(log, [(None, ("a",), frame(3))])
    assert resumed[0].position == gap[1] + 2
    log.close()
    # the gap is remembered by every later run, which goes on after it
    for _ in range(2):
        log = EventLog(str(tmp_path), fsync="never")
        loaded = log.open()
        assert loaded.clean and loaded.lost == [gap]
        assert log.next_position == resumed[0].position + 1
        log.close()
    assert read(str(tmp_path)).lost == [gap]


def test_a_crash_before_any_publish_still_records_the_jump(
    tmp_path: Path, reboots: list[int]
) -> None:
    """An unclean stop of a run that stored nothing: the next run still jumps to
    the clock, and the positions in between are recorded as lost."""
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    start = log.next_position
    crash(log)
    clock_past(start)
    log = EventLog(str(tmp_path), fsync="never")
    loaded = log.open()
    assert not loaded.clean and loaded.events == []
    assert log.next_position > start
    assert loaded.lost == [(start, log.next_position - 2)]
    log.close()


# ---------------------------------------------------------------- damage


def torn_log(path: Path) -> tuple[list[Sequenced], list[Sequenced], int]:
    """A log whose writer was killed after two appends (one record each); the
    newest segment's size before the second."""
    log = EventLog(str(path), fsync="never")
    log.open()
    kept = put(log, [("kept", ("a",), frame(1))])
    size = log.segments[-1].size
    torn = put(log, [("torn", ("a",), frame(2, 200))])
    crash(log)
    return kept, torn, size


def damage_truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 3)


def damage_garbage(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\x07\x00\x00\x00garbage")


def damage_flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [damage_truncate, damage_garbage, damage_flip_last_byte])
def test_a_torn_tail_is_dropped_by_the_writer_only(
    tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture, reboots: list[int]
) -> None:
    kept, torn, size = torn_log(tmp_path)
    segment = newest(tmp_path)
    good = segment.read_bytes()
    assert len(good) > size
    damage(segment)
    damaged = segment.read_bytes()
    garbage = damage is damage_garbage
    expected = kept + torn if garbage else kept
    # the last whole record and what the writer keeps of the file
    keep = good if garbage else good[:size]
    loaded = read(str(tmp_path))
    assert as_tuples(loaded.events) == as_tuples(expected)
    assert segment.read_bytes() == damaged and loaded.torn == []  # a reader changes nothing
    caplog.set_level(logging.WARNING, "sse_fast.storage")
    log = EventLog(str(tmp_path), fsync="never")
    loaded = log.open()
    assert as_tuples(loaded.events) == as_tuples(expected)
    # kept, then what the start said in it (the lost range, or where its jump ends)
    assert segment.read_bytes()[: len(keep)] == keep
    assert loaded.torn == [(str(segment), len(damaged) - len(keep))]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dropped" in m and str(segment) in m for m in warned), warned
    # the dropped event's position is never given again, and not resumed past
    assert log.next_position > torn[0].position
    if not garbage:
        assert any(a <= torn[0].position <= b for a, b in loaded.lost)
    log.close()
    assert as_tuples(read(str(tmp_path)).events) == as_tuples(expected)


def readers(path: Path) -> list[Callable[[], Loaded]]:
    """A reader and the writer's open: both refuse what is not a torn tail."""
    return [lambda: read(str(path)), EventLog(str(path)).open]


def two_segments(path: Path) -> list[Sequenced]:
    """Two segments (a clean restart starts the second), one event in each."""
    stored = []
    for n in range(2):
        log = EventLog(str(path), fsync="never")
        log.open()
        stored += put(log, [(f"e{n}", ("a",), frame(n))])
        log.close()
    return stored


def test_damage_in_an_older_segment_is_refused_naming_it(tmp_path: Path) -> None:
    two_segments(tmp_path)
    older = files(tmp_path)[0]
    data = bytearray(older.read_bytes())
    data[HEADER + 20] ^= 0x01  # inside the first record
    older.write_bytes(bytes(data))
    for reader in readers(tmp_path):
        with pytest.raises(StoreError, match="not the newest") as info:
            reader()
        assert str(older) in str(info.value)
    assert older.read_bytes() == bytes(data)


@pytest.mark.parametrize("name", ["notes.txt", "00000000000000000001.log.bak", "1.log"])
def test_a_foreign_file_name_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    two_segments(tmp_path)
    (tmp_path / name).write_text("hello")
    with pytest.raises(StoreError, match="not an sse_fast data file") as info:
        EventLog(str(tmp_path)).open()
    assert str(tmp_path / name) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, world, this is not a log at all", "not an sse_fast data file"),
        (b"", "is cut short"),
        (b"SSEFAST-LOG9" + b"\x00" * 20, "another version"),
    ],
)
def test_a_foreign_file_content_is_refused_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    two_segments(tmp_path)
    path = tmp_path / f"{1:020d}.log"  # sorts first: an older segment
    path.write_bytes(content)
    for reader in readers(tmp_path):
        with pytest.raises(StoreError, match=message) as info:
            reader()
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (bytes((99,)) + b"future", "unknown kind 99 .* a newer sse_fast"),
        (bytes((2,)) + b"short", "kind 2 .* body of 6 bytes that this version cannot read"),
    ],
)
def test_a_record_this_version_cannot_read_is_refused_saying_why(body: bytes, message: str) -> None:
    """Its checksum is right (not damage): an unknown kind is a newer version's, a
    known kind of the wrong size another version's or another program's."""
    from sse_fast.brokers.durable._records import _record, scan

    data = segment_header(1, 1) + _record(body)
    with pytest.raises(StoreError, match=message) as info:
        scan(data, "seg.log")
    assert "seg.log" in str(info.value) and "move the file away" in str(info.value)


def test_a_segment_of_another_store_is_refused(tmp_path: Path) -> None:
    stored = two_segments(tmp_path)
    sequence = read(str(tmp_path)).sequence
    assert sequence is not None
    first = stored[-1].position + 100
    path = tmp_path / f"{first:020d}.log"
    path.write_bytes(segment_header(sequence + 1, first))
    with pytest.raises(StoreError, match="another store") as info:
        EventLog(str(tmp_path)).open()
    assert str(path) in str(info.value)
    path.write_bytes(segment_header(sequence, first))  # the same store: accepted
    assert read(str(tmp_path)).last_position == first - 1


@pytest.mark.parametrize("which", [0, -1])
def test_a_damaged_header_is_refused_even_in_the_newest_segment(tmp_path: Path, which: int) -> None:
    two_segments(tmp_path)
    path = files(tmp_path)[which]
    data = bytearray(path.read_bytes())
    assert data[:12] == MAGIC
    data[14] ^= 0x10  # the sequence
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="header is damaged") as info:
        EventLog(str(tmp_path)).open()
    assert str(path) in str(info.value)
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize(
    "content",
    [b"", MAGIC[:9], segment_header(1, 2)[: HEADER - 1]],
    ids=["empty", "magic-cut", "header-cut"],
)
def test_a_newest_segment_whose_header_was_never_finished_is_an_unfinished_write(
    tmp_path: Path, reboots: list[int], content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash between creating a segment and writing its header (a kill, or a
    machine crash under ``interval``: the directory is synced at once, the file's
    data only at the next tick) leaves a short newest file: the writer is to treat
    it as a torn tail, as any unfinished write at the end of the newest file."""
    caplog.set_level(logging.WARNING, "sse_fast.storage")
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    stored = put(log, [("e0", ("a",), frame(0))])
    crash(log)
    (tmp_path / f"{stored[-1].position + 1:020d}.log").write_bytes(content)
    log = EventLog(str(tmp_path), fsync="never")
    loaded = log.open()
    assert as_tuples(loaded.events) == as_tuples(stored) and not loaded.clean
    assert log.next_position > stored[-1].position
    log.close()
    assert as_tuples(read(str(tmp_path)).events) == as_tuples(stored)


def test_the_lock_and_lost_found_are_allowed_in_the_directory(tmp_path: Path) -> None:
    stored = two_segments(tmp_path)
    (tmp_path / "lock").write_text("123\n")
    (tmp_path / "lost+found").mkdir()
    assert as_tuples(read(str(tmp_path)).events) == as_tuples(stored)


# ---------------------------------------------------------------- retention


def small_log(path: Path, **options: Any) -> EventLog:
    """Segments of about one event each (``frame(n, 150)``)."""
    options.setdefault("segment_bytes", 200)
    log = EventLog(str(path), fsync="never", **options)
    log.open()
    return log


def test_segments_the_rings_no_longer_keep_are_deleted(tmp_path: Path) -> None:
    log = small_log(tmp_path, ring_frames=2)
    stored = [put(log, [(None, ("a",), frame(n, 150))])[0] for n in range(5)]
    assert len(log.segments) == 6  # one event each, and the current one
    assert log.delete_dead(time.time()) == 3
    assert log.delete_dead(time.time()) == 0
    assert len(files(tmp_path)) == 3 == len(log.segments)
    assert log.bytes == sum(p.stat().st_size for p in files(tmp_path))
    assert log.figures()["data_deleted_segments"] == 3
    loaded = read(str(tmp_path))
    assert as_tuples(loaded.events) == as_tuples(stored[3:])
    assert loaded.first_position == stored[3].position
    log.close()
    # a restart counts the kept events again: one more publish frees one more
    log = EventLog(str(tmp_path), fsync="never", segment_bytes=200, ring_frames=2)
    assert as_tuples(log.open().events) == as_tuples(stored[3:])
    put(log, [(None, ("a",), frame(5, 150))])
    assert log.delete_dead(time.time()) == 1
    log.close()


def test_a_quiet_topic_pins_its_segment_until_its_ttl(
    tmp_path: Path, fake_clock: list[float]
) -> None:
    log = small_log(tmp_path, ring_frames=2, topic_ttl=500.0)
    quiet = put(log, [(None, ("quiet",), frame(0, 150))])
    fake_clock[0] = 1_100.0
    busy = [put(log, [(None, ("busy",), frame(n, 150))])[0] for n in range(5)]
    # the quiet topic's only event is still in its ring: nothing after it goes either
    assert log.delete_dead(1_100.0) == 0
    assert log.delete_dead(1_499.0) == 0  # not idle for topic_ttl yet
    assert len(files(tmp_path)) == 7
    # idle past its ttl, its ring is gone: its segment and the busy ones before the last 2
    assert log.delete_dead(1_501.0) == 4
    assert "quiet" not in log.tallies
    assert as_tuples(read(str(tmp_path)).events) == as_tuples(busy[3:])
    assert quiet[0].position < read(str(tmp_path)).first_position
    log.close()


def test_a_segment_is_kept_while_any_of_its_topics_needs_it(tmp_path: Path) -> None:
    log = small_log(tmp_path, ring_frames=2)
    put(log, [(None, ("a", "b"), frame(0, 150))])
    for n in range(4):
        put(log, [(None, ("a",), frame(n, 150))])
    assert log.delete_dead(time.time()) == 0  # "b" keeps its one event
    put(log, [(None, ("b",), frame(9, 150)), (None, ("b",), frame(10, 150))])
    assert log.delete_dead(time.time()) == 3
    log.close()


def test_a_sealed_segment_holds_each_topic_s_newest_ordinal(tmp_path: Path) -> None:
    """A segment counts its topics live while it is written (one tally per topic, no
    per-event dict of its own) and keeps their ordinals once a later one is started;
    a restart reads the same ordinals back from the files."""
    log = EventLog(str(tmp_path), fsync="never", segment_bytes=400)
    log.open()
    put(log, [(None, ("a", "b"), frame(0)), (None, ("a",), frame(1))])
    first = log.segments[-1]
    assert first.topics == {} and sorted(first.live) == ["a", "b"]
    assert first.live["a"] is log.tallies["a"]
    put(log, [(None, ("b",), frame(2, 400))])  # past segment_bytes: the next one starts
    assert log.segments[-2] is first and first.live == {}
    assert first.topics == {"a": 2, "b": 2}  # the ordinals of their newest events in it
    put(log, [(None, ("a",), frame(3)), (None, ("c",), frame(4))])
    assert sorted(log.segments[-1].live) == ["a", "c"]
    assert first.topics == {"a": 2, "b": 2}  # sealed: later events do not move it
    counts = {name: tally.count for name, tally in log.tallies.items()}
    assert counts == {"a": 3, "b": 2, "c": 1}
    ordinals = [s.topics for s in log.segments[:-1]]
    log.close()
    again = EventLog(str(tmp_path), fsync="never", segment_bytes=400)
    again.open()
    assert [s.topics for s in again.segments[: len(ordinals)]] == ordinals
    assert again.segments[len(ordinals)].topics == {"a": 3, "c": 1}  # sealed at the restart
    assert {name: tally.count for name, tally in again.tallies.items()} == counts
    again.close()


class _NoNextSegment:
    """``os`` for the log, where starting a segment fails: creating its file, or
    writing its header (the segment is then abandoned)."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: str, flags: int, *mode: int) -> int:
        if self.how == "create" and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.open(path, flags, *mode)

    def write(self, fd: int, data: Any) -> int:
        if self.how == "header" and bytes(data[: len(MAGIC)]) == MAGIC:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


@pytest.mark.parametrize("how", ["create", "header"])
def test_a_segment_that_could_not_be_left_counts_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A next segment that cannot be started leaves the one being written live: the
    events written to it meanwhile count in its ordinals when it is sealed later."""
    log = EventLog(str(tmp_path), fsync="never", segment_bytes=400)
    log.open()
    first = log.segments[-1]
    monkeypatch.setattr(durable_log, "os", _NoNextSegment(how))
    put(log, [(None, ("a",), frame(0, 400))])  # past segment_bytes: no next segment
    put(log, [(None, ("b",), frame(1)), (None, ("a",), frame(2))])
    assert log.segments[-1] is first and sorted(first.live) == ["a", "b"]
    assert first.topics == {}
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 2 and all("cannot start a new segment" in m for m in said)
    caplog.clear()  # logged as it should be (the autouse check fails on others)
    monkeypatch.undo()
    put(log, [(None, ("c",), frame(3))])  # the next one starts now
    assert log.segments[-2] is first and first.live == {}
    assert first.topics == {"a": 2, "b": 1, "c": 1}
    log.close()


def test_the_byte_budget_deletes_the_oldest_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sse_fast.storage")
    log = small_log(tmp_path, max_bytes=1_000, ring_frames=1_000)
    stored = []
    for n in range(20):
        stored += put(log, [(None, ("a",), frame(n, 150))])
        assert log.bytes <= 1_000
        assert log.bytes == sum(p.stat().st_size for p in files(tmp_path))
    assert 3 <= len(files(tmp_path)) <= 6
    assert log.deleted_segments == 20 + 1 - len(log.segments)
    warned = [r.getMessage() for r in caplog.records if "passed its budget" in r.getMessage()]
    assert len(warned) == log.deleted_segments
    loaded = read(str(tmp_path))
    kept = len(loaded.events)
    assert kept >= 2 and as_tuples(loaded.events) == as_tuples(stored[-kept:])
    assert loaded.first_position == stored[-kept].position
    log.close()


def test_a_segment_that_cannot_be_deleted_stays_and_the_append_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the byte budget the oldest segment cannot be deleted (``EACCES``): the append
    that passed the budget is stored and returns (its ``OSError`` reached the publish after
    the write: neither delivered nor answered, the relay's workers waiting for good), the
    segment stays, said, and goes at the next rotation once it can."""
    log = small_log(tmp_path, max_bytes=1_000, ring_frames=1_000)
    unlink = os.unlink
    refused: list[str] = []

    def refusing(path: Any) -> None:
        refused.append(str(path))
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    stored = []
    for n in range(8):
        if n == 5:
            monkeypatch.setattr(durable_log.os, "unlink", refusing)
        stored += put(log, [(None, ("a",), frame(n, 150))])
    assert refused and log.next_position == stored[-1].position + 1
    assert log.bytes == sum(p.stat().st_size for p in files(tmp_path)) > 1_000
    assert len(log.segments) == len(files(tmp_path))
    said = [r.getMessage() for r in caplog.records if "cannot delete" in r.getMessage()]
    assert len(said) == len(refused) and log.write_errors == len(refused)
    monkeypatch.setattr(durable_log.os, "unlink", unlink)
    stored += put(log, [(None, ("a",), frame(8, 150))])
    assert log.bytes == sum(p.stat().st_size for p in files(tmp_path)) <= 1_000
    log.close()
    loaded = read(str(tmp_path))
    kept = len(loaded.events)
    assert kept >= 2 and as_tuples(loaded.events) == as_tuples(stored[-kept:])
    forgive(caplog, "cannot delete")


def test_the_periodic_tick_deletes_dead_segments(tmp_path: Path) -> None:
    async def main() -> None:
        log = small_log(tmp_path, ring_frames=1)
        for n in range(4):
            put(log, [(None, ("a",), frame(n, 150))])
        await log.tick()
        assert len(files(tmp_path)) == 2 == len(log.segments)
        log.close()

    asyncio.run(main())


def test_ids_older_than_the_kept_history_are_never_resumed(tmp_path: Path) -> None:
    async def main() -> None:
        hub = stored_hub(tmp_path, ring_max_frames=2)
        broker = hub.broker
        assert isinstance(broker, LocalBroker) and broker.store is not None
        broker.store.segment_bytes = 150
        await hub.start()
        ids = []
        for n in range(6):
            ids += hub.publish_nowait([PublishRequest(("a",), "x" * 100, id=f"i{n}")])
        assert broker.store.delete_dead(time.time()) == 4
        await hub.stop()
        again = stored_hub(tmp_path, ring_max_frames=2)
        await again.start()
        assert again.broker.first_position == broker.next_position - 2
        held = ring_of(again, "a")[0]
        assert held == b"".join(b"id: i%d\ndata: %s\n\n" % (n, b"x" * 100) for n in (4, 5))
        for old in (ids[0], str(broker.next_position - 6), str(broker.next_position - 4)):
            assert (await attach(again, ["a"], old)).resume != RESUMED, old
        assert (await attach(again, ["a"], ids[4])).resume == RESUMED
        await again.stop()

    asyncio.run(main())


# ---------------------------------------------------------------- write failures


def full_disk(log: EventLog) -> int:
    """Point the log at ``/dev/full`` (every write: ENOSPC); the good descriptor."""
    good = log._fd
    log._fd = os.open("/dev/full", os.O_WRONLY)
    return good


def disk_back(log: EventLog, good: int) -> None:
    os.close(log._fd)
    log._fd = good


def test_a_failed_append_keeps_nothing(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    put(log, [("a0", ("a",), frame(0))])
    segment = newest(tmp_path)
    size, total, position = segment.stat().st_size, log.bytes, log.next_position
    good = full_disk(log)
    items = sequenced(log, [("a1", ("a",), frame(1))])
    with pytest.raises(StoreWriteError, match="No space left") as info:
        log.append(items)
    assert f"the data directory {tmp_path}" in str(info.value)
    assert log.write_errors == 1 and log.figures()["data_write_errors"] == 1
    assert (log.bytes, log.next_position, log.tallies["a"].count) == (total, position, 1)
    disk_back(log, good)
    assert segment.stat().st_size == size
    log.append(items)
    log.close()
    assert [e.id for e in read(str(tmp_path)).events] == ["a0", "a1"]


def test_a_partly_written_append_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    put(log, [("a0", ("a",), frame(0))])
    size = newest(tmp_path).stat().st_size

    class HalfDisk:
        """The first write stores half, the second fails."""

        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def write(self, fd: int, data: Any) -> int:
            self.calls += 1
            if self.calls == 1:
                return os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable_log, "os", HalfDisk())
    with pytest.raises(StoreWriteError, match="Input/output error"):
        put(log, [("a1", ("a",), frame(1, 500))])
    monkeypatch.undo()
    assert newest(tmp_path).stat().st_size == size == log.segments[-1].size
    put(log, [("a2", ("a",), frame(2))])
    log.close()
    assert [e.id for e in read(str(tmp_path)).events] == ["a0", "a2"]


def stored_hub(path: Path, **settings: Any) -> Hub:
    options: dict[str, Any] = {"fsync": settings.pop("fsync", "never")}
    settings.setdefault("ring_max_frames", 1024)
    options["ring_frames"] = settings["ring_max_frames"]
    return Hub(Settings(**settings), broker=LocalBroker(store=EventLog(str(path), **options)))


def ring_of(hub: Hub, name: str) -> tuple[bytes, list[int], int]:
    """What a topic holds: its frames, their positions, its eviction floor."""
    topic = hub.topics.by_name.get(name)
    if topic is None or not topic.has_history:
        return b"", [], 0
    data, _ = topic.ring.read_since(topic.ring.oldest - 1)
    return data, list(topic.positions), topic.evicted_up_to


def test_a_publish_the_disk_refuses_is_a_503_and_never_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        hub = stored_hub(tmp_path)
        await hub.start()
        broker = hub.broker
        assert isinstance(broker, LocalBroker) and broker.store is not None
        store = broker.store
        hub.publish_nowait([PublishRequest(("t",), "before", id="b0")])
        held, position = ring_of(hub, "t"), broker.next_position
        good = full_disk(store)
        for attempt in range(2):
            with pytest.raises(PublishError) as info:
                if attempt:
                    await hub.publish([PublishRequest(("t",), "lost", id="r1")])
                else:
                    hub.publish_nowait([PublishRequest(("t",), "lost", id="r1")])
            error = info.value
            assert (error.status, error.reason, error.retry_after) == (503, "storage", 1.0)
            assert str(tmp_path) in str(error)
            assert ring_of(hub, "t") == held and broker.next_position == position
        assert store.write_errors == 2
        disk_back(store, good)
        # the retry memory forgot it: the same id is published, fresh
        assert hub.publish_nowait([PublishRequest(("t",), "again", id="r1")]) == ["r1"]
        frames, positions, _ = ring_of(hub, "t")
        assert positions == [position - 1, position] and frames.count(b"id: r1\n") == 1
        await hub.stop()
        assert [e.id for e in read(str(tmp_path)).events] == ["b0", "r1"]

    asyncio.run(main())


def test_a_failed_sync_under_always_is_not_published_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish answered 503 because its sync failed must not come back at a
    restart, nor share its position with the next publish."""

    async def main() -> None:
        hub = stored_hub(tmp_path, fsync="always")
        await hub.start()
        real = os.fdatasync

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(PublishError) as info:
            hub.publish_nowait([PublishRequest(("t",), "refused", id="x1")])
        assert info.value.status == 503
        monkeypatch.setattr(os, "fdatasync", real)
        hub.publish_nowait([PublishRequest(("t",), "next", id="x2")])
        await hub.stop()
        events = read(str(tmp_path)).events
        assert len({e.position for e in events}) == len(events)
        assert [e.id for e in events] == ["x2"]

    asyncio.run(main())


# ---------------------------------------------------------------- a hub's restart


def publish_history(hub: Hub) -> list[str]:
    """Events with and without ids, to one topic and to several; their ids."""
    ids = []
    for n in range(5):
        ids += hub.publish_nowait([PublishRequest(("a",), {"n": n})])
    ids += hub.publish_nowait(
        [PublishRequest(("b",), "b0", id="id-b0"), PublishRequest(("b",), "b1", event="e")]
    )
    ids += hub.publish_nowait([PublishRequest(("a", "b"), "both", id="id-ab")])
    ids += hub.publish_nowait([PublishRequest(("c",), "c0", id="id-ü")])
    return ids


def backlog(hub: Hub, names: list[str], last_event_id: str) -> tuple[str, bytes]:
    topics = [hub.topics.get(name, hub.clock()) for name in names]
    broker = hub.broker
    status, cursors = resolve(
        topics, last_event_id, broker.first_position, hub.last_position, broker.lost
    )
    return status, read_since(cursors)[0] if status == RESUMED else b""


def test_a_restarted_hub_holds_what_it_held(tmp_path: Path) -> None:
    async def main() -> None:
        hub = stored_hub(tmp_path, ring_max_frames=3)
        await hub.start()
        ids = publish_history(hub)
        held = {name: ring_of(hub, name) for name in "abc"}
        last = hub.last_position
        resumes = {
            (tuple(names), i): backlog(hub, names, i)
            for names in (["a"], ["b"], ["a", "b"], ["c"])
            for i in ids
        }
        assert {status for status, _ in resumes.values()} == {RESUMED, EVICTED, "unknown"}
        await hub.stop()

        again = stored_hub(tmp_path, ring_max_frames=3)
        await again.start()
        assert isinstance(again.broker, LocalBroker) and again.broker.restored == len(ids)
        assert {name: ring_of(again, name) for name in "abc"} == held
        assert again.last_position == last
        assert again.broker.first_position == int(ids[0])
        for (names, i), outcome in resumes.items():
            assert backlog(again, list(names), i) == outcome, (names, i)
        # the frames of "a" evicted before the restart are evicted after it
        assert (await attach(again, ["a"], ids[0])).resume == EVICTED
        assert (await attach(again, ["a"], ids[4])).resume == RESUMED
        # positions go on; a retry within the window is the same event
        assert again.publish_nowait([PublishRequest(("b",), "b0", id="id-b0")]) == ["id-b0"]
        assert ring_of(again, "b") == held["b"] and again.last_position == last
        (fresh,) = again.publish_nowait([PublishRequest(("a",), "new")])
        assert int(fresh) == last + 1
        await again.stop()

    asyncio.run(main())


def crashing_stop(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hub.stop`` will leave its log as a killed process would."""
    broker = hub.broker
    assert isinstance(broker, LocalBroker) and broker.store is not None
    store = broker.store
    monkeypatch.setattr(store, "close", lambda: crash(store))


async def crashed_hub(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Hub, list[str]]:
    """A hub that published three events to "a" and whose process was killed;
    the hub started again on its data directory."""
    hub = stored_hub(path)
    await hub.start()
    ids = hub.publish_nowait([PublishRequest(("a",), n) for n in range(3)])
    crashing_stop(hub, monkeypatch)
    await hub.stop()
    await wait_for(lambda: _clock_is_past(int(ids[-1])), what="the wall clock past the ids")
    again = stored_hub(path)
    await again.start()
    return again, ids


def test_an_id_a_crash_may_have_lost_is_answered_evicted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reboots: list[int]
) -> None:
    async def main() -> None:
        again, ids = await crashed_hub(tmp_path, monkeypatch)
        ((first, last),) = again.broker.lost
        assert first == int(ids[-1]) + 1 and last >= first
        inside = str((first + last) // 2)
        # an id given to an event the crash lost, or one from before such events:
        # never resumed past them
        for last_event_id in (inside, str(last), str(first), ids[-1], ids[0]):
            assert (await attach(again, ["a"], last_event_id)).resume == EVICTED, last_event_id
        await again.stop()

    asyncio.run(main())


def test_an_id_in_a_lost_gap_is_evicted_once_publishing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reboots: list[int]
) -> None:
    async def main() -> None:
        again, ids = await crashed_hub(tmp_path, monkeypatch)
        ((first, last),) = again.broker.lost
        one, two = again.publish_nowait([PublishRequest(("a",), m) for m in ("p", "q")])
        assert int(one) == last + 2  # last + 1 is the sse-fast-missed marker's
        for last_event_id in (str(first), str(last), ids[1]):
            assert (await attach(again, ["a"], last_event_id)).resume == EVICTED
        assert backlog(again, ["a"], one) == (RESUMED, b"id: %s\ndata: q\n\n" % two.encode())
        await again.stop()
        # and after a clean restart too
        third = stored_hub(tmp_path)
        await third.start()
        assert third.broker.lost == [(first, last)]
        assert (await attach(third, ["a"], str(last))).resume == EVICTED
        assert (await attach(third, ["a"], ids[2])).resume == EVICTED
        assert backlog(third, ["a"], one) == (RESUMED, b"id: %s\ndata: q\n\n" % two.encode())
        await third.stop()

    asyncio.run(main())


def test_a_killed_process_loses_nothing_and_records_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_boot: None
) -> None:
    """Only the process died (the same boot): the page cache kept every write,
    so the positions go on and every id still resumes."""

    async def main() -> None:
        again, ids = await crashed_hub(tmp_path, monkeypatch)
        broker = again.broker
        assert isinstance(broker, LocalBroker)
        assert broker.lost == [] and again.last_position == int(ids[-1])
        assert broker.next_position == int(ids[-1]) + 1
        status, data = backlog(again, ["a"], ids[0])
        assert status == RESUMED
        assert data == b"id: %s\ndata: 1\n\nid: %s\ndata: 2\n\n" % (
            ids[1].encode(),
            ids[2].encode(),
        )
        await again.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("policy", "gap"), [("always", False), ("interval", True), ("never", True)]
)
def test_after_a_machine_crash_only_unsynced_policies_record_a_gap(
    tmp_path: Path, reboots: list[int], policy: str, gap: bool
) -> None:
    log = EventLog(str(tmp_path), fsync=policy)
    log.open()
    stored = put(log, [(None, ("a",), frame(0))])
    crash(log)
    clock_past(stored[-1].position)
    log = EventLog(str(tmp_path), fsync=policy)
    loaded = log.open()
    assert not loaded.clean
    assert bool(loaded.lost) == gap
    assert (log.next_position > stored[0].position + 1) == gap
    log.close()


def test_a_killed_process_records_no_gap_after_retention_deleted_older_segments(
    tmp_path: Path, one_boot: None
) -> None:
    """The run's boot must still be known once the segment it started in is gone."""
    log = small_log(tmp_path, ring_frames=1)
    stored = [put(log, [(None, ("a",), frame(n, 150))])[0] for n in range(4)]
    assert log.delete_dead(time.time()) == 3
    crash(log)
    log = EventLog(str(tmp_path), fsync="never", segment_bytes=200, ring_frames=1)
    loaded = log.open()
    assert not loaded.clean and as_tuples(loaded.events) == as_tuples(stored[3:])
    assert loaded.lost == [] and log.next_position == stored[-1].position + 1
    log.close()


# ---------------------------------------------------------------- the directory


def test_a_data_directory_serves_one_server(tmp_path: Path) -> None:
    path = tmp_path / "new" / "data"
    one = DataDirectory(str(path))
    one.acquire()
    assert path.is_dir() and (path / "lock").read_text() == f"{os.getpid()}\n"
    two = DataDirectory(str(path))
    with pytest.raises(StoreError, match="in use") as info:
        two.acquire()
    assert f"pid {os.getpid()}" in str(info.value) and str(path) in str(info.value)
    one.release()
    one.release()  # twice: harmless
    assert (path / "lock").read_text() == ""
    two.acquire()
    with pytest.raises(StoreError, match="in use"):
        one.acquire()
    two.release()


def test_a_data_directory_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the data directory") as info:
        DataDirectory(str(blocker / "data")).acquire()
    assert str(blocker / "data") in str(info.value)


def test_the_default_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_data_dir({"STATE_DIRECTORY": "/srv/a:/srv/b"}) == "/srv/a"
    both = {"STATE_DIRECTORY": "/srv/a", "XDG_STATE_HOME": "/x"}
    assert default_data_dir(both) == "/srv/a"
    assert default_data_dir({"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/x"}) == "/x/sse-fast"
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = str(tmp_path / ".local" / "state" / "sse-fast")
    assert default_data_dir({}) == expected
    assert default_data_dir({"XDG_STATE_HOME": ""}) == expected


# ---------------------------------------------------------------- fsync


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many times ``os.fdatasync`` and ``os.fsync`` were called on segments (the
    checkpoint's syncs, ``checkpoint.py``, are its own)."""
    counts = {"fdatasync": 0, "fsync": 0}
    for name in counts:
        real = getattr(os, name)

        def counting(fd: int, name: str = name, real: Any = real) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
                counts[name] += 1
            real(fd)

        monkeypatch.setattr(os, name, counting)
    yield counts


@pytest.mark.parametrize(
    ("policy", "per_append", "per_tick"), [("always", 1, 0), ("interval", 0, 1), ("never", 0, 0)]
)
def test_fsync_policies(
    tmp_path: Path, syncs: dict[str, int], policy: str, per_append: int, per_tick: int
) -> None:
    async def main() -> None:
        log = EventLog(str(tmp_path), fsync=policy, segment_bytes=1 << 20)
        log.open()
        assert syncs["fdatasync"] == (policy != "never")
        for n in range(3):
            syncs["fdatasync"] = 0
            put(log, [(None, ("a",), frame(n))])
            assert syncs["fdatasync"] == per_append
        syncs["fdatasync"] = 0
        await log.tick()
        assert syncs["fdatasync"] == per_tick
        await log.tick()  # nothing new to sync
        assert syncs["fdatasync"] == per_tick
        syncs["fsync"] = 0
        log.close()
        assert syncs["fsync"] == (policy != "never")
        assert len(read(str(tmp_path)).events) == 3

    asyncio.run(main())


def test_a_failed_interval_sync_is_counted_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="interval")
        log.open()
        put(log, [(None, ("a",), frame(0))])

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        await log.tick()
        assert log.write_errors == 1
        monkeypatch.undo()
        log.close()

    asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot sync" in errors[0] and str(tmp_path) in errors[0]
    forgive(caplog, "cannot sync the data directory")


def test_a_restore_past_the_history_budget_keeps_to_it(tmp_path: Path) -> None:
    """A directory holding more than a worker's history budget (several workers
    share the memory; the disk keeps more): the restore evicts the history
    written longest ago as a running server would, and stays within the budget
    (frames not yet flushed cannot be evicted, so a restore flushes as it goes)."""
    budget = 4 * 1024 * 1024

    async def main() -> None:
        hub = stored_hub(tmp_path)
        await hub.start()
        for start in range(0, 30_000, 1000):
            hub.publish_nowait(
                [PublishRequest((f"t/{n % 2000}",), "x" * 100) for n in range(start, start + 1000)]
            )
        await hub.stop()
        again = stored_hub(tmp_path, max_history_bytes=budget, ring_max_bytes=budget)
        await again.start()
        figures = again.topics.budget_figures()
        assert figures["history_budget_bytes"] == budget
        assert 0.9 * budget < figures["history_bytes"] <= budget + 4096
        assert figures["history_budget_evicted"] > 10_000
        # the newest frames stayed: the last one published to the last topic
        assert again.topics.by_name["t/1999"].has_history
        await again.stop()

    asyncio.run(main())


def test_a_periodic_store_tick_that_fails_does_not_end_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One tick of the data directory's periodic work raises ``OSError`` (EMFILE, a failing
    disk): said with its traceback, and the next ticks run (the task ended: no fsync, no
    checkpoint, no old segment deleted again, and nothing said)."""

    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="interval", interval=0.01)
        hub = Hub(Settings(), broker=LocalBroker(store=log))
        await hub.start()
        try:
            tick = log.tick
            ticks = 0

            async def failing_once() -> None:
                nonlocal ticks
                ticks += 1
                if ticks == 1:
                    raise OSError(errno.EMFILE, "Too many open files")
                await tick()

            log.tick = failing_once  # type: ignore[method-assign]
            await wait_for(lambda: ticks >= 3, what="three ticks")
            said = [r for r in caplog.records if "periodic work" in r.getMessage()]
            assert len(said) == 1 and said[0].exc_info is not None
            forgive(caplog, "periodic work")
        finally:
            await hub.stop()

    asyncio.run(main())
