"""sse_fast's control frames, built: the server's side of ``protocol.py``.

``protocol.py`` holds the words (event names, reasons, the resume header) and
reads them back; the hub, the brokers' breaks and mirror mode write them with
these, so the frames come out the same wherever a stream is told something.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ._core import encode
from .protocol import COME_BACK_HEADER, DISCONNECT, MISSED, RESUME_HEADER

__all__ = [
    "COME_BACK_HEADER_ASGI",
    "RESUME_HEADER_ASGI",
    "disconnect_frame",
    "missed_data",
    "missed_frame",
]

#: the resume header's name as an ASGI server takes it (lower case, bytes)
RESUME_HEADER_ASGI: Final = RESUME_HEADER.lower().encode()
#: the come-back header's, as well
COME_BACK_HEADER_ASGI: Final = COME_BACK_HEADER.lower().encode()


def missed_data(reason: str, last_event_id: str | None = None, **details: Any) -> str:
    """The ``data`` of an ``sse-fast-missed`` event."""
    return orjson.dumps({"reason": reason, "last_event_id": last_event_id, **details}).decode()


def missed_frame(
    reason: str,
    position: int | str,
    last_event_id: str | None = None,
    retry: int | None = None,
    **details: Any,
) -> bytes:
    """An encoded ``sse-fast-missed`` event standing at ``position`` (its id: a
    position, or a stream's cursor, ``hub/_cursor.py``); ``details`` go in its data
    (``partition``: the partition of a break, with a broker of several)."""
    data = missed_data(reason, last_event_id, **details)
    return encode(data, event=MISSED, id=str(position), retry=retry)


def disconnect_frame(reason: str, retry: int | None = None, **details: Any) -> bytes:
    """An encoded ``sse-fast-disconnect`` event: the stream's last."""
    data = orjson.dumps({"reason": reason, **details}).decode()
    return encode(data, event=DISCONNECT, retry=retry)
