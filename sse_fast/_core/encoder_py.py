"""Pure-Python SSE frame encoder: the reference twin of ``src_ext/encoder_ext.pyx``.

Frame layout (every frame ends with one blank line)::

    : comment line          one per line of ``comment``
    event: <event>
    id: <id>
    retry: <retry>
    data: <line>            one per line of ``data``; CRLF, CR and LF all split
    <blank line>

A space always follows the colon so values starting with a space survive the
parser's one-space strip. Values that cannot be written faithfully raise
``EncodeError``; nothing is stripped or replaced silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .errors import EncodeError

__all__ = ["ID_FIRST_ORDER", "ORDER", "Event", "encode", "encode_many", "encode_sequenced"]

#: The two field orders a frame can be written in: ours, and the one of sse-starlette
#: and aiohttp-sse (their drop-ins write the same bytes as they do).
ORDER = "comment,event,id,retry,data"
ID_FIRST_ORDER = "comment,id,event,data,retry"
_LINE_ENDS = {"\n": b"\n", "\r\n": b"\r\n", "\r": b"\r"}

_LINE_END = re.compile(rb"\r\n|\r|\n")


def _split_lines(raw: bytes) -> list[bytes]:
    if b"\r" in raw:
        return _LINE_END.split(raw)
    return raw.split(b"\n")


def utf8_error_at(raw: bytes) -> int:
    """Offset of the first invalid UTF-8 byte in ``raw``, or -1 (exposed for tests)."""
    if not isinstance(raw, bytes):
        raise TypeError(f"utf8_error_at() takes bytes, not {type(raw).__name__}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return -1


def _utf8(field: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(
            field, f"not encodable as UTF-8 (lone surrogate at index {exc.start})"
        ) from None


def _data_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        return _utf8("data", data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        try:
            raw = orjson.dumps(data)
        except TypeError as exc:
            raise EncodeError(
                "data", f"cannot serialise {type(data).__name__} as JSON: {exc}"
            ) from None
    # JSON is checked like bytes: an orjson.Fragment can carry raw CR/LF or bad UTF-8.
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodeError(
            "data", f"bytes are not valid UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    return raw


def _event_line(event: object) -> bytes:
    if not isinstance(event, str):
        raise EncodeError("event", f"must be str, not {type(event).__name__}")
    if "\r" in event or "\n" in event:
        raise EncodeError("event", "must not contain CR or LF (it would end the field early)")
    return b"event: " + _utf8("event", event)


def _id_line(id: object) -> bytes:
    if isinstance(id, str):
        text = id
    elif isinstance(id, int) and not isinstance(id, bool):
        text = str(id)
    else:
        raise EncodeError("id", f"must be str or int, not {type(id).__name__}")
    if "\r" in text or "\n" in text:
        raise EncodeError("id", "must not contain CR or LF (it would end the field early)")
    if "\0" in text:
        raise EncodeError("id", "must not contain NUL (clients ignore such ids)")
    return b"id: " + _utf8("id", text)


def _retry_line(retry: object) -> bytes:
    if not isinstance(retry, int) or isinstance(retry, bool):
        raise EncodeError("retry", f"must be a non-negative int (ms), not {type(retry).__name__}")
    if retry < 0:
        raise EncodeError("retry", f"must be a non-negative int (ms), got {retry}")
    return b"retry: %d" % retry


def _comment_lines(comment: object) -> list[bytes]:
    if not isinstance(comment, str):
        raise EncodeError("comment", f"must be str, not {type(comment).__name__}")
    return [b": " + line for line in _split_lines(_utf8("comment", comment))]


def encode(
    data: Any = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
    sep: str = "\n",
    order: str = ORDER,
) -> bytes:
    """Encode one SSE frame.

    ``data`` may be ``str``, UTF-8 ``bytes`` or anything orjson serialises
    (dict, list, dataclass, numbers, ...); ``None`` writes no data line, so a
    frame with only ``comment``, ``id`` or ``retry`` is possible. ``sep`` ends
    every line (``"\\n"``, ``"\\r\\n"`` or ``"\\r"``); ``order`` is the order of
    the fields, ``ORDER`` (ours) or ``ID_FIRST_ORDER`` (sse-starlette's and
    aiohttp-sse's).
    """
    line_end = _LINE_ENDS.get(sep) if isinstance(sep, str) else None
    if line_end is None:
        raise EncodeError("sep", f"must be one of \\n, \\r\\n, \\r; got {sep!r}")
    if order != ORDER and order != ID_FIRST_ORDER:
        raise EncodeError("order", f"must be {ORDER!r} or {ID_FIRST_ORDER!r}; got {order!r}")
    lines: list[bytes] = []
    if comment is not None:
        lines.extend(_comment_lines(comment))
    event_line = None if event is None else _event_line(event)
    id_line = None if id is None else _id_line(id)
    retry_line = None if retry is None else _retry_line(retry)
    data_lines = (
        [] if data is None else [b"data: " + line for line in _split_lines(_data_bytes(data))]
    )
    if order == ORDER:
        fields = [event_line, id_line, retry_line]
        lines.extend(line for line in fields if line is not None)
        lines.extend(data_lines)
    else:
        fields = [id_line, event_line]
        lines.extend(line for line in fields if line is not None)
        lines.extend(data_lines)
        if retry_line is not None:
            lines.append(retry_line)
    if not lines:
        raise EncodeError("frame", "nothing to encode: give data, event, id, retry or comment")
    lines.append(b"")
    return line_end.join(lines) + line_end


class Event:
    """An immutable SSE event; the frame is encoded (and validated) on creation."""

    __slots__ = ("_comment", "_data", "_event", "_frame", "_id", "_retry")

    _frame: bytes
    _data: Any
    _event: str | None
    _id: str | int | None
    _retry: int | None
    _comment: str | None

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        frame = encode(data, event=event, id=id, retry=retry, comment=comment)
        object.__setattr__(self, "_frame", frame)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_event", event)
        object.__setattr__(self, "_id", id)
        object.__setattr__(self, "_retry", retry)
        object.__setattr__(self, "_comment", comment)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Event is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable")

    @property
    def data(self) -> Any:
        """The payload as given (``str``, bytes, or a value sent as JSON), or ``None``."""
        return self._data

    @property
    def event(self) -> str | None:
        """The ``event:`` field (the event's type), or ``None``."""
        return self._event

    @property
    def id(self) -> str | int | None:
        """The ``id:`` field, or ``None``."""
        return self._id

    @property
    def retry(self) -> int | None:
        """The ``retry:`` field (milliseconds), or ``None``."""
        return self._retry

    @property
    def comment(self) -> str | None:
        """The comment, written as ``:`` lines before the fields, or ``None``."""
        return self._comment

    def encode(self) -> bytes:
        """The frame's bytes (computed once, when the event was created)."""
        return self._frame

    def _fields(self) -> tuple[Any, ...]:
        return (self._data, self._event, self._id, self._retry, self._comment)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        # equal when they put the same bytes on the wire (consistent with the hash)
        return self._frame == other._frame

    def __hash__(self) -> int:
        return hash(self._frame)

    def __repr__(self) -> str:
        names = ("data", "event", "id", "retry", "comment")
        shown = ", ".join(
            f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=False) if v is not None
        )
        return f"Event({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_event, self._fields())


def _rebuild_event(
    data: Any, event: str | None, id: str | int | None, retry: int | None, comment: str | None
) -> Event:
    return Event(data, event=event, id=id, retry=retry, comment=comment)


def encode_many(events: Iterable[Event]) -> bytes:
    """Concatenate the frames of ``events`` into one buffer (one write)."""
    frames = []
    for index, item in enumerate(events):
        if not isinstance(item, Event):
            raise TypeError(
                f"encode_many() expects Event objects, got {type(item).__name__} at index {index}"
            )
        frames.append(item._frame)
    return b"".join(frames)


def encode_sequenced(
    requests: Sequence[Any], first: int, accepted_at: float, item_type: type[Any]
) -> list[Any]:
    """Each of ``requests`` (objects with ``topics``, ``data``, ``event``, ``id`` and
    ``retry``) encoded once, at positions ``first`` on, under its id: the publisher's,
    or ``str(position)`` where it gave none. Returns ``item_type`` tuples
    ``(position, id, topics, frame, accepted_at)``; raises the first ``EncodeError``
    before anything is returned (a batch is encoded whole or not at all)."""
    out = []
    new = tuple.__new__
    for offset, request in enumerate(requests):
        position = first + offset
        event_id = request.id if request.id is not None else str(position)
        frame = encode(request.data, event=request.event, id=event_id, retry=request.retry)
        out.append(new(item_type, (position, event_id, request.topics, frame, accepted_at)))
    return out
