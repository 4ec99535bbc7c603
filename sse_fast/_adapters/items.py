"""The items a framework adapter streams (``sse_fast.starlette``,
``sse_fast.django``): sse-starlette's ``ServerSentEvent``, ``JSONServerSentEvent``
and ``ensure_bytes``, on the native encoder. No framework imports here."""

from __future__ import annotations

import re
from typing import Any

import orjson

from .._core import ID_FIRST_ORDER, encode

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELDS = frozenset({"data", "event", "id", "retry", "comment", "sep"})


def _frame(data: Any, event: Any, id: Any, retry: Any, comment: Any, sep: str) -> bytes:
    """One frame with sse-starlette's rules and bytes: its field order (comment,
    id, event, data, retry), line breaks dropped from ``id`` and ``event``,
    ``str()`` of any data, multi-line data and comments split."""
    if retry is not None and not isinstance(retry, int):
        raise TypeError("retry argument must be int")
    if data is None and event is None and id is None and retry is None and comment is None:
        return sep.encode()  # sse-starlette sends a lone separator: a no-op for clients
    return encode(
        None if data is None else data if type(data) is str else str(data),
        event=None if event is None else _LINE_BREAK.sub("", event),
        id=None if id is None else _LINE_BREAK.sub("", str(id)),
        retry=retry,
        comment=None if comment is None else str(comment),
        sep=sep,
        order=ID_FIRST_ORDER,
    )


class ServerSentEvent:
    """One event, as sse-starlette's ``ServerSentEvent`` (same arguments and
    attributes; ``encode()`` gives its bytes)."""

    DEFAULT_SEPARATOR = "\r\n"

    def __init__(
        self,
        data: Any | None = None,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment
        self._sep = sep if sep is not None else self.DEFAULT_SEPARATOR

    def encode(self) -> bytes:
        """The event's frame, as sse-starlette writes it (encoded from the attributes at each
        call); ``TypeError`` for a ``retry`` that is not an int, ``EncodeError`` for a field that
        cannot be written."""
        return _frame(self.data, self.event, self.id, self.retry, self.comment, self._sep)

    def __repr__(self) -> str:
        fields = ("data", "event", "id", "retry", "comment")
        shown = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in fields if getattr(self, n) is not None
        )
        return f"{type(self).__name__}({shown})"


class JSONServerSentEvent(ServerSentEvent):
    """An event whose data is JSON (compact; orjson, which also takes dataclasses,
    datetimes and numpy arrays, and writes NaN as null where ``json.dumps``
    would refuse it)."""

    def __init__(self, data: Any | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            None if data is None else orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode(),
            *args,
            **kwargs,
        )


def ensure_bytes(data: Any, sep: str) -> bytes:
    """One item of a stream's content as bytes (sse-starlette's function)."""
    if type(data) is dict:
        if not _FIELDS.issuperset(data):
            unknown = ", ".join(sorted(set(data) - _FIELDS))
            raise TypeError(
                f"an event dict has the fields data, event, id, retry, comment; got {unknown}"
            )
        return _frame(
            data.get("data"),
            data.get("event"),
            data.get("id"),
            data.get("retry"),
            data.get("comment"),
            sep,  # sse-starlette's rule: the stream's separator wins over a "sep" key
        )
    if isinstance(data, (bytes, memoryview)):
        return bytes(data)
    if isinstance(data, ServerSentEvent):
        return data.encode()
    encoder = getattr(data, "encode", None)
    if encoder is not None and not isinstance(data, str):  # another library's event object
        encoded = encoder()
        if isinstance(encoded, bytes):
            return encoded
    return _frame(data if type(data) is str else str(data), None, None, None, None, sep)
