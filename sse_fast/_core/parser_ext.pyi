"""The Cython incremental SSE parser; the same API as ``sse_fast._core.parser_py``.

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.parser_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from typing import ClassVar, Final

from typing_extensions import disjoint_base

from sse_fast._core.errors import EventTooLarge as EventTooLarge
from sse_fast._core.errors import ParseError as ParseError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "ParsedEvent", "Parser"]

#: ``Parser``'s default ``max_event_size`` (bytes; past it ``feed`` raises ``EventTooLarge``)
DEFAULT_MAX_EVENT_SIZE: Final[int]

@disjoint_base  # a Cython cdef class
class ParsedEvent:
    """One dispatched event (immutable)."""

    @property
    def event(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def retry(self) -> int | None: ...
    def __init__(self, event: str, data: str, id: str, retry: int | None) -> None: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]  # a value, not hashable

@disjoint_base  # a Cython cdef class
class Parser:
    """Incremental SSE parser: ``feed(bytes) -> list[ParsedEvent]``, then ``close()``."""

    @property
    def last_event_id(self) -> str: ...
    @last_event_id.setter
    def last_event_id(self, value: str) -> None: ...
    @property
    def retry(self) -> int | None: ...
    @retry.setter
    def retry(self, value: int | None) -> None: ...
    @property
    def max_event_size(self) -> int: ...
    def __init__(self, max_event_size: int = ..., last_event_id: str = "") -> None: ...
    def feed(self, chunk: bytes | bytearray | memoryview) -> list[ParsedEvent]: ...
    def close(self) -> None: ...
