"""Exceptions shared by the Cython core and its pure-Python twins.

Both implementations raise these exact classes, so ``except sse_fast.EncodeError``
works whichever one is loaded. Each pickles (for multiprocessing, logging
handlers, task queues) with its attributes and anything added later, such as
notes: ``__reduce__`` gives the constructor arguments and the instance dict.
They are pickled under the names users import them by (``sse_fast.Lagged``), so
a pickle does not depend on this private module.
"""

from __future__ import annotations


class EncodeError(ValueError):
    """A value cannot be written as an SSE frame.

    ``field`` names the offending field (``data``, ``event``, ``id``, ``retry``,
    ``comment`` or a helper option) and ``reason`` says what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[EncodeError], tuple[str, str], dict[str, object]]:
        return (type(self), (self.field, self.reason), self.__dict__)


class ParseError(ValueError):
    """The parser cannot go on with this stream.

    ``events`` holds the events completed in the same ``feed()`` call before the
    error, so nothing already parsed is lost.
    """

    def __init__(self, message: str, events: list[object] | None = None) -> None:
        super().__init__(message)
        self.events: list[object] = events if events is not None else []

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, list[object]], dict[str, object]]:
        return (type(self), (str(self.args[0]), self.events), self.__dict__)


class EventTooLarge(ParseError):
    """An event (data, type and the unfinished line) grew past ``max_event_size``."""

    def __init__(self, size: int, limit: int, events: list[object] | None = None) -> None:
        super().__init__(
            f"event exceeds max_event_size: {size} bytes buffered, limit {limit}; "
            "raise Parser(max_event_size=...) if such events are expected, "
            "otherwise the stream is broken or hostile: reconnect",
            events,
        )
        self.size = size
        self.limit = limit

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[EventTooLarge], tuple[int, int, list[object]], dict[str, object]]:
        return (type(self), (self.size, self.limit, self.events), self.__dict__)


class Lagged(Exception):
    """A ring cursor fell behind the oldest retained frame.

    ``lost`` frames were evicted before the cursor read them. ``oldest_cursor``
    is a cursor from which the remaining retained frames can be read, if the
    caller chooses to continue despite the gap.
    """

    def __init__(self, lost: int, oldest_cursor: int) -> None:
        super().__init__(
            f"cursor fell behind the ring: {lost} frame(s) were evicted before it read them"
        )
        self.lost = lost
        self.oldest_cursor = oldest_cursor

    def __reduce__(self) -> tuple[type[Lagged], tuple[int, int], dict[str, object]]:
        return (type(self), (self.lost, self.oldest_cursor), self.__dict__)


# documented and pickled as sse_fast.EncodeError etc., where users import them
EncodeError.__module__ = "sse_fast"
ParseError.__module__ = "sse_fast"
EventTooLarge.__module__ = "sse_fast"
Lagged.__module__ = "sse_fast"
