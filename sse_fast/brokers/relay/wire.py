"""The relay's wire format: how workers and the relay talk over the Unix socket.

Wire format (both directions): ``!II`` total length and header length, a JSON
header (orjson), then raw frame bytes for deliveries. Headers, by ``type``:

* ``hello`` (worker -> relay): ``sequence`` (the ``first_position`` of the
  sequence the worker was in, or null) and ``last_position`` (the newest
  position it applied, or null). Answered by ``welcome``: ``first_position``
  (the relay's sequence), ``last_position`` (the newest position it gave
  out), ``continued`` (true: the worker's history goes on unbroken),
  ``history_from`` (where the worker's claims start when not continued),
  ``worker`` (a slot number, stable across a worker's respawn, for metric
  labels), ``pid`` (the relay's) and ``replay`` (how many ``deliver`` messages of the log follow);
* ``publish`` (worker -> relay): ``request`` (the worker's number for it),
  ``accepted_at`` and ``events``: ``[topics, data, event, id, retry]`` each,
  data pre-serialised JSON (or text);
* ``deliver`` (relay -> every worker): ``events``: ``[position, id, topics,
  accepted_at, size]`` each, the frames concatenated after the header;
* ``ack`` (relay -> publishing worker): ``request``, ``ids``; or ``error``:
  ``request``, ``message`` (an event could not be encoded: nothing published);
* ``gather`` (worker -> relay): ``request``, ``query``; the relay sends
  ``report`` (``gather``, ``query``) to every worker, each answers ``figures``
  (``gather``, ``figures``), and the asking worker gets ``gathered``
  (``request``, ``figures``: a list, each with its ``worker`` slot) once all
  answered or after ``GATHER_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from ..._core import EncodeError
from ...publishing import PublishError, PublishRequest
from ..sequencing import Sequenced, make_frame

__all__ = [
    "MAX_MESSAGE",
    "pack",
    "pack_delivery",
    "pack_publish",
    "read_message",
    "unpack_delivery",
    "unpack_publish",
]

_PREFIX = struct.Struct("!II")
#: the largest message read (bytes); a longer one is a malformed connection
MAX_MESSAGE = 256 * 1024 * 1024


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One message: the lengths, ``header`` as JSON, then ``payload``."""
    head = orjson.dumps(header)
    return _PREFIX.pack(len(head) + len(payload), len(head)) + head + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next message's header and payload; ``ConnectionError`` for one longer than
    ``MAX_MESSAGE`` or malformed, ``asyncio.IncompleteReadError`` when the stream ends."""
    total, head_size = _PREFIX.unpack(await reader.readexactly(_PREFIX.size))
    if total > MAX_MESSAGE or head_size > total:
        raise ConnectionError(f"relay message of {total} bytes is malformed or too large")
    body = await reader.readexactly(total)
    return orjson.loads(body[:head_size]), body[head_size:]


def _wire_data(data: Any) -> Any:
    """An event's data as it travels to the relay: text as is, anything else as
    JSON serialised here (an ``orjson.Fragment``), so the relay message adds no
    nesting to it and data one worker accepts is accepted by several."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")  # bytes are UTF-8 text, as for encode()
    return orjson.Fragment(orjson.dumps(data))


def pack_publish(request_id: int, requests: list[PublishRequest], accepted_at: float) -> bytes:
    """A worker's publish message; raises ``PublishError`` (400) for events that
    cannot be encoded, with the encoder's own explanation."""
    try:
        return pack(
            {
                "type": "publish",
                "request": request_id,
                "accepted_at": accepted_at,
                "events": [
                    [r.topics, _wire_data(r.data), r.event, r.id, r.retry] for r in requests
                ],
            }
        )
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError, UnicodeDecodeError
        for request in requests:
            try:
                make_frame(request, "0")
            except EncodeError as reason:
                raise PublishError(str(reason)) from None
        raise PublishError(f"this event cannot be published: {exc}") from None


def unpack_publish(header: dict[str, Any]) -> list[PublishRequest]:
    """The events of a worker's publish message, as the relay sequences them."""
    return [PublishRequest(tuple(t), d, e, i, r) for t, d, e, i, r in header["events"]]


def pack_delivery(items: list[Sequenced]) -> bytes:
    """A ``deliver`` message of sequenced events, their frames as the payload."""
    header = {
        "type": "deliver",
        "events": [[i.position, i.id, i.topics, i.accepted_at, len(i.frame)] for i in items],
    }
    return pack(header, b"".join(i.frame for i in items))


def unpack_delivery(header: dict[str, Any], payload: bytes) -> list[Sequenced]:
    """The sequenced events of a ``deliver`` message."""
    items = []
    offset = 0
    for position, event_id, topics, accepted_at, size in header["events"]:
        items.append(
            Sequenced(
                position, event_id, tuple(topics), payload[offset : offset + size], accepted_at
            )
        )
        offset += size
    return items
