"""Reading a stream told to come back later: a 200 with the ``SSE-Fast-Come-Back``
header and one ``sse-fast-disconnect`` frame, what ``sse-fast serve`` answers where
retrying fixes a refusal (a browser's ``EventSource`` stops for good on a 429 or 503)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from sse_fast._http11 import SSEClient
from sse_fast.testing import wait_for


async def told_to_come_back(client: SSEClient, timeout: float = 10.0) -> tuple[str, str, int]:
    """The reason, message and retry (ms) of ``client``'s connected stream, which must be
    a come-back: its header, then its one frame, then the end."""
    assert client.status == 200, client.status
    header = client.response_headers.get("sse-fast-come-back")
    assert header, f"not told to come back: {client.response_headers}"
    events = []
    while not client.closed:
        events += await asyncio.wait_for(client.events(), timeout)
    (event,) = events
    assert event.event == "sse-fast-disconnect" and not event.id
    data = json.loads(event.data)
    assert data["reason"] == header
    assert client.retry is not None
    return data["reason"], data["message"], client.retry


async def served(make: Callable[[], SSEClient], timeout: float = 15.0) -> SSEClient:
    """A stream of ``make()``'s connected and served: one told to come back (a worker
    that starts, drains, or has not yet found its Redis again) is closed and asked
    again, as a browser would after the ``retry``, until one is served or ``timeout``."""
    told: list[str] = []

    async def connected() -> SSEClient | None:
        client = make()
        await client.connect()
        reason = client.response_headers.get("sse-fast-come-back")
        if reason is None:
            return client
        told.append(reason)
        client.close()
        return None

    found: SSEClient = await wait_for(
        connected, timeout, 0.05, f"a stream served, not told to come back ({told[-3:]})"
    )
    return found
