"""Transforms for mirror mode's ``upstream_transform`` (tests/app/test_mirror_mode.py)."""

from __future__ import annotations

from typing import Any

from sse_fast.client import ReceivedEvent


def odd_only_upper(event: ReceivedEvent) -> ReceivedEvent | None:
    """Drops even ticks; odd ones go on with their data upper-cased."""
    if int(event.data) % 2 == 0:
        return None
    return ReceivedEvent(event.event, f"tick {event.data}".upper(), event.id)


async def route_by_parity(event: ReceivedEvent) -> dict[str, Any]:
    """A publish document: each tick to the topic of its parity, as JSON."""
    n = int(event.data)
    return {"topic": "odd" if n % 2 else "even", "data": {"n": n}, "id": event.id}
