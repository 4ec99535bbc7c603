"""Pure-Python incremental SSE parser: the reference twin of ``src_ext/parser_ext.pyx``.

Follows the WHATWG "event stream interpretation" algorithm:

* one leading UTF-8 BOM is stripped (even when split across chunks);
* CRLF, lone LF and lone CR end lines; a CR that ends one chunk and an LF that
  starts the next are one line end;
* a blank line dispatches; ``:`` starts a comment; ``name: value`` has exactly
  one leading space removed from the value; a line without a colon is a field
  with an empty value; unknown fields are ignored;
* ``id`` containing NUL is ignored; ``retry`` counts only when all ASCII
  digits; the last event id is committed at every blank line, even when no
  event fires, and kept across events;
* an unfinished event at ``close()`` is discarded; invalid UTF-8 becomes
  U+FFFD (decoding per field value is equivalent to decoding the stream first,
  because line ends, colons and spaces are ASCII and never part of a
  multi-byte sequence).

Memory is bounded: the data buffer, the event type and the line being read
(finished or not, comments and unknown fields included) together may not
exceed ``max_event_size`` bytes; past that ``feed`` raises ``EventTooLarge``
and the parser refuses further input. Counting every line, whole or not,
makes the outcome independent of how the stream is split into chunks.
"""

from __future__ import annotations

import re
import sys

from .errors import EventTooLarge, ParseError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "ParsedEvent", "Parser"]

#: ``Parser``'s default ``max_event_size`` (bytes; past it ``feed`` raises ``EventTooLarge``)
DEFAULT_MAX_EVENT_SIZE = 4 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"[\r\n]")


_set = object.__setattr__


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")


def _check_size_limit(name: str, value: object) -> None:
    """A positive int that fits a C ``Py_ssize_t``, as the Cython twin stores it."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= sys.maxsize:
        raise ValueError(f"{name} must be a positive int up to sys.maxsize, got {value!r}")


def _check_retry(value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"retry must be int (ms) or None, not {type(value).__name__}")
    if value is not None and value < 0:
        raise ValueError(f"retry must not be negative, got {value}")


def _check_last_event_id(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"last_event_id must be str ('' when there is none), not {type(value).__name__}"
        )


class ParsedEvent:
    """One dispatched event: ``event`` (type), ``data``, ``id`` (the last event
    id at dispatch), ``retry`` (set by a ``retry`` field in this event, or None)."""

    __slots__ = ("data", "event", "id", "retry")

    event: str
    data: str
    id: str
    retry: int | None

    def __init__(self, event: str, data: str, id: str, retry: int | None) -> None:
        _check_str("event", event)
        _check_str("data", data)
        _check_str("id", id)
        _check_retry(retry)
        # immutable, like the Cython twin's read-only attributes
        _set(self, "event", event)
        _set(self, "data", data)
        _set(self, "id", id)
        _set(self, "retry", retry)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ParsedEvent is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ParsedEvent is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[ParsedEvent], tuple[str, str, str, int | None]]:
        return (ParsedEvent, (self.event, self.data, self.id, self.retry))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParsedEvent):
            return NotImplemented
        return (self.event, self.data, self.id, self.retry) == (
            other.event,
            other.data,
            other.id,
            other.retry,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ParsedEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )


class Parser:
    """Incremental SSE parser: ``feed(bytes) -> list[ParsedEvent]``, then ``close()``.

    ``last_event_id`` may be given to continue a previous connection's id (as
    a browser does on reconnect). ``retry`` holds the last reconnection delay
    the stream set (or None).
    """

    __slots__ = (
        "_at_start",
        "_block_retry",
        "_closed",
        "_data",
        "_event_type",
        "_failure",
        "_id_buffer",
        "_last_event_id",
        "_max_event_size",
        "_pending",
        "_retry",
        "_skip_lf",
    )

    def __init__(
        self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE, last_event_id: str = ""
    ) -> None:
        _check_size_limit("max_event_size", max_event_size)
        _check_last_event_id(last_event_id)
        self._max_event_size = max_event_size
        self._last_event_id = last_event_id
        self._retry: int | None = None
        self._id_buffer = last_event_id
        self._pending = b""
        self._data = bytearray()
        self._event_type = b""
        self._block_retry: int | None = None
        self._at_start = True
        self._skip_lf = False
        self._closed = False
        self._failure: ParseError | None = None

    @property
    def max_event_size(self) -> int:
        """The size limit given at construction (read-only)."""
        return self._max_event_size

    @property
    def last_event_id(self) -> str:
        """The id of the last event dispatched (or given at construction)."""
        return self._last_event_id

    @last_event_id.setter
    def last_event_id(self, value: str) -> None:
        _check_last_event_id(value)
        self._last_event_id = value

    @property
    def retry(self) -> int | None:
        """The last reconnection delay (ms) the stream set, or None."""
        return self._retry

    @retry.setter
    def retry(self, value: int | None) -> None:
        _check_retry(value)
        self._retry = value

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            "a Parser cannot be pickled or copied: it holds one stream's unfinished state; "
            "start a new Parser(last_event_id=...) where the stream resumes"
        )

    def feed(self, chunk: bytes) -> list[ParsedEvent]:
        """Parse more of the stream; return the events it completed."""
        if self._closed:
            raise ParseError("feed() after close(): start a new Parser for a new stream")
        if self._failure is not None:
            raise ParseError(f"parser failed earlier and cannot continue: {self._failure}")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() takes bytes, not {type(chunk).__name__}")
        buf = self._pending + bytes(chunk) if self._pending else bytes(chunk)
        self._pending = b""
        if self._at_start:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._pending = buf
                return []
            self._at_start = False
            if buf.startswith(_BOM):
                buf = buf[3:]
        events: list[ParsedEvent] = []
        pos = 0
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0] == 0x0A:
                pos = 1
        size = len(buf)
        search = _LINE_END.search
        while True:
            match = search(buf, pos)
            if match is None:
                break
            end = match.start()
            self._line(buf[pos:end], events)
            if buf[end] == 0x0D:
                if end + 1 < size:
                    pos = end + 2 if buf[end + 1] == 0x0A else end + 1
                else:
                    self._skip_lf = True
                    pos = end + 1
            else:
                pos = end + 1
        self._pending = buf[pos:]
        self._check_size(len(self._pending), events)
        return events

    def close(self) -> None:
        """End of stream: an unfinished event is discarded, as the spec says."""
        self._closed = True
        self._pending = b""
        self._data = bytearray()
        self._event_type = b""

    def _check_size(self, pending: int, events: list[ParsedEvent]) -> None:
        size = len(self._data) + len(self._event_type) + pending
        if size > self._max_event_size:
            error = EventTooLarge(size, self._max_event_size, list(events))
            self._failure = error
            self._pending = b""
            self._data = bytearray()
            raise error

    def _line(self, line: bytes, events: list[ParsedEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        self._check_size(len(line), events)
        if line[0] == 0x3A:  # ':' comment
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if field == b"data":
            self._data += value
            self._data += b"\n"
        elif field == b"event":
            self._event_type = value
        elif field == b"id":
            if b"\0" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit():
            self._retry = self._block_retry = int(value)

    def _dispatch(self, events: list[ParsedEvent]) -> None:
        self._last_event_id = self._id_buffer
        if self._data:
            events.append(
                ParsedEvent(
                    self._event_type.decode("utf-8", "replace") if self._event_type else "message",
                    self._data[:-1].decode("utf-8", "replace"),
                    self._last_event_id,
                    self._block_retry,
                )
            )
            self._data = bytearray()
        self._event_type = b""
        self._block_retry = None
