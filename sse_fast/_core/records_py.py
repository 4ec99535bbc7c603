"""Pure-Python records codec: the reference twin of ``src_ext/records_ext.pyx``.

Theory of operation
-------------------
* One job: the hot loops of the data directory's format (its words and its
  promises are in ``sse_fast/brokers/durable/_records.py``): packing a batch of
  sequenced events into records, and reading the records of a segment back.
  No I/O, no state between calls.
* A record is ``<II`` (body length, CRC-32 of the body), then the body, whose
  first byte is its kind. An event's body is ``<BqdBII`` (kind ``EVENT``,
  position, wall-clock time, 1 if the publisher gave the id, the id's and the
  topic names' UTF-8 lengths), the id, the names joined by newlines, the frame.
  The id counts as the publisher's when it is not ``str(position)``.
* ``pack_events(items, wall)``: the records of ``items`` (objects with
  ``position``, ``id``, ``topics`` and ``frame``) published at ``wall``, in one
  ``bytes``.
* ``tally_topics(items, wall, tallies, live, segment)``: the data directory's
  per-topic count, for retention (a segment is dead once every topic in it
  wrote a ring's worth of events since, or went idle). Each topic has one
  ``Tally`` in ``tallies`` (created at its first event): ``count`` its events
  so far, ``wall`` the wall-clock time of its newest, ``segment`` the segment
  (its first position) it was last counted in. For each topic of each of
  ``items``: one more event at ``wall``; a topic first counted in ``segment``
  goes into ``live`` (that segment's topics while it is written: when it is
  sealed, their counts are the ordinals of their newest events in it). One
  lookup per topic and event, the dicts the caller's, changed in place.
* ``scan_records(data, start, event_type, stop=-1)``: the records of ``data``
  from byte ``start`` until the end or the first one that does not check out
  (its length runs past the end, or its CRC does not match); with ``stop``
  not negative, only those that begin before byte ``stop`` (a slice of a
  segment: the caller goes on from ``end``, and a reader gives other threads
  the GIL between slices). Returns
  ``(events, others, count, last, end, damage, last_kind)``: each event as
  ``tuple.__new__(event_type, (position, id, topics, frame, wall, given))``
  (none with ``event_type`` None: only counted), the other records as
  ``(offset, kind, body)``, how many events and the newest one's position,
  where the readable records end, why the reading stopped there ("" at the
  end) and the kind of the last readable record (0 if none).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

__all__ = ["EVENT", "MAX_RECORD", "Tally", "pack_events", "scan_records", "tally_topics"]

EVENT = 1
#: a record is never larger than this (a frame is limited far below it): a
#: length past it is damage, not a record
MAX_RECORD = 1 << 30
_PREFIX = struct.Struct("<II")
_EVENT = struct.Struct("<BqdBII")


def pack_events(items: Sequence[Any], wall: float) -> bytes:
    parts: list[bytes] = []
    add = parts.append
    pack_event = _EVENT.pack
    pack_prefix = _PREFIX.pack
    crc32 = zlib.crc32
    for item in items:
        position = item.position
        event_id = item.id
        ident = event_id.encode()
        topics = item.topics
        names = (topics[0] if len(topics) == 1 else "\n".join(topics)).encode()
        frame = item.frame
        head = pack_event(EVENT, position, wall, event_id != str(position), len(ident), len(names))
        add(
            pack_prefix(
                len(head) + len(ident) + len(names) + len(frame),
                crc32(frame, crc32(names, crc32(ident, crc32(head)))),
            )
        )
        add(head)
        add(ident)
        add(names)
        add(frame)
    return b"".join(parts)


def scan_records(
    data: bytes, start: int, event_type: type[Any] | None, stop: int = -1
) -> tuple[list[Any], list[tuple[int, int, bytes]], int, int, int, str, int]:
    if start < 0:
        raise ValueError("start must not be negative")
    view = memoryview(data)
    size = len(data)
    limit = size if stop < 0 or stop > size else stop
    events: list[Any] = []
    others: list[tuple[int, int, bytes]] = []
    unpack_prefix = _PREFIX.unpack_from
    unpack_event = _EVENT.unpack_from
    crc32 = zlib.crc32
    new = tuple.__new__
    prefix = _PREFIX.size
    event_size = _EVENT.size
    offset = start
    count = last = last_kind = 0
    damage = ""
    while offset < limit:
        if size - offset < prefix:
            damage = "a record's length is cut short"
            break
        length, crc = unpack_prefix(data, offset)
        body = offset + prefix
        end = body + length
        if length == 0 or length > MAX_RECORD or end > size:
            damage = "a record runs past the end of the file"
            break
        if crc32(view[body:end]) != crc:
            damage = "a record's checksum does not match"
            break
        kind = last_kind = data[body]
        if kind == EVENT and length >= event_size:
            _, position, wall, given, id_size, names_size = unpack_event(data, body)
            at_id = body + event_size
            at_names = at_id + id_size
            at_frame = at_names + names_size
            if at_frame > end:
                damage = "an event record's lengths run past its end"
                break
            count += 1
            last = position
            if event_type is not None:
                names = data[at_names:at_frame].decode()
                events.append(
                    new(
                        event_type,
                        (
                            position,
                            data[at_id:at_names].decode(),
                            tuple(names.split("\n")) if "\n" in names else (names,),
                            data[at_frame:end],
                            wall,
                            given == 1,
                        ),
                    )
                )
        else:
            others.append((offset, kind, data[body:end]))
        offset = end
    return events, others, count, last, offset, damage, last_kind


class Tally:
    """A topic's count in the data directory (see the module doc)."""

    __slots__ = ("count", "segment", "wall")

    def __init__(self, count: int = 0, wall: float = 0.0, segment: int = -1) -> None:
        self.count = count
        self.wall = wall
        self.segment = segment

    def __repr__(self) -> str:
        return f"Tally(count={self.count}, wall={self.wall!r}, segment={self.segment})"


def tally_topics(
    items: Sequence[Any],
    wall: float,
    tallies: dict[str, Tally],
    live: dict[str, Tally],
    segment: int,
) -> None:
    """Count each topic of ``items`` (objects with ``topics``) once more in its
    ``tallies`` entry at ``wall``; a topic first counted in ``segment`` joins its
    ``live`` topics (see the module doc)."""
    for item in items:
        for name in item.topics:
            tally = tallies.get(name)
            if tally is None:
                tally = tallies[name] = Tally()
            tally.count += 1
            tally.wall = wall
            if tally.segment != segment:
                tally.segment = segment
                live[name] = tally
