"""What a restart checks (``durable/_integrity.py``) and what the checkpoint says
(``durable/_checkpoint.py``): acknowledged bytes per policy, clean stops, damage
told apart from an unfinished write by the boot and the record's shape, holes
between segments, recovery that records the loss and never reuses a position."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sse_fast.brokers.durable import EventLog, StoreError, read
from sse_fast.brokers.durable import _log as durable_log
from sse_fast.brokers.durable import _records as durable_records
from sse_fast.brokers.durable._checkpoint import CHECKPOINT, load_checkpoint
from sse_fast.hub._resume import EVICTED, resolve

from ..conftest import forgive
from .test_durable import crash, files, frame, newest, put


def three_events(path: Path, fsync: str) -> EventLog:
    """A writer of ``path`` under ``fsync``, open, with three events of ``a`` stored."""
    log = EventLog(str(path), fsync=fsync)
    log.open()
    put(log, [(None, ("a",), frame(n)) for n in range(3)])
    return log


def test_the_checkpoint_follows_open_ticks_and_close(tmp_path: Path) -> None:
    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="interval")
        log.open()
        opened = load_checkpoint(str(tmp_path))
        assert opened is not None and not opened.clean
        assert opened.sequence == log.sequence and opened.next_position == log.next_position
        put(log, [(None, ("a",), frame(n)) for n in range(5)])
        # not synced yet: the newest segment's bytes are not vouched for beyond the last sync
        assert load_checkpoint(str(tmp_path)) == opened
        await log.tick()
        ticked = load_checkpoint(str(tmp_path))
        assert ticked is not None and ticked.segments[-1][1] == log.segments[-1].size
        assert ticked.next_position == log.next_position
        log.close()
        closed = load_checkpoint(str(tmp_path))
        assert closed is not None and closed.clean
        assert closed.segments == tuple((s.first, s.size) for s in log.segments)

    asyncio.run(main())


def test_a_rotation_is_in_the_checkpoint_from_the_next_tick(tmp_path: Path) -> None:
    """Not written on the event loop at the rotation (a stall of ~10 ms); until the
    tick, the checkpoint does not list the new segment, which a restart allows."""

    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="always", segment_bytes=1024)
        log.open()
        put(log, [(None, ("a",), frame(n, 200)) for n in range(10)])
        assert len(log.segments) == 2
        before = load_checkpoint(str(tmp_path))
        assert before is not None and len(before.segments) == 1
        await log.tick()
        written = load_checkpoint(str(tmp_path))
        assert written is not None
        assert [first for first, _ in written.segments] == [s.first for s in log.segments]
        assert written.segments[0][1] == log.segments[0].size  # the sealed one, whole
        log.close()

    asyncio.run(main())


def test_a_torn_tail_on_the_same_boot_is_dropped_and_its_positions_never_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = three_events(tmp_path, "interval")
    crash(log)
    with open(newest(tmp_path), "ab") as f:  # a record cut short: its length runs past
        f.write(b"\x40\x00\x00\x00\x12\x34")
    again = EventLog(str(tmp_path))
    loaded = again.open()
    assert loaded.torn and not loaded.lost
    assert again.next_position > loaded.last_position + 1  # jumped past the drop
    put(again, [(None, ("a",), frame(9))])
    again.close()
    # the jump is no hole for the restart after (the supervisor's settle, then the writer)
    third = EventLog(str(tmp_path))
    reopened = third.open()
    assert not reopened.lost and len(reopened.events) == 4
    third.close()
    assert any("did not finish" in r.getMessage() for r in caplog.records)


def test_a_whole_wrong_record_at_the_end_on_the_same_boot_is_damage(tmp_path: Path) -> None:
    """A process that dies mid-write leaves a record cut short; a whole record with
    wrong bytes is damage, even past the checkpoint's acknowledged bytes."""
    log = three_events(tmp_path, "never")
    crash(log)
    (tmp_path / CHECKPOINT).unlink()  # nothing vouched for: only the record's shape tells
    segment = newest(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0x01  # inside the last event's frame: its checksum no longer matches
    segment.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="a whole record with wrong bytes") as info:
        EventLog(str(tmp_path)).open()
    assert str(segment) in str(info.value) and "--data-recover" in str(info.value)
    assert segment.read_bytes() == bytes(data)


def test_after_a_machine_crash_the_unsynced_end_may_hold_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On another boot under ``interval``, bytes past the last sync are what the disk
    happened to keep: dropped and said lost (not refused), the synced ones held to."""

    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="interval")
        log.open()
        put(log, [(None, ("a",), frame(n)) for n in range(3)])
        await log.tick()  # synced and vouched for
        put(log, [(None, ("a",), frame(n)) for n in range(3, 6)])
        crash(log)

    asyncio.run(main())
    segment = newest(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0x01  # the unsynced end
    segment.write_bytes(bytes(data))
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "another-boot")
    log = EventLog(str(tmp_path), fsync="interval")
    loaded = log.open()
    assert loaded.lost and loaded.lost[-1][0] == loaded.last_position + 1
    log.close()
    assert any("may be lost" in r.getMessage() for r in caplog.records)

    # what the sync vouched for is held to on another boot too
    vouched = load_checkpoint(str(tmp_path))
    assert vouched is not None and vouched.clean
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "a-third-boot")
    last = newest(tmp_path)
    with open(last, "r+b") as f:  # the clean stop's record cut short
        f.truncate(last.stat().st_size - 3)
    with pytest.raises(StoreError, match="acknowledged") as info:
        EventLog(str(tmp_path)).open()
    assert str(last) in str(info.value)


def test_a_cut_older_segment_is_a_hole_even_without_a_checkpoint(tmp_path: Path) -> None:
    """A directory of a version before checkpoints: segments are still held to each
    other (a segment cut on a record's boundary leaves a hole in the positions)."""
    for n in range(2):
        log = EventLog(str(tmp_path), fsync="never")
        log.open()
        put(log, [(None, ("a",), frame(10 * n + k)) for k in range(5)])
        log.close()
    (tmp_path / CHECKPOINT).unlink()
    older = files(tmp_path)[0]
    loaded = read(str(tmp_path))
    keep = [e for e in loaded.events if e.position < loaded.events[2].position]
    assert len(keep) == 2
    # rewrite the older segment with its first two events only (whole records)
    data = older.read_bytes()
    cut = data.index(loaded.events[2].frame) - 1
    while True:  # back to the record boundary before the third event's frame
        try:
            older.write_bytes(data[:cut])
            read(str(tmp_path))
            break
        except StoreError:
            cut -= 1
    with pytest.raises(StoreError, match="a segment is missing or cut short"):
        EventLog(str(tmp_path)).open()


def test_recovery_of_a_hole_is_recorded_and_holds_across_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    positions = []
    for n in range(3):
        log = EventLog(str(tmp_path), fsync="never")
        log.open()
        positions.append([e.position for e in put(log, [(None, ("a",), frame(n))] * 3)])
        log.close()
    files(tmp_path)[1].unlink()
    log = EventLog(str(tmp_path), recover=True)
    loaded = log.open()
    gap_first, gap_last = positions[0][-1] + 1, positions[2][0] - 2
    assert (gap_first, gap_last) in loaded.lost
    log.close()
    forgive(caplog, "recovering (--data-recover)")
    # a plain restart starts, knows the loss, and a resume into it is evicted
    log = EventLog(str(tmp_path))
    loaded = log.open()
    assert (gap_first, gap_last) in loaded.lost
    log.close()
    for held in (positions[1][1], gap_first):
        status, _ = resolve([], str(held), loaded.first_position, log.next_position, loaded.lost)
        assert status == EVICTED


def test_a_damaged_checkpoint_is_not_believed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = three_events(tmp_path, "interval")
    log.close()
    path = tmp_path / CHECKPOINT
    path.write_bytes(path.read_bytes().replace(b'"clean":true', b'"clean":fals'))
    again = EventLog(str(tmp_path))
    loaded = again.open()
    assert again.next_position > loaded.last_position + 1  # past what it may have given
    again.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("checkpoint is damaged" in m for m in warned), warned


def test_events_published_while_a_sync_runs_are_not_vouched_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's B1: the tick vouched for the bytes synced but the positions given
    by then and during the sync; a machine crash losing the unsynced bytes was then
    refused as a cut segment instead of said lost."""
    real = durable_log._sync_and_close
    during: list[EventLog] = []

    def slow(fd: int) -> None:
        real(fd)
        put(during[0], [(None, ("a",), frame(n)) for n in range(3, 6)])  # meanwhile

    async def main() -> None:
        log = EventLog(str(tmp_path), fsync="interval")
        during.append(log)
        log.open()
        put(log, [(None, ("a",), frame(n)) for n in range(3)])
        monkeypatch.setattr(durable_log, "_sync_and_close", slow)
        await log.tick()
        crash(log)

    asyncio.run(main())
    vouched = load_checkpoint(str(tmp_path))
    assert vouched is not None
    segment = newest(tmp_path)
    _, size = vouched.segments[-1]
    with open(segment, "r+b") as f:  # the machine crash kept only what was synced
        f.truncate(size)
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "another-boot")
    log = EventLog(str(tmp_path), fsync="interval")
    loaded = log.open()  # not refused: the lost-writes marker says it
    assert loaded.lost and len(loaded.events) == 3
    log.close()


def test_a_start_stopped_before_its_lost_range_was_written_leaves_no_hole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's B2: the first start after a machine crash created its segment at
    the jumped position before writing the lost range; stopped in between, every
    later start refused the hole."""
    log = three_events(tmp_path, "interval")
    crash(log)
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "after-the-crash")

    real = EventLog._start_segment

    def dies(self: EventLog) -> None:  # killed once the new segment exists
        real(self)
        raise OSError("killed")

    monkeypatch.setattr(EventLog, "_start_segment", dies)
    with pytest.raises(OSError, match="killed"):
        EventLog(str(tmp_path), fsync="interval").open()
    monkeypatch.undo()
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "after-the-crash")
    again = EventLog(str(tmp_path), fsync="interval")
    loaded = again.open()  # the same boot: only a process stopped
    assert loaded.lost and len(loaded.events) == 3
    again.close()


def test_a_crash_after_a_run_that_never_synced_loses_any_segment_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's B3: under ``never`` the disk may keep a new segment and lose the
    end of the one before; after a machine crash that is said lost, not refused."""
    log = EventLog(str(tmp_path), fsync="never", segment_bytes=1024)
    log.open()
    put(log, [(None, ("a",), frame(n, 200)) for n in range(3)])
    older = newest(tmp_path)
    size = older.stat().st_size
    put(log, [(None, ("a",), frame(n, 200)) for n in range(3, 10)])
    assert len(log.segments) >= 2
    crash(log)
    with open(older, "r+b") as f:  # what the kernel had not written of it
        f.truncate(size + 5)
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "after-the-crash")
    again = EventLog(str(tmp_path), fsync="never")
    loaded = again.open()
    assert loaded.lost
    again.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("recorded as lost in the machine crash" in m for m in warned), warned
    # the next start, on the same boot, takes the directory as it now is
    EventLog(str(tmp_path), fsync="never").open()


def test_the_newest_segment_cut_below_its_header_is_not_taken_for_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's R1: cut to a few bytes, the newest segment was removed as one the
    last run did not finish starting, then reported missing."""
    for n in range(2):
        log = EventLog(str(tmp_path), fsync="never")
        log.open()
        put(log, [(None, ("a",), frame(n))])
        log.close()
    last = newest(tmp_path)
    with open(last, "r+b") as f:
        f.truncate(20)
    with pytest.raises(StoreError, match="fewer than its header") as info:
        EventLog(str(tmp_path)).open()
    assert str(last) in str(info.value) and last.exists()
    log = EventLog(str(tmp_path), recover=True)
    loaded = log.open()
    assert loaded.lost and (tmp_path / "damaged" / last.name).exists() and not last.exists()
    log.close()
    forgive(caplog, "recovering (--data-recover)", "recovered with --data-recover")


def test_settle_writes_what_a_start_finds_without_reading_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's ``settle`` (before a relay and its workers read the directory
    side by side) records a machine crash's lost range, and the readers after it see
    it; it builds no event (the server's liveness waits for it)."""
    crash(three_events(tmp_path, "interval"))
    monkeypatch.setattr(durable_records, "current_boot_id", lambda: "after-the-crash")
    checked = read(str(tmp_path), events=False, checks=True)
    assert checked.unsettled("after-the-crash")
    settled = durable_log.settle(path=str(tmp_path), fsync="interval")
    assert settled.events == [] and settled.count == 3 and settled.lost
    reader = read(str(tmp_path))
    assert reader.lost == settled.lost and len(reader.events) == 3
    assert not read(str(tmp_path), events=False, checks=True).unsettled("after-the-crash")
