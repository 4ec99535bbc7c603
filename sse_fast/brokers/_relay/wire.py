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
  answered or after ``GATHER_TIMEOUT`` seconds;
* ``ping`` (worker -> relay): ``request``; answered by ``pong``: ``request``.

Every message is built and read here, and nowhere else: each ``type`` is a
class below (``Hello``, ``Welcome``, ``Publish``, ``Deliver``, ``Ack``,
``Refused`` for ``error``, ``Gather``, ``Report``, ``Figures``, ``Gathered``,
``Ping``, ``Pong``) whose ``pack()`` gives its bytes, and ``receive`` reads the
next message as one of them (``parse``: of a header already read), or as
``Unknown`` for a ``type`` this version does not know, which the reader
ignores. ``pack``, ``read_message`` and the ``*_publish``/``*_delivery``
functions are the layer below, for tests and tools that speak the format by
hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from typing import Any, ClassVar, TypeAlias

import orjson

from ..._core import EncodeError
from ...publishing import PublishError, PublishRequest
from .._sequencing import Sequenced, make_frame

__all__ = [
    "MAX_MESSAGE",
    "Ack",
    "Deliver",
    "Figures",
    "Gather",
    "Gathered",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "Publish",
    "Refused",
    "Report",
    "Unknown",
    "Welcome",
    "pack",
    "pack_delivery",
    "pack_publish",
    "parse",
    "read_message",
    "receive",
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


# ---------------------------------------------------------------- the messages


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    """A message whose header is its fields (``type`` first), with no payload."""

    #: the header's ``type``
    kind: ClassVar[str] = ""

    def pack(self) -> bytes:
        """This message's bytes."""
        return pack({"type": self.kind, **_as_header(self)})


def _as_header(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name in _FIELDS[type(message)]}


@dataclasses.dataclass(frozen=True, slots=True)
class Hello(_Plain):
    """worker -> relay: the sequence it was in and the newest position it applied (or None)."""

    kind: ClassVar[str] = "hello"
    sequence: int | None = None
    last_position: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome(_Plain):
    """relay -> worker, answering ``Hello``; ``replay`` ``Deliver`` messages follow."""

    kind: ClassVar[str] = "welcome"
    first_position: int
    last_position: int
    continued: bool
    history_from: int
    worker: int
    replay: int
    pid: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Publish:
    """worker -> relay: events to sequence (``request`` is the worker's number for it)."""

    kind: ClassVar[str] = "publish"
    request: int
    accepted_at: float
    requests: list[PublishRequest]

    def pack(self) -> bytes:
        """This message's bytes; ``PublishError`` (400) for events that cannot be encoded."""
        return pack_publish(self.request, self.requests, self.accepted_at)


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver:
    """relay -> every worker: sequenced events, their frames as the payload."""

    kind: ClassVar[str] = "deliver"
    items: list[Sequenced]

    def pack(self) -> bytes:
        """This message's bytes."""
        return pack_delivery(self.items)


@dataclasses.dataclass(frozen=True, slots=True)
class Ack(_Plain):
    """relay -> publishing worker: the ids of its ``Publish``."""

    kind: ClassVar[str] = "ack"
    request: int
    ids: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """relay -> publishing worker (``error``): nothing of ``request`` was published; with
    ``status`` (and ``reason``) when the relay cannot publish now, else an event could not
    be encoded (400)."""

    kind: ClassVar[str] = "error"
    request: int
    message: str
    status: int | None = None
    reason: str | None = None

    def pack(self) -> bytes:
        """This message's bytes (``status`` and ``reason`` only when given)."""
        header = {"type": self.kind, "request": self.request, "message": self.message}
        if self.status is not None:
            header["status"] = self.status
        if self.reason is not None:
            header["reason"] = self.reason
        return pack(header)


@dataclasses.dataclass(frozen=True, slots=True)
class Gather(_Plain):
    """worker -> relay: every worker's figures for ``query``."""

    kind: ClassVar[str] = "gather"
    request: int
    query: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Report(_Plain):
    """relay -> every worker: its figures for ``query``, for the relay's ``gather``."""

    kind: ClassVar[str] = "report"
    gather: int
    query: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Figures(_Plain):
    """worker -> relay: its figures, answering ``Report``."""

    kind: ClassVar[str] = "figures"
    gather: int
    figures: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Gathered(_Plain):
    """relay -> asking worker: every worker's figures, each with its ``worker`` slot."""

    kind: ClassVar[str] = "gathered"
    request: int
    figures: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Ping(_Plain):
    """worker -> relay: are you there?"""

    kind: ClassVar[str] = "ping"
    request: int


@dataclasses.dataclass(frozen=True, slots=True)
class Pong(_Plain):
    """relay -> worker, answering ``Ping``."""

    kind: ClassVar[str] = "pong"
    request: int


@dataclasses.dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a ``type`` this version does not know (ignored by its reader)."""

    kind: str


#: any message on the wire, as ``receive`` reads it
Message: TypeAlias = (
    Hello
    | Welcome
    | Publish
    | Deliver
    | Ack
    | Refused
    | Gather
    | Report
    | Figures
    | Gathered
    | Ping
    | Pong
    | Unknown
)

_PLAIN: tuple[type[Any], ...] = (Hello, Welcome, Ack, Gather, Report, Figures, Gathered)
_PLAIN += (Ping, Pong, Refused)
#: each plain message's header fields, and those a header may leave out (their default)
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _PLAIN}
_OPTIONAL = {
    cls: frozenset(f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING)
    for cls in _PLAIN
}
_KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in _PLAIN}


def parse(header: dict[str, Any], payload: bytes = b"") -> Message:
    """The message a header (and its payload) says; ``KeyError`` for one missing a field."""
    kind = header["type"]
    if kind == "deliver":
        return Deliver(unpack_delivery(header, payload))
    if kind == "publish":
        return Publish(header["request"], header["accepted_at"], unpack_publish(header))
    cls = _KINDS.get(kind)
    if cls is None:
        return Unknown(kind)
    optional = _OPTIONAL[cls]
    message: Message = cls(
        *(header.get(name) if name in optional else header[name] for name in _FIELDS[cls])
    )
    return message


async def receive(reader: asyncio.StreamReader) -> Message:
    """The next message (``read_message``'s errors when there is none)."""
    header, payload = await read_message(reader)
    return parse(header, payload)
