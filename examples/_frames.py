"""Frames made by ``sse_fast.frames`` published through the hub.

The hub encodes each event itself (and gives it an id), so it takes the
event's name and data, not a frame: ``request`` parses a helper's frame back
into those, which keeps the helpers the one place the dialect is written.
"""

from __future__ import annotations

from sse_fast import Parser
from sse_fast.publishing import PublishRequest


def request(topic: str, frame: bytes) -> PublishRequest:
    """The ``PublishRequest`` that makes the hub send ``frame``'s event (with an
    id of the hub's own) to ``topic``."""
    events = list(Parser().feed(frame))
    if len(events) != 1:
        raise ValueError(f"expected one event in the frame, got {len(events)}")
    event = events[0]
    return PublishRequest((topic,), event.data, event=event.event or None)
