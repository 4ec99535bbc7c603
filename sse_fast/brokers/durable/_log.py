"""The sequencer's event log on disk: appending, syncing, retention, restarting.

One writer (the process that sequences: the local broker, or the relay with
several workers) appends each sequenced batch in one ``write`` *before* it is
delivered, so an event a client has seen is in the page cache: a crash of the
process loses nothing. When it is on the disk depends on ``fsync``:

* ``always``: synced before the publish is acknowledged or delivered (a machine
  crash loses nothing acknowledged);
* ``interval``: synced every ``interval`` seconds in a thread (a machine crash
  loses at most the last interval);
* ``never``: left to the kernel (about 30 s on Linux).

The log is kept contiguous: it holds every event from its oldest segment's
first position on, so a restart replays the events in the order they were
published and the rings come back as they were (each ring keeps its newest
frames again; what a ring had evicted is evicted again). A whole segment is
deleted when none of its events is still kept by a ring (each of its topics has
``ring_frames`` newer events, or no publish for ``topic_ttl`` seconds), and the
oldest segments go when the directory passes ``max_bytes``. Deleting is an
``unlink``: the fan-out never waits for it.

What a restart reads back, and what it checks first: ``reading``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._core import Tally, tally_topics
from .._sequencing import Sequenced, first_position
from . import _records as records
from ._checkpoint import Checkpoint, CheckpointFile
from ._reading import Loaded, Segment, read, writes_may_be_lost
from ._records import (
    HEADER,
    POLICIES,
    Event,
    StoreError,
    boot_record,
    closed_record,
    fsync_path,
    lost_record,
    segment_header,
    segment_name,
    sequenced_records,
)
from ._retention import count_loaded, dead, forget

if TYPE_CHECKING:
    import threading

    from ...settings import StorageSettings, StreamSettings

__all__ = ["FSYNC_POLICIES", "EventLog", "StoreWriteError", "log_options", "settle"]

log = logging.getLogger("sse_fast.storage")

#: the values of ``fsync``: when appended events reach the disk (see the module docstring);
#: the records number them in this order (``records.POLICIES``, the same tuple)
FSYNC_POLICIES = POLICIES


class StoreWriteError(StoreError):
    """An append failed (a full disk, an I/O error): nothing of it was stored."""


def settle(**options: Any) -> Loaded:
    """Open the writer of a data directory and close it again (``EventLog``'s
    arguments): whatever its start writes (a cut unfinished write, lost ranges, the
    positions' jump, recovered damage) is then on disk for every reader. A
    supervisor calls it before a relay and its workers read the directory side by
    side (``Loaded.unsettled``); it reads no event (a scan of the records: about
    0.5 s for 1 million here), so the server's liveness is not held up."""
    writer = EventLog(**options)
    loaded = writer.open(events=False)
    writer.close()
    return loaded


class EventLog:
    """The writer of a data directory (one per directory: ``directory.lock``)."""

    def __init__(
        self,
        path: str,
        *,
        fsync: str = "interval",
        interval: float = 1.0,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 0,
        ring_frames: int = 1024,
        topic_ttl: float = 3600.0,
        recover: bool = False,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.interval = interval
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1 << 20, min(64 << 20, max_bytes // 8))
        self.ring_frames = ring_frames
        self.topic_ttl = topic_ttl
        self.recover = recover  # start where ``integrity`` refuses, recording the loss
        self.checkpoints = CheckpointFile(path, fsync)
        self.sequence = 0
        self.next_position = 0
        self.segments: list[Segment] = []
        self.bytes = 0
        self.tallies: dict[str, Tally] = {}  # by topic (``retention``)
        self.write_errors = 0
        self.deleted_segments = 0
        #: this machine's boot (``records.BOOT``), read by ``open``
        self.boot = ""
        self._fd = -1
        self._dirty = False
        self._syncing: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- opening

    def open(self, events: bool = True, stop: threading.Event | None = None) -> Loaded:
        """Read the directory (``read``'s checks: ``StoreError`` when it lost events,
        unless ``recover``), start a new segment; return what it held (without
        ``events``: checked only, for a writer closed at once). Where positions may be
        lost they are recorded so, and never given again (``_positions``). ``stop``
        set while the segments are read: ``ReadStopped``, nothing written."""
        self.checkpoints.remove_leftover()
        loaded = read(self.path, writer=True, recover=self.recover, events=events, stop=stop)
        self.segments = loaded.segments
        self.bytes = sum(segment.size for segment in self.segments)
        count_loaded(_by_segment(loaded), self.tallies)
        self.boot = records.current_boot_id()
        self.sequence, self.next_position, lost_at_end, jumped = _positions(loaded, self.boot)
        ranges = _lost_ranges(loaded, lost_at_end, self.next_position, self.path)
        loaded.lost.extend(ranges)
        said = b"".join(lost_record(*gap) for gap in ranges)
        if jumped:  # where the jump ends: the positions skipped were never given
            said += closed_record(self.next_position - 1)
        self.bytes += _end_last_run(self.segments, said, self.fsync != "never")
        self._start_segment()
        self._sync_now()
        self._checkpoint_now()
        return loaded

    # ---------------------------------------------------------------- checkpoint

    def _snapshot(self, clean: bool = False) -> tuple[Checkpoint, int]:
        sizes = [(segment.first, segment.size) for segment in self.segments]
        return self.checkpoints.take(self.sequence, sizes, self.next_position, clean, self.boot)

    def _checkpoint_now(self, clean: bool = False) -> None:
        """Write the checkpoint here, on the caller's thread (open, a new segment,
        close); a failure is logged (the old one stays true)."""
        checkpoint, generation = self._snapshot(clean)
        try:
            self.checkpoints.write(checkpoint, generation)
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot write the checkpoint of %s: %s", self.path, exc)

    def _start_segment(self) -> None:
        """Write from now on into the segment starting at ``next_position`` (a new
        one, or the run before's if it holds no event), beginning with a ``BOOT``
        record; the previous one is synced and closed once the new one exists."""
        path = os.path.join(self.path, segment_name(self.next_position))
        old = self._fd
        if old >= 0 and self.fsync != "never":
            os.fsync(old)  # before the next segment exists: a crash leaves no hole
        if self.segments and self.segments[-1].path == path:
            # the run before started this segment and stored no event in it: go on in it
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            except OSError as exc:
                raise StoreWriteError(
                    f"cannot create {path}: {exc.strerror or exc}; the data directory must be "
                    "writable by this server (or choose another with --data-dir)"
                ) from None
            self._fd = fd
            self.segments.append(Segment(path, self.next_position, size=0))
            self.checkpoints.acknowledge(0, self.next_position)
            try:
                self._write(segment_header(self.sequence, self.next_position))
            except StoreWriteError:
                self._abandon_newest(old)
                raise
            if self.fsync != "never":
                fsync_path(self.path)
        try:
            # each segment says which boot wrote it (``records.BOOT``), so what a
            # restart concludes does not depend on an older segment still existing
            self._write(boot_record(self.boot, self.fsync))
        except StoreWriteError:
            self._abandon_newest(old)
            raise
        if len(self.segments) > 1:
            self.segments[-2].seal()  # the one written until now
        if old >= 0:
            os.close(old)

    def _abandon_newest(self, old: int) -> None:
        """A new segment could not be started: back to the one before (if any)."""
        segment = self.segments[-1]
        os.close(self._fd)
        self._fd = old
        if old >= 0 and segment.size <= HEADER:  # a fresh one with nothing of ours yet
            self.segments.pop()
            self.bytes -= segment.size
            with contextlib.suppress(OSError):
                os.unlink(segment.path)

    # ---------------------------------------------------------------- appending

    def append(self, items: Sequence[Sequenced]) -> None:
        """Store sequenced events in one write (before they are delivered).
        ``StoreWriteError`` when the write (or, under ``always``, its sync) fails:
        then nothing of it is kept."""
        wall = time.time()
        data = sequenced_records(items, wall)
        segment = self.segments[-1]
        before = segment.size
        self._write(data)
        if self.fsync == "always":
            try:
                self._sync_now()
            except StoreWriteError:
                self._cut(segment, before)
                raise
        else:
            self._dirty = True
        tally_topics(items, wall, self.tallies, segment.live, segment.first)
        segment.last = items[-1].position
        self.next_position = segment.last + 1
        if self.fsync == "always":
            self.checkpoints.acknowledge(segment.size, self.next_position)
        if segment.size >= self.segment_bytes:
            try:
                self._start_segment()
            except (OSError, StoreError) as exc:  # stored all the same: rotate later
                log.error(
                    "cannot start a new segment in %s (%s); going on in %s",
                    self.path,
                    exc,
                    segment.path,
                )
            else:
                self._within_budget()  # the checkpoint follows at the next tick

    def _cut(self, segment: Segment, size: int) -> None:
        """Drop what was written to ``segment`` after ``size`` bytes."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)
        self.bytes -= segment.size - size
        segment.size = size

    def _write(self, data: bytes) -> None:
        segment = self.segments[-1]
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            self.write_errors += 1
            if written:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, segment.size)
            raise StoreWriteError(
                f"cannot write to the data directory {self.path}: {exc.strerror or exc}; "
                "the publish was not stored and not delivered (free space, or fix the "
                "directory, and publish again)"
            ) from None
        segment.size += written
        self.bytes += written

    # ---------------------------------------------------------------- syncing

    def _sync_now(self) -> None:
        if self.fsync == "never" or self._fd < 0:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self.write_errors += 1
            raise StoreWriteError(
                f"cannot sync the data directory {self.path}: {exc.strerror or exc}; the "
                "events may not be on the disk (check the disk), publish again"
            ) from None
        self._dirty = False
        self.checkpoints.acknowledge(self.segments[-1].size, self.next_position)

    async def tick(self) -> None:
        """The periodic work: sync (``interval``) in a thread, then the checkpoint (when
        anything changed); delete dead segments."""
        loop = asyncio.get_running_loop()
        if self.fsync == "interval" and self._dirty and self._syncing is None:
            self._dirty = False
            fd = os.dup(self._fd)  # the segment may rotate while the thread syncs
            segment, size, given = self.segments[-1], self.segments[-1].size, self.next_position
            self._syncing = loop.run_in_executor(None, _sync_and_close, fd)
            try:
                await self._syncing
            except OSError as exc:
                self.write_errors += 1
                log.error("cannot sync the data directory %s: %s", self.path, exc)
                self.delete_dead(time.time())
                return  # the checkpoint waits for a sync that works
            else:
                newest = self.segments[-1] if self.segments else None
                if newest is segment and size > self.checkpoints.acknowledged:
                    self.checkpoints.acknowledge(size, given)
            finally:
                self._syncing = None
        self.delete_dead(time.time())
        try:
            await self.checkpoints.write_if_changed(*self._snapshot())
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot write the checkpoint of %s: %s", self.path, exc)

    def delete_dead(self, now: float) -> int:
        """Delete the oldest segments none of whose events a ring still keeps."""
        deleted = 0
        while len(self.segments) > 1 and dead(
            self.segments[0], self.tallies, now, self.ring_frames, self.topic_ttl
        ):
            if not self._delete_oldest():
                break
            deleted += 1
        return deleted

    def _within_budget(self) -> None:
        while len(self.segments) > 1 and self.bytes > self.max_bytes:
            log.warning(
                "the data directory passed its budget (%d bytes): deleting %s, whose events a "
                "restart no longer recovers (raise data_max_bytes to keep more)",
                self.max_bytes,
                self.segments[0].path,
            )
            if not self._delete_oldest():
                return

    def _delete_oldest(self) -> bool:
        """Delete the oldest segment; False (said) if its file cannot be (``EACCES``,
        ``EIO``, a read-only file system): it stays, tried again at the next rotation or
        tick. The events just appended are stored all the same: an error here reached the
        publish after its write, which was then neither delivered nor answered."""
        segment = self.segments[0]
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.write_errors += 1
            log.error(
                "cannot delete %s (%s): the data directory keeps it, over its budget or dead, "
                "until it can",
                segment.path,
                exc,
            )
            return False
        self.segments.pop(0)
        self.bytes -= segment.size
        self.deleted_segments += 1
        forget(segment, self.tallies)
        return True

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Say the stop was clean, sync, close."""
        if self._fd < 0:
            return
        try:
            self._write(closed_record(self.next_position - 1))
            if self.fsync != "never":
                os.fsync(self._fd)
            self.checkpoints.acknowledge(self.segments[-1].size, self.next_position)
        except (OSError, StoreError) as exc:
            log.error("the data directory %s was not closed cleanly: %s", self.path, exc)
        else:
            self._checkpoint_now(clean=True)
        os.close(self._fd)
        self._fd = -1

    def figures(self) -> dict[str, int | str]:
        """The store's figures for ``/stats``: bytes, segments, write errors, deleted segments and
        the fsync policy."""
        return {
            "data_bytes": self.bytes,
            "data_segments": len(self.segments),
            "data_write_errors": self.write_errors,
            "data_deleted_segments": self.deleted_segments,
            "fsync": self.fsync,
        }


def _positions(loaded: Loaded, boot: str) -> tuple[int, int, bool, bool]:
    """Where a writer starting on ``loaded`` goes on: its sequence, its next position,
    whether events may be lost after the newest one kept (then the positions jump to
    the wall clock, one kept for the marker) and whether they jump silently (after a
    dropped unfinished write, or without a checkpoint: nobody holds the ones skipped)."""
    if loaded.sequence is None:
        loaded.first_position = first_position()
        return loaded.first_position, loaded.first_position, False, False
    given = max(loaded.last_position, loaded.given_up_to)
    if writes_may_be_lost(loaded, boot) or loaded.trailing_loss:
        return loaded.sequence, max(given + 2, first_position()), True, False
    if loaded.torn or loaded.untrusted:
        jump = max(given + 1, first_position())
        return loaded.sequence, jump, False, jump > given + 1
    return loaded.sequence, given + 1, False, False


def _lost_ranges(
    loaded: Loaded, lost_at_end: bool, next_position: int, path: str
) -> list[tuple[int, int]]:
    """The ``LOST`` records a starting writer adds (each told at ``last + 1``): the
    holes it recovered between segments, and what may be lost at the end (said)."""
    ranges = [(first, last - 1) for first, last in loaded.recovered]
    if lost_at_end:
        ranges.append((loaded.last_position + 1, next_position - 2))
        if loaded.trailing_loss:
            log.error(
                "%s: events after position %d are lost (recovered with --data-recover); "
                "streams resuming from before them are told (sse-fast-missed)",
                path,
                loaded.last_position,
            )
        else:
            log.warning(
                "the last run of %s stopped without closing its data and the machine has "
                "restarted since (fsync=%s): events after position %d may be lost; streams "
                "resuming from before them are told (sse-fast-missed)",
                path,
                loaded.boot[1] if loaded.boot else "unknown",
                loaded.last_position,
            )
    return ranges


def _end_last_run(segments: list[Segment], records: bytes, sync: bool) -> int:
    """Before a start opens its segment: ``records`` (lost ranges, where a jump ends)
    added to the last run's newest segment, so that a start stopping in between
    leaves no hole; with ``sync``, every segment synced (the checkpoint vouches for
    them). The bytes added."""
    if not segments:
        return 0
    added = _append(segments[-1], records) if records else 0
    if sync:
        for segment in segments:
            fsync_path(segment.path)
    return added


def _append(segment: Segment, record: bytes) -> int:
    """Add ``record`` to ``segment`` (the newest the last run wrote, before a start
    opens the next one); its size in bytes."""
    try:
        fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        try:
            if os.write(fd, record) != len(record):
                raise OSError(errno.ENOSPC, "the disk took part of the record")
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreWriteError(
            f"cannot write to {segment.path}: {exc.strerror or exc}; free space in the "
            "data directory or fix it, then start again"
        ) from None
    segment.size += len(record)
    return len(record)


def _by_segment(loaded: Loaded) -> list[tuple[Segment, list[Event]]]:
    """The loaded events of each segment (segments hold consecutive runs)."""
    out = []
    events = loaded.events
    index = 0
    for segment in loaded.segments:
        start = index
        while index < len(events) and events[index].position <= segment.last:
            index += 1
        out.append((segment, events[start:index]))
    return out


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def log_options(storage: StorageSettings, streams: StreamSettings, path: str) -> dict[str, Any]:
    """``EventLog``'s arguments for a server's storage and streams settings, on the data
    directory ``path``."""
    return {
        "path": path,
        "fsync": storage.persistence,
        "interval": storage.fsync_interval,
        "max_bytes": storage.data_max_bytes,
        "ring_frames": streams.ring_max_frames,
        "topic_ttl": streams.topic_ttl,
        "recover": storage.data_recover,
    }
