"""What a member has read of a partition's sequence, and the shapes of history reads.

* ``PartitionRead``: one partition's sequence as this member read it (the newest
  position seen, the horizon, the dataset's epoch, where the member's claims
  start, and the counts of repairs and breaks). One per partition, owned by the
  connection that carries the partition (``_connection.py``); changed only by
  its named operations, which the connection and its history reads call.
* ``Read``: what one read script call says (the partition's sequence, and the
  topics read); ``parse_read`` makes one of a script's reply.
* ``Reconnect``: raised to replace a pub/sub connection (stale, silently
  reconnected, or its Redis lost its data under it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from .._sequencing import Sequenced

__all__ = [
    "LOAD_CHUNK",
    "Moved",
    "PartitionRead",
    "Read",
    "Reconnect",
    "TopicRead",
    "ignore_result",
    "parse_read",
]

log = logging.getLogger("sse_fast.redis")

#: topics per history read when subscribing (so Redis is not blocked long)
LOAD_CHUNK = 256  # topics per history read when subscribing

#: a topic's stream as read: (max deleted position, stream length, entries oldest first)
TopicRead = tuple[int, int, list[Sequenced]]


class Read(NamedTuple):
    """What one read script call (``READ_SCRIPT``, ``PARTITION_READ_SCRIPT``) says."""

    #: the newest position handed out
    position: int
    #: Redis time in microseconds
    now: int
    #: the dataset's epoch
    epoch: str
    #: no position at or below it is in this dataset's history (``advance.lua``)
    floor: int
    #: per topic read
    topics: dict[str, TopicRead]


class Reconnect(Exception):
    """The subscription must be replaced (stale, or silently reconnected)."""


class Moved(Reconnect):
    """The connection's partitions changed, or its master gave a slot away (a Cluster's slot
    map): subscribe and resync again, without calling it a lost subscription."""


class PartitionRead:
    """What a member has read of one partition's sequence; changed only by these operations."""

    def __init__(self) -> None:
        #: the newest position this member has seen handed out (reads, messages)
        self.seen = 0
        #: a position every event up to which is known to exist (the newest one read)
        self.horizon = 0
        #: the dataset's epoch, once read
        self.epoch: str | None = None
        #: the oldest position this member may claim to know (claims are per topic here,
        #: each loaded topic's floor: every position is ours until a break)
        self.first_position = 1
        #: resyncs that found nothing lost, and breaks said
        self.repairs = 0
        self.history_breaks = 0

    def saw(self, position: int) -> None:
        """A live message at ``position`` reached the member."""
        if position > self.seen:
            self.seen = position

    def read_up_to(self, position: int) -> None:
        """A history read said ``position`` is the newest handed out."""
        self.seen = max(self.seen, position)
        self.horizon = max(self.horizon, position)

    def resynced(self, read: Read) -> None:
        """A resync read ``read``: its dataset is the member's now."""
        self.epoch = read.epoch
        self.read_up_to(read.position)

    def broke(self, floor: int) -> None:
        """Redis lost data: the member's claims start after the dataset's new ``floor``."""
        self.history_breaks += 1
        self.first_position = floor + 1

    def repaired(self) -> None:
        """A resync found nothing lost."""
        self.repairs += 1


def parse_read(reply: list[Any], names: list[str]) -> Read:
    """A read script's reply for topics ``names``."""
    out = {}
    clock = time.monotonic()
    for k, name in enumerate(names):
        deleted, length, entries = reply[4 + 3 * k : 7 + 3 * k]
        items = []
        for stream_id, fields in reversed(entries):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            age = max(0.0, time.time() - int(values[b"w"]) / 1000)
            items.append(
                Sequenced(
                    _position(stream_id),
                    values[b"i"].decode(),
                    (name,),
                    values[b"f"],
                    clock - age,
                )
            )
        out[name] = (_position(deleted), int(length), items)
    return Read(int(reply[0]), int(reply[1]), reply[2].decode(), int(reply[3]), out)


def _position(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[0])


def ignore_result(task: asyncio.Task[Any]) -> None:
    """A done callback for a background command nobody waits for."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("Redis background command failed: %s", task.exception())
