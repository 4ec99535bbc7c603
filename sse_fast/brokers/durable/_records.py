"""The data directory's file format: segment headers and checksummed records.

A segment file (``<first position, 20 digits>.log``) starts with a header:
``MAGIC`` (12 bytes, the format's name and version), the store's *sequence*
(the first position it ever gave, which names the store: every segment of one
directory carries the same one) and the segment's first position, then a CRC-32
of those 28 bytes. Records follow, each ``<II`` (body length, CRC-32 of the
body) and the body, whose first byte is its kind:

* ``EVENT``: ``<BqdBII`` kind, position, wall-clock time of the publish,
  whether the publisher gave the id (1) or it is the position (0), the id's
  and the topic names' lengths in bytes; then the id (UTF-8), the topic names
  joined by newlines (names cannot hold one) and the encoded frame.
* ``LOST``: ``<Bqq`` positions ``first`` to ``last`` may have been given to
  events a machine crash lost (written by a sequencer that starts after an
  unclean stop; a ``Last-Event-ID`` among them is answered ``evicted``), and
  ``last + 1`` is where the streams are told (an ``sse-fast-missed`` marker).
* ``CLOSED``: ``<Bq`` the sequencer stopped cleanly after this position.
* ``BOOT``: ``<BB`` and text: a sequencer started, under this fsync policy
  (``POLICIES``' index), on the machine's boot with this id (Linux's
  ``/proc/sys/kernel/random/boot_id``; empty where unknown). After an unclean
  stop, the same boot means only the process died: the page cache still had
  every write, nothing was lost.

A record whose length runs past the end of the file or whose checksum does
not match ends what can be read of a file (``Scan.torn``): at the end of the
newest segment it is a write the process or the machine did not finish, and is
dropped; anywhere else the file is corrupt and is refused.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ..._collector import free_gradually
from ..._core import pack_events, scan_records

if TYPE_CHECKING:
    from .._sequencing import Sequenced

__all__ = [
    "BOOT",
    "CLOSED",
    "EVENT",
    "HEADER",
    "LOST",
    "MAGIC",
    "POLICIES",
    "SCAN_SLICE",
    "Event",
    "ReadStopped",
    "Scan",
    "StoreError",
    "boot_record",
    "closed_record",
    "current_boot_id",
    "fsync_path",
    "lost_record",
    "read_header",
    "scan",
    "segment_header",
    "segment_name",
    "sequenced_records",
]

#: the first 12 bytes of every segment file: the format's name and version
MAGIC = b"SSEFAST-LOG1"
_HEAD = struct.Struct("<12sqq")
#: a segment header's size in bytes, where its first record starts
HEADER = _HEAD.size + 4  # and its CRC-32
_PREFIX = struct.Struct("<II")
_LOST = struct.Struct("<Bqq")
_CLOSED = struct.Struct("<Bq")
#: the kind (first byte of the body) of a record holding one event
EVENT = 1
#: the kind of a record naming positions a machine crash may have lost
LOST = 2
#: the kind of a record saying the sequencer stopped cleanly
CLOSED = 3
#: the kind of a record saying a sequencer started (boot id, fsync policy)
BOOT = 4
#: the fsync policies, in the order a ``BOOT`` record numbers them
POLICIES = ("always", "interval", "never")


class StoreError(Exception):
    """The data directory cannot be used as it is; the message says what to do."""


class Event(NamedTuple):
    """One stored event, as read back (a tuple: the codec makes a million fast)."""

    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    wall: float  # time.time() of the publish
    given: bool  # the publisher gave the id (a retry of it is recognised)


def segment_name(first: int) -> str:
    """The file name of the segment whose first position is ``first``."""
    return f"{first:020d}.log"


def segment_header(sequence: int, first: int) -> bytes:
    """The header of a segment of store ``sequence`` whose first position is ``first``
    (``HEADER`` bytes, its CRC-32 last)."""
    head = _HEAD.pack(MAGIC, sequence, first)
    return head + struct.pack("<I", zlib.crc32(head))


def read_header(data: bytes | memoryview, name: str) -> tuple[int, int]:
    """The ``(sequence, first position)`` of a segment; ``StoreError`` naming the
    file when it is not one of ours."""
    if len(data) < HEADER and MAGIC.startswith(bytes(data[:12])):
        raise StoreError(
            f"{name} is cut short ({len(data)} bytes; its header alone is {HEADER}): move it "
            "away to start without it"
        )
    if bytes(data[:12]) != MAGIC:
        if len(data) >= 11 and bytes(data[:11]) == MAGIC[:11]:
            raise StoreError(
                f"{name} was written by another version of sse_fast's data format "
                f"({bytes(data[:12])!r}); start this server with an empty --data-dir, "
                "or with the version that wrote it"
            )
        raise StoreError(
            f"{name} is not an sse_fast data file (it does not start with {MAGIC!r}); "
            "the data directory must hold only sse_fast's own files: move it away"
        )
    (crc,) = struct.unpack_from("<I", data, _HEAD.size)
    if zlib.crc32(data[: _HEAD.size]) != crc:
        raise StoreError(
            f"{name}: its header is damaged (checksum mismatch); move the file away to start "
            "without the history it holds"
        )
    _, sequence, first = _HEAD.unpack_from(data)
    return sequence, first


def sequenced_records(items: Sequence[Sequenced], wall: float) -> bytes:
    """The ``EVENT`` records of sequenced events published at ``wall``, in one
    ``bytes`` (the native codec's ``pack_events``; an id other than the
    position's is the publisher's)."""
    return pack_events(items, wall)


def _record(body: bytes) -> bytes:
    return _PREFIX.pack(len(body), zlib.crc32(body)) + body


def lost_record(first: int, last: int) -> bytes:
    """A ``LOST`` record: positions ``first`` to ``last`` may have been lost."""
    return _record(_LOST.pack(LOST, first, last))


def closed_record(position: int) -> bytes:
    """A ``CLOSED`` record: the sequencer stopped cleanly after ``position``."""
    return _record(_CLOSED.pack(CLOSED, position))


def boot_record(boot_id: str, policy: str) -> bytes:
    """A ``BOOT`` record: a sequencer started on boot ``boot_id`` under fsync
    ``policy`` (one of ``POLICIES``; ``ValueError`` otherwise)."""
    return _record(bytes((BOOT, POLICIES.index(policy))) + boot_id.encode())


def fsync_path(path: str) -> None:
    """``fsync`` the file or directory at ``path`` (a directory: the names in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_boot_id() -> str:
    """This boot of the machine ("" where the system does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


#: bytes of a segment the native codec reads at a time (``scan``): about 4,500 events
#: of 200 bytes, a few milliseconds
SCAN_SLICE = 1 << 20


class ReadStopped(Exception):
    """A reading of the data directory given up because its reader was told to stop
    (``scan``'s and ``read``'s ``stop``: a worker stopped while it restores)."""


@dataclass
class Scan:
    """What one segment holds, read from ``HEADER`` on."""

    events: list[Event] = field(default_factory=list)
    count: int = 0
    #: the newest event's position (0: none)
    last: int = 0
    lost: list[tuple[int, int]] = field(default_factory=list)
    #: the position after which the sequencer stopped cleanly, if the last record says so
    closed: int | None = None
    #: the last ``BOOT`` record: (boot id, fsync policy)
    boot: tuple[str, str] | None = None
    #: where the readable records end (a byte offset)
    end: int = HEADER
    #: bytes after ``end`` that are not a whole record with a good checksum
    torn: int = 0
    #: why the first bad record is bad (empty when none)
    damage: str = ""


def scan(data: bytes, name: str, events: bool = True, stop: threading.Event | None = None) -> Scan:
    """Read a segment's records (its header checked by ``read_header`` first);
    without ``events`` only check them (``Scan.count`` says how many events).
    The loop is the native codec's (``scan_records``), ``SCAN_SLICE`` bytes at a
    time: between slices another thread gets the GIL (a worker's event loop keeps
    answering while its history is read in a thread), and a reader that was told
    to ``stop`` gives up (``ReadStopped``). The rare records are read here."""
    build = Event if events else None
    found: list[Event] = []
    others: list[tuple[int, int, bytes]] = []
    count = last = last_kind = 0
    end, damage = HEADER, ""
    while True:
        if stop is not None and stop.is_set():
            free_gradually(found)  # not in one step that holds every thread
            raise ReadStopped(f"the reading of {name} was stopped")
        part, rare, counted, newest, end, damage, kind = scan_records(
            data, end, build, end + SCAN_SLICE
        )
        found += part
        others += rare
        if counted:
            count += counted
            last = newest
        if kind:
            last_kind = kind
        if damage or end >= len(data):
            break
    result = Scan(found, count, last, end=end, torn=len(data) - end, damage=damage)
    for offset, kind, body in others:
        if kind == LOST and len(body) == _LOST.size:
            result.lost.append(_LOST.unpack(body)[1:])
        elif kind == CLOSED and len(body) == _CLOSED.size:
            if last_kind == CLOSED and offset == others[-1][0]:
                result.closed = _CLOSED.unpack(body)[1]
        elif kind == BOOT and len(body) >= 2 and body[1] < len(POLICIES):
            result.boot = (body[2:].decode(), POLICIES[body[1]])
        elif kind in (LOST, CLOSED, BOOT):  # its checksum is right, its shape is not
            raise StoreError(
                f"{name}: a record of kind {kind} at byte {offset} has a body of "
                f"{len(body)} bytes that this version cannot read; it was written by another "
                "sse_fast version or another program: start the version that wrote it, or "
                "move the file away"
            )
        else:
            raise StoreError(
                f"{name}: a record of unknown kind {kind} at byte {offset}; it was written by "
                "a newer sse_fast: start the version that wrote it, or move the file away"
            )
    return result
