"""The Cython incremental SSE parser; the same API as ``sse_fast._parser_py``.

Checked against the compiled module by ``mypy.stubtest`` (``.ci/stubtest.sh``)
and against the pure twin by ``tests/test_parity.py``.
"""

from typing import Final

from typing_extensions import disjoint_base

from sse_fast._errors import EventTooLarge as EventTooLarge
from sse_fast._errors import ParseError as ParseError

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

@disjoint_base  # a Cython cdef class
class Parser:
    """Incremental SSE parser: ``feed(bytes) -> list[ParsedEvent]``, then ``close()``."""

    last_event_id: str
    retry: int | None
    @property
    def max_event_size(self) -> int: ...
    def __init__(self, max_event_size: int = ..., last_event_id: str = "") -> None: ...
    def feed(self, chunk: bytes | bytearray | memoryview) -> list[ParsedEvent]: ...
    def close(self) -> None: ...
