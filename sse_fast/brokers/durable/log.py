"""The sequencer's event log on disk: appending, syncing, retention, reading back.

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

Readers (``read``) may run while the writer appends: a record not finished yet
ends their reading like a torn one, and they never change a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..._core import Tally, tally_topics
from ..sequencing import Sequenced, first_position
from .records import (
    HEADER,
    MAGIC,
    POLICIES,
    Event,
    StoreError,
    boot_record,
    closed_record,
    current_boot_id,
    lost_record,
    read_header,
    scan,
    segment_header,
    sequenced_records,
)

__all__ = ["FSYNC_POLICIES", "EventLog", "Loaded", "Segment", "StoreWriteError", "read"]

log = logging.getLogger("sse_fast.storage")

#: the values of ``fsync``: when appended events reach the disk (see the module docstring);
#: the records number them in this order (``records.POLICIES``, the same tuple)
FSYNC_POLICIES = POLICIES
ALLOWED = ("lock", "lost+found")


class StoreWriteError(StoreError):
    """An append failed (a full disk, an I/O error): nothing of it was stored."""


@dataclass
class Segment:
    """One segment file and what the writer knows of it."""

    path: str
    first: int  # the position the segment starts at
    size: int = HEADER
    last: int = 0  # its newest event's position (0: none yet)
    #: each topic with an event here, and the ordinal of its newest one here
    #: (filled when the segment is sealed: a later one is written)
    topics: dict[str, int] = field(default_factory=dict)
    #: while it is the one written: its topics' tallies (``tally_topics``)
    live: dict[str, Tally] = field(default_factory=dict)

    def seal(self) -> None:
        """No more events here: its topics' ordinals are their counts now."""
        self.topics.update((name, tally.count) for name, tally in self.live.items())
        self.live = {}


@dataclass
class Loaded:
    """What a data directory holds."""

    #: the store's sequence (its first position ever); None for an empty directory
    sequence: int | None = None
    events: list[Event] = field(default_factory=list)
    #: how many events (also when only checked)
    count: int = 0
    #: ranges of positions a machine crash may have lost (see ``records.LOST``)
    lost: list[tuple[int, int]] = field(default_factory=list)
    #: whether the last writer stopped cleanly
    clean: bool = True
    #: the last writer's machine boot and fsync policy (``records.BOOT``)
    boot: tuple[str, str] | None = None
    #: the newest position given out as far as the directory knows (0 if none)
    last_position: int = 0
    #: the oldest position every later event is held from (0 if none)
    first_position: int = 0
    segments: list[Segment] = field(default_factory=list)
    #: (file, bytes) of unfinished writes dropped from the end
    torn: list[tuple[str, int]] = field(default_factory=list)


def _segment_name(first: int) -> str:
    return f"{first:020d}.log"


def _list(path: str) -> list[str]:
    """The segment files of ``path`` in order; ``StoreError`` for anything else there."""
    names = []
    for name in os.listdir(path):
        if name in ALLOWED:
            continue
        stem, dot, suffix = name.partition(".")
        if not (suffix == "log" and dot and len(stem) == 20 and stem.isdigit()):
            raise StoreError(
                f"{os.path.join(path, name)} is not an sse_fast data file; the data directory "
                "must hold only sse_fast's own files (NNNN.log segments and lock): move it "
                "away, or give this server a directory of its own with --data-dir"
            )
        names.append(name)
    return sorted(names)


def read(path: str, *, writer: bool = False, events: bool = True) -> Loaded:
    """Read every segment of ``path``. The writer truncates a torn end of the
    newest segment (logged); a reader leaves it (it may be a write in progress).
    Without ``events`` the records are only checked (``Loaded.count``).
    A damaged record elsewhere, a file that is not ours, or segments of different
    stores raise ``StoreError`` naming the file."""
    loaded = Loaded()
    names = _list(path)
    for index, name in enumerate(names):
        full = os.path.join(path, name)
        try:
            with open(full, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # the writer deleted it meanwhile (a reader)
            continue
        newest = index == len(names) - 1
        if newest and len(data) < HEADER and MAGIC.startswith(data[: len(MAGIC)]):
            # created, and the process or the machine stopped before its header was
            # written: an unfinished write like a torn record (no event can be in it)
            if writer:
                log.warning("removed %s: a segment the last run did not finish starting", full)
                os.unlink(full)
                loaded.torn.append((full, len(data)))
            continue
        sequence, first = read_header(data, full)
        if loaded.sequence is None:
            loaded.sequence = sequence
        elif sequence != loaded.sequence:
            raise StoreError(
                f"{full} belongs to another store (sequence {sequence}, not {loaded.sequence} "
                "as the files before it): the data directory holds files of two servers; "
                "move the foreign ones away"
            )
        result = scan(data, full, events)
        loaded.count += result.count
        if result.torn:
            if not newest:
                raise StoreError(
                    f"{full} is damaged at byte {result.end} ({result.damage}) and is not the "
                    "newest file, so this is not an unfinished write: move it (and the files "
                    "before it) away to start without the history it holds"
                )
            if writer:
                log.warning(
                    "dropped %d bytes at the end of %s: a write the last run did not finish "
                    "(%s); none of it was acknowledged under fsync=always",
                    result.torn,
                    full,
                    result.damage,
                )
                with open(full, "r+b") as f:
                    f.truncate(result.end)
                    os.fsync(f.fileno())
                loaded.torn.append((full, result.torn))
        segment = Segment(full, first, result.end)
        if not loaded.segments:
            loaded.first_position = first
        segment.last = result.last
        loaded.segments.append(segment)
        loaded.events.extend(result.events)
        loaded.lost.extend(result.lost)
        loaded.last_position = max(loaded.last_position, first - 1, segment.last)
        for _, last in result.lost:
            loaded.last_position = max(loaded.last_position, last)
        loaded.clean = result.closed is not None  # the newest segment's last record
        if result.boot is not None:
            loaded.boot = result.boot
    if loaded.events:
        loaded.first_position = min(loaded.first_position, loaded.events[0].position)
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
        self.sequence = 0
        self.next_position = 0
        self.segments: list[Segment] = []
        self.bytes = 0
        #: each topic's events so far, the wall-clock time of its newest and the
        #: segment it was last counted in (``records_py``'s module doc)
        self.tallies: dict[str, Tally] = {}
        self.write_errors = 0
        self.deleted_segments = 0
        #: this machine's boot (``records.BOOT``), read by ``open``
        self.boot = ""
        self._fd = -1
        self._dirty = False
        self._syncing: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- opening

    def open(self) -> Loaded:
        """Read the directory, start a new segment; return what it held. After an
        unclean stop the positions jump to the wall clock and the ones between
        are recorded as possibly lost (never reused for other events)."""
        loaded = read(self.path, writer=True)
        self.segments = loaded.segments
        self.bytes = sum(segment.size for segment in self.segments)
        for segment, events in _by_segment(loaded):
            for event in events:
                tally_topics((event,), event.wall, self.tallies, segment.live, segment.first)
            segment.seal()
        boot = current_boot_id()
        if loaded.sequence is None:
            self.sequence = self.next_position = first_position()
            loaded.first_position = self.sequence
        else:
            self.sequence = loaded.sequence
            self.next_position = loaded.last_position + 1
            if _writes_may_be_lost(loaded, boot):
                # past every position the lost run may have given, and one for the marker
                self.next_position = max(loaded.last_position + 2, first_position())
        self.boot = boot
        self._start_segment()
        if _writes_may_be_lost(loaded, boot):
            gap = (loaded.last_position + 1, self.next_position - 2)
            log.warning(
                "the last run of %s stopped without closing its data and the machine has "
                "restarted since (fsync=%s): events after position %d may be lost; streams "
                "resuming from before them are told (sse-fast-missed)",
                self.path,
                loaded.boot[1] if loaded.boot else "unknown",
                loaded.last_position,
            )
            self._write(lost_record(*gap))
            loaded.lost.append(gap)
        self._sync_now()
        return loaded

    def _start_segment(self) -> None:
        """Write from now on into the segment starting at ``next_position`` (a new
        one, or the run before's if it holds no event), beginning with a ``BOOT``
        record; the previous one is synced and closed once the new one exists."""
        path = os.path.join(self.path, _segment_name(self.next_position))
        old = self._fd
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
            try:
                self._write(segment_header(self.sequence, self.next_position))
            except StoreWriteError:
                self._abandon_newest(old)
                raise
            if self.fsync != "never":
                _sync_directory(self.path)
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
            try:
                if self.fsync != "never":
                    os.fsync(old)
            finally:
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
                self._within_budget()

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

    async def tick(self) -> None:
        """The periodic work: sync (``interval``) in a thread, delete dead segments."""
        if self.fsync == "interval" and self._dirty and self._syncing is None:
            self._dirty = False
            fd = os.dup(self._fd)  # the segment may rotate while the thread syncs
            loop = asyncio.get_running_loop()
            self._syncing = loop.run_in_executor(None, _sync_and_close, fd)
            try:
                await self._syncing
            except OSError as exc:
                self.write_errors += 1
                log.error("cannot sync the data directory %s: %s", self.path, exc)
            finally:
                self._syncing = None
        self.delete_dead(time.time())

    def delete_dead(self, now: float) -> int:
        """Delete the oldest segments none of whose events a ring still keeps."""
        deleted = 0
        while len(self.segments) > 1 and self._dead(self.segments[0], now):
            self._delete_oldest()
            deleted += 1
        return deleted

    def _dead(self, segment: Segment, now: float) -> bool:
        tallies = self.tallies
        cutoff = now - self.topic_ttl
        frames = self.ring_frames
        return all(
            ordinal <= tallies[name].count - frames or tallies[name].wall < cutoff
            for name, ordinal in segment.topics.items()
        )

    def _within_budget(self) -> None:
        while len(self.segments) > 1 and self.bytes > self.max_bytes:
            log.warning(
                "the data directory passed its budget (%d bytes): deleting %s, whose events a "
                "restart no longer recovers (raise data_max_bytes to keep more)",
                self.max_bytes,
                self.segments[0].path,
            )
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        segment = self.segments.pop(0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        self.bytes -= segment.size
        self.deleted_segments += 1
        tallies = self.tallies
        for name, ordinal in segment.topics.items():
            tally = tallies.get(name)
            if tally is not None and tally.count == ordinal:  # its newest event went
                del tallies[name]  # forget the topic

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Say the stop was clean, sync, close."""
        if self._fd < 0:
            return
        try:
            self._write(closed_record(self.next_position - 1))
            if self.fsync != "never":
                os.fsync(self._fd)
        except (OSError, StoreError) as exc:
            log.error("the data directory %s was not closed cleanly: %s", self.path, exc)
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


def _writes_may_be_lost(loaded: Loaded, boot: str) -> bool:
    """After an unclean stop, whether acknowledged writes may be missing: not when
    only the process died (the same boot: the page cache kept every write), nor
    when every write was synced before it was acknowledged (``always``)."""
    if loaded.clean or loaded.sequence is None:
        return False
    if loaded.boot is None:
        return True  # not said: assume the worst
    last_boot, policy = loaded.boot
    return policy != "always" and (not boot or last_boot != boot)


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


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
