"""Sequencing: publish requests become sequenced events.

Every published event gets a *position*: one number, hub-global, from exactly
one sequencer (a broker, see ``sse_fast/brokers``), so every member of a
server applies the same events in the same order and holds identical rings.
The SSE ``id`` is the publisher's id when given, else ``str(position)``.
Positions start at the wall clock in microseconds when the sequencer starts,
so ids keep growing across restarts and an id from an earlier run is
recognisably too old. Each frame is encoded once, here, by the sequencer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .._core import encode
from ..publishing import PublishRequest


@dataclass(slots=True)  # not frozen: its __init__ would cost 1 us more per event
class Sequenced:
    """An event after sequencing: what every member applies (never changed after)."""

    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    accepted_at: float  # time.monotonic() when the publish was accepted (latency metric)


def first_position() -> int:
    """Where a new sequencer starts: the wall clock in microseconds."""
    return time.time_ns() // 1000


def make_frame(request: PublishRequest, event_id: str) -> bytes:
    return encode(request.data, event=request.event, id=event_id, retry=request.retry)


def sequence(requests: Sequence[PublishRequest], first: int, accepted_at: float) -> list[Sequenced]:
    """Give ``requests`` the positions from ``first`` on and encode each frame once.

    Raises ``EncodeError`` before anything is sequenced if one of them cannot be
    encoded: a batch is published whole or not at all.
    """
    out = []
    for offset, request in enumerate(requests):
        position = first + offset
        event_id = request.id if request.id is not None else str(position)
        out.append(
            Sequenced(
                position, event_id, request.topics, make_frame(request, event_id), accepted_at
            )
        )
    return out
